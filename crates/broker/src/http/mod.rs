//! The HTTP side of the broker: `/healthz`, `/readyz`, `/metrics` and the admin API,
//! served on the `http-listen` addresses. WebSocket listeners answer the probes for
//! requests that are not upgrades, and the rest only with `ws-http-endpoints`. One request
//! per connection; enough for probes, scrapers and operators, with nothing to tune.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::state::BrokerState;

pub mod admin;
pub mod scrape;
pub mod upgrade;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted (the admin API takes none to speak of).
const MAX_BODY: usize = 64 * 1024;

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether header `name` lists `token` (comma-separated, any case).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

/// A response to write.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into().into_bytes(),
        }
    }

    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Writes `response` and closes the connection.
pub async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, response: Response) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.shutdown().await
}

/// What reading a request produced.
#[derive(Debug)]
pub enum Read {
    /// A request; `rest` holds bytes received after its head.
    Request(Request, BytesMut),
    /// The request was refused (already answered by the caller with this response).
    Refused(Response),
}

/// Reads one request head within `timeout`.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> io::Result<Read> {
    let (head_len, mut buf) = tokio::time::timeout(timeout, read_head(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no HTTP request in time"))??;
    let Some(head_len) = head_len else {
        return Ok(Read::Refused(Response::text(
            431,
            "request head too large\n",
        )));
    };
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(
        parsed.parse(&buf[..head_len]),
        Ok(httparse::Status::Complete(_))
    ) {
        return Ok(Read::Refused(Response::text(
            400,
            "malformed HTTP request\n",
        )));
    }
    let target = parsed.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    };
    let request = Request {
        method: parsed.method.unwrap_or("GET").to_owned(),
        path,
        query,
        headers: parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
    };
    let rest = buf.split_off(head_len);
    Ok(Read::Request(request, rest))
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(Option<usize>, BytesMut)> {
    let mut buf = BytesMut::with_capacity(1024);
    let mut searched = 0;
    loop {
        if let Some(at) = buf[searched..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| searched + i + 4)
        {
            return Ok((Some(at), buf));
        }
        if buf.len() > MAX_HEAD {
            return Ok((None, buf));
        }
        searched = buf.len().saturating_sub(3);
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Serves one plain HTTP request on its own connection.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    state: &BrokerState,
    timeout: Duration,
) {
    let response = match read_request(&mut stream, timeout).await {
        Ok(Read::Request(request, rest)) => {
            // A body (admin POSTs carry none that matters) is drained so the client
            // sees the response rather than a reset.
            let length = request
                .header("Content-Length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if length > MAX_BODY {
                Response::text(413, "request body too large\n")
            } else {
                let mut remaining = length.saturating_sub(rest.len());
                let mut sink = [0u8; 1024];
                while remaining > 0 {
                    match tokio::time::timeout(timeout, stream.read(&mut sink)).await {
                        Ok(Ok(n)) if n > 0 => remaining = remaining.saturating_sub(n),
                        _ => break,
                    }
                }
                handle(state, &request)
            }
        }
        Ok(Read::Refused(response)) => response,
        Err(_) => return,
    };
    let _ = respond(&mut stream, response).await;
}

/// Answers a request on an HTTP listener (or, with `ws-http-endpoints`, a request on a
/// WebSocket listener that is not for the STOMP path): the probes, `/metrics` and the
/// admin API.
pub fn handle(state: &BrokerState, request: &Request) -> Response {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/metrics") => Response {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            headers: Vec::new(),
            body: scrape::render(state).into_bytes(),
        },
        (_, path) if path == "/admin" || path.starts_with("/admin/") => {
            admin::handle(state, request)
        }
        (_, "/metrics") => Response::text(405, "only GET\n").with_header("Allow", "GET"),
        _ => probe(state, request),
    }
}

/// Answers only the health probes, `/healthz` and `/readyz`, and 404 to anything else:
/// what a WebSocket listener serves besides the STOMP path by default, since it faces
/// the clients and metrics and the admin API belong on `http-listen`.
pub fn probe(state: &BrokerState, request: &Request) -> Response {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/healthz") => Response::text(200, "ok\n"),
        ("GET", "/readyz") => readiness(state),
        (_, "/healthz" | "/readyz") => {
            Response::text(405, "only GET\n").with_header("Allow", "GET")
        }
        _ => Response::text(404, "not found\n"),
    }
}

/// 200 when the listeners accept connections and, in a cluster, Redis is reachable.
fn readiness(state: &BrokerState) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return Response::text(503, "not ready: shutting down\n");
    }
    if let Some(cluster) = &state.cluster
        && !cluster.stats().connected.load(Ordering::Relaxed)
    {
        return Response::text(503, "not ready: Redis is unreachable\n");
    }
    if state.sessions.memory.is_raised() {
        return Response::text(
            503,
            "not ready: memory alarm (resident memory above memory-high-watermark); publishers are paused\n",
        );
    }
    Response::text(200, "ready\n")
}
