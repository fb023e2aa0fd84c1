//! What the whole broker shares: the sessions' services (virtual hosts, open sessions,
//! authentication, counters, settings), and what only the server and the HTTP side use
//! (TLS, the cluster relay, readiness, the admin API's credentials).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use postbox_cluster::ClusterRelay;

use crate::auth::AuthHandle;
use crate::config::{Secret, secret};
use crate::session::{Services, Settings};
use crate::transport::tls::CertStore;
use crate::vhost::Vhosts;

/// The broker's shared state. Its `Debug` masks the admin token.
pub struct BrokerState {
    /// What every session uses; sessions get this, not the whole state.
    pub sessions: Arc<Services>,
    /// The TLS certificate, when a TLS listener is configured.
    pub certs: Option<Arc<CertStore>>,
    /// The cluster relay, when clustered.
    pub cluster: Option<ClusterRelay>,
    /// Set while the broker accepts connections.
    pub ready: Arc<AtomicBool>,
    /// The admin API's static token, if configured.
    pub admin_token: Option<String>,
    /// The token role that grants the admin API.
    pub admin_role: String,
    /// How many queues the per-queue metric series cover at most (the deepest ones).
    pub metrics_queue_top: usize,
    /// Unix time the process started.
    pub started: u64,
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
            sessions: Arc::new(Services::new(parts.settings, parts.vhosts, parts.auth)),
            certs: parts.certs,
            cluster: parts.cluster,
            ready: Arc::new(AtomicBool::new(true)),
            admin_token: (!parts.admin_token.is_empty())
                .then(|| parts.admin_token.expose().to_owned()),
            admin_role: parts.admin_role,
            metrics_queue_top: parts.metrics_queue_top,
            started: crate::auth::now(),
        })
    }
}

impl fmt::Debug for BrokerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerState")
            .field("sessions", &self.sessions)
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
