//! Queues: each message goes to exactly one consumer.
//!
//! A queue holds ready messages in order and a list of consumers. Consumers with credit
//! (fewer unacknowledged messages than their prefetch) are served round-robin. A message
//! stays unacknowledged until the consumer ACKs it (client modes) or until it has been
//! written to the consumer's socket (auto mode), so a consumer that goes away hands
//! everything it had not finished back to the queue, ahead of newer messages.
//!
//! Layout: this file holds [`Queue`], its state and dispatch; `settings` its limits
//! and counters; `queued` the messages it holds and its answers; `consumers` how
//! consumers join, acknowledge and leave; `unacked` a consumer's deliveries awaiting
//! acknowledgement; `link` and `local` the two directions between a cluster queue and
//! its store.
//!
//! Invariants, all kept under the queue's lock:
//!
//! - Every accepted message is in exactly one place: `ready`, or the `unacked` list of
//!   one consumer. It leaves only by acknowledgement, expiry, dead-lettering, the
//!   `drop-head` policy or deletion of the queue, and the store (in a cluster) is told.
//! - Credit belongs to the consumer: one unit per entry of its `unacked`, up to its
//!   prefetch. Dispatch only serves consumers with credit left, and an acknowledgement,
//!   a settle or a NACK gives the unit back and dispatches again. Queue deliveries skip
//!   the outbox's byte limit for this reason: prefetch is what bounds them.
//! - A consumer's delivery tags only grow (they are drawn while the lock is held), so
//!   its `unacked` is in delivery order and a cumulative ACK takes a prefix of it.
//! - Messages handed back (their consumer left, or a NACK asked to requeue) go to the
//!   front of `ready` in their original order, so they are delivered again before any
//!   newer message.
//!
//! Lock order: the router's queue map, then a queue's state. Nothing is awaited and no
//! other lock is taken while a queue's state is locked; pushing into an outbox does not
//! block.

mod consumers;
mod link;
mod local;
mod queued;
mod settings;
#[cfg(test)]
mod tests;
mod unacked;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use postbox_stomp::ByteString;
use tokio::sync::Notify;
use tokio::time::Instant;

use self::link::StoreLink;
pub use self::queued::{DeadLetter, DeathReason, Offer, Queued, UnknownAck};
pub use self::settings::{Overflow, QueueSettings, QueueStats};
use self::unacked::Unacked;
use crate::Destination;
use crate::budget::Budget;
use crate::delivery::{AckMode, AckTag, Acknowledge, Delivery, Settle};
use crate::outbox::{CloseReason, Outbox};
use crate::relay::QueueStore;

/// The most room an empty queue keeps for waiting messages; a larger backlog's is freed
/// once it drains.
const KEEP_READY: usize = 1024;

/// One subscription consuming from the queue.
#[derive(Debug)]
struct Consumer {
    /// The subscription's key, unique in its router; the first half of its `ack` ids.
    key: u64,
    outbox: Outbox,
    subscription: ByteString,
    ack: AckMode,
    /// Most entries `unacked` may hold: the consumer's credit.
    prefetch: usize,
    /// Delivered and not yet acknowledged, by delivery tag (tags only grow). Each entry
    /// was pushed into `outbox` once; it leaves by ACK, settle or NACK, or goes back to
    /// `ready` when the consumer is removed.
    unacked: Unacked,
    /// Its outbox refused a delivery: the session is going away, and a refusing outbox
    /// never accepts again, so the consumer is skipped until its session removes it.
    gone: bool,
}

impl Consumer {
    /// Whether dispatch may give it one more message.
    fn has_credit(&self) -> bool {
        !self.gone && self.unacked.len() < self.prefetch && self.outbox.accepts()
    }
}

/// What the queue's lock guards.
#[derive(Debug, Default)]
struct State {
    /// Messages waiting for a consumer, oldest (or handed back) first.
    ready: VecDeque<Queued>,
    /// [`Queued::size`] summed over `ready`, for the `max-bytes` limit.
    ready_bytes: usize,
    /// In subscription order.
    consumers: Vec<Consumer>,
    /// The consumer to offer the next message to first (round-robin).
    cursor: usize,
}

/// Delivery tags, unique in the process. Drawn with the queue's lock held, so the tags
/// of one consumer grow in delivery order.
static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

/// One queue.
#[derive(Debug)]
pub struct Queue {
    /// This queue, for the [`Settle`] handles of its auto-acknowledged deliveries.
    me: Weak<Queue>,
    destination: Destination,
    settings: QueueSettings,
    state: Mutex<State>,
    space: Notify,
    stats: QueueStats,
    /// In a cluster: where settled and released messages are reported.
    store: Option<StoreLink>,
    /// In a cluster: wakes the fetcher when consumers may take more.
    demand: Notify,
    /// Counters shared by every queue of a router, which outlive single queues.
    totals: Option<Arc<QueueStats>>,
    /// Bytes held by every queue of every virtual host.
    budget: Arc<Budget>,
    /// Set under the state's lock, so an offer that finds it unset has the queue; read
    /// without the lock by holders asking whether to look the queue up again.
    deleted: AtomicBool,
}

impl Queue {
    /// An empty queue.
    pub fn new(destination: Destination, settings: QueueSettings) -> Arc<Queue> {
        Queue::build(destination, settings, None, None, Arc::default())
    }

    /// An empty queue whose counters also add up in `totals` and whose messages are
    /// charged to `budget`.
    pub fn counted(
        destination: Destination,
        settings: QueueSettings,
        totals: Arc<QueueStats>,
        budget: Arc<Budget>,
    ) -> Arc<Queue> {
        Queue::build(destination, settings, None, Some(totals), budget)
    }

    /// An empty node-local buffer of a cluster queue kept in `store`.
    pub fn clustered(
        destination: Destination,
        settings: QueueSettings,
        store: Arc<dyn QueueStore>,
        vhost: &str,
        totals: Arc<QueueStats>,
        budget: Arc<Budget>,
    ) -> Arc<Queue> {
        let link = StoreLink::new(store, vhost);
        Queue::build(destination, settings, Some(link), Some(totals), budget)
    }

    fn build(
        destination: Destination,
        settings: QueueSettings,
        store: Option<StoreLink>,
        totals: Option<Arc<QueueStats>>,
        budget: Arc<Budget>,
    ) -> Arc<Queue> {
        Arc::new_cyclic(|me| Queue {
            me: me.clone(),
            destination,
            settings,
            state: Mutex::default(),
            space: Notify::new(),
            stats: QueueStats::default(),
            store,
            demand: Notify::new(),
            totals,
            budget,
            deleted: AtomicBool::new(false),
        })
    }

    /// Adds `n` to one counter of this queue and of the router's totals.
    fn count(&self, counter: impl Fn(&QueueStats) -> &AtomicU64, n: u64) {
        counter(&self.stats).fetch_add(n, Ordering::Relaxed);
        if let Some(totals) = &self.totals {
            counter(totals).fetch_add(n, Ordering::Relaxed);
        }
    }

    /// In a cluster, tells the store these messages are done with.
    fn settle_in_store(&self, items: impl IntoIterator<Item = Queued>) {
        if let Some(link) = &self.store {
            link.settle(&self.destination, items);
        }
    }

    /// Whether the queue was deleted (a new one may have taken its name). A hint for
    /// holders of the queue: an offer to a deleted queue says so under its lock anyway.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// The queue's destination.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// Its settings.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Its counters.
    pub fn stats(&self) -> &QueueStats {
        &self.stats
    }

    /// Ready messages and consumers, for introspection.
    pub fn depth(&self) -> (usize, usize) {
        let state = self.lock();
        let unacked = state.consumers.iter().map(|c| c.unacked.len()).sum();
        (state.ready.len(), unacked)
    }

    /// Number of consumers.
    pub fn consumer_count(&self) -> usize {
        self.lock().consumers.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers a message, applying the overflow policy when full.
    pub fn offer(&self, mut queued: Queued) -> Offer {
        let mut state = self.lock();
        if self.is_deleted() {
            return Offer::Deleted(queued);
        }
        let size = queued.size();
        let full = |state: &State| self.is_full(state, size) || !self.budget.fits(size);
        // Expired messages at the front make no queue full: a queue nobody consumes
        // from would otherwise keep them, and its producers blocked, for good.
        if full(&state) && self.drop_expired_front(&mut state) > 0 {
            self.space.notify_waiters();
        }
        if full(&state) {
            match self.settings.overflow {
                Overflow::Block => return Offer::Full(queued),
                Overflow::Reject => return Offer::Rejected,
                Overflow::DropHead => {
                    // Only this queue's own limits: dropping its messages for a budget
                    // that other queues fill would empty it for nothing.
                    while self.is_full(&state, size) {
                        let Some(dropped) = state.ready.pop_front() else {
                            break;
                        };
                        state.ready_bytes -= dropped.size();
                        self.count(|s| &s.dropped, 1);
                    }
                }
                Overflow::CloseConsumers => {
                    for consumer in &state.consumers {
                        consumer.outbox.close(CloseReason::SlowConsumer {
                            limit: self.settings.max_length,
                        });
                    }
                    return Offer::Rejected;
                }
            }
        }
        // Another queue may have taken the last of the budget since the check above.
        match self.budget.try_charge(size) {
            Some(charge) => queued.charge = Some(charge),
            None if self.settings.overflow == Overflow::Block => return Offer::Full(queued),
            None => return Offer::Rejected,
        }
        state.ready_bytes += size;
        let message = Arc::as_ptr(&queued.message);
        state.ready.push_back(queued);
        self.count(|s| &s.enqueued, 1);
        self.dispatch(&mut state);
        // Not taken at once: it waits, so it no longer holds its publisher's read buffer.
        if let Some(waiting) = state.ready.back_mut()
            && Arc::as_ptr(&waiting.message) == message
        {
            waiting.detach();
        }
        Offer::Accepted
    }

    /// Stores a message whatever the limits (dead letters must not be lost; a cluster's
    /// fetched messages were already counted against the limits by the store).
    pub fn force(&self, mut queued: Queued) -> Result<(), Queued> {
        queued.detach();
        let mut state = self.lock();
        if self.is_deleted() {
            return Err(queued);
        }
        if queued.charge.is_none() {
            queued.charge = Some(self.budget.force_charge(queued.size()));
        }
        state.ready_bytes += queued.size();
        state.ready.push_back(queued);
        self.count(|s| &s.enqueued, 1);
        self.dispatch(&mut state);
        Ok(())
    }

    /// Waits until the queue may have room for a message of `size` bytes (after an
    /// [`Offer::Full`] for it). Waiting for less would let the offer fail again at once
    /// and its producer spin.
    /// The global budget counts too: the wait also ends when it has room.
    pub async fn room(&self, size: usize) {
        let notified = self.space.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let own_room = {
            let state = self.lock();
            if self.is_deleted() {
                return;
            }
            !self.is_full(&state, size)
        };
        if own_room {
            if self.budget.fits(size) {
                return;
            }
            // Room here, none in the budget: the budget's releases are what to wait for
            // (and a deletion, which the queue's notification tells).
            tokio::select! {
                () = notified => {}
                () = self.budget.room(size) => {}
            }
        } else {
            notified.await;
        }
    }

    /// Drops the expired messages at the front of the ready list (all of them under a
    /// queue TTL, whose deadlines come in order), and returns how many.
    fn drop_expired_front(&self, state: &mut State) -> usize {
        if state.ready.front().is_none_or(|q| q.expires_at.is_none()) {
            return 0;
        }
        let now = Instant::now();
        let mut expired = Vec::new();
        while state.ready.front().is_some_and(|item| item.expired(now)) {
            let item = state.ready.pop_front().expect("a front");
            state.ready_bytes -= item.size();
            expired.push(item);
        }
        let count = expired.len();
        if count > 0 {
            self.count(|s| &s.expired, count as u64);
            self.settle_in_store(expired);
        }
        count
    }

    /// Frees the expired messages at the front of the queue, waking producers that wait
    /// for room; for queues no consumer drains, which would keep them otherwise.
    pub fn purge_expired(&self) -> usize {
        let mut state = self.lock();
        let count = self.drop_expired_front(&mut state);
        drop(state);
        if count > 0 {
            self.space.notify_waiters();
        }
        count
    }

    /// Whether a message of `size` bytes would pass a limit. A single message
    /// larger than `max_bytes` still fits in an empty queue.
    fn is_full(&self, state: &State, size: usize) -> bool {
        state.ready.len() >= self.settings.max_length
            || (state.ready_bytes + size > self.settings.max_bytes && !state.ready.is_empty())
    }

    /// Marks the queue deleted and drops its content; returns the messages that were
    /// still held (for counting) and wakes blocked producers so they look again.
    pub fn delete(&self) -> usize {
        let mut state = self.lock();
        self.deleted.store(true, Ordering::Release);
        let held = state.ready.len()
            + state
                .consumers
                .iter()
                .map(|c| c.unacked.len())
                .sum::<usize>();
        state.ready.clear();
        state.ready_bytes = 0;
        state.consumers.clear();
        drop(state);
        self.space.notify_waiters();
        held
    }

    /// Whether the queue has no consumers and no messages; if so and `delete_if_idle`,
    /// marks it deleted (under the same lock, so no message can slip in between).
    pub fn delete_if_idle(&self) -> bool {
        let state = self.lock();
        let idle = state.consumers.is_empty() && state.ready.is_empty() && !self.is_deleted();
        if idle {
            self.deleted.store(true, Ordering::Release);
        }
        drop(state);
        if idle {
            self.space.notify_waiters();
        }
        idle
    }

    /// Serves ready messages to consumers with credit, round-robin, oldest message
    /// first. Called after anything that adds a message or gives credit back.
    ///
    /// Every turn delivers a message, drops an expired one or rules a consumer out for
    /// good (`gone`), so the loop ends however the consumers behave (DESIGN.md: no loop
    /// under a lock unless every turn makes progress).
    fn dispatch(&self, state: &mut State) {
        let before = state.ready.len();
        // Read the clock only if some message can expire.
        let mut now = None;
        while !state.ready.is_empty() && !state.consumers.is_empty() {
            let count = state.consumers.len();
            let Some(index) = (0..count)
                .map(|i| (state.cursor + i) % count)
                .find(|&i| state.consumers[i].has_credit())
            else {
                break;
            };
            let mut item = state.ready.pop_front().expect("not empty");
            state.ready_bytes -= item.size();
            if item
                .expires_at
                .is_some_and(|at| at <= *now.get_or_insert_with(Instant::now))
            {
                self.count(|s| &s.expired, 1);
                // Rare, and the store only queues the request: fine under the lock.
                self.settle_in_store([item]);
                continue;
            }
            item.deliveries += 1;
            let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
            let consumer = &mut state.consumers[index];
            let auto = consumer.ack == AckMode::Auto;
            let delivery = Delivery {
                message: item.message.clone(),
                subscription: consumer.subscription.clone(),
                ack: if auto {
                    Acknowledge::OnWrite(Settle::new(self.me.clone(), consumer.key, tag))
                } else {
                    Acknowledge::Client(AckTag {
                        consumer: consumer.key,
                        tag,
                    })
                },
                redelivered: item.deliveries > 1,
            };
            if consumer.outbox.deliver_with_credit(delivery).is_err() {
                // The consumer's session is closing: keep the message for the others and
                // never offer this consumer anything again, so every turn of this loop
                // either delivers, drops an expired message or rules a consumer out.
                consumer.gone = true;
                item.deliveries -= 1;
                state.ready_bytes += item.size();
                state.ready.push_front(item);
                continue;
            }
            self.count(|s| &s.delivered, 1);
            if item.deliveries > 1 {
                self.count(|s| &s.redelivered, 1);
            }
            consumer.unacked.insert(tag, item);
            state.cursor = (index + 1) % count;
        }
        if state.ready.len() < before {
            self.space.notify_waiters();
        }
        if state.ready.is_empty() && state.ready.capacity() > KEEP_READY {
            // A backlog once drained keeps no room for itself.
            state.ready = VecDeque::new();
        }
        if self.store.is_some() {
            self.demand.notify_waiters();
        }
    }
}
