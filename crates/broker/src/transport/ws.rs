//! The WebSocket transport: the HTTP side of the listener (upgrade, `/healthz`, Origin
//! checks, STOMP subprotocol choice) and [`WsIo`], which shows the session the message
//! stream as plain bytes.
//!
//! STOMP over WebSocket needs no framing of its own: several STOMP frames may share a
//! message and one frame may span messages, so incoming payloads are simply concatenated
//! for the session's decoder, and each batch the session writer flushes becomes one
//! message.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

/// Largest HTTP request head accepted before the upgrade.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
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
    /// Time allowed for the HTTP request.
    pub request_timeout: Duration,
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

/// Reads one HTTP request and answers it: `/healthz` gets 200 (503 while the broker
/// stops), the STOMP path upgrades to WebSocket, everything else is refused.
pub async fn accept<S>(
    mut stream: S,
    settings: &WsSettings,
    ready: &AtomicBool,
) -> io::Result<Accepted<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (head_len, buf) = tokio::time::timeout(settings.request_timeout, read_head(&mut stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no HTTP request in time"))??;
    let Some(head_len) = head_len else {
        respond(
            &mut stream,
            431,
            "Request Header Fields Too Large",
            &[],
            "request head too large\n",
        )
        .await?;
        return Ok(Accepted::Answered);
    };
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(
        request.parse(&buf[..head_len]),
        Ok(httparse::Status::Complete(_))
    ) {
        respond(
            &mut stream,
            400,
            "Bad Request",
            &[],
            "malformed HTTP request\n",
        )
        .await?;
        return Ok(Accepted::Answered);
    }
    let target = request.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };

    if request.method != Some("GET") {
        respond(
            &mut stream,
            405,
            "Method Not Allowed",
            &[("Allow", "GET")],
            "only GET\n",
        )
        .await?;
        return Ok(Accepted::Answered);
    }
    if path == "/healthz" {
        if ready.load(Ordering::Acquire) {
            respond(&mut stream, 200, "OK", &[], "ok\n").await?;
        } else {
            respond(
                &mut stream,
                503,
                "Service Unavailable",
                &[],
                "shutting down\n",
            )
            .await?;
        }
        return Ok(Accepted::Answered);
    }
    if path != settings.path {
        respond(&mut stream, 404, "Not Found", &[], "not found\n").await?;
        return Ok(Accepted::Answered);
    }
    if let Some(origin) = header("Origin")
        && !origin_allowed(origin, &settings.allowed_origins)
    {
        tracing::info!(origin, "WebSocket upgrade refused: origin not allowed");
        respond(&mut stream, 403, "Forbidden", &[], "origin not allowed\n").await?;
        return Ok(Accepted::Answered);
    }
    if !has_token("Upgrade", "websocket") || !has_token("Connection", "upgrade") {
        let body = "this path speaks STOMP over WebSocket only\n";
        respond(
            &mut stream,
            426,
            "Upgrade Required",
            &[("Upgrade", "websocket")],
            body,
        )
        .await?;
        return Ok(Accepted::Answered);
    }
    if header("Sec-WebSocket-Version") != Some("13") {
        let extra = [("Sec-WebSocket-Version", "13")];
        respond(
            &mut stream,
            426,
            "Upgrade Required",
            &extra,
            "WebSocket version 13 only\n",
        )
        .await?;
        return Ok(Accepted::Answered);
    }
    let Some(key) = header("Sec-WebSocket-Key") else {
        respond(
            &mut stream,
            400,
            "Bad Request",
            &[],
            "missing Sec-WebSocket-Key\n",
        )
        .await?;
        return Ok(Accepted::Answered);
    };
    let offered: Vec<&str> = header("Sec-WebSocket-Protocol")
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

    let leftover = buf[head_len..].to_vec();
    let config = WebSocketConfig::default()
        .max_message_size(Some(settings.max_message))
        .max_frame_size(Some(settings.max_message));
    let ws =
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(config)).await;
    Ok(Accepted::WebSocket(Box::new(WsRequest {
        io: WsIo::new(ws, settings.max_message),
        query,
        protocol,
    })))
}

fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin.trim_end_matches('/')))
}

/// Reads until the blank line ending the head; `None` if it is too large.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(Option<usize>, BytesMut)> {
    let mut buf = BytesMut::with_capacity(1024);
    let mut searched = 0;
    loop {
        if let Some(at) = find_blank_line(&buf, searched) {
            return Ok((Some(at), buf));
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok((None, buf));
        }
        searched = buf.len().saturating_sub(3);
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

fn find_blank_line(buf: &[u8], from: usize) -> Option<usize> {
    buf[from..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4)
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(body);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
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

/// Set while the broker accepts connections; `/healthz` reports it.
pub type Readiness = Arc<AtomicBool>;
