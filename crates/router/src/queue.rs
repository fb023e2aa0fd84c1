//! Queues: each message goes to exactly one consumer.
//!
//! A queue holds ready messages in order and a list of consumers. Consumers with credit
//! (fewer unacknowledged messages than their prefetch) are served round-robin. A message
//! stays unacknowledged until the consumer ACKs it (client modes) or until it has been
//! written to the consumer's socket (auto mode), so a consumer that goes away hands
//! everything it had not finished back to the queue, ahead of newer messages.
//!
//! Lock order: the router's queue map, then a queue's state. Nothing is awaited and no
//! other lock is taken while a queue's state is locked; pushing into an outbox does not
//! block.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use postbox_stomp::ByteString;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::budget::{Budget, Charge};
use crate::delivery::{AckMode, AckTag, Delivery, Settle, Settler};
use crate::outbox::{CloseReason, Outbox};
use crate::relay::{LocalQueue, QueueStore, StoreReceipt};
use crate::unacked::Unacked;
use crate::{Destination, Message};

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

/// The most room an empty queue keeps for waiting messages; a larger backlog's is freed
/// once it drains.
const KEEP_READY: usize = 1024;

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
    charge: Option<Charge>,
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

    fn expired(&self, now: Instant) -> bool {
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

#[derive(Debug)]
struct Consumer {
    key: u64,
    outbox: Outbox,
    subscription: ByteString,
    ack: AckMode,
    prefetch: usize,
    /// Delivered and not yet acknowledged, by delivery tag (tags only grow).
    unacked: Unacked,
    /// Its outbox refused a delivery: the session is going away, and a refusing outbox
    /// never accepts again, so the consumer is skipped until its session removes it.
    gone: bool,
}

impl Consumer {
    fn has_credit(&self) -> bool {
        !self.gone && self.unacked.len() < self.prefetch && self.outbox.accepts()
    }
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Queued>,
    ready_bytes: usize,
    consumers: Vec<Consumer>,
    cursor: usize,
}

/// Delivery tags, unique in the process.
static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

/// The cluster store a queue's messages come from, and the virtual host it is in.
#[derive(Debug)]
struct StoreLink {
    store: Arc<dyn QueueStore>,
    vhost: String,
}

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
        let link = StoreLink {
            store,
            vhost: vhost.to_owned(),
        };
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

    /// Tells the store these messages are done with.
    fn settle_in_store(&self, items: impl IntoIterator<Item = Queued>) {
        if let Some(link) = &self.store {
            let receipts: Vec<StoreReceipt> = items.into_iter().filter_map(|q| q.receipt).collect();
            if !receipts.is_empty() {
                link.store.settle(&link.vhost, &self.destination, receipts);
            }
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

    /// Adds a consumer and serves it whatever is ready.
    pub fn add_consumer(
        &self,
        key: u64,
        outbox: Outbox,
        subscription: ByteString,
        ack: AckMode,
        prefetch: usize,
    ) {
        let mut state = self.lock();
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
        if let Some(link) = &self.store
            && !released.is_empty()
        {
            link.store.release(&link.vhost, &self.destination, released);
        }
        (dead, idle)
    }

    /// Puts messages back at the front, oldest first; expired ones go to `expired`.
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

    /// Serves ready messages to consumers with credit, round-robin.
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
                ack: (!auto).then_some(AckTag {
                    consumer: consumer.key,
                    tag,
                }),
                redelivered: item.deliveries > 1,
                settle: auto.then(|| Settle::new(self.me.clone(), consumer.key, tag)),
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

impl LocalQueue for Queue {
    fn destination(&self) -> &Destination {
        &self.destination
    }

    fn consumer_count(&self) -> usize {
        Queue::consumer_count(self)
    }

    fn demand(&self) -> usize {
        let state = self.lock();
        let credit: usize = state
            .consumers
            .iter()
            .filter(|c| !c.gone && c.outbox.accepts())
            .map(|c| c.prefetch.saturating_sub(c.unacked.len()))
            .sum();
        credit.saturating_sub(state.ready.len())
    }

    fn demand_changed(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.demand.notified())
    }

    fn held_receipts(&self) -> Vec<StoreReceipt> {
        let state = self.lock();
        state
            .ready
            .iter()
            .chain(
                state
                    .consumers
                    .iter()
                    .flat_map(|c| c.unacked.iter().map(|(_, q)| q)),
            )
            .filter_map(|q| q.receipt.clone())
            .collect()
    }

    fn fetched(
        &self,
        message: Arc<Message>,
        expires_at: Option<Instant>,
        delivered_before: bool,
        receipt: StoreReceipt,
    ) -> bool {
        let mut queued = Queued::new(message, expires_at, None);
        queued.deliveries = u32::from(delivered_before);
        queued.receipt = Some(receipt);
        self.force(queued).is_ok()
    }

    fn count_expired(&self) {
        // This queue's counter only, not the router's totals, as it always was.
        self.stats.expired.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Notification, OutboxReceiver, outbox};
    use bytes::Bytes;
    use postbox_stomp::Headers;

    fn queue(settings: QueueSettings) -> Arc<Queue> {
        let destination = Destination::parse(&"/queue/jobs".into()).unwrap();
        Queue::new(destination, settings)
    }

    fn message(body: &str) -> Queued {
        let destination = Destination::parse(&"/queue/jobs".into()).unwrap();
        let message = Message::new(
            format!("m-{body}").into(),
            destination,
            Headers::new(),
            Bytes::from(body.to_owned()),
        );
        Queued::new(Arc::new(message), None, None)
    }

    fn offer(queue: &Arc<Queue>, body: &str) {
        assert!(matches!(queue.offer(message(body)), Offer::Accepted));
    }

    struct TestConsumer {
        rx: OutboxReceiver,
        _outbox: Outbox,
    }

    fn consumer(queue: &Arc<Queue>, key: u64, ack: AckMode, prefetch: usize) -> TestConsumer {
        let (outbox, rx) = outbox(1 << 30);
        queue.add_consumer(key, outbox.clone(), "sub".into(), ack, prefetch);
        TestConsumer {
            rx,
            _outbox: outbox,
        }
    }

    impl TestConsumer {
        /// (body, ack tag, redelivered) of everything delivered so far.
        fn received(&mut self) -> Vec<(String, u64, bool)> {
            let mut out = Vec::new();
            while let Some(Notification::Deliver(delivery)) = self.rx.try_recv() {
                let tag = delivery
                    .ack
                    .map(|ack| ack.tag)
                    .or(delivery.settle.as_ref().map(|s| s.tag()))
                    .unwrap();
                let body = String::from_utf8(delivery.message.body().to_vec()).unwrap();
                out.push((body, tag, delivery.redelivered));
            }
            out
        }

        fn bodies(&mut self) -> Vec<String> {
            self.received().into_iter().map(|(b, _, _)| b).collect()
        }
    }

    /// A small message decoded from a large read buffer, as a session's SEND is.
    fn in_read_buffer(buffer: &ByteString) -> Queued {
        let destination = Destination::parse(&buffer.slice_ref(&buffer[..11])).unwrap();
        let headers: Headers = [(
            buffer.slice_ref(&buffer[11..16]),
            buffer.slice_ref(&buffer[16..21]),
        )]
        .into_iter()
        .collect();
        let body = buffer.as_bytes().slice(21..26);
        let message = Message::new("m-1".into(), destination, headers, body);
        Queued::new(Arc::new(message), None, None)
    }

    fn shares(message: &Message, buffer: &ByteString) -> bool {
        let inside = buffer.as_bytes().as_ptr_range();
        let (name, value) = message.headers().iter().next().unwrap();
        [
            message.body().as_ptr(),
            message.destination().as_str().as_ptr(),
            name.as_ptr(),
            value.as_ptr(),
        ]
        .iter()
        .any(|at| inside.contains(at))
    }

    #[test]
    fn a_small_message_that_waits_holds_no_read_buffer() {
        let mut text = String::from("/queue/jobsx-keyvaluehello");
        text.push_str(&"z".repeat(64 * 1024));
        let buffer = ByteString::from(text);

        let queue = queue(QueueSettings::default());
        assert!(matches!(
            queue.offer(in_read_buffer(&buffer)),
            Offer::Accepted
        ));
        let waiting = queue.lock().ready[0].message.clone();
        assert!(
            !shares(&waiting, &buffer),
            "a waiting message is copied out"
        );
        assert_eq!(waiting.body(), "hello");
        assert_eq!(waiting.headers().get("x-key"), Some("value"));
        assert_eq!(waiting.destination().as_str(), "/queue/jobs");

        // One taken at once is not copied; one handed back (its consumer left) is.
        let mut c = consumer(&queue, 1, AckMode::Client, 10);
        c.received();
        assert!(matches!(
            queue.offer(in_read_buffer(&buffer)),
            Offer::Accepted
        ));
        let delivered = queue.lock().consumers[0]
            .unacked
            .iter()
            .last()
            .unwrap()
            .1
            .message
            .clone();
        assert!(
            shares(&delivered, &buffer),
            "a message taken at once is not copied"
        );
        drop(delivered);
        queue.remove_consumer(1);
        assert!(
            queue
                .lock()
                .ready
                .iter()
                .all(|q| !shares(&q.message, &buffer))
        );
    }

    #[test]
    fn a_drained_backlog_gives_its_room_back() {
        let queue = queue(QueueSettings::default());
        for n in 0..5000 {
            offer(&queue, &n.to_string());
        }
        assert!(queue.lock().ready.capacity() >= 5000);
        let mut c = consumer(&queue, 1, AckMode::Auto, 10_000);
        assert_eq!(c.received().len(), 5000);
        assert!(queue.lock().ready.capacity() <= KEEP_READY);
    }

    #[test]
    fn messages_go_round_robin_to_one_consumer_each() {
        let queue = queue(QueueSettings::default());
        let mut a = consumer(&queue, 1, AckMode::ClientIndividual, 100);
        let mut b = consumer(&queue, 2, AckMode::ClientIndividual, 100);
        for body in ["1", "2", "3", "4"] {
            offer(&queue, body);
        }
        assert_eq!(a.bodies(), ["1", "3"]);
        assert_eq!(b.bodies(), ["2", "4"]);
    }

    #[test]
    fn messages_wait_for_a_consumer() {
        let queue = queue(QueueSettings::default());
        offer(&queue, "early");
        assert_eq!(queue.depth(), (1, 0));
        let mut a = consumer(&queue, 1, AckMode::Client, 10);
        assert_eq!(a.bodies(), ["early"]);
        assert_eq!(queue.depth(), (0, 1));
    }

    #[test]
    fn prefetch_bounds_unacknowledged_messages() {
        let queue = queue(QueueSettings::default());
        let mut a = consumer(&queue, 1, AckMode::ClientIndividual, 2);
        for body in ["1", "2", "3"] {
            offer(&queue, body);
        }
        let got = a.received();
        assert_eq!(got.len(), 2);
        queue.ack(1, got[0].1, false).unwrap();
        assert_eq!(a.bodies(), ["3"]);
    }

    #[test]
    fn client_acks_are_cumulative_and_individual_ones_are_not() {
        let cumulative = queue(QueueSettings::default());
        let mut a = consumer(&cumulative, 1, AckMode::Client, 10);
        for body in ["1", "2", "3"] {
            offer(&cumulative, body);
        }
        let got = a.received();
        cumulative.ack(1, got[1].1, true).unwrap();
        assert_eq!(cumulative.depth(), (0, 1));
        assert_eq!(cumulative.ack(1, got[0].1, true), Err(UnknownAck));

        let individual = queue(QueueSettings::default());
        let mut b = consumer(&individual, 1, AckMode::ClientIndividual, 10);
        for body in ["1", "2", "3"] {
            offer(&individual, body);
        }
        let got = b.received();
        individual.ack(1, got[1].1, false).unwrap();
        assert_eq!(individual.depth(), (0, 2));
        assert_eq!(individual.ack(1, got[1].1, false), Err(UnknownAck));
        assert_eq!(individual.ack(9, got[0].1, false), Err(UnknownAck));
    }

    #[test]
    fn a_leaving_consumer_hands_back_its_messages_ahead_of_newer_ones() {
        let queue = queue(QueueSettings::default());
        let mut a = consumer(&queue, 1, AckMode::ClientIndividual, 2);
        offer(&queue, "1");
        offer(&queue, "2");
        offer(&queue, "3");
        assert_eq!(a.bodies(), ["1", "2"]);
        let (dead, _) = queue.remove_consumer(1);
        assert!(dead.is_empty());
        let mut c = consumer(&queue, 3, AckMode::ClientIndividual, 10);
        let got = c.received();
        let summary: Vec<(&str, bool)> = got.iter().map(|(b, _, r)| (b.as_str(), *r)).collect();
        assert_eq!(summary, [("1", true), ("2", true), ("3", false)]);
    }

    #[test]
    fn nack_requeues_at_the_front_or_dead_letters() {
        let dlq = Destination::parse(&"/queue/jobs.dlq".into()).unwrap();
        let queue = queue(QueueSettings {
            dead_letter: Some(dlq.clone()),
            ..QueueSettings::default()
        });
        let mut a = consumer(&queue, 1, AckMode::ClientIndividual, 1);
        offer(&queue, "1");
        offer(&queue, "2");
        let first = a.received();
        assert!(queue.nack(1, first[0].1, false, true).unwrap().is_empty());
        let again = a.received();
        assert_eq!((again[0].0.as_str(), again[0].2), ("1", true));
        let dead = queue.nack(1, again[0].1, false, false).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, DeathReason::Rejected);
        assert_eq!(dead[0].to, Some(dlq));
        assert_eq!(a.bodies(), ["2"]);
    }

    #[test]
    fn the_delivery_limit_dead_letters() {
        let queue = queue(QueueSettings {
            max_deliveries: 2,
            ..QueueSettings::default()
        });
        let mut a = consumer(&queue, 1, AckMode::ClientIndividual, 1);
        offer(&queue, "poison");
        let first = a.received()[0].1;
        assert!(queue.nack(1, first, false, true).unwrap().is_empty());
        let second = a.received()[0].1;
        let dead = queue.nack(1, second, false, true).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, DeathReason::DeliveryLimit);
        assert_eq!(dead[0].queued.deliveries, 2);
        assert_eq!(queue.depth(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_messages_are_never_delivered() {
        let queue = queue(QueueSettings {
            ttl: Some(Duration::from_millis(100)),
            ..QueueSettings::default()
        });
        let mut short = message("short");
        short.expires_at = Some(Instant::now() + Duration::from_millis(10));
        assert!(matches!(queue.offer(short), Offer::Accepted));
        assert!(matches!(
            queue.offer(Queued::new(
                message("queue-ttl").message,
                None,
                Some(Duration::from_millis(100))
            )),
            Offer::Accepted
        ));
        offer(&queue, "forever");
        tokio::time::advance(Duration::from_millis(200)).await;
        let mut a = consumer(&queue, 1, AckMode::Auto, 10);
        assert_eq!(a.bodies(), ["forever"]);
        assert_eq!(queue.stats().expired.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_messages_make_no_queue_full_and_are_purged_without_consumers() {
        let ttl = Some(Duration::from_millis(100));
        let queue = queue(QueueSettings {
            max_length: 2,
            overflow: Overflow::Block,
            ttl,
            ..QueueSettings::default()
        });
        let with_ttl = |body| Queued::new(message(body).message, None, ttl);
        assert!(matches!(queue.offer(with_ttl("a")), Offer::Accepted));
        assert!(matches!(queue.offer(with_ttl("b")), Offer::Accepted));
        assert!(matches!(queue.offer(with_ttl("c")), Offer::Full(_)));
        // A producer waiting for room is woken by the purge, with nobody consuming.
        let waiting = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.room(1).await })
        };
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(queue.purge_expired(), 2);
        assert_eq!(queue.depth().0, 0);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the producer was woken")
            .unwrap();
        // An offer to a queue full of expired messages drops them itself.
        assert!(matches!(queue.offer(with_ttl("d")), Offer::Accepted));
        assert!(matches!(queue.offer(with_ttl("e")), Offer::Accepted));
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(matches!(queue.offer(with_ttl("f")), Offer::Accepted));
        assert_eq!(queue.stats().expired.load(Ordering::Relaxed), 4);
        let mut a = consumer(&queue, 1, AckMode::Auto, 10);
        assert_eq!(a.bodies(), ["f"]);
    }

    #[test]
    fn overflow_policies() {
        let limited = |overflow| QueueSettings {
            max_length: 2,
            overflow,
            ..QueueSettings::default()
        };
        let blocking = queue(limited(Overflow::Block));
        offer(&blocking, "1");
        offer(&blocking, "2");
        assert!(matches!(blocking.offer(message("3")), Offer::Full(_)));

        let rejecting = queue(limited(Overflow::Reject));
        offer(&rejecting, "1");
        offer(&rejecting, "2");
        assert!(matches!(rejecting.offer(message("3")), Offer::Rejected));

        let dropping = queue(limited(Overflow::DropHead));
        for body in ["1", "2", "3"] {
            offer(&dropping, body);
        }
        let mut a = consumer(&dropping, 1, AckMode::Auto, 10);
        assert_eq!(a.bodies(), ["2", "3"]);
        assert_eq!(dropping.stats().dropped.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_blocked_producer_wakes_when_room_appears() {
        let queue = queue(QueueSettings {
            max_length: 1,
            ..QueueSettings::default()
        });
        offer(&queue, "1");
        let Offer::Full(waiting) = queue.offer(message("2")) else {
            panic!("expected a full queue")
        };
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move {
                queue.room(0).await;
                matches!(queue.offer(waiting), Offer::Accepted)
            })
        };
        tokio::task::yield_now().await;
        let mut a = consumer(&queue, 1, AckMode::ClientIndividual, 10);
        assert!(waiter.await.unwrap());
        assert_eq!(a.bodies(), ["1", "2"]);
    }

    /// Runs `f` on its own thread and fails if it does not return within 10 s: a
    /// livelocked dispatch would otherwise hang the test run instead of failing it.
    fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(f());
        });
        wait.recv_timeout(Duration::from_secs(10))
            .expect("did not return: the queue spins")
    }

    #[test]
    fn a_consumer_whose_writer_left_is_skipped_not_retried() {
        for ack in [AckMode::Auto, AckMode::Client, AckMode::ClientIndividual] {
            let queue = queue(QueueSettings::default());
            // The writer of consumer 1 has ended; its session has not removed it yet.
            let (gone, gone_rx) = outbox(1 << 30);
            queue.add_consumer(1, gone.clone(), "sub".into(), ack, 10);
            drop(gone_rx);
            let mut alive = consumer(&queue, 2, ack, 10);
            let offered = queue.clone();
            within_deadline(move || {
                for body in ["1", "2", "3"] {
                    offer(&offered, body);
                }
            });
            assert_eq!(alive.bodies(), ["1", "2", "3"], "{ack:?}");
            assert_eq!(queue.demand(), 7, "only the live consumer's credit counts");
            drop(gone);
        }
    }

    #[test]
    fn messages_wait_when_every_consumer_is_gone() {
        let queue = queue(QueueSettings::default());
        let (a, a_rx) = outbox(1 << 30);
        let (b, b_rx) = outbox(1 << 30);
        queue.add_consumer(1, a, "sub".into(), AckMode::ClientIndividual, 10);
        queue.add_consumer(2, b, "sub".into(), AckMode::ClientIndividual, 10);
        drop((a_rx, b_rx));
        let offered = queue.clone();
        within_deadline(move || offer(&offered, "kept"));
        assert_eq!(queue.depth(), (1, 0), "kept for a later consumer");
        let removed = queue.clone();
        within_deadline(move || {
            removed.remove_consumer(1);
            removed.remove_consumer(2);
        });
        let mut c = consumer(&queue, 3, AckMode::ClientIndividual, 10);
        let got = c.received();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].0.as_str(), got[0].2),
            ("kept", false),
            "never really delivered"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_producer_blocked_by_bytes_waits_for_room_for_its_message() {
        let queue = queue(QueueSettings {
            max_bytes: 10,
            ..QueueSettings::default()
        });
        offer(&queue, "12345678");
        let Offer::Full(waiting) = queue.offer(message("abcdef")) else {
            panic!("expected a full queue")
        };
        // Room for an empty message is there, room for this one is not.
        let size = waiting.size();
        let wait = tokio::time::timeout(Duration::from_millis(50), queue.room(size));
        assert!(
            wait.await.is_err(),
            "room() must not return while the offer would fail"
        );
    }

    #[test]
    fn headers_count_against_the_byte_limit() {
        let queue = queue(QueueSettings {
            max_bytes: 64 * 1024,
            ..QueueSettings::default()
        });
        let big_headers = || {
            let destination = Destination::parse(&"/queue/jobs".into()).unwrap();
            let mut headers = Headers::new();
            headers.set("x-padding", "p".repeat(100 * 1024));
            let message = Message::new("m".into(), destination, headers, Bytes::new());
            Queued::new(Arc::new(message), None, None)
        };
        // The first fits an empty queue whatever its size; the second finds it full
        // although neither has a body.
        assert!(matches!(queue.offer(big_headers()), Offer::Accepted));
        assert!(matches!(queue.offer(big_headers()), Offer::Full(_)));
        let budget = Arc::new(Budget::new(usize::MAX));
        let charge = budget.try_charge(big_headers().size());
        assert!(
            budget.used() > 100 * 1024,
            "the global budget counts them too"
        );
        drop(charge);
    }

    #[test]
    fn auto_deliveries_count_once_written() {
        let queue = queue(QueueSettings::default());
        let (outbox, mut rx) = outbox(1 << 30);
        queue.add_consumer(1, outbox, "sub".into(), AckMode::Auto, 1);
        offer(&queue, "1");
        offer(&queue, "2");
        let Some(Notification::Deliver(mut delivery)) = rx.try_recv() else {
            panic!("no delivery")
        };
        assert!(delivery.ack.is_none());
        assert!(rx.try_recv().is_none(), "prefetch 1 holds the second back");
        delivery.settle.take().unwrap().written();
        assert!(matches!(rx.try_recv(), Some(Notification::Deliver(_))));
        // The second was never written and the writer is gone: back in the queue, not
        // marked redelivered.
        drop(rx);
        queue.remove_consumer(1);
        let mut b = consumer(&queue, 2, AckMode::Auto, 1);
        assert!(!b.received()[0].2);
    }

    #[test]
    fn auto_deliveries_a_live_writer_holds_come_back_redelivered() {
        let queue = queue(QueueSettings::default());
        let (outbox, mut rx) = outbox(1 << 30);
        queue.add_consumer(1, outbox, "sub".into(), AckMode::Auto, 1);
        offer(&queue, "1");
        // Unsubscribed while the writer holds the delivery: it may still be written, so
        // the next consumer must be told it may have seen it.
        let Some(Notification::Deliver(_held)) = rx.try_recv() else {
            panic!("no delivery")
        };
        queue.remove_consumer(1);
        let mut b = consumer(&queue, 2, AckMode::Auto, 1);
        assert!(b.received()[0].2, "redelivered");
    }
}
