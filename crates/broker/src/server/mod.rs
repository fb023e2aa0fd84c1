//! Starting and stopping the broker: binds listeners, accepts connections under a limit,
//! hands each to its transport and then to a session, reloads on SIGHUP, and shuts down
//! gracefully, spreading the goodbyes over a lame-duck window.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use postbox_cluster::ClusterRelay;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

mod accept;
mod reload;

use accept::Shared;
pub use reload::ReloadError;

use crate::Config;
use crate::auth::{AuthHandle, AuthSetupError};
use crate::http::upgrade::WsSettings;
use crate::session::{Context, Settings};
use crate::state::{BrokerState, StateParts};
use crate::transport::Transport;
use crate::transport::tls::{CertStore, TlsError};
use crate::vhost::Vhosts;

/// How often resident memory is sampled for the memory alarm.
const MEMORY_SAMPLE_MS: u64 = 100;

/// A listener that is accepting connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// The protocol served.
    pub transport: Transport,
    /// The bound address (with the real port when 0 was asked for).
    pub addr: SocketAddr,
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A public address without authentication.
    #[error(
        "refusing to listen on {0}: no authentication is configured, so anyone who can reach \
         this address could use the broker; listen on a loopback address (127.0.0.1), \
         configure authentication (users-file or jwt-*), or allow it explicitly with \
         --allow-anonymous (POSTBOX_ALLOW_ANONYMOUS=true)"
    )]
    Insecure(SocketAddr),
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate, key or client CA is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// A users file or JWT key is unusable.
    #[error("authentication: {0}")]
    Auth(#[from] AuthSetupError),
    /// The cluster cannot be joined.
    #[error("{0}")]
    Cluster(#[from] postbox_cluster::ClusterError),
}

/// A running broker.
#[derive(Debug)]
pub struct Running {
    listening: Vec<Listening>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    config: Config,
    node_id: String,
    state: Arc<BrokerState>,
    permits: Arc<Semaphore>,
}

/// Binds every configured listener and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let listeners = config.listeners();
    let auth = AuthHandle::load(&config)?;
    if !config.allow_anonymous
        && auth.current().is_open()
        && let Some((_, public)) = listeners
            .iter()
            .find(|(t, addr)| *t != Transport::Http && !addr.ip().is_loopback())
    {
        return Err(StartError::Insecure(*public));
    }
    let node_id = if config.node_id.is_empty() {
        random_node_id()
    } else {
        config.node_id.clone()
    };
    let certs = match config.tls_files() {
        Some(files) if listeners.iter().any(|(t, _)| t.uses_tls()) => Some(CertStore::load(files)?),
        _ => None,
    };
    let tls = certs.as_ref().map(|store| store.acceptor()).transpose()?;
    let cluster = match config.cluster_config(&node_id) {
        Some(settings) => Some(ClusterRelay::connect(settings).await?),
        None => None,
    };
    let vhosts = match &cluster {
        Some(relay) => {
            let vhosts = Vhosts::with_relay(&config, &node_id, Arc::new(relay.clone()));
            for router in vhosts.routers() {
                relay.register(router.clone());
            }
            vhosts
        }
        None => Vhosts::new(&config, &node_id),
    };
    let state = BrokerState::new(StateParts {
        settings: Settings::from_config(&config, &node_id),
        vhosts,
        auth,
        certs: certs.clone(),
        cluster,
        metrics_queue_top: config.metrics_queue_top,
        admin_token: config.admin_token.clone(),
        admin_role: config.admin_role.clone(),
    });
    let shutdown = CancellationToken::new();
    let shared = Shared {
        state: state.clone(),
        context: Context {
            services: state.sessions.clone(),
            shutdown: shutdown.clone(),
        },
        permits: Arc::new(Semaphore::new(config.max_connections)),
        tracker: TaskTracker::new(),
        tls,
        ws: Arc::new(WsSettings {
            path: config.ws_path.clone(),
            max_message: config.ws_max_message_size,
            allowed_origins: config.ws_allowed_origins.clone(),
            http_endpoints: config.ws_http_endpoints,
        }),
        query_param: config.jwt_query_param.clone(),
    };
    let mut listening = Vec::new();
    for (transport, addr) in listeners {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        info!(%addr, %transport, "listening");
        if matches!(transport, Transport::Ws | Transport::Wss)
            && !addr.ip().is_loopback()
            && config.ws_allowed_origins.is_empty()
        {
            warn!(%addr, "WebSocket listener accepts any Origin; set ws-allowed-origins to refuse cross-site pages");
        }
        if matches!(transport, Transport::Ws | Transport::Wss)
            && !addr.ip().is_loopback()
            && config.ws_http_endpoints
        {
            warn!(%addr, "ws-http-endpoints serves /metrics and the admin API on this public WebSocket listener");
        }
        listening.push(Listening { transport, addr });
        shared
            .tracker
            .spawn(shared.clone().accept_loop(listener, transport));
    }
    state
        .sessions
        .memory
        .set_limit(crate::memory::watermark(config.memory_high_watermark));
    tokio::spawn(
        state
            .sessions
            .memory
            .clone()
            .watch(Duration::from_millis(MEMORY_SAMPLE_MS), shutdown.clone()),
    );
    tokio::spawn(purge_expired(state.clone(), shutdown.clone()));
    if let Some(store) = &certs
        && config.tls_reload_ms > 0
    {
        let every = Duration::from_millis(config.tls_reload_ms);
        tokio::spawn(store.clone().watch(every, shutdown.clone()));
    }
    Ok(Running {
        listening,
        shutdown,
        tracker: shared.tracker,
        permits: shared.permits,
        config,
        node_id,
        state,
    })
}

impl Running {
    /// The listeners, with their bound addresses.
    pub fn listening(&self) -> &[Listening] {
        &self.listening
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The broker's shared state.
    pub fn state(&self) -> &Arc<BrokerState> {
        &self.state
    }

    /// Stops accepting, then closes sessions spread over the lame-duck window (so a
    /// cluster's clients reconnect elsewhere gradually), each after its queued frames
    /// and an ERROR saying the server is going away, and waits for them up to the drain
    /// timeout. Returns whether every session finished in time.
    pub async fn shutdown(self) -> bool {
        self.state.ready.store(false, Ordering::Release);
        let drain = self.config.drain_timeout();
        let window = Duration::from_millis(self.config.lame_duck_ms).min(drain);
        self.tracker.close();
        let sessions = self.state.sessions.registry.all();
        if !sessions.is_empty() && !window.is_zero() {
            info!(
                sessions = sessions.len(),
                window_ms = window.as_millis() as u64,
                "lame duck: closing connections gradually"
            );
            let step = window / sessions.len() as u32;
            for session in sessions {
                session.opened.goodbye.cancel();
                tokio::time::sleep(step).await;
            }
        }
        // Whatever is left (and the listeners) stop now.
        self.shutdown.cancel();
        let finished = tokio::time::timeout(drain.saturating_sub(window), self.tracker.wait())
            .await
            .is_ok();
        if !finished {
            warn!(
                drain_ms = drain.as_millis() as u64,
                "some connections did not close within the drain timeout"
            );
        }
        if let Some(cluster) = &self.state.cluster {
            // Sessions released their queue messages as they closed; give the relay a
            // moment to send that, then leave so others stop counting this node at once.
            tokio::time::sleep(Duration::from_millis(100)).await;
            cluster.leave().await;
        }
        finished
    }

    /// The cluster relay, when clustered.
    pub fn cluster(&self) -> Option<&ClusterRelay> {
        self.state.cluster.as_ref()
    }
}

/// Eight random hex digits.
fn random_node_id() -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("the OS has a random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How often queues are swept for expired messages no consumer took.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// Frees expired messages in queues nobody consumes from, until shutdown: they would
/// otherwise hold memory and budget, and keep blocked producers waiting.
async fn purge_expired(state: Arc<BrokerState>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(EXPIRY_SWEEP);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let purged: usize = state
            .sessions
            .vhosts
            .routers()
            .map(|r| r.purge_expired())
            .sum();
        if purged > 0 {
            tracing::debug!(purged, "expired messages freed");
        }
    }
}
