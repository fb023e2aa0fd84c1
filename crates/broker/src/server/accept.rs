//! Accepting connections: the accept loop per listener, the connection limit, TLS
//! handshakes, the WebSocket upgrade, and handing each connection to a session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::http;
use crate::http::upgrade::{self, Accepted, WsSettings};
use crate::metrics::DisconnectReason;
use crate::session::{self, Context, Peer, SessionError};
use crate::state::BrokerState;
use crate::transport::Transport;
use tokio_util::task::TaskTracker;

/// What every accept loop shares.
#[derive(Clone)]
pub(super) struct Shared {
    /// The broker state, for readiness, HTTP and the WebSocket handshake.
    pub(super) state: Arc<BrokerState>,
    /// What each session gets.
    pub(super) context: Context,
    pub(super) permits: Arc<Semaphore>,
    pub(super) tracker: TaskTracker,
    pub(super) tls: Option<TlsAcceptor>,
    pub(super) ws: Arc<WsSettings>,
    /// The WebSocket query parameter that may carry a token.
    pub(super) query_param: String,
}

impl Shared {
    pub(super) async fn accept_loop(self, listener: TcpListener, transport: Transport) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

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
}
