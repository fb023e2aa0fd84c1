//! Starting and stopping the broker: binds listeners, accepts connections under a limit,
//! and shuts down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::Config;
use crate::session::{self, Context, SessionError, Settings};
use crate::vhost::Vhosts;

/// A listener that is accepting connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// The protocol served, as clients would name it (`stomp`).
    pub transport: &'static str,
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
}

/// A running broker.
#[derive(Debug)]
pub struct Running {
    listening: Vec<Listening>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    drain: Duration,
    node_id: String,
}

/// Binds every configured listener and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let addrs = config.listen_addrs();
    if !config.allow_anonymous
        && let Some(public) = addrs.iter().find(|addr| !addr.ip().is_loopback())
    {
        return Err(StartError::Insecure(*public));
    }
    let node_id = if config.node_id.is_empty() {
        random_node_id()
    } else {
        config.node_id.clone()
    };
    let context = Context {
        settings: Arc::new(Settings::from_config(&config, &node_id)),
        vhosts: Arc::new(Vhosts::new(&config, &node_id)),
        shutdown: CancellationToken::new(),
    };
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let tracker = TaskTracker::new();
    let mut listening = Vec::new();
    for addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        info!(%addr, transport = "stomp", "listening");
        listening.push(Listening {
            transport: "stomp",
            addr,
        });
        let acceptor = Acceptor {
            context: context.clone(),
            permits: permits.clone(),
            max_connections: config.max_connections,
            tracker: tracker.clone(),
        };
        tracker.spawn(acceptor.run(listener));
    }
    Ok(Running {
        listening,
        shutdown: context.shutdown,
        tracker,
        drain: config.drain_timeout(),
        node_id,
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

    /// Stops accepting, asks every session to flush and close, and waits for them up to
    /// the drain timeout. Returns whether every session finished in time.
    pub async fn shutdown(self) -> bool {
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
        finished
    }
}

/// Accepts connections of one listener.
struct Acceptor {
    context: Context,
    permits: Arc<Semaphore>,
    max_connections: usize,
    tracker: TaskTracker,
}

impl Acceptor {
    async fn run(self, listener: TcpListener) {
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
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let context = self.context.clone();
                    self.tracker.spawn(async move {
                        serve_tcp(stream, peer, context).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    let limit = self.max_connections;
                    self.tracker.spawn(async move {
                        let mut stream = stream;
                        let error = SessionError::TooManyConnections(limit);
                        session::refuse(&mut stream, error, None).await;
                    });
                }
            }
        }
    }
}

async fn serve_tcp(stream: TcpStream, peer: SocketAddr, context: Context) {
    let (read, write) = stream.into_split();
    session::serve(read, write, context, peer.to_string(), "tcp").await;
}

/// Eight random hex digits.
fn random_node_id() -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("the OS has a random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
