//! A lean STOMP connection for load generation.

use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use postbox_stomp::{Command, Frame, Item, Limits, StompCodec, Version, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::codec::Decoder;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub login: Option<String>,
    pub passcode: Option<String>,
    pub host: String,
    /// Speak STOMP over WebSocket at this path instead of plain TCP.
    pub ws_path: Option<String>,
}

type Ws = WebSocketStream<TcpStream>;

#[derive(Debug)]
enum ReadIo {
    Tcp(OwnedReadHalf),
    Ws(SplitStream<Ws>),
}

#[derive(Debug)]
enum WriteIo {
    Tcp(OwnedWriteHalf),
    Ws(SplitSink<Ws, Message>),
}

/// The reading half of a connection.
#[derive(Debug)]
pub struct Reader {
    io: ReadIo,
    buf: BytesMut,
    codec: StompCodec,
}

/// The writing half of a connection, with its own buffer for batching.
#[derive(Debug)]
pub struct Writer {
    io: WriteIo,
    pub buf: BytesMut,
}

/// Opens a connection and completes CONNECT (1.2, no heart-beats).
pub async fn connect(target: &Target) -> io::Result<(Reader, Writer)> {
    connect_from(target, None).await
}

/// Like [`connect`], from a chosen local address (many 127.0.0.x sources keep the
/// ephemeral ports of one source from running out).
pub async fn connect_from(
    target: &Target,
    source: Option<std::net::IpAddr>,
) -> io::Result<(Reader, Writer)> {
    let stream = match source {
        None => TcpStream::connect(target.addr).await?,
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(std::net::SocketAddr::new(ip, 0))?;
            socket.connect(target.addr).await?
        }
    };
    stream.set_nodelay(true)?;
    let (read, write) = match &target.ws_path {
        None => {
            let (read, write) = stream.into_split();
            (ReadIo::Tcp(read), WriteIo::Tcp(write))
        }
        Some(path) => {
            let mut request = format!("ws://{}{path}", target.addr)
                .into_client_request()
                .map_err(io::Error::other)?;
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static("v12.stomp"),
            );
            let (ws, _) = tokio_tungstenite::client_async(request, stream)
                .await
                .map_err(io::Error::other)?;
            let (sink, stream) = ws.split();
            (ReadIo::Ws(stream), WriteIo::Ws(sink))
        }
    };
    let limits = Limits {
        max_body: 64 * 1024 * 1024,
        max_frame_size: 65 * 1024 * 1024,
        ..Limits::default()
    };
    let mut reader = Reader {
        io: read,
        buf: BytesMut::with_capacity(64 * 1024),
        codec: StompCodec::new(Version::V1_2, limits),
    };
    let mut writer = Writer {
        io: write,
        buf: BytesMut::with_capacity(64 * 1024),
    };
    let mut frame = Frame::new(Command::Connect)
        .header("accept-version", "1.2")
        .header("host", target.host.as_str())
        .header("heart-beat", "0,0");
    if let Some(login) = &target.login {
        frame = frame.header("login", login.as_str());
    }
    if let Some(passcode) = &target.passcode {
        frame = frame.header("passcode", passcode.as_str());
    }
    writer.send(&frame).await?;
    let reply = reader.next().await?;
    match reply {
        Some(frame) if frame.command == Command::Connected => Ok((reader, writer)),
        other => Err(io::Error::other(format!("CONNECT refused: {other:?}"))),
    }
}

impl Reader {
    /// The next frame already in the buffer, without reading from the socket.
    pub fn buffered(&mut self) -> io::Result<Option<Frame>> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(Item::Frame(frame))) => return Ok(Some(frame)),
                Ok(Some(Item::HeartBeat)) => continue,
                Ok(None) => return Ok(None),
                Err(error) => return Err(io::Error::other(error.to_string())),
            }
        }
    }

    /// Reads more bytes from the socket; `false` at end of stream.
    pub async fn fill(&mut self) -> io::Result<bool> {
        match &mut self.io {
            ReadIo::Tcp(io) => {
                if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                    self.buf.reserve(64 * 1024);
                }
                Ok(io.read_buf(&mut self.buf).await? > 0)
            }
            ReadIo::Ws(stream) => loop {
                match stream.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(false),
                    Some(Ok(Message::Binary(data))) => {
                        self.buf.extend_from_slice(&data);
                        return Ok(true);
                    }
                    Some(Ok(Message::Text(text))) => {
                        self.buf.extend_from_slice(text.as_bytes());
                        return Ok(true);
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Err(io::Error::other(error)),
                }
            },
        }
    }

    /// The next frame, or `None` at end of stream.
    pub async fn next(&mut self) -> io::Result<Option<Frame>> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(Item::Frame(frame))) => return Ok(Some(frame)),
                Ok(Some(Item::HeartBeat)) => continue,
                Ok(None) => {}
                Err(error) => return Err(io::Error::other(error.to_string())),
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Waits for a frame with `command`, failing on ERROR or end of stream.
    pub async fn expect(&mut self, command: Command) -> io::Result<Frame> {
        match self.next().await? {
            Some(frame) if frame.command == command => Ok(frame),
            Some(frame) => Err(io::Error::other(format!(
                "expected {command}, got {} {:?}",
                frame.command,
                frame.get("message")
            ))),
            None => Err(io::Error::other(format!(
                "expected {command}, got end of stream"
            ))),
        }
    }
}

impl Writer {
    /// Encodes `frame` into the buffer without writing.
    pub fn queue(&mut self, frame: &Frame) {
        encode::encode_frame(frame, Version::V1_2, &mut self.buf);
    }

    /// Writes everything buffered (one message on a WebSocket).
    pub async fn flush(&mut self) -> io::Result<()> {
        match &mut self.io {
            WriteIo::Tcp(io) => io.write_all_buf(&mut self.buf).await,
            WriteIo::Ws(sink) => {
                let payload = self.buf.split().freeze();
                sink.send(Message::Binary(payload))
                    .await
                    .map_err(io::Error::other)
            }
        }
    }

    /// Encodes and writes one frame.
    pub async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        self.queue(frame);
        self.flush().await
    }
}
