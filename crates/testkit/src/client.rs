//! A raw STOMP client for tests: sends exactly the frames or bytes it is given and
//! checks what comes back, with a timeout on every wait.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use postbox_stomp::{Command, Frame, FrameError, Item, Limits, StompCodec, Version, encode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::codec::Decoder;

/// A byte stream a client can run over: TCP or TLS.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// A boxed byte stream.
pub type BoxStream = Pin<Box<dyn ByteStream>>;

/// How the client's bytes travel.
enum Link {
    Stream(BoxStream),
    WebSocket(Box<WebSocketStream<BoxStream>>),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Link::Stream(_) => "Stream",
            Link::WebSocket(_) => "WebSocket",
        })
    }
}

/// Opens a TCP connection to `addr`, within the default timeout.
pub async fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = tokio::time::timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connecting to {addr} timed out"))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    stream
}

/// Opens TCP then TLS (verifying `localhost`); the handshake's result is returned so tests
/// can check refusals.
pub async fn tls(addr: SocketAddr, connector: &TlsConnector) -> std::io::Result<BoxStream> {
    let stream = tcp(addr).await;
    let tls = tokio::time::timeout(
        DEFAULT_TIMEOUT,
        connector.connect(crate::certs::localhost(), stream),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    Ok(Box::pin(tls))
}

/// How long a test waits for any single expected event.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a read produced.
#[derive(Debug)]
pub enum Received {
    /// A frame.
    Frame(Frame),
    /// A heart-beat EOL.
    HeartBeat,
    /// The server closed the connection.
    Closed,
    /// Nothing arrived in time.
    TimedOut,
    /// The server sent bytes that are not valid STOMP.
    Malformed(FrameError),
}

/// A test client on one connection.
#[derive(Debug)]
pub struct Client {
    link: Link,
    buf: BytesMut,
    codec: StompCodec,
    /// Frames that arrived while waiting for a receipt, handed out first.
    held: std::collections::VecDeque<Frame>,
    /// Heart-beats received so far.
    pub heart_beats: usize,
}

impl Client {
    /// Opens a TCP connection; no STOMP is sent yet.
    pub async fn open(addr: SocketAddr) -> Client {
        Client::over(Box::pin(tcp(addr).await))
    }

    /// Opens a TLS connection trusting what `connector` trusts; no STOMP is sent yet.
    pub async fn open_tls(addr: SocketAddr, connector: &TlsConnector) -> Client {
        let stream = tls(addr, connector).await.expect("TLS handshake");
        Client::over(stream)
    }

    /// Opens a WebSocket to `path` (over TLS when `connector` is given) offering
    /// `protocols`; returns the client and the subprotocol the server chose.
    pub async fn open_ws(
        addr: SocketAddr,
        path: &str,
        protocols: &[&str],
        connector: Option<&TlsConnector>,
    ) -> (Client, Option<String>) {
        let stream: BoxStream = match connector {
            Some(connector) => tls(addr, connector).await.expect("TLS handshake"),
            None => Box::pin(tcp(addr).await),
        };
        let scheme = if connector.is_some() { "wss" } else { "ws" };
        let host = if connector.is_some() {
            "localhost".to_owned()
        } else {
            addr.ip().to_string()
        };
        let mut request = format!("{scheme}://{host}:{}{path}", addr.port())
            .into_client_request()
            .expect("valid URL");
        if !protocols.is_empty() {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(&protocols.join(", ")).expect("valid header"),
            );
        }
        let (ws, response) = tokio::time::timeout(
            DEFAULT_TIMEOUT,
            tokio_tungstenite::client_async(request, stream),
        )
        .await
        .expect("WebSocket handshake timed out")
        .expect("WebSocket handshake");
        let protocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (Client::with_link(Link::WebSocket(Box::new(ws))), protocol)
    }

    /// A client over an already open byte stream.
    pub fn over(stream: BoxStream) -> Client {
        Client::with_link(Link::Stream(stream))
    }

    fn with_link(link: Link) -> Client {
        let limits = Limits {
            max_body: 64 * 1024 * 1024,
            max_frame_size: 65 * 1024 * 1024,
            ..Limits::default()
        };
        Client {
            link,
            buf: BytesMut::new(),
            codec: StompCodec::new(Version::V1_2, limits),
            held: std::collections::VecDeque::new(),
            heart_beats: 0,
        }
    }

    /// Opens a connection and completes a STOMP 1.2 CONNECT with `headers` added.
    pub async fn connect(addr: SocketAddr, headers: &[(&str, &str)]) -> Client {
        let mut client = Client::open(addr).await;
        client.stomp_connect(headers).await;
        client
    }

    /// Completes a STOMP 1.2 CONNECT with `headers` added on an open client.
    pub async fn stomp_connect(&mut self, headers: &[(&str, &str)]) {
        let client = self;
        let mut frame = Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("host", "/");
        for (name, value) in headers {
            frame = frame.header(*name, *value);
        }
        client.send(&frame).await;
        let connected = client.expect(Command::Connected).await;
        let version = connected
            .get("version")
            .and_then(Version::parse)
            .unwrap_or(Version::V1_0);
        client.set_version(version);
    }

    /// Switches the codec's escaping rules.
    pub fn set_version(&mut self, version: Version) {
        self.codec.set_version(version);
    }

    /// Sends one frame, encoded for the current version.
    pub async fn send(&mut self, frame: &Frame) {
        let mut wire = BytesMut::new();
        encode::encode_frame(frame, self.codec.version(), &mut wire);
        self.send_raw(&wire).await;
    }

    /// Sends bytes exactly as given (one message on a WebSocket).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(DEFAULT_TIMEOUT, self.try_send_raw(bytes))
            .await
            .expect("writing to the broker timed out")
            .expect("writing to the broker failed");
    }

    /// Like [`Client::send_raw`] but reports failure instead of panicking (the server
    /// may already have closed).
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.link {
            Link::Stream(stream) => stream.write_all(bytes).await,
            Link::WebSocket(ws) => {
                let message = match std::str::from_utf8(bytes) {
                    Ok(text) => Message::Text(Utf8Bytes::from(text)),
                    Err(_) => Message::Binary(Bytes::copy_from_slice(bytes)),
                };
                ws.send(message).await.map_err(std::io::Error::other)
            }
        }
    }

    /// Sends one WebSocket message as given (binary or text); panics on other links.
    pub async fn send_ws(&mut self, message: Message) {
        let Link::WebSocket(ws) = &mut self.link else {
            panic!("not a WebSocket client")
        };
        ws.send(message).await.expect("WebSocket send");
    }

    /// The next WebSocket message as received (no STOMP decoding); panics on other links.
    pub async fn next_ws(&mut self, timeout: Duration) -> Option<Message> {
        let Link::WebSocket(ws) = &mut self.link else {
            panic!("not a WebSocket client")
        };
        match tokio::time::timeout(timeout, ws.next()).await {
            Ok(Some(Ok(message))) => Some(message),
            _ => None,
        }
    }

    /// Reads more bytes into the decode buffer; 0 at end of stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        match &mut self.link {
            Link::Stream(stream) => {
                self.buf.reserve(8192);
                stream.read_buf(&mut self.buf).await
            }
            Link::WebSocket(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(0),
                    Some(Ok(Message::Text(text))) => {
                        self.buf.extend_from_slice(text.as_bytes());
                        return Ok(text.len().max(1));
                    }
                    Some(Ok(Message::Binary(data))) => {
                        self.buf.extend_from_slice(&data);
                        return Ok(data.len().max(1));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Err(std::io::Error::other(error)),
                }
            },
        }
    }

    /// The next thing to arrive within `timeout`, heart-beats included.
    pub async fn receive(&mut self, timeout: Duration) -> Received {
        if let Some(frame) = self.held.pop_front() {
            return Received::Frame(frame);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(Item::Frame(frame))) => return Received::Frame(frame),
                Ok(Some(Item::HeartBeat)) => {
                    self.heart_beats += 1;
                    return Received::HeartBeat;
                }
                Ok(None) => {}
                Err(error) => return Received::Malformed(error),
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Err(_) => return Received::TimedOut,
                Ok(Ok(0)) | Ok(Err(_)) => return Received::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next frame within `timeout`, skipping heart-beats; `None` on close or timeout.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.receive(left).await {
                Received::Frame(frame) => return Some(frame),
                Received::HeartBeat => continue,
                Received::Closed | Received::TimedOut => return None,
                Received::Malformed(error) => panic!("server sent a malformed frame: {error}"),
            }
        }
    }

    /// The next frame, which must have `command`.
    pub async fn expect(&mut self, command: Command) -> Frame {
        match self.next_frame(DEFAULT_TIMEOUT).await {
            Some(frame) if frame.command == command => frame,
            Some(frame) => panic!("expected {command}, got {frame:?}"),
            None => panic!("expected {command}, got nothing (closed or timed out)"),
        }
    }

    /// The next frame must be ERROR; returns it.
    pub async fn expect_error(&mut self) -> Frame {
        self.expect(Command::Error).await
    }

    /// Waits for the RECEIPT for `receipt`. MESSAGE frames that arrive first (a
    /// subscription may start delivering before its receipt) are kept for later reads.
    pub async fn expect_receipt(&mut self, receipt: &str) {
        let mut early = Vec::new();
        loop {
            let frame = match self.next_frame(DEFAULT_TIMEOUT).await {
                Some(frame) => frame,
                None => panic!("expected RECEIPT {receipt}, got nothing (closed or timed out)"),
            };
            match frame.command {
                Command::Receipt => {
                    assert_eq!(frame.get("receipt-id"), Some(receipt), "{frame:?}");
                    break;
                }
                Command::Message => early.push(frame),
                _ => panic!("expected RECEIPT {receipt}, got {frame:?}"),
            }
        }
        for frame in early.into_iter().rev() {
            self.held.push_front(frame);
        }
    }

    /// The server must close the connection (within the timeout) without sending frames.
    pub async fn expect_closed(&mut self) {
        let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.receive(left).await {
                Received::Closed => return,
                Received::HeartBeat => continue,
                Received::TimedOut => panic!("the server did not close the connection"),
                Received::Frame(frame) => panic!("expected the connection to close, got {frame:?}"),
                Received::Malformed(error) => panic!("server sent a malformed frame: {error}"),
            }
        }
    }

    /// Nothing but heart-beats may arrive for `period`.
    pub async fn expect_no_frame(&mut self, period: Duration) {
        if let Some(frame) = self.next_frame(period).await {
            panic!("expected no frame, got {frame:?}");
        }
    }

    /// Subscribes with `id` to `destination` plus extra headers, and waits for the receipt
    /// so the subscription is known to be active.
    pub async fn subscribe(&mut self, id: &str, destination: &str, extra: &[(&str, &str)]) {
        let receipt = format!("sub-{id}");
        let mut frame = Frame::new(Command::Subscribe)
            .header("id", id)
            .header("destination", destination)
            .header("receipt", receipt.as_str());
        for (name, value) in extra {
            frame = frame.header(*name, *value);
        }
        self.send(&frame).await;
        self.expect_receipt(&receipt).await;
    }

    /// Sends a text message to `destination`.
    pub async fn publish(&mut self, destination: &str, body: &str) {
        let frame = Frame::new(Command::Send)
            .header("destination", destination)
            .header("content-type", "text/plain")
            .body(body.to_owned());
        self.send(&frame).await;
    }

    /// Sends DISCONNECT with a receipt and checks the receipt then the close.
    pub async fn disconnect(mut self) {
        self.send(&Frame::new(Command::Disconnect).header("receipt", "bye"))
            .await;
        self.expect_receipt("bye").await;
        self.expect_closed().await;
    }
}
