//! A queue's limits and policies, and its counters.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::Destination;

/// What a queue does when a message arrives and it is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// The producer waits (its socket is not read) until there is room.
    Block,
    /// The SEND is refused with an ERROR.
    Reject,
    /// The oldest ready message is dropped to make room.
    DropHead,
    /// The consumers are disconnected as slow (a topic subscription's private queue: a
    /// topic publisher never waits).
    CloseConsumers,
}

impl Overflow {
    /// Parses a configuration value: `block`, `reject` or `drop-head`.
    pub fn parse(value: &str) -> Option<Overflow> {
        match value {
            "block" => Some(Overflow::Block),
            "reject" => Some(Overflow::Reject),
            "drop-head" => Some(Overflow::DropHead),
            _ => None,
        }
    }
}

/// The limits and policies of one queue.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueSettings {
    /// Most ready messages.
    pub max_length: usize,
    /// Most bytes of ready messages, headers included.
    pub max_bytes: usize,
    /// What happens when a limit is reached.
    pub overflow: Overflow,
    /// Deliveries after which a refused message is dead-lettered (0: never).
    pub max_deliveries: u32,
    /// Time a message may wait before it expires (`None`: forever).
    pub ttl: Option<Duration>,
    /// Where dead letters go (`None`: they are dropped and counted).
    pub dead_letter: Option<Destination>,
}

impl Default for QueueSettings {
    fn default() -> QueueSettings {
        QueueSettings {
            max_length: 100_000,
            max_bytes: 64 * 1024 * 1024,
            overflow: Overflow::Block,
            max_deliveries: 10,
            ttl: None,
            dead_letter: None,
        }
    }
}

/// Counters of one queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Messages accepted.
    pub enqueued: AtomicU64,
    /// Deliveries to consumers, redeliveries included.
    pub delivered: AtomicU64,
    /// Deliveries of messages delivered before.
    pub redelivered: AtomicU64,
    /// Messages acknowledged.
    pub acked: AtomicU64,
    /// Messages that expired before delivery.
    pub expired: AtomicU64,
    /// Messages moved to the dead-letter queue (or dropped when there is none).
    pub dead_lettered: AtomicU64,
    /// Messages dropped by the `drop-head` policy.
    pub dropped: AtomicU64,
}
