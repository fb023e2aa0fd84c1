//! Where a message leaves the socket: drains a session's outbox, encodes frames in
//! batches, writes them, and sends heart-beats when the connection is otherwise idle.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use postbox_router::{AckTag, Delivery, Notification, Outbox, OutboxReceiver, Settle};
use postbox_stomp::headers::names;
use postbox_stomp::{Version, encode};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::SessionError;
use crate::registry::Traffic;

/// Most bytes encoded before they are written; the rest of a batch waits for the next write.
const MAX_WRITE: usize = 256 * 1024;
/// How long closing writes (the last frames, an ERROR) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the writer ended.
#[derive(Debug)]
pub enum WriterEnd {
    /// Wrote everything up to a close request, then closed.
    Closed,
    /// The session ended it (the peer went away).
    Aborted,
    /// The outbox was closed from outside (slow consumer, operator).
    Killed,
    /// Writing failed.
    Io(io::Error),
}

/// The writer of one session.
#[derive(Debug)]
pub struct Writer<W> {
    io: W,
    rx: OutboxReceiver,
    outbox: Outbox,
    version: Version,
    heart_beat: Option<Duration>,
    buf: BytesMut,
    /// Auto-acknowledged queue deliveries in the buffer, settled once written.
    settles: Vec<Settle>,
    /// Where each of `settles` ends in the stream: a delivery counts as written only
    /// once every byte of it is, even when a write breaks off midway.
    settle_ends: Vec<u64>,
    /// Bytes written to `io` so far (`buf` holds the ones after them).
    written: u64,
    traffic: Arc<Traffic>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// A writer of `rx`'s notifications to `io`, for a session speaking `version` that
    /// must send something at least every `heart_beat`.
    pub fn new(
        io: W,
        rx: OutboxReceiver,
        outbox: Outbox,
        version: Version,
        heart_beat: Option<Duration>,
        traffic: Arc<Traffic>,
    ) -> Writer<W> {
        Writer {
            io,
            rx,
            outbox,
            version,
            heart_beat,
            buf: BytesMut::new(),
            settles: Vec::new(),
            settle_ends: Vec::new(),
            written: 0,
            traffic,
        }
    }

    /// Runs until a close request, an IO error, an outside kill or `done`.
    pub async fn run(mut self, done: &CancellationToken) -> WriterEnd {
        let end = self.run_inner(done).await;
        done.cancel();
        end
    }

    async fn run_inner(&mut self, done: &CancellationToken) -> WriterEnd {
        let mut batch = VecDeque::new();
        let far_future = Instant::now() + Duration::from_secs(86400 * 365);
        let mut next_beat = self.heart_beat.map(|every| Instant::now() + every);
        let outbox = self.outbox.clone();
        // Made once: creating and dropping these per batch showed in profiles.
        let mut aborted = std::pin::pin!(done.cancelled());
        let mut killed = std::pin::pin!(outbox.closed());
        loop {
            // A batch cut short by MAX_WRITE goes on without waiting.
            if batch.is_empty() {
                tokio::select! {
                    biased;
                    _ = &mut aborted => return WriterEnd::Aborted,
                    _ = &mut killed => return Box::pin(self.kill()).await,
                    more = self.rx.recv_all(&mut batch) => {
                        if !more {
                            return WriterEnd::Aborted;
                        }
                    }
                    _ = sleep_until(next_beat.unwrap_or(far_future)), if next_beat.is_some() => {
                        encode::put_heart_beat(&mut self.buf);
                    }
                }
            }
            let mut cost = 0;
            let mut close = false;
            let mut messages = 0;
            while self.buf.len() < MAX_WRITE {
                let Some(notification) = batch.pop_front() else {
                    break;
                };
                cost += notification.cost();
                match notification {
                    Notification::Deliver(mut delivery) => {
                        messages += 1;
                        self.put_delivery(&delivery);
                        if let Some(settle) = delivery.take_settle() {
                            self.settles.push(settle);
                            self.settle_ends.push(self.written + self.buf.len() as u64);
                        }
                    }
                    Notification::Frame(frame) => {
                        encode::encode_frame(&frame, self.version, &mut self.buf)
                    }
                    Notification::Close => {
                        close = true;
                        break;
                    }
                }
            }
            let bytes = self.buf.len() as u64;
            let end = self.written + bytes;
            let written = if close {
                // Boxed, as is `kill`: once per connection, and their timers would
                // otherwise be part of every idle session's task.
                Box::pin(self.finish()).await
            } else {
                tokio::select! {
                    biased;
                    _ = &mut aborted => {
                        self.settle_written(end);
                        return WriterEnd::Aborted;
                    }
                    _ = &mut killed => {
                        self.settle_written(end);
                        return Box::pin(self.kill()).await;
                    }
                    result = write_out(&mut self.io, &mut self.buf) => result,
                }
            };
            self.rx.release(cost);
            // Also after a failed write: what reached the peer was delivered, and must
            // not come back as if it never had.
            self.settle_written(end);
            if let Err(error) = written {
                return WriterEnd::Io(error);
            }
            self.traffic.bytes_out.fetch_add(bytes, Ordering::Relaxed);
            self.traffic
                .messages_out
                .fetch_add(messages, Ordering::Relaxed);
            if close {
                return WriterEnd::Closed;
            }
            if batch.is_empty() {
                // Going back to waiting: idle sessions hold no buffers. The emptied batch
                // would be swapped into the outbox and sit there, so it goes too.
                self.buf = BytesMut::new();
                batch = VecDeque::new();
            }
            next_beat = self.heart_beat.map(|every| Instant::now() + every);
        }
    }

    /// Settles the auto-acknowledged deliveries written in full, given that the stream
    /// ended at `end` before the last write (which may have stopped midway, leaving the
    /// rest in `buf`). The others stay unsettled: their subscription hands them back.
    fn settle_written(&mut self, end: u64) {
        self.written = end - self.buf.len() as u64;
        let written = self.written;
        let done = self.settle_ends.partition_point(|&at| at <= written);
        if done == self.settles.len() {
            self.settle_ends.clear();
            Settle::written_all(&mut self.settles);
        } else if done > 0 {
            self.settle_ends.drain(..done);
            let mut settled: Vec<Settle> = self.settles.drain(..done).collect();
            Settle::written_all(&mut settled);
        }
    }

    /// Writes a MESSAGE: the per-subscription head, then the shared tail.
    fn put_delivery(&mut self, delivery: &Delivery) {
        let mut head: [(&str, &str); 3] = [("", ""); 3];
        let mut n = 0;
        head[n] = (names::SUBSCRIPTION, &delivery.subscription);
        n += 1;
        let mut ack_text = [0; AckTag::MAX_LEN];
        if let Some(ack) = delivery.ack_tag() {
            head[n] = (names::ACK, ack.write(&mut ack_text));
            n += 1;
        }
        if delivery.redelivered {
            head[n] = ("redelivered", "true");
            n += 1;
        }
        self.buf
            .reserve(32 + delivery.subscription.len() + delivery.message.wire_size());
        encode::put_message_head(&head[..n], self.version, &mut self.buf);
        delivery.message.put_wire_tail(self.version, &mut self.buf);
    }

    /// Writes what is buffered and closes, within [`CLOSE_TIMEOUT`].
    async fn finish(&mut self) -> io::Result<()> {
        let closing = async {
            write_out(&mut self.io, &mut self.buf).await?;
            self.io.shutdown().await
        };
        tokio::time::timeout(CLOSE_TIMEOUT, closing)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }

    /// Closed from outside: finish the frame being written if it is quick, drop the
    /// backlog, send one ERROR saying why, and close.
    async fn kill(&mut self) -> WriterEnd {
        let reason = self
            .outbox
            .close_reason()
            .expect("closed outboxes have a reason");
        let error = SessionError::Closed(reason).to_frame(None);
        // What is still buffered may be half written; it must go out before the ERROR
        // for the stream to stay well-formed. Queued notifications are dropped.
        while let Some(notification) = self.rx.try_recv() {
            self.rx.release(notification.cost());
        }
        encode::encode_frame(&error, self.version, &mut self.buf);
        let end = self.written + self.buf.len() as u64;
        let _ = self.finish().await;
        self.settle_written(end);
        WriterEnd::Killed
    }
}

/// Writes the whole buffer and flushes: buffering transports (TLS, WebSocket) send it
/// now, and a WebSocket turns it into one message.
async fn write_out<W: AsyncWrite + Unpin>(io: &mut W, buf: &mut BytesMut) -> io::Result<()> {
    io.write_all_buf(buf).await?;
    io.flush().await
}
