//! What a queue holds, and what it answers.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::budget::Charge;
use crate::relay::StoreReceipt;
use crate::{Destination, Message};

/// A message waiting in a queue or awaiting acknowledgement.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The message.
    pub message: Arc<Message>,
    /// How many times it was delivered.
    pub deliveries: u32,
    /// When it expires.
    pub expires_at: Option<Instant>,
    /// Where it is kept in a cluster's queue store, if it came from one.
    pub receipt: Option<StoreReceipt>,
    /// Its bytes in the global queue budget, from the moment a queue takes it.
    pub(super) charge: Option<Charge>,
}

impl Queued {
    /// A message that was never delivered, expiring at the earlier of its own deadline
    /// and the queue's TTL.
    pub fn new(
        message: Arc<Message>,
        expires_at: Option<Instant>,
        ttl: Option<Duration>,
    ) -> Queued {
        let queue_deadline = ttl.and_then(|ttl| Instant::now().checked_add(ttl));
        let expires_at = match (expires_at, queue_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Queued {
            message,
            deliveries: 0,
            expires_at,
            receipt: None,
            charge: None,
        }
    }

    /// Copies a small message out of the read buffer it was decoded from, so a message
    /// that waits holds its own bytes only (see [`Message::detached`]).
    pub fn detach(&mut self) {
        if let Some(detached) = self.message.detached() {
            self.message = detached;
        }
    }

    /// The bytes it counts for against the queue's and the global limits: its headers
    /// as well as its body (see [`Message::wire_size`]), so that a message of large
    /// headers and no body is not free to keep.
    pub(crate) fn size(&self) -> usize {
        self.message.wire_size()
    }

    pub(super) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Why a message left a queue for the dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    /// NACKed with `requeue:false`.
    Rejected,
    /// Delivered `max-deliveries` times without being acknowledged.
    DeliveryLimit,
}

impl DeathReason {
    /// The value of the `x-dead-letter-reason` header.
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::DeliveryLimit => "delivery-limit",
        }
    }
}

/// A message on its way to a dead-letter queue.
#[derive(Debug)]
pub struct DeadLetter {
    /// The message and its delivery count.
    pub queued: Queued,
    /// Why.
    pub reason: DeathReason,
    /// The queue it left.
    pub from: Destination,
    /// Where it goes; `None` drops it (it is still counted).
    pub to: Option<Destination>,
}

/// An ACK or NACK that matches nothing awaiting acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownAck;

/// Result of offering a message to a queue.
#[derive(Debug)]
pub enum Offer {
    /// Stored (possibly after dropping the oldest message).
    Accepted,
    /// Full with the `block` policy: wait for room and offer again.
    Full(Queued),
    /// Full with the `reject` policy.
    Rejected,
    /// The queue was deleted meanwhile: look it up again.
    Deleted(Queued),
}
