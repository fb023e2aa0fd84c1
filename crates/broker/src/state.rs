//! What the whole broker shares: the virtual hosts, the open sessions, counters, the
//! cluster relay, TLS and authentication, and the settings new sessions start with.

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use postbox_cluster::ClusterRelay;

use crate::auth::AuthHandle;
use crate::config::{Secret, secret};
use crate::login::LoginGate;
use crate::memory::MemoryAlarm;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::session::Settings;
use crate::transport::tls::CertStore;
use crate::vhost::Vhosts;

/// The broker's shared state. Its `Debug` masks the admin token.
pub struct BrokerState {
    settings: RwLock<Arc<Settings>>,
    /// The routers of all virtual hosts.
    pub vhosts: Arc<Vhosts>,
    /// Open sessions.
    pub registry: Arc<Registry>,
    /// Counters and the Prometheus rendering.
    pub metrics: Metrics,
    /// Authentication, reloadable.
    pub auth: Arc<AuthHandle>,
    /// The TLS certificate, when a TLS listener is configured.
    pub certs: Option<Arc<CertStore>>,
    /// The cluster relay, when clustered.
    pub cluster: Option<ClusterRelay>,
    /// Set while the broker accepts connections.
    pub ready: Arc<AtomicBool>,
    /// The admin API's static token, if configured.
    pub admin_token: Option<String>,
    /// Pauses publishers while resident memory is above the high-watermark.
    pub memory: Arc<MemoryAlarm>,
    /// The token role that grants the admin API.
    pub admin_role: String,
    /// Admits password checks a few at a time.
    pub logins: LoginGate,
}

/// The parts [`BrokerState::new`] needs.
#[derive(Debug)]
pub struct StateParts {
    /// Settings for new sessions.
    pub settings: Settings,
    /// Virtual hosts.
    pub vhosts: Vhosts,
    /// Authentication.
    pub auth: Arc<AuthHandle>,
    /// TLS.
    pub certs: Option<Arc<CertStore>>,
    /// Cluster relay.
    pub cluster: Option<ClusterRelay>,
    /// Per-queue metric series at most.
    pub metrics_queue_top: usize,
    /// Admin token (empty: none).
    pub admin_token: Secret,
    /// Admin role.
    pub admin_role: String,
}

impl BrokerState {
    /// Assembles the state.
    pub fn new(parts: StateParts) -> Arc<BrokerState> {
        Arc::new(BrokerState {
            settings: RwLock::new(Arc::new(parts.settings)),
            vhosts: Arc::new(parts.vhosts),
            registry: Arc::default(),
            metrics: Metrics::new(parts.metrics_queue_top),
            auth: parts.auth,
            certs: parts.certs,
            cluster: parts.cluster,
            ready: Arc::new(AtomicBool::new(true)),
            admin_token: (!parts.admin_token.is_empty())
                .then(|| parts.admin_token.expose().to_owned()),
            memory: Arc::default(),
            admin_role: parts.admin_role,
            logins: LoginGate::per_core(),
        })
    }

    /// The settings a session starting now gets.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the settings for sessions that start from now on.
    pub fn set_settings(&self, settings: Settings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }
}

impl fmt::Debug for BrokerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerState")
            .field("settings", &self.settings)
            .field("vhosts", &self.vhosts)
            .field("registry", &self.registry)
            .field("metrics", &self.metrics)
            .field("auth", &self.auth)
            .field("certs", &self.certs)
            .field("cluster", &self.cluster)
            .field("ready", &self.ready)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| secret::MASK),
            )
            .field("admin_role", &self.admin_role)
            .finish()
    }
}
