//! A session's outbound queue, bounded by bytes.
//!
//! Publishers push deliveries without waiting; the session's writer takes everything
//! queued at once, in exchange for its own emptied queue, so an idle session holds
//! almost nothing and a busy one pays one lock per batch. When a subscriber falls so far behind that its pending bytes pass the bound,
//! the push is refused and the outbox is closed as a slow consumer, so a slow reader
//! never slows the publisher or the other subscribers (DESIGN.md, "Principles").

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use postbox_stomp::{Frame, encode};
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::delivery::Delivery;

/// Why an outbox was closed from outside its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Pending outbound bytes passed the limit.
    SlowConsumer {
        /// The limit in bytes.
        limit: usize,
    },
    /// The broker is shutting down.
    Shutdown,
    /// An operator closed the connection.
    Admin,
}

/// What a session's writer receives.
#[derive(Debug)]
pub enum Notification {
    /// A message for one of the session's subscriptions.
    Deliver(Delivery),
    /// A frame from the session itself: CONNECTED, RECEIPT or ERROR.
    Frame(Frame),
    /// Write everything queued before, then close the connection.
    Close,
}

impl Notification {
    /// Bytes this notification counts against the outbox limit.
    pub fn cost(&self) -> usize {
        match self {
            Notification::Deliver(delivery) => delivery.cost(),
            Notification::Frame(frame) => encode::encoded_len_hint(frame),
            Notification::Close => 0,
        }
    }
}

/// A push into an outbox was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The subscriber is too slow; the outbox is now closed.
    Overflow,
    /// The outbox was already closed.
    Closed,
}

#[derive(Debug)]
struct Shared {
    id: u64,
    pending: AtomicUsize,
    limit: usize,
    /// For waiting on a close; checking is done on `is_closed`, which is lock-free.
    closed: CancellationToken,
    /// Set before `closed` is cancelled; read on every push.
    is_closed: AtomicBool,
    reason: OnceLock<CloseReason>,
    /// Notifications not yet taken by the writer.
    queue: Mutex<VecDeque<Notification>>,
    /// Wakes the writer when the queue stops being empty or the last sender leaves.
    wake: Notify,
    /// Live [`Outbox`] handles; at zero the writer sees the end.
    senders: AtomicUsize,
    /// Set once the writer is gone: pushes are refused.
    receiver_gone: AtomicBool,
    /// Wakes a session waiting for its backlog to fall back within the limit.
    room: Notify,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Notification>> {
        // A panic while holding this lock leaves a valid queue behind.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The sending side of a session's outbound queue; cheap to clone.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
}

impl Clone for Outbox {
    fn clone(&self) -> Outbox {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Outbox {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.wake.notify_one();
        }
    }
}

/// The writer's side of an outbox.
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::Release);
        let dropped = std::mem::take(&mut *self.shared.queue());
        let cost: usize = dropped.iter().map(Notification::cost).sum();
        self.shared.pending.fetch_sub(cost, Ordering::AcqRel);
        self.shared.room.notify_waiters();
    }
}

static NEXT_OUTBOX_ID: AtomicU64 = AtomicU64::new(1);

/// A new outbox whose pending bytes may not pass `limit`.
pub fn outbox(limit: usize) -> (Outbox, OutboxReceiver) {
    let shared = Arc::new(Shared {
        id: NEXT_OUTBOX_ID.fetch_add(1, Ordering::Relaxed),
        pending: AtomicUsize::new(0),
        limit,
        closed: CancellationToken::new(),
        is_closed: AtomicBool::new(false),
        reason: OnceLock::new(),
        queue: Mutex::new(VecDeque::new()),
        wake: Notify::new(),
        senders: AtomicUsize::new(1),
        receiver_gone: AtomicBool::new(false),
        room: Notify::new(),
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        OutboxReceiver { shared },
    )
}

impl Outbox {
    /// A process-unique id for this outbox (and so for its session).
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Queues a delivery. Refused when the outbox is closed, or when it would pass the
    /// byte limit, which also closes it as a slow consumer. A single delivery larger than
    /// the limit is accepted when nothing else is pending, so big messages still flow.
    pub fn deliver(&self, delivery: Delivery) -> Result<(), PushError> {
        if self.is_closed() {
            return Err(PushError::Closed);
        }
        let cost = delivery.cost();
        let before = self.shared.pending.fetch_add(cost, Ordering::AcqRel);
        if before > 0 && before + cost > self.shared.limit {
            self.shared.pending.fetch_sub(cost, Ordering::AcqRel);
            self.close(CloseReason::SlowConsumer {
                limit: self.shared.limit,
            });
            return Err(PushError::Overflow);
        }
        self.push(Notification::Deliver(delivery), cost)
    }

    /// Queues a delivery that the sender bounds by other means (a queue's prefetch), so
    /// the byte limit is not applied. Refused only when the outbox is closed.
    pub fn deliver_with_credit(&self, delivery: Delivery) -> Result<(), PushError> {
        if self.is_closed() {
            return Err(PushError::Closed);
        }
        let cost = delivery.cost();
        self.shared.pending.fetch_add(cost, Ordering::AcqRel);
        self.push(Notification::Deliver(delivery), cost)
    }

    /// Queues a frame from the session itself. Counted, but never refused for size: the
    /// session produces at most one per client frame and stops reading its client while
    /// the outbox [is backlogged](Outbox::is_backlogged), which bounds them.
    pub fn send_frame(&self, frame: Frame) -> Result<(), PushError> {
        let cost = encode::encoded_len_hint(&frame);
        self.shared.pending.fetch_add(cost, Ordering::AcqRel);
        self.push(Notification::Frame(frame), cost)
    }

    /// Drops what is queued for `subscription` and not yet taken by the writer, after
    /// its UNSUBSCRIBE: the client asked for no more, and its queue deliveries went back
    /// to their queue, so writing them would deliver them twice. Deliveries the writer
    /// already holds (at most one batch) are still written. Returns how many went.
    pub fn retract(&self, subscription: &str) -> usize {
        let (mut cost, mut dropped) = (0, 0);
        self.shared
            .queue()
            .retain(|notification| match notification {
                Notification::Deliver(delivery) if delivery.subscription == subscription => {
                    cost += delivery.cost();
                    dropped += 1;
                    false
                }
                _ => true,
            });
        if cost > 0 {
            self.shared.pending.fetch_sub(cost, Ordering::AcqRel);
            self.shared.room.notify_waiters();
        }
        dropped
    }

    /// Asks the writer to close the connection after what is already queued.
    pub fn send_close(&self) {
        let _ = self.push(Notification::Close, 0);
    }

    fn push(&self, notification: Notification, cost: usize) -> Result<(), PushError> {
        let was_empty = {
            let mut queue = self.shared.queue();
            // Checked under the lock: the receiver's drop empties the queue under it too,
            // so nothing is pushed after that and left uncounted.
            if self.shared.receiver_gone.load(Ordering::Acquire) {
                drop(queue);
                self.shared.pending.fetch_sub(cost, Ordering::AcqRel);
                return Err(PushError::Closed);
            }
            queue.push_back(notification);
            queue.len() == 1
        };
        if was_empty {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Closes the outbox from outside the session. The first reason given sticks.
    pub fn close(&self, reason: CloseReason) {
        let _ = self.shared.reason.set(reason);
        self.shared.is_closed.store(true, Ordering::Release);
        self.shared.closed.cancel();
        self.shared.room.notify_waiters();
    }

    /// Whether a push could still be taken: the outbox is not closed and its writer is
    /// still there. Once false it stays false, so a sender that sees it may stop
    /// offering this outbox anything.
    pub fn accepts(&self) -> bool {
        !self.is_closed() && !self.shared.receiver_gone.load(Ordering::Acquire)
    }

    /// Whether the writer is gone (its receiver dropped): nothing pushed before can still
    /// reach the peer.
    pub fn writer_gone(&self) -> bool {
        self.shared.receiver_gone.load(Ordering::Acquire)
    }

    /// Whether [`Outbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        // Not `CancellationToken::is_cancelled`, which takes a lock: this runs once per
        // delivery.
        self.shared.is_closed.load(Ordering::Acquire)
    }

    /// Why the outbox was closed, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.reason.get().copied()
    }

    /// Resolves when the outbox is closed from outside.
    pub fn closed(&self) -> WaitForCancellationFuture<'_> {
        self.shared.closed.cancelled()
    }

    /// Bytes queued and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }

    /// Whether pending bytes are past the limit. The session stops reading its client
    /// while this holds: RECEIPTs, ERRORs and credit-bounded queue deliveries are never
    /// refused for size, so not reading is what bounds them.
    pub fn is_backlogged(&self) -> bool {
        self.pending_bytes() > self.shared.limit
    }

    /// Resolves once the backlog is back within the limit, or the outbox can take
    /// nothing more (closed, or its writer gone).
    pub async fn drained(&self) {
        loop {
            let notified = self.shared.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_backlogged() || !self.accepts() {
                return;
            }
            notified.await;
        }
    }

    /// The limit on pending bytes.
    pub fn limit(&self) -> usize {
        self.shared.limit
    }
}

impl OutboxReceiver {
    /// Waits until something is queued, then swaps the whole queue with `batch`, which
    /// must be empty: the writer keeps the notifications, the outbox keeps the emptied
    /// allocation. Returns false only when nothing is queued and every sender is gone.
    pub async fn recv_all(&mut self, batch: &mut VecDeque<Notification>) -> bool {
        debug_assert!(batch.is_empty(), "recv_all swaps into an empty batch");
        loop {
            {
                let mut queue = self.shared.queue();
                if !queue.is_empty() {
                    std::mem::swap(&mut *queue, batch);
                    return true;
                }
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                return false;
            }
            // A push or the last sender's drop between the check and here leaves a
            // permit, so this wakes at once rather than missing it.
            self.shared.wake.notified().await;
        }
    }

    /// Takes the oldest queued notification without waiting.
    pub fn try_recv(&mut self) -> Option<Notification> {
        self.shared.queue().pop_front()
    }

    /// Reports that notifications worth `bytes` (their [`Notification::cost`]) were written.
    pub fn release(&self, bytes: usize) {
        let before = self.shared.pending.fetch_sub(bytes, Ordering::AcqRel);
        let limit = self.shared.limit;
        if before > limit && before - bytes <= limit {
            self.shared.room.notify_waiters();
        }
    }

    /// Why the outbox was closed from outside, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.reason.get().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Acknowledge, Destination, Message};
    use bytes::Bytes;
    use postbox_stomp::Headers;

    fn delivery(body_len: usize) -> Delivery {
        let destination = Destination::parse(&"/topic/t".into()).unwrap();
        let message = Message::new(
            "m".into(),
            destination,
            Headers::new(),
            Bytes::from(vec![0; body_len]),
        );
        Delivery {
            message: Arc::new(message),
            subscription: "s".into(),
            ack: Acknowledge::None,
            redelivered: false,
        }
    }

    #[tokio::test]
    async fn an_unsubscribed_subscription_s_queued_deliveries_are_retracted() {
        let (outbox, mut rx) = outbox(1 << 20);
        let other = Delivery {
            subscription: "other".into(),
            ..delivery(10)
        };
        outbox.deliver(delivery(100)).unwrap();
        outbox.deliver(other.clone()).unwrap();
        outbox
            .send_frame(Frame::new(postbox_stomp::Command::Receipt))
            .unwrap();
        outbox.deliver(delivery(100)).unwrap();
        assert_eq!(outbox.retract("s"), 2);
        let mut batch = VecDeque::new();
        assert!(rx.recv_all(&mut batch).await);
        assert_eq!(
            batch.len(),
            2,
            "the other subscription's delivery and the RECEIPT"
        );
        assert!(matches!(&batch[0], Notification::Deliver(d) if d.subscription == "other"));
        let left: usize = batch.iter().map(Notification::cost).sum();
        assert_eq!(outbox.pending_bytes(), left);
    }

    #[tokio::test]
    async fn passing_the_limit_closes_as_slow_consumer() {
        let (outbox, mut rx) = outbox(1000);
        assert!(outbox.deliver(delivery(400)).is_ok());
        assert!(outbox.deliver(delivery(400)).is_ok());
        assert_eq!(outbox.deliver(delivery(400)), Err(PushError::Overflow));
        assert_eq!(
            outbox.close_reason(),
            Some(CloseReason::SlowConsumer { limit: 1000 })
        );
        assert_eq!(outbox.deliver(delivery(1)), Err(PushError::Closed));
        let mut batch = VecDeque::new();
        assert!(rx.recv_all(&mut batch).await);
        assert_eq!(batch.len(), 2);
    }

    #[tokio::test]
    async fn released_bytes_make_room_again() {
        let (outbox, mut rx) = outbox(1000);
        outbox.deliver(delivery(600)).unwrap();
        let mut batch = VecDeque::new();
        rx.recv_all(&mut batch).await;
        rx.release(batch.iter().map(Notification::cost).sum());
        assert_eq!(outbox.pending_bytes(), 0);
        outbox.deliver(delivery(600)).unwrap();
    }

    #[test]
    fn one_oversize_message_passes_when_nothing_is_pending() {
        let (outbox, _rx) = outbox(100);
        assert!(outbox.deliver(delivery(5000)).is_ok());
        assert_eq!(outbox.deliver(delivery(1)), Err(PushError::Overflow));
    }

    #[tokio::test]
    async fn the_writer_sees_the_end_when_the_last_sender_leaves() {
        let (outbox, mut rx) = outbox(1000);
        let second = outbox.clone();
        outbox.deliver(delivery(10)).unwrap();
        drop(outbox);
        let mut batch = VecDeque::new();
        assert!(rx.recv_all(&mut batch).await, "queued work comes first");
        batch.clear();
        let waiting = tokio::spawn(async move {
            let mut batch = VecDeque::new();
            rx.recv_all(&mut batch).await
        });
        tokio::task::yield_now().await;
        drop(second);
        let more = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by the last drop")
            .unwrap();
        assert!(!more);
    }

    #[tokio::test]
    async fn a_waiting_writer_is_woken_by_a_push_from_another_task() {
        let (outbox, mut rx) = outbox(1000);
        let waiting = tokio::spawn(async move {
            let mut batch = VecDeque::new();
            rx.recv_all(&mut batch).await;
            batch.len()
        });
        tokio::task::yield_now().await;
        outbox.deliver(delivery(10)).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by the push")
            .unwrap();
        assert_eq!(got, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_of_session_frames_is_reported_until_written() {
        let (outbox, mut rx) = outbox(100);
        let receipt = || {
            Frame::new(postbox_stomp::Command::Receipt).header("receipt-id", "a-long-receipt-id")
        };
        while !outbox.is_backlogged() {
            outbox
                .send_frame(receipt())
                .expect("session frames are never refused");
        }
        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.drained().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "still past the limit");
        let mut batch = VecDeque::new();
        rx.recv_all(&mut batch).await;
        rx.release(batch.iter().map(Notification::cost).sum());
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("woken once written")
            .unwrap();
        assert!(!outbox.is_backlogged());
    }

    #[test]
    fn pushes_after_the_writer_left_are_refused_and_uncounted() {
        let (outbox, rx) = outbox(1000);
        outbox.deliver(delivery(10)).unwrap();
        drop(rx);
        assert_eq!(outbox.pending_bytes(), 0);
        assert_eq!(outbox.deliver(delivery(10)), Err(PushError::Closed));
        assert_eq!(
            outbox.send_frame(Frame::new(postbox_stomp::Command::Receipt)),
            Err(PushError::Closed)
        );
        assert_eq!(outbox.pending_bytes(), 0);
        assert!(!outbox.accepts());
    }
}
