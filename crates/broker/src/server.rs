//! Starting and stopping the broker: binds listeners, accepts connections under a limit,
//! hands each to its transport and then to a session, reloads on SIGHUP, and shuts down
//! gracefully, spreading the goodbyes over a lame-duck window.

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
use crate::auth::{AuthHandle, AuthSetupError};
use crate::http;
use crate::http::upgrade::{self, Accepted, WsSettings};
use crate::metrics::DisconnectReason;
use crate::session::{self, Context, Peer, SessionError, Settings};
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

/// Why a reload was refused. The running configuration stays in force, all of it.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration has no users and no keys where the running one had some.
    #[error(
        "removing {0} would turn authentication off and let anyone in with every right; \
         restart postbox to run without authentication"
    )]
    RemovesAuthentication(String),
    /// A public listener would be left without authentication or `allow-anonymous`.
    #[error(
        "listener {0} is not on loopback, and the new configuration has no authentication \
         and no allow-anonymous; configure authentication or set allow-anonymous"
    )]
    Insecure(SocketAddr),
    /// A users file or JWT key named by the new configuration is unusable.
    #[error("authentication: {0}")]
    Auth(#[from] AuthSetupError),
}

/// Whether going from `old` to `new` (each a configuration and whether its
/// authenticator is open, that is has no users and no keys) must be refused.
fn reload_refusal(
    (old, old_open): (&Config, bool),
    (new, new_open): (&Config, bool),
    listening: &[Listening],
) -> Option<ReloadError> {
    if !new_open {
        return None;
    }
    if !old_open {
        let sources = [
            (
                "users-file",
                old.users_file.is_empty(),
                new.users_file.is_empty(),
            ),
            (
                "jwt-secret",
                old.jwt_secret.is_empty(),
                new.jwt_secret.is_empty(),
            ),
            (
                "jwt-public-keys",
                old.jwt_public_keys.is_empty(),
                new.jwt_public_keys.is_empty(),
            ),
            (
                "jwt-jwks-file",
                old.jwt_jwks_file.is_empty(),
                new.jwt_jwks_file.is_empty(),
            ),
        ];
        let removed: Vec<&str> = sources
            .iter()
            .filter(|(_, was_unset, unset)| !was_unset && *unset)
            .map(|(name, _, _)| *name)
            .collect();
        let removed = if removed.is_empty() {
            // Same options, but the files now hold no users or keys.
            "every user and key".to_owned()
        } else {
            removed.join(" and ")
        };
        return Some(ReloadError::RemovesAuthentication(removed));
    }
    if new.allow_anonymous {
        return None;
    }
    listening
        .iter()
        .find(|l| l.transport != Transport::Http && !l.addr.ip().is_loopback())
        .map(|l| ReloadError::Insecure(l.addr))
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
    /// The broker state, for readiness, HTTP and the WebSocket handshake.
    state: Arc<BrokerState>,
    /// What each session gets.
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

    /// Applies a freshly loaded configuration, as on SIGHUP: the TLS certificate, JWT
    /// keys, the users file, access rules and every limit take effect for new connections
    /// (and new handshakes); options that need a restart keep their running values and
    /// are named in the log. A configuration that would open the broker to anonymous
    /// clients is refused as a whole, and so is one whose authentication files cannot be
    /// read: then nothing changes.
    pub fn reload(&mut self, fresh: Config) -> Result<(), ReloadError> {
        let changed = self.config.differences(&fresh);
        let mut applied = fresh;
        // Keep what cannot change at runtime, so later reloads compare against what runs.
        for (name, _, _) in &changed {
            if !crate::config::reloadable(name) {
                applied.restore(name, &self.config);
            }
        }
        let authenticator = AuthHandle::prepare(&applied)?;
        if let Some(refusal) = reload_refusal(
            (&self.config, self.state.sessions.auth.current().is_open()),
            (&applied, authenticator.is_open()),
            &self.listening,
        ) {
            return Err(refusal);
        }

        // Accepted: from here on everything is applied.
        if let Some(store) = &self.state.certs {
            store.reload_logged("reload requested");
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
            .sessions
            .set_settings(Settings::from_config(&applied, &self.node_id));
        self.state
            .sessions
            .memory
            .set_limit(crate::memory::watermark(applied.memory_high_watermark));
        self.state.sessions.auth.install(authenticator);
        self.config = applied;
        for (name, old, new) in &changed {
            if crate::config::reloadable(name) {
                info!(option = *name, old = %old, new = %new, "reloaded");
            } else {
                warn!(
                    option = *name,
                    running = %old,
                    configured = %new,
                    "changed, but needs a restart; the running value stays"
                );
            }
        }
        Ok(())
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

impl Shared {
    async fn accept_loop(self, listener: TcpListener, transport: Transport) {
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                _ = self.context.shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            if !self.state.ready.load(Ordering::Acquire) {
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
            if let Some(idle) = self.state.sessions.settings().tcp_keepalive {
                set_keepalive(&stream, idle);
            }
            if transport == Transport::Http {
                let state = self.state.clone();
                // connect-timeout-ms, as reloaded last.
                let timeout = self.state.sessions.settings().connect_timeout;
                self.tracker
                    .spawn(async move { http::serve(stream, &state, timeout).await });
                continue;
            }
            self.state.sessions.metrics.connected(transport.name());
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
            ip: Some(peer.ip()),
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
        let timeout = self.state.sessions.settings().connect_timeout;
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
        match upgrade::accept(stream, &self.ws, &self.state).await {
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
        let limit = self.state.sessions.settings().max_connections;
        let error = SessionError::TooManyConnections(limit);
        self.state
            .sessions
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

/// Probes sent after `idle` of silence before a connection counts as dead.
const KEEPALIVE_PROBES: u32 = 6;

/// Time between two keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Turns on TCP keepalive, so the kernel closes a connection whose peer vanished (power
/// loss, a dropped NAT entry) even when no heart-beats were negotiated: the next read
/// then fails and the session ends as for a reset. Failure only costs that detection.
fn set_keepalive(stream: &tokio::net::TcpStream, idle: Duration) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        debug!(%error, "could not turn on TCP keepalive");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_get_keepalive_with_the_configured_idle_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let socket = socket2::SockRef::from(&accepted);
        assert!(!socket.keepalive().unwrap());
        set_keepalive(&accepted, Duration::from_secs(42));
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(42)
        );
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
    }

    fn listening(addr: &str) -> Vec<Listening> {
        vec![
            Listening {
                transport: Transport::Stomp,
                addr: addr.parse().unwrap(),
            },
            Listening {
                transport: Transport::Http,
                addr: "0.0.0.0:8080".parse().unwrap(),
            },
        ]
    }

    #[test]
    fn removing_every_user_and_key_is_refused_and_named() {
        let mut old = Config::defaults();
        old.users_file = "users.toml".into();
        old.jwt_public_keys = vec!["key.pem".into()];
        let new = Config {
            allow_anonymous: true,
            ..Config::defaults()
        };
        let local = listening("127.0.0.1:61613");
        let refusal = reload_refusal((&old, false), (&new, true), &local).unwrap();
        assert!(matches!(refusal, ReloadError::RemovesAuthentication(_)));
        assert!(
            refusal.to_string().starts_with(
                "removing users-file and jwt-public-keys would turn authentication off"
            ),
            "{refusal}"
        );
        // Keys that remain, or still no authentication at all, are fine.
        assert!(reload_refusal((&old, false), (&old, false), &local).is_none());
        assert!(reload_refusal((&new, true), (&new, true), &local).is_none());
    }

    #[test]
    fn a_public_listener_without_authentication_needs_allow_anonymous() {
        let open = Config {
            allow_anonymous: true,
            ..Config::defaults()
        };
        let closed = Config::defaults();
        let public = listening("0.0.0.0:61613");
        let refusal = reload_refusal((&open, true), (&closed, true), &public).unwrap();
        assert!(
            refusal
                .to_string()
                .starts_with("listener 0.0.0.0:61613 is not on loopback"),
            "{refusal}"
        );
        assert!(reload_refusal((&open, true), (&open, true), &public).is_none());
        // Only client listeners count: the HTTP one is public in both lists.
        assert!(
            reload_refusal((&open, true), (&closed, true), &listening("127.0.0.1:1")).is_none()
        );
    }
}
