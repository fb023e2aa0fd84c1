//! Starting and stopping the broker: binds listeners, accepts connections under a limit,
//! hands each to its transport and then to a session, and shuts down gracefully.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use postbox_cluster::ClusterRelay;

use crate::Config;
use crate::auth::AuthHandle;
use crate::session::{self, Context, Peer, SessionError, Settings};
use crate::transport::tls::{CertStore, TlsError};
use crate::transport::ws::{self, Accepted, WsSettings};
use crate::vhost::Vhosts;

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
}

impl Transport {
    /// The name used in logs and in the `listening` lines.
    pub const fn name(self) -> &'static str {
        match self {
            Transport::Stomp => "stomp",
            Transport::StompTls => "stomp-tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
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
    drain: Duration,
    node_id: String,
    ready: Arc<AtomicBool>,
    certs: Option<Arc<CertStore>>,
    auth: Arc<AuthHandle>,
    cluster: Option<ClusterRelay>,
}

/// What every accept loop shares.
#[derive(Clone)]
struct Shared {
    context: Context,
    permits: Arc<Semaphore>,
    max_connections: usize,
    tracker: TaskTracker,
    tls: Option<TlsAcceptor>,
    ws: Arc<WsSettings>,
    ready: Arc<AtomicBool>,
    /// The WebSocket query parameter that may carry a token.
    query_param: String,
}

/// Binds every configured listener and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let listeners = config.listeners();
    let auth = AuthHandle::load(&config).map_err(StartError::Auth)?;
    if !config.allow_anonymous
        && auth.current().is_open()
        && let Some((_, public)) = listeners.iter().find(|(_, addr)| !addr.ip().is_loopback())
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
    let context = Context {
        settings: Arc::new(Settings::from_config(&config, &node_id)),
        vhosts: Arc::new(vhosts),
        shutdown: CancellationToken::new(),
        auth: auth.clone(),
    };
    let shared = Shared {
        context: context.clone(),
        permits: Arc::new(Semaphore::new(config.max_connections)),
        max_connections: config.max_connections,
        tracker: TaskTracker::new(),
        tls,
        ws: Arc::new(WsSettings {
            path: config.ws_path.clone(),
            max_message: config.ws_max_message_size,
            allowed_origins: config.ws_allowed_origins.clone(),
            request_timeout: config.connect_timeout(),
        }),
        ready: Arc::new(AtomicBool::new(true)),
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
    if let Some(store) = &certs
        && config.tls_reload_ms > 0
    {
        let every = Duration::from_millis(config.tls_reload_ms);
        tokio::spawn(store.clone().watch(every, context.shutdown.clone()));
    }
    Ok(Running {
        listening,
        shutdown: context.shutdown,
        tracker: shared.tracker,
        drain: config.drain_timeout(),
        node_id,
        ready: shared.ready,
        certs,
        auth,
        cluster,
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

    /// Reloads what can change without a restart (the TLS certificate, JWT keys, the
    /// users file), as on SIGHUP.
    pub fn reload(&self) {
        if let Some(store) = &self.certs {
            store.reload_logged("reload requested");
        }
        self.auth.reload();
    }

    /// Stops accepting, asks every session to flush and close, and waits for them up to
    /// the drain timeout. Returns whether every session finished in time.
    pub async fn shutdown(self) -> bool {
        self.ready.store(false, Ordering::Release);
        self.shutdown.cancel();
        self.tracker.close();
        let finished = tokio::time::timeout(self.drain, self.tracker.wait())
            .await
            .is_ok();
        if !finished {
            warn!(
                drain_ms = self.drain.as_millis() as u64,
                "some connections did not close within the drain timeout"
            );
        }
        if let Some(cluster) = &self.cluster {
            // Sessions released their queue messages as they closed; give the relay a
            // moment to send that, then leave so others stop counting this node at once.
            tokio::time::sleep(Duration::from_millis(100)).await;
            cluster.leave().await;
        }
        finished
    }

    /// The cluster relay, when clustered.
    pub fn cluster(&self) -> Option<&ClusterRelay> {
        self.cluster.as_ref()
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
            let permit = self.permits.clone().try_acquire_owned();
            let shared = self.clone();
            self.tracker.spawn(async move {
                match permit {
                    Ok(permit) => {
                        shared.connection(stream, peer, transport).await;
                        drop(permit);
                    }
                    Err(_) => shared.refuse_over_limit(stream, transport).await,
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
        match transport {
            Transport::Stomp => {
                let (read, write) = stream.into_split();
                session::serve(read, write, self.context.clone(), peer_label).await;
            }
            Transport::StompTls => {
                if let Some(tls) = self.handshake(stream, peer).await {
                    self.serve_split(tls, peer_label).await;
                }
            }
            Transport::Ws => self.websocket(stream, peer_label).await,
            Transport::Wss => {
                if let Some(tls) = self.handshake(stream, peer).await {
                    self.websocket(tls, peer_label).await;
                }
            }
        }
    }

    async fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let acceptor = self.tls.as_ref()?;
        let timeout = self.context.settings.connect_timeout;
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
        match ws::accept(stream, &self.ws, &self.ready).await {
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
        let error = SessionError::TooManyConnections(self.max_connections);
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
