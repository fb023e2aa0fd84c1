//! A raw STOMP client for tests: sends exactly the frames or bytes it is given and
//! checks what comes back, with a timeout on every wait.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use postbox_stomp::{Command, Frame, FrameError, Item, Limits, StompCodec, Version, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

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

/// A test client on one TCP connection.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
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
        let stream = tokio::time::timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connecting to {addr} timed out"))
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        let limits = Limits {
            max_body: 64 * 1024 * 1024,
            max_frame_size: 65 * 1024 * 1024,
            ..Limits::default()
        };
        Client {
            stream,
            buf: BytesMut::new(),
            codec: StompCodec::new(Version::V1_2, limits),
            held: std::collections::VecDeque::new(),
            heart_beats: 0,
        }
    }

    /// Opens a connection and completes a STOMP 1.2 CONNECT with `headers` added.
    pub async fn connect(addr: SocketAddr, headers: &[(&str, &str)]) -> Client {
        let mut client = Client::open(addr).await;
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
        client
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

    /// Sends bytes exactly as given.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(DEFAULT_TIMEOUT, self.stream.write_all(bytes))
            .await
            .expect("writing to the broker timed out")
            .expect("writing to the broker failed");
    }

    /// Like [`Client::send_raw`] but reports failure instead of panicking (the server
    /// may already have closed).
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
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
            self.buf.reserve(8192);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
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
