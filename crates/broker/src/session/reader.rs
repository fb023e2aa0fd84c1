//! Reading frames from a transport's byte stream.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::future::poll_fn;
use std::pin::Pin;

use bytes::BytesMut;
use postbox_stomp::{FrameError, Item, StompCodec};
use tokio::io::AsyncRead;
use tokio_util::codec::Decoder;
use tokio_util::io::poll_read_buf;

use crate::memory::MemoryAlarm;
use crate::registry::Traffic;

/// The first read buffer of a connection: enough for CONNECT and SUBSCRIBE frames, so
/// thousands of connections opening at once do not each take a large one.
const FIRST_CHUNK: usize = 1024;
/// The most a read buffer grows by at a time, for a connection that keeps it full.
const MAX_CHUNK: usize = 64 * 1024;
/// While the memory alarm is raised, a connection holding more than this of a frame not
/// yet complete is not read further: many clients each half-sending a large frame would
/// otherwise hold up to `max-frame-size` apiece. Small frames (ACKs of consumers that
/// are draining queues) still pass.
const PARTIAL_WHILE_ALARMED: usize = 64 * 1024;
/// The most [`FrameReader::failed`] reads ahead while it watches the transport.
pub const WATCH_LIMIT: usize = 64 * 1024;

/// Why no item could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The bytes are not valid STOMP.
    Frame(FrameError),
    /// The transport failed.
    Io(io::Error),
    /// Nothing arrived within the allowed silence.
    Silent(Duration),
}

/// Decodes items from an async byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    /// How much the buffer grows by next: doubles while reads fill it.
    chunk: usize,
    codec: StompCodec,
    traffic: Arc<Traffic>,
    memory: Option<Arc<MemoryAlarm>>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `io` using `codec`, counting what it reads in `traffic`.
    pub fn new(io: R, codec: StompCodec, traffic: Arc<Traffic>) -> FrameReader<R> {
        FrameReader {
            io,
            buf: BytesMut::new(),
            chunk: FIRST_CHUNK,
            codec,
            traffic,
            memory: None,
        }
    }

    /// Pauses reading a large partial frame while `memory`'s alarm is raised.
    pub fn with_memory_alarm(mut self, memory: Arc<MemoryAlarm>) -> FrameReader<R> {
        self.memory = Some(memory);
        self
    }

    /// The codec, to switch versions after CONNECT.
    pub fn codec_mut(&mut self) -> &mut StompCodec {
        &mut self.codec
    }

    /// The next item already in the buffer, without reading from the transport.
    pub fn buffered(&mut self) -> Result<Option<Item>, ReadError> {
        let item = self.codec.decode(&mut self.buf).map_err(ReadError::Frame)?;
        if let Some(Item::Frame(_)) = item {
            self.traffic.frames_in.fetch_add(1, Ordering::Relaxed);
        }
        Ok(item)
    }

    /// The next item; `Ok(None)` at the end of the stream. With `silence` set, fails with
    /// [`ReadError::Silent`] when no byte at all arrives for that long: any byte counts as
    /// activity, as STOMP heart-beating asks.
    pub async fn next(&mut self, silence: Option<Duration>) -> Result<Option<Item>, ReadError> {
        loop {
            if let Some(item) = self.buffered()? {
                return Ok(Some(item));
            }
            if let Some(memory) = &self.memory
                && self.buf.len() > PARTIAL_WHILE_ALARMED
            {
                // Not counted as silence: it is the broker that stopped listening.
                memory.cleared().await;
            }
            let room = self.buf.capacity() - self.buf.len();
            let read = read_some(&mut self.io, &mut self.buf, self.chunk);
            let n = match silence {
                Some(limit) => tokio::time::timeout(limit, read)
                    .await
                    .map_err(|_| ReadError::Silent(limit))?,
                None => read.await,
            }
            .map_err(ReadError::Io)?;
            if n == 0 {
                return Ok(None);
            }
            if n >= room.max(self.chunk / 2) {
                // The read took all there was room for: the peer sends more than fits.
                self.chunk = (self.chunk * 2).min(MAX_CHUNK);
            } else if n < self.chunk / 8 {
                // A peer that sent a burst once and now trickles gets small buffers again:
                // an idle buffer is dropped and allocated afresh, and each of those would
                // otherwise be a whole large chunk held by the frame or two read into it.
                self.chunk = (self.chunk / 2).max(FIRST_CHUNK);
            }
            self.traffic.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Resolves when the transport fails or the peer closes its sending half, so a
    /// session waiting on something else (a full queue) learns what became of its
    /// client. What arrives meanwhile is kept for [`next`](Self::next), up to
    /// [`WATCH_LIMIT`] bytes; past that it never resolves.
    pub async fn watch(&mut self) -> PeerEvent {
        let start = self.buf.len();
        loop {
            if self.buf.len() - start >= WATCH_LIMIT {
                return std::future::pending().await;
            }
            match read_some(&mut self.io, &mut self.buf, FIRST_CHUNK).await {
                Ok(0) => return PeerEvent::Closed,
                Ok(n) => {
                    self.traffic.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(error) => return PeerEvent::Failed(error),
            }
        }
    }
}

/// What [`FrameReader::watch`] saw of the peer.
#[derive(Debug)]
pub enum PeerEvent {
    /// The transport failed, as it does once a vanished peer's host resets it.
    Failed(io::Error),
    /// The peer closed its sending half: it sends nothing more, which ends a session
    /// (as at any end of stream) even while a frame waits.
    Closed,
}

/// Reads what the transport has into `buf`, growing it by `chunk` when it is nearly
/// full. While nothing can be read and `buf` holds no partial frame, the buffer is
/// released: it is allocated again when bytes arrive.
async fn read_some<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    chunk: usize,
) -> io::Result<usize> {
    poll_fn(|cx| {
        if buf.capacity() - buf.len() < chunk / 4 {
            buf.reserve(chunk);
        }
        let polled = poll_read_buf(Pin::new(&mut *io), cx, buf);
        if polled.is_pending() && buf.is_empty() && buf.capacity() > 0 {
            *buf = BytesMut::new();
        }
        polled
    })
    .await
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn send(body: usize) -> Vec<u8> {
        let mut frame = b"SEND\ndestination:/queue/a\n\n".to_vec();
        frame.resize(frame.len() + body, b'x');
        frame.push(0);
        frame
    }

    #[tokio::test]
    async fn a_reader_grows_its_buffer_for_bursts_and_shrinks_it_for_a_trickle() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(
            server,
            StompCodec::new(
                postbox_stomp::Version::V1_2,
                postbox_stomp::Limits::default(),
            ),
            Arc::default(),
        );
        let burst: Vec<u8> = (0..64).flat_map(|_| send(4096)).collect();
        client.write_all(&burst).await.unwrap();
        for _ in 0..64 {
            reader.next(None).await.unwrap().expect("a frame");
        }
        // Its last read may be a short one, which halves the chunk once.
        assert!(reader.chunk >= MAX_CHUNK / 2, "a burst grows the buffer");
        for _ in 0..10 {
            client.write_all(&send(10)).await.unwrap();
            reader.next(None).await.unwrap().expect("a frame");
        }
        assert_eq!(reader.chunk, FIRST_CHUNK, "a trickle shrinks it again");
    }
}
