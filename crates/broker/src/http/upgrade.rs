//! The WebSocket upgrade: a request to the STOMP path (Origin allow-list, STOMP
//! subprotocol choice) becomes a [`WsIo`] byte stream for a session; any other request on a
//! WebSocket listener is answered as plain HTTP (the probes, and `/metrics` and the admin
//! API with `ws-http-endpoints`).

use std::io;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::{Read, Request, Response, handle, probe, read_request, respond};
use crate::state::BrokerState;
use crate::transport::ws::WsIo;

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
    let timeout = state.sessions.settings().connect_timeout;
    let (request, rest) = match read_request(&mut stream, timeout).await? {
        Read::Request(request, rest) => (request, rest),
        Read::Refused(response) => {
            respond(&mut stream, response).await?;
            return Ok(Accepted::Answered);
        }
    };
    if request.path != settings.path {
        let response = if settings.http_endpoints {
            handle(state, &request)
        } else {
            probe(state, &request)
        };
        respond(&mut stream, response).await?;
        return Ok(Accepted::Answered);
    }
    if let Some(refusal) = refuse_upgrade(&request, settings) {
        respond(&mut stream, refusal).await?;
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
fn refuse_upgrade(request: &Request, settings: &WsSettings) -> Option<Response> {
    if request.method != "GET" {
        return Some(Response::text(405, "only GET\n").with_header("Allow", "GET"));
    }
    if let Some(origin) = request.header("Origin")
        && !origin_allowed(origin, &settings.allowed_origins)
    {
        tracing::info!(origin, "WebSocket upgrade refused: origin not allowed");
        return Some(Response::text(403, "origin not allowed\n"));
    }
    if !request.has_token("Upgrade", "websocket") || !request.has_token("Connection", "upgrade") {
        let response = Response::text(426, "this path speaks STOMP over WebSocket only\n");
        return Some(response.with_header("Upgrade", "websocket"));
    }
    if request.header("Sec-WebSocket-Version") != Some("13") {
        let response = Response::text(426, "WebSocket version 13 only\n");
        return Some(response.with_header("Sec-WebSocket-Version", "13"));
    }
    if request.header("Sec-WebSocket-Key").is_none() {
        return Some(Response::text(400, "missing Sec-WebSocket-Key\n"));
    }
    None
}

fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin.trim_end_matches('/')))
}
