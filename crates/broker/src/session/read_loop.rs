//! The reading side of a connected session: frames in, one at a time, with the waits that
//! hold a client back (a full outbound buffer, the memory alarm) and the signals that end
//! it (shutdown, an admin kick, token expiry, the writer gone, heart-beat silence).

use std::time::Duration;

use postbox_router::CloseReason;
use postbox_stomp::headers::names;
use postbox_stomp::{Command, Frame, Item};
use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::reader::{FrameReader, PeerEvent, ReadError};
use super::{Flow, Session, SessionError, access};

/// How the reading side ended.
#[derive(Debug)]
pub(super) enum ReaderEnd {
    /// DISCONNECT was handled.
    Disconnect,
    /// An ERROR was queued.
    Failed(SessionError),
    /// The peer closed its side.
    Eof,
    /// Reading failed.
    Io(std::io::Error),
    /// The writer ended first.
    WriterGone,
    /// The outbox was closed from outside.
    Killed,
}

/// What stopped a frame's handling while it waited.
pub(super) enum Interrupted {
    WriterGone,
    Killed,
    Shutdown,
    /// The client closed or its transport failed: the session ends as at any end of
    /// the stream, and the waiting frame is not taken.
    PeerGone(PeerEvent),
}

/// Polls `future` once in the current task: its output if that settles it, else `None`
/// (the future keeps its place and may be polled on).
pub(super) async fn poll_once<F: std::future::Future>(
    future: std::pin::Pin<&mut F>,
) -> Option<F::Output> {
    let mut future = Some(future);
    std::future::poll_fn(|cx| {
        let polled = future.take().expect("polled once").poll(cx);
        std::task::Poll::Ready(match polled {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

impl Session {
    pub(super) async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut FrameReader<R>,
        silence: Option<Duration>,
        shutdown: &CancellationToken,
        done: &CancellationToken,
    ) -> ReaderEnd {
        let outbox = self.outbox.clone();
        // Frames already buffered are taken without the select below, whose futures
        // cost a lock and a waiter each per poll; every FAST_FRAMES-th frame still goes
        // through it, so shutdown, kills and token expiry are seen during a flood too.
        const FAST_FRAMES: u32 = 32;
        let mut fast = 0;
        loop {
            if outbox.is_backlogged()
                && let Err(end) = self.hold_back(shutdown, done).await
            {
                return end;
            }
            let buffered = if fast < FAST_FRAMES && !outbox.is_closed() {
                reader.buffered()
            } else {
                Ok(None)
            };
            let item = match buffered {
                Ok(None) => {
                    fast = 0;
                    let expiry = self.token_deadline();
                    tokio::select! {
                        biased;
                        _ = done.cancelled() => return ReaderEnd::WriterGone,
                        _ = outbox.closed() => return ReaderEnd::Killed,
                        _ = shutdown.cancelled() => return self.fail(SessionError::Closed(CloseReason::Shutdown), None),
                        _ = tokio::time::sleep_until(expiry.unwrap_or_else(access::far_future)), if expiry.is_some() => {
                            info!("closing: the access token expired and no fresh one arrived");
                            return self.fail(SessionError::TokenExpired, None);
                        }
                        item = reader.next(silence) => item,
                    }
                }
                other => {
                    fast += 1;
                    other
                }
            };
            let frame = match item {
                Ok(Some(Item::Frame(frame))) => frame,
                Ok(Some(Item::HeartBeat)) => continue,
                Ok(None) => {
                    done.cancel();
                    return ReaderEnd::Eof;
                }
                Err(ReadError::Io(error)) => {
                    done.cancel();
                    return ReaderEnd::Io(error);
                }
                Err(ReadError::Frame(error)) => {
                    return self.fail(error.into(), reader.codec_mut().failed_receipt());
                }
                Err(ReadError::Silent(limit)) => {
                    let interval = limit.div_f64(self.settings.heartbeat_grace);
                    let error = SessionError::HeartBeatTimeout {
                        silent_ms: limit.as_millis() as u64,
                        interval_ms: interval.as_millis() as u64,
                    };
                    return self.fail(error, None);
                }
            };
            if frame.command == Command::Send
                && self.memory.is_raised()
                && let Err(end) = self.wait_for_memory(shutdown, done).await
            {
                return end;
            }
            let receipt = frame.headers.get_shared(names::RECEIPT).cloned();
            // Most frames are handled without waiting: one poll settles them, and only
            // one that has to wait (a full queue, the cluster) races the stop signals.
            let handled = self.handle_or_stop(frame, reader, shutdown, done).await;
            let result = match handled {
                Ok(result) => result,
                Err(Interrupted::WriterGone) => return ReaderEnd::WriterGone,
                Err(Interrupted::Killed) => return ReaderEnd::Killed,
                Err(Interrupted::PeerGone(event)) => {
                    done.cancel();
                    return match event {
                        PeerEvent::Failed(error) => ReaderEnd::Io(error),
                        PeerEvent::Closed => ReaderEnd::Eof,
                    };
                }
                Err(Interrupted::Shutdown) => {
                    return self.fail(SessionError::Closed(CloseReason::Shutdown), None);
                }
            };
            match result {
                Ok(flow) => {
                    if let Some(receipt) = receipt {
                        let reply = Frame::new(Command::Receipt).header(names::RECEIPT_ID, receipt);
                        let _ = self.outbox.send_frame(reply);
                    }
                    if let Flow::Disconnect = flow {
                        self.outbox.send_close();
                        return ReaderEnd::Disconnect;
                    }
                }
                Err(error) => return self.fail(error, receipt.as_deref()),
            }
        }
    }

    /// Stops reading the client while its outbound backlog is past the bound, so a client
    /// that sends frames asking for replies (RECEIPTs, ERRORs) and never reads them is
    /// held back by TCP instead of growing the broker. A client that reads slowly is only
    /// paused; one whose writer makes no progress for the stall time is closed as a slow
    /// consumer (the writer drops the backlog and sends one ERROR).
    pub(super) async fn hold_back(
        &self,
        shutdown: &CancellationToken,
        done: &CancellationToken,
    ) -> Result<(), ReaderEnd> {
        let traffic = &self.connection.opened.traffic;
        let written = || traffic.bytes_out.load(std::sync::atomic::Ordering::Relaxed);
        let mut progress = written();
        while self.outbox.is_backlogged() {
            tokio::select! {
                biased;
                _ = done.cancelled() => return Err(ReaderEnd::WriterGone),
                _ = self.outbox.closed() => return Err(ReaderEnd::Killed),
                _ = shutdown.cancelled() => {
                    return Err(self.fail(SessionError::Closed(CloseReason::Shutdown), None));
                }
                _ = self.outbox.drained() => {}
                _ = tokio::time::sleep(self.settings.outbound_stall) => {
                    let now = written();
                    if now == progress {
                        info!(
                            pending = self.outbox.pending_bytes(),
                            "closing: the client reads nothing while its outbound buffer is full"
                        );
                        self.outbox.close(CloseReason::SlowConsumer {
                            limit: self.outbox.limit(),
                        });
                        return Err(ReaderEnd::Killed);
                    }
                    progress = now;
                }
            }
        }
        Ok(())
    }

    /// Holds a SEND back while the broker's memory alarm is raised: this publisher's
    /// socket is not read meanwhile, and its other frames wait behind the SEND.
    pub(super) async fn wait_for_memory(
        &self,
        shutdown: &CancellationToken,
        done: &CancellationToken,
    ) -> Result<(), ReaderEnd> {
        debug!("publisher paused by the memory alarm");
        tokio::select! {
            biased;
            _ = done.cancelled() => Err(ReaderEnd::WriterGone),
            _ = self.outbox.closed() => Err(ReaderEnd::Killed),
            _ = shutdown.cancelled() => {
                Err(self.fail(SessionError::Closed(CloseReason::Shutdown), None))
            }
            _ = self.memory.cleared() => Ok(()),
        }
    }

    /// Handles `frame` unless a stop signal comes while it waits.
    /// The transport is watched meanwhile, so a client that vanishes while its frame
    /// waits (a SEND to a full queue) ends the session instead of holding it.
    pub(super) async fn handle_or_stop<R: AsyncRead + Unpin>(
        &mut self,
        frame: Frame,
        reader: &mut FrameReader<R>,
        shutdown: &CancellationToken,
        done: &CancellationToken,
    ) -> Result<Result<Flow, SessionError>, Interrupted> {
        let outbox = self.outbox.clone();
        let handling = self.handle(frame);
        let mut handling = std::pin::pin!(handling);
        if let Some(result) = poll_once(handling.as_mut()).await {
            return Ok(result);
        }
        tokio::select! {
            biased;
            _ = done.cancelled() => Err(Interrupted::WriterGone),
            _ = outbox.closed() => Err(Interrupted::Killed),
            _ = shutdown.cancelled() => Err(Interrupted::Shutdown),
            event = reader.watch() => Err(Interrupted::PeerGone(event)),
            result = &mut handling => Ok(result),
        }
    }

    /// Queues ERROR and a close; the writer sends it after everything before it.
    pub(super) fn fail(&self, error: SessionError, receipt: Option<&str>) -> ReaderEnd {
        let _ = self.outbox.send_frame(error.to_frame(receipt));
        self.outbox.send_close();
        ReaderEnd::Failed(error)
    }
}
