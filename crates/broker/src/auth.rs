//! Builds the authenticator from configuration (reading the key and users files) and
//! keeps it swappable, so SIGHUP can pick up rotated keys and edited users.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use postbox_auth::jwt::KeyError;
use postbox_auth::permissions::RuleError;
use postbox_auth::users::UsersError;
use postbox_auth::{Authenticator, JwtKey, JwtSettings, JwtVerifier, Rules, Users};
use tracing::info;

use crate::Config;

/// The current authenticator; cheap to read on every CONNECT.
#[derive(Debug)]
pub struct AuthHandle {
    current: RwLock<Arc<Authenticator>>,
}

impl AuthHandle {
    /// Loads everything the configuration names; fails on any unusable file.
    pub fn load(config: &Config) -> Result<Arc<AuthHandle>, AuthSetupError> {
        Ok(Arc::new(AuthHandle {
            current: RwLock::new(Arc::new(build(config)?)),
        }))
    }

    /// The authenticator now in force.
    pub fn current(&self) -> Arc<Authenticator> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Builds the authenticator `config` describes, reading its files again, without
    /// putting it in force: a reload checks it first and may still refuse it.
    pub fn prepare(config: &Config) -> Result<Authenticator, AuthSetupError> {
        build(config)
    }

    /// Puts an authenticator from [`AuthHandle::prepare`] in force for new CONNECTs.
    pub fn install(&self, authenticator: Authenticator) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(authenticator);
        info!("authentication keys and users reloaded");
    }
}

/// Seconds since the epoch, the clock tokens are checked against.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Why the configured users or keys cannot be used. Each names the option and file at
/// fault, so the operator knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// A file named by an option cannot be read.
    #[error("cannot read {option} {path}: {source}")]
    Read {
        /// The option naming the file.
        option: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The users file is malformed.
    #[error("{path}: {source}")]
    Users {
        /// The file.
        path: String,
        /// What is wrong in it.
        source: UsersError,
    },
    /// A key file (PEM or JWKS) holds no usable key.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong with the key.
        source: KeyError,
    },
    /// `jwt-secret` is too short to resist brute force.
    #[error("jwt-secret must be at least 32 bytes; shorter secrets can be brute-forced")]
    ShortSecret,
    /// The keys together cannot make a verifier.
    #[error("{0}")]
    Verifier(KeyError),
    /// An `acl` rule is malformed.
    #[error("{0}")]
    Acl(#[from] RuleError),
}

fn read(path: &str, option: &'static str) -> Result<String, AuthSetupError> {
    std::fs::read_to_string(path).map_err(|source| AuthSetupError::Read {
        option,
        path: path.to_owned(),
        source,
    })
}

fn build(config: &Config) -> Result<Authenticator, AuthSetupError> {
    let users = match config.users_file.as_str() {
        "" => None,
        path => {
            let users = Users::from_toml(&read(path, "users-file")?);
            Some(users.map_err(|source| AuthSetupError::Users {
                path: path.to_owned(),
                source,
            })?)
        }
    };
    let mut keys = Vec::new();
    let jwt_secret = config.jwt_secret.expose();
    if !jwt_secret.is_empty() {
        if jwt_secret.len() < 32 {
            return Err(AuthSetupError::ShortSecret);
        }
        keys.push(JwtKey::hmac(jwt_secret.as_bytes()));
    }
    for path in &config.jwt_public_keys {
        let pem = read(path, "jwt-public-keys file")?;
        let key = JwtKey::from_pem(pem.as_bytes()).map_err(|source| AuthSetupError::Key {
            path: path.clone(),
            source,
        })?;
        keys.push(key);
    }
    if !config.jwt_jwks_file.is_empty() {
        let json = read(&config.jwt_jwks_file, "jwt-jwks-file")?;
        let found = JwtKey::from_jwks(&json).map_err(|source| AuthSetupError::Key {
            path: config.jwt_jwks_file.clone(),
            source,
        })?;
        keys.extend(found);
    }
    let jwt = if keys.is_empty() {
        None
    } else {
        let settings = JwtSettings {
            issuers: config.jwt_issuers.clone(),
            audiences: config.jwt_audiences.clone(),
            leeway_s: config.jwt_leeway_s,
            require_exp: config.jwt_require_exp,
            user_claim: config.jwt_user_claim.clone(),
            roles_claim: config.jwt_roles_claim.clone(),
            permissions_claim: config.jwt_permissions_claim.clone(),
        };
        Some(JwtVerifier::new(keys, settings).map_err(AuthSetupError::Verifier)?)
    };
    if users.is_none() && jwt.is_none() {
        return Ok(Authenticator::open());
    }
    let rules = Rules::new(&config.acl)?;
    Ok(Authenticator::new(
        users,
        jwt,
        rules,
        config.allow_anonymous,
    ))
}
