//! The invariants: what every client was sent and what the broker confirmed, across all
//! connections of one input, and the checks made against it as frames arrive and once
//! every client has gone. A broken invariant is a panic, which is what the fuzzer finds.

use std::collections::HashSet;

use super::client::Pending;

/// What one input did, so tests can tell that a script exercised what it meant to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Queue messages whose acceptance a receipt confirmed.
    pub accepted: usize,
    /// Queue deliveries seen by clients.
    pub delivered: usize,
    /// Deliveries whose acknowledgement a receipt confirmed.
    pub acked: usize,
    /// Messages left in queues at the end.
    pub drained: usize,
}

/// The shared record of messages and deliveries the checks are made against.
#[derive(Debug, Default)]
pub(super) struct Oracle {
    next_message: u64,
    /// Queue messages sent, whatever became of them.
    sent: HashSet<u64>,
    /// Queue messages whose SEND (or COMMIT) the broker confirmed.
    accepted: HashSet<u64>,
    /// Deliveries (queue, message) whose acknowledgement the broker confirmed.
    acked: HashSet<(String, u64)>,
    /// Messages an ACK was sent for, confirmed or not.
    ack_sent: HashSet<u64>,
    /// Messages delivered to an auto-ack subscription.
    auto_seen: HashSet<u64>,
    /// Deliveries seen without `redelivered`.
    fresh: HashSet<(String, u64)>,
    /// Queue deliveries seen.
    delivered: usize,
}

impl Oracle {
    /// Numbers a new message and records it as sent.
    pub(super) fn next_message(&mut self) -> u64 {
        let n = self.next_message;
        self.next_message += 1;
        self.sent.insert(n);
        n
    }

    /// A receipt confirmed that `effect` took place.
    pub(super) fn confirmed(&mut self, effect: Pending) {
        match effect {
            Pending::Sent(n) => {
                self.accepted.insert(n);
            }
            Pending::Acked(keys) => self.acked.extend(keys),
        }
    }

    /// An ACK for these deliveries went out, whether or not it is ever confirmed.
    pub(super) fn ack_sent(&mut self, keys: &[(String, u64)]) {
        self.ack_sent.extend(keys.iter().map(|k| k.1));
    }

    /// A client received message `key.1` from queue `key.0`. Panics if it was never
    /// sent, if its acknowledgement was already confirmed, or if it came a second time
    /// without `redelivered:true`.
    pub(super) fn delivered(&mut self, key: &(String, u64), redelivered: bool) {
        let n = key.1;
        assert!(self.sent.contains(&n), "message m{n} was never sent");
        self.delivered += 1;
        assert!(
            !self.acked.contains(key),
            "m{n} on {} delivered again after its ACK was confirmed",
            key.0
        );
        if !redelivered {
            self.fresh(key.clone());
        }
    }

    /// `key` was delivered without `redelivered:true`, which is only right the first
    /// time anyone receives it.
    pub(super) fn fresh(&mut self, key: (String, u64)) {
        let n = key.1;
        let destination = key.0.clone();
        assert!(
            self.fresh.insert(key),
            "m{n} on {destination} delivered twice without redelivered:true"
        );
    }

    /// Message `n` reached an auto-ack subscription, which settles it.
    pub(super) fn auto_acked(&mut self, n: u64) {
        self.auto_seen.insert(n);
    }

    /// The counts of this input, with `drained` messages left in the queues.
    pub(super) fn summary(&self, drained: usize) -> Summary {
        Summary {
            accepted: self.accepted.len(),
            delivered: self.delivered,
            acked: self.acked.len(),
            drained,
        }
    }

    /// Every message the broker accepted must have been consumed, acknowledged or left
    /// in a queue (`drained`). Only holds when no queue dropped or expired anything.
    pub(super) fn check_accounted(&self, drained: &HashSet<u64>) {
        let mut accepted: Vec<_> = self.accepted.iter().copied().collect();
        accepted.sort_unstable();
        for n in accepted {
            assert!(
                drained.contains(&n) || self.auto_seen.contains(&n) || self.ack_sent.contains(&n),
                "m{n} was accepted, then neither consumed, acknowledged nor left in a queue"
            );
        }
    }
}
