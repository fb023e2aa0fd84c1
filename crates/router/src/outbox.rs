//! A session's outbound queue, bounded by bytes.
//!
//! Publishers push deliveries without waiting; the session's writer drains them in
//! batches. When a subscriber falls so far behind that its pending bytes pass the bound,
//! the push is refused and the outbox is closed as a slow consumer, so a slow reader
//! never slows the publisher or the other subscribers (DESIGN.md, "Principles").

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use postbox_stomp::{ByteString, Frame, encode};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::Message;
use crate::queue::Settle;

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

/// One message for one subscription of the session.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message, shared with the other subscribers.
    pub message: Arc<Message>,
    /// The client's subscription `id`.
    pub subscription: ByteString,
    /// The `ack` header to send, for subscriptions that acknowledge.
    pub ack_id: Option<ByteString>,
    /// Whether the message was delivered before (sent as `redelivered:true`).
    pub redelivered: bool,
    /// For auto-acknowledged queue deliveries: to be called once written.
    pub settle: Option<Settle>,
}

impl Delivery {
    /// Bytes this delivery counts against the outbox limit.
    pub fn cost(&self) -> usize {
        self.message.wire_size()
            + self.subscription.len()
            + self.ack_id.as_ref().map_or(0, |id| id.len() + 8)
    }
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
    closed: CancellationToken,
    reason: OnceLock<CloseReason>,
}

/// The sending side of a session's outbound queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Notification>,
    shared: Arc<Shared>,
}

/// The writer's side of an outbox.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Notification>,
    shared: Arc<Shared>,
}

static NEXT_OUTBOX_ID: AtomicU64 = AtomicU64::new(1);

/// A new outbox whose pending bytes may not pass `limit`.
pub fn outbox(limit: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        id: NEXT_OUTBOX_ID.fetch_add(1, Ordering::Relaxed),
        pending: AtomicUsize::new(0),
        limit,
        closed: CancellationToken::new(),
        reason: OnceLock::new(),
    });
    (
        Outbox {
            tx,
            shared: shared.clone(),
        },
        OutboxReceiver { rx, shared },
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
    /// session produces these one per client frame, so they are bounded by the client.
    pub fn send_frame(&self, frame: Frame) -> Result<(), PushError> {
        let cost = encode::encoded_len_hint(&frame);
        self.shared.pending.fetch_add(cost, Ordering::AcqRel);
        self.push(Notification::Frame(frame), cost)
    }

    /// Asks the writer to close the connection after what is already queued.
    pub fn send_close(&self) {
        let _ = self.tx.send(Notification::Close);
    }

    fn push(&self, notification: Notification, cost: usize) -> Result<(), PushError> {
        self.tx.send(notification).map_err(|_| {
            self.shared.pending.fetch_sub(cost, Ordering::AcqRel);
            PushError::Closed
        })
    }

    /// Closes the outbox from outside the session. The first reason given sticks.
    pub fn close(&self, reason: CloseReason) {
        let _ = self.shared.reason.set(reason);
        self.shared.closed.cancel();
    }

    /// Whether [`Outbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
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
}

impl OutboxReceiver {
    /// Waits for at least one notification and appends up to `max` to `batch`. Returns
    /// 0 only when every sender is gone.
    pub async fn recv_many(&mut self, batch: &mut Vec<Notification>, max: usize) -> usize {
        self.rx.recv_many(batch, max).await
    }

    /// Takes whatever is queued without waiting.
    pub fn try_recv(&mut self) -> Option<Notification> {
        self.rx.try_recv().ok()
    }

    /// Reports that notifications worth `bytes` (their [`Notification::cost`]) were written.
    pub fn release(&self, bytes: usize) {
        self.shared.pending.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Why the outbox was closed from outside, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.reason.get().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Destination;
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
            ack_id: None,
            redelivered: false,
            settle: None,
        }
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
        let mut batch = Vec::new();
        assert_eq!(rx.recv_many(&mut batch, 10).await, 2);
    }

    #[tokio::test]
    async fn released_bytes_make_room_again() {
        let (outbox, mut rx) = outbox(1000);
        outbox.deliver(delivery(600)).unwrap();
        let mut batch = Vec::new();
        rx.recv_many(&mut batch, 10).await;
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
}
