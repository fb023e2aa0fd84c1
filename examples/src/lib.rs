//! Shared by the example clients: a STOMP connection over `tokio_util`'s `Framed` with
//! the `postbox-stomp` codec, which is all a Rust client needs.
#![allow(clippy::print_stdout)]

use std::io;

use futures_util::{SinkExt, StreamExt};
use postbox_stomp::{Command, Frame, FrameError, Item, StompCodec, Version};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// A connected STOMP session.
#[derive(Debug)]
pub struct Connection {
    framed: Framed<TcpStream, StompCodec>,
}

impl Connection {
    /// Connects to `addr` (host:port) and completes a STOMP 1.2 CONNECT.
    pub async fn connect(addr: &str) -> Result<Connection, FrameError> {
        let stream = TcpStream::connect(addr).await?;
        let mut framed = Framed::new(stream, StompCodec::default());
        let connect = Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("host", "/");
        framed.send(connect).await?;
        let mut connection = Connection { framed };
        let reply = connection.receive().await?;
        if reply.command != Command::Connected {
            return Err(io::Error::other(format!("refused: {:?}", reply.get("message"))).into());
        }
        let version = reply
            .get("version")
            .and_then(Version::parse)
            .unwrap_or(Version::V1_0);
        connection.framed.codec_mut().set_version(version);
        Ok(connection)
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: Frame) -> Result<(), FrameError> {
        self.framed.send(frame).await
    }

    /// The next frame, skipping heart-beats.
    pub async fn receive(&mut self) -> Result<Frame, FrameError> {
        loop {
            match self.framed.next().await {
                Some(Ok(Item::Frame(frame))) => return Ok(frame),
                Some(Ok(Item::HeartBeat)) => continue,
                Some(Err(error)) => return Err(error),
                None => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            }
        }
    }

    /// Sends DISCONNECT with a receipt and waits for it.
    pub async fn disconnect(mut self) -> Result<(), FrameError> {
        self.send(Frame::new(Command::Disconnect).header("receipt", "bye"))
            .await?;
        while self.receive().await?.command != Command::Receipt {}
        Ok(())
    }
}

/// The broker address from the first argument, or Postbox's default.
pub fn addr_from_args() -> String {
    std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:61613".to_owned())
}
