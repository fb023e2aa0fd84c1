//! A lean STOMP connection for load generation.

use std::io;
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use memchr::memmem;
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
    /// The decoder holds a partly scanned frame: it must see that frame through, since
    /// it remembers positions in the buffer that skimming would move.
    decoding: bool,
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
        decoding: false,
    };
    let mut writer = Writer {
        io: write,
        buf: BytesMut::with_capacity(64 * 1024),
    };
    writer.send(&connect_frame(target)).await?;
    let reply = reader.next().await?;
    match reply {
        Some(frame) if frame.command == Command::Connected => Ok((reader, writer)),
        other => Err(io::Error::other(format!("CONNECT refused: {other:?}"))),
    }
}

/// An item found by [`Reader::buffered_message`].
#[derive(Debug)]
pub enum Received {
    /// A MESSAGE, of which only the body and the raw (still escaped) `ack` header are
    /// kept; the raw value is what an ACK must carry back.
    Message { body: Bytes, ack: Option<Bytes> },
    /// Any other frame, fully decoded.
    Frame(Frame),
}

impl Reader {
    /// Like [`Reader::buffered`], but a MESSAGE with a `content-length` is only skimmed
    /// for its body: a load generator that decodes every header spends the CPU the
    /// broker under test needs (both share this machine). Anything else goes through
    /// the full decoder.
    pub fn buffered_message(&mut self) -> io::Result<Option<Received>> {
        if self.decoding {
            return self.decode_fully();
        }
        let eols = self
            .buf
            .iter()
            .take_while(|b| **b == b'\n' || **b == b'\r')
            .count();
        self.buf.advance(eols);
        if self.buf.starts_with(b"MESSAGE\n")
            && let Some(head_len) = memmem::find(&self.buf, b"\n\n")
            && !self.buf[..head_len].contains(&b'\r')
            // A broker's presence event goes the slow way, so callers can tell it apart.
            && memmem::find(&self.buf[..head_len], b"\npresence:").is_none()
            && let Some(at) = memmem::find(&self.buf[..head_len], b"\ncontent-length:")
        {
            let digits = &self.buf[at + 16..head_len];
            let digits = &digits[..digits
                .iter()
                .position(|b| *b == b'\n')
                .unwrap_or(digits.len())];
            let len: usize = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| io::Error::other("bad content-length"))?;
            let body_at = head_len + 2;
            if self.buf.len() <= body_at + len {
                return Ok(None);
            }
            if self.buf[body_at + len] != 0 {
                return Err(io::Error::other("MESSAGE body not followed by NUL"));
            }
            let ack = memmem::find(&self.buf[..head_len], b"\nack:").map(|at| {
                let value = &self.buf[at + 5..head_len];
                at + 5
                    ..at + 5
                        + value
                            .iter()
                            .position(|b| *b == b'\n')
                            .unwrap_or(value.len())
            });
            let frame = self.buf.split_to(body_at + len + 1).freeze();
            return Ok(Some(Received::Message {
                body: frame.slice(body_at..body_at + len),
                ack: ack.map(|range| frame.slice(range)),
            }));
        }
        if self.buf.starts_with(b"MESSAGE\n") && memmem::find(&self.buf, b"\n\n").is_none() {
            return Ok(None);
        }
        self.decode_fully()
    }

    fn decode_fully(&mut self) -> io::Result<Option<Received>> {
        let frame = self.buffered()?;
        self.decoding = frame.is_none() && !self.buf.is_empty();
        Ok(frame.map(Received::Frame))
    }

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
    /// Presence events (MESSAGEs with a `presence` header, which a broker with presence
    /// sends when a subscriber enters a room) are passed over.
    pub async fn expect(&mut self, command: Command) -> io::Result<Frame> {
        let mut next = self.next().await?;
        while let Some(frame) = &next
            && is_presence_event(frame)
            && command != Command::Message
        {
            next = self.next().await?;
        }
        match next {
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

/// The CONNECT every scenario sends: STOMP 1.2, no heart-beats, the target's host and
/// credentials.
pub fn connect_frame(target: &Target) -> Frame {
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
    frame
}

/// Whether `frame` is a broker's presence event rather than a message a publisher sent.
pub fn is_presence_event(frame: &Frame) -> bool {
    frame.command == Command::Message && frame.get("presence").is_some()
}

/// The TCP stream under a connection's two halves, to close it in a chosen way (a reset
/// with `SO_LINGER` 0, say); `None` over WebSocket.
pub fn into_tcp(reader: Reader, writer: Writer) -> Option<TcpStream> {
    match (reader.io, writer.io) {
        (ReadIo::Tcp(read), WriteIo::Tcp(write)) => read.reunite(write).ok(),
        _ => None,
    }
}

impl Writer {
    /// Half-closes the connection: a FIN over TCP, a Close frame over WebSocket.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        match &mut self.io {
            WriteIo::Tcp(io) => io.shutdown().await,
            WriteIo::Ws(sink) => sink.close().await.map_err(io::Error::other),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Frames of every shape the skimmer meets, written in awkward pieces: each must come
    /// out whole and in order, MESSAGE bodies skimmed and the rest fully decoded.
    #[tokio::test]
    async fn skimming_agrees_with_the_decoder_across_split_reads() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (read, _write) = client.into_split();
        let mut reader = Reader {
            io: ReadIo::Tcp(read),
            buf: BytesMut::new(),
            codec: StompCodec::new(Version::V1_2, Limits::default()),
            decoding: false,
        };
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for i in 0..200u32 {
            let body = format!("body-{i}\0with-nul");
            match i % 4 {
                0 => wire.extend_from_slice(
                    format!(
                        "MESSAGE\nsubscription:0\nmessage-id:{i}\ncontent-length:{}\n\n{body}\0\n",
                        body.len()
                    )
                    .as_bytes(),
                ),
                // No content-length: the decoder finds the body's end at the first NUL.
                1 => wire.extend_from_slice(
                    format!("MESSAGE\nmessage-id:{i}\n\nplain-{i}\0").as_bytes(),
                ),
                2 => {
                    wire.extend_from_slice(format!("RECEIPT\nreceipt-id:{i}\n\n\0\r\n").as_bytes())
                }
                _ => wire.extend_from_slice(
                    format!("MESSAGE\r\nmessage-id:{i}\r\ncontent-length:3\r\n\r\nabc\0")
                        .as_bytes(),
                ),
            }
            expected.push(match i % 4 {
                0 => ("MESSAGE", body.into_bytes()),
                1 => ("MESSAGE", format!("plain-{i}").into_bytes()),
                2 => ("RECEIPT", Vec::new()),
                _ => ("MESSAGE", b"abc".to_vec()),
            });
        }
        let writer = tokio::spawn(async move {
            let mut at = 0;
            let mut step = 1;
            while at < wire.len() {
                let end = (at + step).min(wire.len());
                server.write_all(&wire[at..end]).await.unwrap();
                server.flush().await.unwrap();
                at = end;
                step = step % 37 + 3;
                tokio::task::yield_now().await;
            }
            server
        });
        let mut got = Vec::new();
        while got.len() < expected.len() {
            while let Some(received) = reader.buffered_message().unwrap() {
                got.push(match received {
                    Received::Message { body, .. } => ("MESSAGE", body.to_vec()),
                    Received::Frame(frame) => (frame.command.as_str(), frame.body.to_vec()),
                });
            }
            if got.len() < expected.len() {
                assert!(reader.fill().await.unwrap(), "stream ended early");
            }
        }
        assert_eq!(got, expected);
        drop(writer.await.unwrap());
    }
}
