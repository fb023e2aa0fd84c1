//! The WebSocket transport: [`WsIo`] shows the session an upgraded connection's message
//! stream as plain bytes. The upgrade itself is an HTTP exchange, in
//! [`crate::http::upgrade`].
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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

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
    /// Wraps an upgraded stream; writes are sent in messages of at most `max_message` bytes.
    pub fn new(ws: WebSocketStream<S>, max_message: usize) -> WsIo<S> {
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
