//! TLS termination with rustls: certbot-style PEM files, reloaded when they change.
//!
//! The server certificate lives in a [`CertStore`] that rustls asks for on every
//! handshake, so replacing it affects new handshakes only; established connections keep
//! the session they negotiated. A file that does not parse, or a key that does not match
//! its certificate, is refused with a log line and the previous certificate stays.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why TLS could not be set up or reloaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// rustls refused the certificate, key or CA.
    #[error("{context}: {source}")]
    Rustls {
        /// What was being set up.
        context: String,
        /// rustls's reason.
        source: rustls::Error,
    },
}

/// Paths of the PEM files, in certbot's layout.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// `fullchain.pem`: the certificate followed by its intermediates.
    pub cert: PathBuf,
    /// `privkey.pem`: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to (enables mTLS).
    pub client_ca: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The current server certificate, swappable at runtime.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of the files when they were last loaded.
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl CertStore {
    /// Loads the certificate and key; fails if either is unusable.
    pub fn load(files: TlsFiles) -> Result<Arc<CertStore>, TlsError> {
        let stamps = stamps(&files);
        let key = load_certified_key(&files)?;
        Ok(Arc::new(CertStore {
            files,
            current: RwLock::new(Arc::new(key)),
            loaded: Mutex::new(stamps),
        }))
    }

    /// Reads the files again and swaps the certificate in if they are valid. The files'
    /// times are remembered either way, so a bad file is reported once, not every poll.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = stamps(&self.files);
        let key = load_certified_key(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// Reloads when a file's modification time changed; logs the outcome.
    pub fn reload_if_changed(&self) {
        let now = stamps(&self.files);
        let before = *self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if now != before {
            self.reload_logged("the certificate files changed");
        }
    }

    /// Reloads and logs why and how it went.
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => {
                info!(cert = %self.files.cert.display(), "{why}: new TLS certificate in use for new connections")
            }
            Err(error) => warn!(
                cert = %self.files.cert.display(),
                "{why}, but the new certificate was refused ({error}); the previous one stays in use"
            ),
        }
    }

    /// When the certificate in use expires (Unix time), for monitoring.
    pub fn expiry(&self) -> Option<i64> {
        let key = self.current();
        let der = key.end_entity_cert().ok()?;
        let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(certificate.validity().not_after.timestamp())
    }

    /// The certificate chain now in use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A rustls server configuration that asks this store on every handshake.
    pub fn server_config(self: &Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|source| TlsError::Rustls {
                context: "TLS protocol versions".into(),
                source,
            })?;
        let builder = match &self.files.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path)? {
                    roots.add(cert).map_err(|source| TlsError::Rustls {
                        context: format!("client CA {}", path.display()),
                        source,
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| TlsError::Pem {
                            path: path.clone(),
                            what: format!("unusable client CA: {e}"),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        Ok(Arc::new(builder.with_cert_resolver(self.clone())))
    }

    /// An acceptor for this store.
    pub fn acceptor(self: &Arc<CertStore>) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor::from(self.server_config()?))
    }

    /// Polls the files every `every` until `stop`, reloading when they change.
    pub async fn watch(self: Arc<CertStore>, every: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => self.reload_if_changed(),
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn stamps(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(&files.cert), modified(&files.key))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not a PEM certificate list: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no CERTIFICATE found".into(),
        });
    }
    Ok(certs)
}

fn load_certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(&files.cert)?;
    let pem = fs::read(&files.key).map_err(|source| TlsError::Read {
        path: files.key.clone(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: files.key.clone(),
        what: format!("no usable private key: {e}"),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Rustls {
        context: format!(
            "certificate {} with key {}",
            files.cert.display(),
            files.key.display()
        ),
        source,
    })
}
