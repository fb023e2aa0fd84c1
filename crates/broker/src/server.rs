//! Starting and stopping the broker: binds listeners, accepts connections under a limit,
//! hands each to its transport and then to a session, reloads on SIGHUP, and shuts down
//! gracefully, spreading the goodbyes over a lame-duck window.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use postbox_cluster::ClusterRelay;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::Config;
use crate::auth::AuthHandle;
use crate::http;
use crate::metrics::DisconnectReason;
use crate::session::{self, Context, Peer, SessionError, Settings};
use crate::state::{BrokerState, StateParts};
use crate::transport::tls::{CertStore, TlsError};
use crate::transport::ws::{self, Accepted, WsSettings};
use crate::vhost::Vhosts;

/// How often resident memory is sampled for the memory alarm.
const MEMORY_SAMPLE_MS: u64 = 100;

/// How clients reach a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// STOMP over TCP.
    Stomp,
    /// STOMP over TLS.
    StompTls,
    /// STOMP over WebSocket.
    Ws,
    /// STOMP over WebSocket over TLS.
    Wss,
    /// Plain HTTP: health, metrics, admin.
    Http,
}

impl Transport {
    /// The name used in logs and in the `listening` lines.
    pub const fn name(self) -> &'static str {
        match self {
            Transport::Stomp => "stomp",
            Transport::StompTls => "stomp-tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
            Transport::Http => "http",
        }
    }

    fn uses_tls(self) -> bool {
        matches!(self, Transport::StompTls | Transport::Wss)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
         configure authentication, or pass --allow-anonymous"
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
    Auth(String),
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

/// What every accept loop shares.
#[derive(Clone)]
struct Shared {
    context: Context,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    tls: Option<TlsAcceptor>,
    ws: Arc<WsSettings>,
    /// The WebSocket query parameter that may carry a token.
    query_param: String,
}

/// Binds every configured listener and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let listeners = config.listeners();
    let auth = AuthHandle::load(&config).map_err(StartError::Auth)?;
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
        admin_token: (!config.admin_token.is_empty()).then(|| config.admin_token.clone()),
        admin_role: config.admin_role.clone(),
    });
    let shutdown = CancellationToken::new();
    let shared = Shared {
        context: Context {
            state: state.clone(),
            shutdown: shutdown.clone(),
        },
        permits: Arc::new(Semaphore::new(config.max_connections)),
        tracker: TaskTracker::new(),
        tls,
        ws: Arc::new(WsSettings {
            path: config.ws_path.clone(),
            max_message: config.ws_max_message_size,
            allowed_origins: config.ws_allowed_origins.clone(),
            request_timeout: config.connect_timeout(),
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
        listening.push(Listening { transport, addr });
        shared
            .tracker
            .spawn(shared.clone().accept_loop(listener, transport));
    }
    state
        .memory
        .set_limit(crate::memory::watermark(config.memory_high_watermark));
    tokio::spawn(
        state
            .memory
            .clone()
            .watch(Duration::from_millis(MEMORY_SAMPLE_MS), shutdown.clone()),
    );
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

    /// Applies a freshly loaded configuration, as on SIGHUP: the TLS certificate, JWT
    /// keys, the users file and every limit take effect for new connections (and new
    /// handshakes); options that need a restart are named in the log and left alone.
    pub fn reload(&mut self, fresh: Config) {
        if let Some(store) = &self.state.certs {
            store.reload_logged("reload requested");
        }
        let changed = self.config.differences(&fresh);
        let (live, restart): (Vec<&str>, Vec<&str>) = changed
            .iter()
            .map(|(name, _, _)| *name)
            .partition(|name| crate::config::reloadable(name));
        for (name, old, new) in &changed {
            if crate::config::reloadable(name) {
                info!(option = name, old = %old, new = %new, "reloaded");
            }
        }
        if !restart.is_empty() {
            warn!(options = ?restart, "changed, but only take effect after a restart");
        }
        let mut applied = fresh.clone();
        // Keep what cannot change at runtime, so later reloads compare against what runs.
        for name in &restart {
            applied.restore(name, &self.config);
        }
        if applied.max_connections != self.config.max_connections {
            let (old, new) = (self.config.max_connections, applied.max_connections);
            if new > old {
                self.permits.add_permits(new - old);
            } else {
                let permits = self.permits.clone();
                tokio::spawn(async move {
                    // Taken as connections close; never more than the old limit was.
                    if let Ok(taken) = permits.acquire_many_owned((old - new) as u32).await {
                        taken.forget();
                    }
                });
            }
        }
        self.state
            .set_settings(Settings::from_config(&applied, &self.node_id));
        self.state
            .memory
            .set_limit(crate::memory::watermark(applied.memory_high_watermark));
        if live
            .iter()
            .any(|name| name.starts_with("jwt-") || *name == "users-file" || *name == "acl")
        {
            self.state.auth.replace_config(&applied);
        }
        self.state.auth.reload();
        self.config = applied;
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
        let sessions = self.state.registry.all();
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

impl Shared {
    async fn accept_loop(self, listener: TcpListener, transport: Transport) {
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                _ = self.context.shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            if !self.context.state.ready.load(Ordering::Acquire) {
                // Lame duck: no new sessions while the old ones are sent away.
                return;
            }
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    backoff = Duration::from_millis(5);
                    accepted
                }
                Err(error) => {
                    // Usually out of file descriptors: wait for some to be freed.
                    warn!(%error, "accept failed; retrying in {} ms", backoff.as_millis());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            if transport == Transport::Http {
                let state = self.context.state.clone();
                let timeout = self.ws.request_timeout;
                self.tracker
                    .spawn(async move { http::serve(stream, &state, timeout).await });
                continue;
            }
            self.context.state.metrics.connected(transport.name());
            let permit = self.permits.clone().try_acquire_owned();
            let shared = self.clone();
            self.tracker.spawn(async move {
                match permit {
                    Ok(permit) => {
                        shared.connection(stream, peer, transport).await;
                        drop(permit);
                    }
                    Err(_) => Box::pin(shared.refuse_over_limit(stream, transport)).await,
                }
            });
        }
    }

    /// Runs one connection through its transport into a session.
    async fn connection(&self, stream: TcpStream, peer: SocketAddr, transport: Transport) {
        let peer_label = Peer {
            addr: peer.to_string(),
            transport: transport.name(),
            query_token: None,
        };
        // Every idle connection is a parked task of this future's size, which is that of
        // its largest branch: the TLS and WebSocket states live in boxes of their own so a
        // plain TCP connection carries only its session.
        match transport {
            Transport::Stomp => {
                let (read, write) = stream.into_split();
                session::serve(read, write, self.context.clone(), peer_label).await;
            }
            Transport::StompTls => {
                Box::pin(async {
                    if let Some(tls) = self.handshake(stream, peer).await {
                        self.serve_split(tls, peer_label).await;
                    }
                })
                .await
            }
            Transport::Ws => Box::pin(self.websocket(stream, peer_label)).await,
            Transport::Wss => {
                Box::pin(async {
                    if let Some(tls) = self.handshake(stream, peer).await {
                        self.websocket(tls, peer_label).await;
                    }
                })
                .await
            }
            Transport::Http => {}
        }
    }

    async fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let acceptor = self.tls.as_ref()?;
        let timeout = self.context.state.settings().connect_timeout;
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(error)) => {
                info!(%peer, "TLS handshake failed: {error}");
                None
            }
            Err(_) => {
                info!(%peer, "TLS handshake timed out");
                None
            }
        }
    }

    async fn websocket<S>(&self, stream: S, mut peer: Peer)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match ws::accept(stream, &self.ws, &self.context.state).await {
            Ok(Accepted::WebSocket(request)) => {
                debug!(peer = %peer.addr, protocol = ?request.protocol, "WebSocket upgraded");
                let request = *request;
                if !self.query_param.is_empty() {
                    peer.query_token = request.query.as_deref().and_then(|query| {
                        query
                            .split('&')
                            .filter_map(|pair| pair.split_once('='))
                            .find(|(name, _)| *name == self.query_param)
                            .map(|(_, value)| value.to_owned())
                    });
                }
                self.serve_split(request.io, peer).await;
            }
            Ok(Accepted::Answered) => {}
            Err(error) => debug!(peer = %peer.addr, "HTTP request failed: {error}"),
        }
    }

    async fn serve_split<S>(&self, stream: S, peer: Peer)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (read, write) = tokio::io::split(stream);
        session::serve(read, write, self.context.clone(), peer).await;
    }

    /// Tells a client past the connection limit why it is refused, in its transport.
    async fn refuse_over_limit(&self, stream: TcpStream, transport: Transport) {
        let limit = self.context.state.settings().max_connections;
        let error = SessionError::TooManyConnections(limit);
        self.context
            .state
            .metrics
            .disconnected(DisconnectReason::ConnectionLimit);
        match transport {
            Transport::Stomp => {
                let mut stream = stream;
                session::refuse(&mut stream, error, None).await;
            }
            // Encrypted or framed transports would need a full handshake just to say
            // no; closing is the honest answer there.
            _ => info!(transport = transport.name(), "refused: {error}"),
        }
    }
}

/// Eight random hex digits.
fn random_node_id() -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("the OS has a random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
