//! A queue's consumers: joining and leaving, acknowledgements, refusals and requeueing.

use postbox_stomp::ByteString;
use tokio::time::Instant;

use super::queued::{DeadLetter, DeathReason, Queued, UnknownAck};
use super::unacked::Unacked;
use super::{Consumer, Queue, State};
use crate::delivery::{AckMode, Settler};
use crate::outbox::Outbox;
use crate::relay::StoreReceipt;

impl Queue {
    /// Adds a consumer and serves it whatever is ready.
    pub fn add_consumer(
        &self,
        key: u64,
        outbox: Outbox,
        subscription: ByteString,
        ack: AckMode,
        prefetch: usize,
    ) {
        self.add_consumer_unless_deleted(key, outbox, subscription, ack, prefetch);
    }

    /// [`Queue::add_consumer`], unless the queue was deleted (forgotten as idle between
    /// the caller's lookup and now): then nothing is added and the caller should look
    /// the name up again. Checked under the lock that deletion takes, so a consumer
    /// never lands in a queue nobody will send to.
    pub(crate) fn add_consumer_unless_deleted(
        &self,
        key: u64,
        outbox: Outbox,
        subscription: ByteString,
        ack: AckMode,
        prefetch: usize,
    ) -> bool {
        let mut state = self.lock();
        if self.is_deleted() {
            return false;
        }
        state.consumers.push(Consumer {
            key,
            outbox,
            subscription,
            ack,
            prefetch,
            unacked: Unacked::default(),
            gone: false,
        });
        self.dispatch(&mut state);
        true
    }

    /// Removes a consumer; what it had not acknowledged goes back to the front of the
    /// queue in delivery order, or to the dead-letter queue past the delivery limit.
    /// Returns the dead letters and whether the queue is now idle (no consumers, no
    /// messages).
    pub fn remove_consumer(&self, key: u64) -> (Vec<DeadLetter>, bool) {
        let mut state = self.lock();
        let Some(index) = state.consumers.iter().position(|c| c.key == key) else {
            return (Vec::new(), false);
        };
        let consumer = state.consumers.remove(index);
        if state.cursor > index {
            state.cursor -= 1;
        }
        // An auto-ack delivery the writer did not settle never reached the peer only once
        // the writer is gone (it settles what it wrote in full before it ends). While it
        // runs (an UNSUBSCRIBE), what is queued or half written may still go out, so it
        // counts as delivered and comes back marked redelivered.
        let unwritten = consumer.ack == AckMode::Auto && consumer.outbox.writer_gone();
        let mut dead = Vec::new();
        let mut expired = Vec::new();
        let unacked = consumer.unacked.into_values();
        self.requeue(&mut state, unacked, unwritten, &mut dead, &mut expired);
        self.dispatch(&mut state);
        // A cluster queue with no local consumer left hands what it fetched back, so
        // other nodes' consumers get it without waiting for a claim timeout.
        let released: Vec<StoreReceipt> = match (&self.store, state.consumers.is_empty()) {
            (Some(_), true) => {
                state.ready_bytes = 0;
                state.ready.drain(..).filter_map(|q| q.receipt).collect()
            }
            _ => Vec::new(),
        };
        let idle = state.consumers.is_empty() && state.ready.is_empty();
        drop(state);
        self.settle_in_store(expired);
        if let Some(link) = &self.store {
            link.release(&self.destination, released);
        }
        (dead, idle)
    }

    /// Puts messages back at the front, oldest first, ahead of everything waiting:
    /// they are walked newest first and each is pushed to the front. Expired ones go
    /// to `expired`, and those past the delivery limit to `dead`.
    fn requeue(
        &self,
        state: &mut State,
        items: impl DoubleEndedIterator<Item = Queued>,
        unwritten: bool,
        dead: &mut Vec<DeadLetter>,
        expired: &mut Vec<Queued>,
    ) {
        let now = Instant::now();
        for mut item in items.rev() {
            if unwritten {
                // Never reached the socket: not a real delivery.
                item.deliveries = item.deliveries.saturating_sub(1);
            }
            if item.expired(now) {
                self.count(|s| &s.expired, 1);
                expired.push(item);
                continue;
            }
            if self.settings.max_deliveries > 0 && item.deliveries >= self.settings.max_deliveries {
                dead.push(self.dead_letter(item, DeathReason::DeliveryLimit));
                continue;
            }
            item.detach();
            state.ready_bytes += item.size();
            state.ready.push_front(item);
        }
    }

    fn dead_letter(&self, queued: Queued, reason: DeathReason) -> DeadLetter {
        self.count(|s| &s.dead_lettered, 1);
        DeadLetter {
            queued,
            reason,
            from: self.destination.clone(),
            to: self.settings.dead_letter.clone(),
        }
    }

    /// Acknowledges `tag` (and, cumulatively, every earlier delivery to the consumer).
    pub fn ack(&self, key: u64, tag: u64, cumulative: bool) -> Result<(), UnknownAck> {
        let mut state = self.lock();
        let consumer = state
            .consumers
            .iter_mut()
            .find(|c| c.key == key)
            .ok_or(UnknownAck)?;
        let taken = take(&mut consumer.unacked, tag, cumulative)?;
        self.count(|s| &s.acked, taken.len() as u64);
        self.dispatch(&mut state);
        drop(state);
        self.settle_in_store(taken);
        Ok(())
    }

    /// Refuses `tag` (cumulatively in client mode): the messages go back to the front of
    /// the queue, or to the dead-letter queue when `requeue` is false or the delivery
    /// limit is reached.
    pub fn nack(
        &self,
        key: u64,
        tag: u64,
        cumulative: bool,
        requeue: bool,
    ) -> Result<Vec<DeadLetter>, UnknownAck> {
        let mut state = self.lock();
        let consumer = state
            .consumers
            .iter_mut()
            .find(|c| c.key == key)
            .ok_or(UnknownAck)?;
        let taken = take(&mut consumer.unacked, tag, cumulative)?;
        let mut dead = Vec::new();
        let mut expired = Vec::new();
        if requeue {
            self.requeue(
                &mut state,
                taken.into_iter(),
                false,
                &mut dead,
                &mut expired,
            );
        } else {
            dead.extend(
                taken
                    .into_iter()
                    .map(|q| self.dead_letter(q, DeathReason::Rejected)),
            );
        }
        self.dispatch(&mut state);
        drop(state);
        self.settle_in_store(expired);
        Ok(dead)
    }

    /// The delivery tag of `message_id` among the consumer's unacknowledged messages
    /// (STOMP 1.0 and 1.1 acknowledge by message id).
    pub fn tag_of(&self, key: u64, message_id: &str) -> Option<u64> {
        let state = self.lock();
        let consumer = state.consumers.iter().find(|c| c.key == key)?;
        consumer
            .unacked
            .iter()
            .find(|(_, q)| q.message.id() == message_id)
            .map(|(tag, _)| tag)
    }

    /// Auto-acknowledged deliveries were written.
    fn settle_written(&self, key: u64, tags: &[u64]) -> Result<(), UnknownAck> {
        let mut state = self.lock();
        let consumer = state
            .consumers
            .iter_mut()
            .find(|c| c.key == key)
            .ok_or(UnknownAck)?;
        let settled: Vec<Queued> = tags
            .iter()
            .filter_map(|&tag| consumer.unacked.remove(tag))
            .collect();
        self.count(|s| &s.acked, settled.len() as u64);
        self.dispatch(&mut state);
        drop(state);
        self.settle_in_store(settled);
        Ok(())
    }
}

impl Settler for Queue {
    fn settle(&self, consumer: u64, tags: &[u64]) {
        // A consumer that left took its deliveries back with it.
        let _ = self.settle_written(consumer, tags);
    }
}

/// Takes `tag` (and every earlier one when `cumulative`) out of `unacked`.
fn take(unacked: &mut Unacked, tag: u64, cumulative: bool) -> Result<Vec<Queued>, UnknownAck> {
    let taken = if cumulative {
        unacked.remove_through(tag)
    } else {
        unacked.remove(tag).map(|item| vec![item])
    };
    taken.ok_or(UnknownAck)
}
