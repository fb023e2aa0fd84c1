//! The WebSocket transport: the upgrade (Origin checks, STOMP subprotocol choice; other
//! HTTP requests go to [`crate::http`], probes only unless `ws-http-endpoints`) and [`WsIo`], which shows the session the
//! message stream as plain bytes.
//!
//! STOMP over WebSocket needs no framing of its own: several STOMP frames may share a
//! message and one frame may span messages, so incoming payloads are simply concatenated
//! for the session's decoder, and each batch the session writer flushes becomes one
//! message.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::http;
use crate::state::BrokerState;

/// STOMP subprotocols, most preferred first.
const SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

/// WebSocket listener settings.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// The path that upgrades to STOMP (RabbitMQ uses `/ws`).
    pub path: String,
    /// Largest WebSocket message, and largest batch written as one message.
    pub max_message: usize,
    /// Origins allowed to connect; empty allows any. `*` also allows any.
    pub allowed_origins: Vec<String>,
    /// Whether other paths get `/metrics` and the admin API, or only the probes.
    pub http_endpoints: bool,
}

/// What an accepted HTTP connection turned out to be.
#[derive(Debug)]
pub enum Accepted<S> {
    /// A WebSocket for a STOMP session.
    WebSocket(Box<WsRequest<S>>),
    /// A plain HTTP request that was answered (health probe, refusal); nothing more to do.
    Answered,
}

/// An upgraded connection and what its request said.
#[derive(Debug)]
pub struct WsRequest<S> {
    /// The message stream as bytes.
    pub io: WsIo<S>,
    /// The query string of the upgrade request, if any (used for token parameters).
    pub query: Option<String>,
    /// The subprotocol chosen, if the client offered one.
    pub protocol: Option<&'static str>,
}

/// Reads one HTTP request and answers it: the STOMP path upgrades to WebSocket; other
/// requests get the health probes (and, with [`WsSettings::http_endpoints`], `/metrics`
/// and the admin API) as plain HTTP.
pub async fn accept<S>(
    mut stream: S,
    settings: &WsSettings,
    state: &BrokerState,
) -> io::Result<Accepted<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The request has connect-timeout-ms, as reloaded last.
    let timeout = state.settings().connect_timeout;
    let (request, rest) = match http::read_request(&mut stream, timeout).await? {
        http::Read::Request(request, rest) => (request, rest),
        http::Read::Refused(response) => {
            http::respond(&mut stream, response).await?;
            return Ok(Accepted::Answered);
        }
    };
    if request.path != settings.path {
        let response = if settings.http_endpoints {
            http::handle(state, &request)
        } else {
            http::probe(state, &request)
        };
        http::respond(&mut stream, response).await?;
        return Ok(Accepted::Answered);
    }
    if let Some(refusal) = refuse_upgrade(&request, settings) {
        http::respond(&mut stream, refusal).await?;
        return Ok(Accepted::Answered);
    }
    let key = request.header("Sec-WebSocket-Key").unwrap_or_default();
    let offered: Vec<&str> = request
        .header("Sec-WebSocket-Protocol")
        .map(|v| v.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let protocol = SUBPROTOCOLS
        .into_iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)));

    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    if let Some(protocol) = protocol {
        response.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;

    let config = WebSocketConfig::default()
        .max_message_size(Some(settings.max_message))
        .max_frame_size(Some(settings.max_message));
    let ws =
        WebSocketStream::from_partially_read(stream, rest.to_vec(), Role::Server, Some(config))
            .await;
    Ok(Accepted::WebSocket(Box::new(WsRequest {
        io: WsIo::new(ws, settings.max_message),
        query: request.query,
        protocol,
    })))
}

/// Why an upgrade request to the STOMP path is refused, if it is.
fn refuse_upgrade(request: &http::Request, settings: &WsSettings) -> Option<http::Response> {
    if request.method != "GET" {
        return Some(http::Response::text(405, "only GET\n").with_header("Allow", "GET"));
    }
    if let Some(origin) = request.header("Origin")
        && !origin_allowed(origin, &settings.allowed_origins)
    {
        tracing::info!(origin, "WebSocket upgrade refused: origin not allowed");
        return Some(http::Response::text(403, "origin not allowed\n"));
    }
    if !request.has_token("Upgrade", "websocket") || !request.has_token("Connection", "upgrade") {
        let response = http::Response::text(426, "this path speaks STOMP over WebSocket only\n");
        return Some(response.with_header("Upgrade", "websocket"));
    }
    if request.header("Sec-WebSocket-Version") != Some("13") {
        let response = http::Response::text(426, "WebSocket version 13 only\n");
        return Some(response.with_header("Sec-WebSocket-Version", "13"));
    }
    if request.header("Sec-WebSocket-Key").is_none() {
        return Some(http::Response::text(400, "missing Sec-WebSocket-Key\n"));
    }
    None
}

fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin.trim_end_matches('/')))
}

// ===== WsIo =====

/// A WebSocket seen as a byte stream. Reads yield message payloads in order; writes are
/// buffered and sent as one message per flush (text when the bytes are UTF-8, as most
/// browser clients expect, binary otherwise). Pings are answered by tungstenite.
#[derive(Debug)]
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    incoming: Bytes,
    outgoing: BytesMut,
    max_message: usize,
}

impl<S> WsIo<S> {
    fn new(ws: WebSocketStream<S>, max_message: usize) -> WsIo<S> {
        WsIo {
            ws,
            incoming: Bytes::new(),
            outgoing: BytesMut::new(),
            max_message,
        }
    }
}

fn into_io(error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(error) => error,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::ErrorKind::BrokenPipe.into()
        }
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsIo<S> {
    /// Sends what is buffered as one message.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.outgoing.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let mut ws = Pin::new(&mut self.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(into_io)?;
        let payload = self.outgoing.split().freeze();
        let message = if std::str::from_utf8(&payload).is_ok() {
            Message::Text(Utf8Bytes::try_from(payload).expect("checked UTF-8"))
        } else {
            Message::Binary(payload)
        };
        ws.start_send(message).map_err(into_io)?;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.incoming.is_empty() {
                let n = this.incoming.len().min(buf.remaining());
                buf.put_slice(&this.incoming[..n]);
                this.incoming.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(payload))) => this.incoming = payload,
                Some(Ok(Message::Text(text))) => this.incoming = Bytes::from(text),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => {
                    return Poll::Ready(Ok(()));
                }
                Some(Err(error)) => return Poll::Ready(Err(into_io(error))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.outgoing.len() + data.len() > this.max_message && !this.outgoing.is_empty() {
            ready!(this.poll_send(cx))?;
        }
        let n = data.len().min(this.max_message.max(1));
        this.outgoing.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.ws).poll_flush(cx).map_err(into_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.ws).poll_close(cx).map_err(into_io)
    }
}
