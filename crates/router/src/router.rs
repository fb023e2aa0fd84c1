//! The router of one virtual host: where a destination is routed.
//!
//! Topics fan out through the [`TopicIndex`]; queues live in a map by name. A topic
//! subscription that acknowledges (`client` or `client-individual`) gets a private queue
//! fed by the topic, so acknowledgements, NACK and prefetch work the same on topics as
//! on queues.
//!
//! Lock order: `topics`, then `queues`, then a queue's own state (see [`crate::queue`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use postbox_stomp::{ByteString, Headers};
use tokio::time::Instant;

use crate::budget::Budget;
use crate::delivery::{AckMode, Delivery};
use crate::outbox::{Outbox, PushError};
use crate::queue::{
    DeadLetter, Offer, Overflow, Queue, QueueSettings, QueueStats, Queued, UnknownAck,
};
use crate::relay::{NoRelay, QueueStore, Relay, StoreError};
use crate::topic::{Entry, Pattern, TopicIndex};
use crate::{Destination, DestinationKind, Message, RouteError};

/// Settings of one router.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// The virtual host this router serves (passed to the relay).
    pub vhost: String,
    /// A short id unique to this broker process, used in message ids.
    pub node_id: String,
    /// Limits and policies of queues.
    pub queue: QueueSettings,
    /// A queue's dead letters go to the queue named like it plus this suffix.
    pub dead_letter_suffix: String,
    /// Unacknowledged messages per subscription when SUBSCRIBE has no `prefetch-count`.
    pub default_prefetch: usize,
    /// Most queues this router holds at once; creating one more is refused.
    pub max_queues: usize,
    /// Bytes held by all queues, shared by the routers of every virtual host.
    pub budget: Arc<Budget>,
}

impl Default for RouterConfig {
    fn default() -> RouterConfig {
        RouterConfig {
            vhost: "/".into(),
            node_id: "local".into(),
            queue: QueueSettings::default(),
            dead_letter_suffix: ".dlq".into(),
            default_prefetch: 1000,
            max_queues: 100_000,
            budget: Arc::default(),
        }
    }
}

/// Counters of one router, for logs and metrics.
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Messages accepted from publishers (local and relayed).
    pub published: AtomicU64,
    /// Deliveries queued to topic subscribers.
    pub delivered: AtomicU64,
    /// Subscribers closed because they fell behind.
    pub slow_consumers: AtomicU64,
    /// Messages sent to a reply queue whose connection had gone.
    pub unroutable: AtomicU64,
    /// Dead letters dropped because their queue has no dead-letter queue.
    pub dead_letters_dropped: AtomicU64,
}

/// Who a subscription delivers to.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The subscribing session's outbound queue.
    pub outbox: Outbox,
    /// The client's subscription `id`.
    pub id: ByteString,
    /// How the subscription acknowledges.
    pub ack: AckMode,
    /// Most unacknowledged messages (`prefetch-count`); `None` for the default.
    pub prefetch: Option<usize>,
    /// TTL for a queue this subscription creates (RabbitMQ's `x-message-ttl`).
    pub queue_ttl: Option<Duration>,
}

/// Where a topic entry sends its matches.
#[derive(Debug)]
enum TopicSink {
    /// Straight into a session's outbox (auto acknowledgement).
    Direct {
        outbox: Outbox,
        subscription: ByteString,
    },
    /// Into the subscription's private queue (client acknowledgement).
    Queue(Arc<Queue>),
}

#[derive(Debug)]
struct Shared {
    config: RouterConfig,
    topics: Mutex<TopicIndex<TopicSink>>,
    queues: Mutex<HashMap<ByteString, Arc<Queue>>>,
    relay: Arc<dyn Relay>,
    /// Where queues keep their messages in a cluster; `None` when running alone.
    store: Option<Arc<dyn QueueStore>>,
    /// Counters of all queues, kept when idle queues are forgotten.
    queue_totals: Arc<QueueStats>,
    next_key: AtomicU64,
    next_message: AtomicU64,
    stats: RouterStats,
}

/// Routes published messages to subscriptions. Cheap to clone; one per virtual host.
///
/// The router neither knows nor cares where a publish comes from: a local session calls
/// [`Router::publish`], a cluster relay calls [`Router::publish_local`].
#[derive(Debug, Clone)]
pub struct Router {
    shared: Arc<Shared>,
}

/// A publisher's most recent queue, so that a run of SENDs to one queue skips the
/// router's queue map (a lock every publisher shares). Each session keeps one.
#[derive(Debug, Default)]
pub struct QueueCache {
    last: Option<Arc<Queue>>,
}

impl QueueCache {
    /// Whether the remembered queue is `destination`'s and still in use. (Were it
    /// deleted just after this check, the offer says so and the queue is looked up.)
    fn holds(&self, destination: &Destination) -> bool {
        self.last
            .as_ref()
            .is_some_and(|queue| queue.destination() == destination && !queue.is_deleted())
    }
}

impl Router {
    /// A router for a node that runs alone.
    pub fn new(config: RouterConfig) -> Router {
        Router::with_relay(config, Arc::new(NoRelay))
    }

    /// A router that shares topics with other nodes through `relay`.
    pub fn with_relay(config: RouterConfig, relay: Arc<dyn Relay>) -> Router {
        Router {
            shared: Arc::new(Shared {
                config,
                topics: Mutex::default(),
                queues: Mutex::default(),
                store: relay.queue_store(),
                queue_totals: Arc::default(),
                relay,
                next_key: AtomicU64::new(1),
                next_message: AtomicU64::new(1),
                stats: RouterStats::default(),
            }),
        }
    }

    /// The virtual host served.
    pub fn vhost(&self) -> &str {
        &self.shared.config.vhost
    }

    /// The router's counters.
    pub fn stats(&self) -> &RouterStats {
        &self.shared.stats
    }

    /// The queue called `destination`, if it exists.
    pub fn queue(&self, destination: &str) -> Option<Arc<Queue>> {
        self.lock_queues().get(destination).cloned()
    }

    fn next_key(&self) -> u64 {
        self.shared.next_key.fetch_add(1, Ordering::Relaxed)
    }

    // ===== Subscribing =====

    /// Subscribes to a topic or queue. The subscription lasts until the handle is dropped.
    /// Temporary queues are subscribed through [`Router::subscribe_temp`].
    pub fn subscribe(
        &self,
        destination: &Destination,
        subscriber: Subscriber,
    ) -> Result<Subscription, RouteError> {
        match destination.kind() {
            DestinationKind::Topic => Ok(self.subscribe_topic(destination, subscriber)),
            DestinationKind::Queue => {
                let queue = self.queue_for(destination, subscriber.queue_ttl)?;
                Ok(self.consume(queue, subscriber, Cleanup::Shared))
            }
            DestinationKind::TempQueue | DestinationKind::ReplyQueue => {
                Err(RouteError::NotOwner(destination.to_string()))
            }
        }
    }

    /// Subscribes to the session's own temporary queue.
    pub fn subscribe_temp(&self, temp: &TempQueue, subscriber: Subscriber) -> Subscription {
        self.consume(temp.queue.clone(), subscriber, Cleanup::Owned)
    }

    fn prefetch(&self, subscriber: &Subscriber) -> usize {
        match subscriber.prefetch {
            None => self.shared.config.default_prefetch,
            // RabbitMQ reads 0 as "no limit"; a hard cap still keeps memory bounded.
            Some(0) => MAX_PREFETCH,
            Some(n) => n.min(MAX_PREFETCH),
        }
    }

    fn consume(&self, queue: Arc<Queue>, subscriber: Subscriber, cleanup: Cleanup) -> Subscription {
        let key = self.next_key();
        let prefetch = self.prefetch(&subscriber);
        queue.add_consumer(
            key,
            subscriber.outbox,
            subscriber.id,
            subscriber.ack,
            prefetch,
        );
        if let Cleanup::Shared = cleanup {
            self.queue_interest(&queue);
            if let Some(store) = &self.shared.store {
                store.attach(self.vhost(), queue.clone());
            }
        }
        Subscription {
            router: self.clone(),
            key,
            ack: subscriber.ack,
            target: Target::Queue { queue, cleanup },
        }
    }

    fn subscribe_topic(&self, destination: &Destination, subscriber: Subscriber) -> Subscription {
        let key = self.next_key();
        let name = ByteString::from(destination.name());
        let (sink, queue) = match subscriber.ack {
            AckMode::Auto => (
                TopicSink::Direct {
                    outbox: subscriber.outbox.clone(),
                    subscription: subscriber.id.clone(),
                },
                None,
            ),
            AckMode::Client | AckMode::ClientIndividual => {
                // A topic publisher never waits: a subscription that falls a whole queue
                // behind is cut off as a slow consumer.
                // Its backlog is the subscriber's own, so it gets the connection's
                // outbound bound, not a shared queue's.
                let queue_settings = &self.shared.config.queue;
                let settings = QueueSettings {
                    max_bytes: queue_settings.max_bytes.min(subscriber.outbox.limit()),
                    overflow: Overflow::CloseConsumers,
                    max_deliveries: 0,
                    dead_letter: None,
                    ttl: None,
                    ..queue_settings.clone()
                };
                let queue = Queue::counted(
                    destination.clone(),
                    settings,
                    self.shared.queue_totals.clone(),
                    self.shared.config.budget.clone(),
                );
                let prefetch = self.prefetch(&subscriber);
                queue.add_consumer(
                    key,
                    subscriber.outbox.clone(),
                    subscriber.id.clone(),
                    subscriber.ack,
                    prefetch,
                );
                (TopicSink::Queue(queue.clone()), Some(queue))
            }
        };
        let entry = Arc::new(Entry {
            key,
            pattern: Pattern::parse(&name),
            name: name.clone(),
            sink,
        });
        let wildcard = entry.pattern.is_some();
        let count = self.lock_topics().insert(entry);
        self.topic_interest(&name, count);
        Subscription {
            router: self.clone(),
            key,
            ack: subscriber.ack,
            target: Target::Topic {
                name,
                wildcard,
                queue,
            },
        }
    }

    fn unsubscribe_topic(&self, key: u64, name: &ByteString, wildcard: bool) {
        let count = self.lock_topics().remove(key, name, wildcard);
        self.topic_interest(name, count);
    }

    /// Tells the relay how many local subscriptions a topic name or pattern has.
    fn topic_interest(&self, name: &str, count: usize) {
        let destination = format!("{}{name}", DestinationKind::Topic.prefix());
        self.shared
            .relay
            .interest(self.vhost(), &destination, count);
    }

    /// Tells the relay how many local consumers a queue has.
    fn queue_interest(&self, queue: &Queue) {
        let count = queue.consumer_count();
        self.shared
            .relay
            .interest(self.vhost(), queue.destination().as_str(), count);
    }

    /// Topic names and patterns with local subscriptions, and how many each has.
    pub fn topic_subscriptions(&self) -> Vec<(String, usize)> {
        let mut all: Vec<(String, usize)> = self
            .lock_topics()
            .interest()
            .map(|(name, count)| (format!("{}{name}", DestinationKind::Topic.prefix()), count))
            .collect();
        all.sort();
        all
    }

    /// Every queue this node holds (temporary ones included).
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        let mut all: Vec<Arc<Queue>> = self.lock_queues().values().cloned().collect();
        all.sort_by(|a, b| a.destination().as_str().cmp(b.destination().as_str()));
        all
    }

    /// Frees expired messages at the front of every queue (see [`Queue::purge_expired`]);
    /// returns how many. Run now and then, for queues that no consumer drains.
    pub fn purge_expired(&self) -> usize {
        let queues: Vec<Arc<Queue>> = self.lock_queues().values().cloned().collect();
        queues.iter().map(|queue| queue.purge_expired()).sum()
    }

    /// Counters summed over every queue this router ever had.
    pub fn queue_totals(&self) -> &QueueStats {
        &self.shared.queue_totals
    }

    /// The byte budget this router's queues share with every other router's.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.shared.config.budget
    }

    /// This node's id, the prefix of its reply queues.
    pub fn node_id(&self) -> &str {
        &self.shared.config.node_id
    }

    /// Creates a temporary queue for one connection, reachable by others under the
    /// returned `/reply-queue/...` name until the handle is dropped.
    pub fn create_temp(&self, name: &str) -> Result<TempQueue, RouteError> {
        let id = format!(
            "{}-{}.{}",
            self.shared.config.node_id,
            self.next_key(),
            name
        );
        let reply_to = Destination::new(DestinationKind::ReplyQueue, &id)?;
        let settings = QueueSettings {
            dead_letter: None,
            max_deliveries: 0,
            ..self.shared.config.queue.clone()
        };
        let queue = Queue::counted(
            reply_to.clone(),
            settings,
            self.shared.queue_totals.clone(),
            self.shared.config.budget.clone(),
        );
        {
            let mut queues = self.lock_queues();
            self.check_queue_count(&queues)?;
            queues.insert(reply_to.shared().clone(), queue.clone());
        }
        Ok(TempQueue {
            router: self.clone(),
            reply_to,
            queue,
        })
    }

    /// The queue for `destination`, created on first use unless this router already
    /// holds `max-queues` queues.
    fn queue_for(
        &self,
        destination: &Destination,
        ttl: Option<Duration>,
    ) -> Result<Arc<Queue>, RouteError> {
        self.find_or_create(destination, ttl, true)
    }

    /// The queue for `destination`, created on first use whatever the queue count:
    /// for dead letters and for a queue recreated after its deletion, which must not be
    /// refused (that would lose accepted messages).
    fn queue_for_accepted(&self, destination: &Destination) -> Arc<Queue> {
        self.find_or_create(destination, None, false)
            .expect("an uncapped lookup cannot be refused")
    }

    /// Refuses a new queue when the router already holds `max-queues`.
    fn check_queue_count(
        &self,
        queues: &HashMap<ByteString, Arc<Queue>>,
    ) -> Result<(), RouteError> {
        let max = self.shared.config.max_queues;
        if queues.len() >= max {
            return Err(RouteError::TooManyQueues(max));
        }
        Ok(())
    }

    fn find_or_create(
        &self,
        destination: &Destination,
        ttl: Option<Duration>,
        capped: bool,
    ) -> Result<Arc<Queue>, RouteError> {
        let mut queues = self.lock_queues();
        if let Some(queue) = queues.get(destination.shared()) {
            return Ok(queue.clone());
        }
        if capped {
            self.check_queue_count(&queues)?;
        }
        let config = &self.shared.config;
        let is_dead_letter_queue = destination.name().ends_with(&config.dead_letter_suffix);
        let dead_letter = (!is_dead_letter_queue)
            .then(|| {
                Destination::new(
                    DestinationKind::Queue,
                    &format!("{}{}", destination.name(), config.dead_letter_suffix),
                )
                .ok()
            })
            .flatten();
        let settings = QueueSettings {
            ttl: ttl.or(config.queue.ttl),
            // A dead-letter queue keeps what it gets, however often it is refused.
            max_deliveries: if is_dead_letter_queue {
                0
            } else {
                config.queue.max_deliveries
            },
            dead_letter,
            ..config.queue.clone()
        };
        // Kept as long as the queue: not a view into the read buffer of its first user.
        let destination = &destination.detached();
        let queue = match &self.shared.store {
            Some(store) => Queue::clustered(
                destination.clone(),
                settings,
                store.clone(),
                self.vhost(),
                self.shared.queue_totals.clone(),
                self.shared.config.budget.clone(),
            ),
            None => Queue::counted(
                destination.clone(),
                settings,
                self.shared.queue_totals.clone(),
                self.shared.config.budget.clone(),
            ),
        };
        queues.insert(destination.shared().clone(), queue.clone());
        Ok(queue)
    }

    /// Forgets a queue that has neither consumers nor messages; it is created again on
    /// next use, so this only frees memory.
    fn forget_if_idle(&self, queue: &Arc<Queue>) {
        let mut queues = self.lock_queues();
        let current = queues.get(queue.destination().shared());
        if current.is_some_and(|q| Arc::ptr_eq(q, queue)) && queue.delete_if_idle() {
            queues.remove(queue.destination().shared());
        }
    }

    // ===== Publishing =====

    /// A new broker-wide unique message id.
    pub fn next_message_id(&self) -> ByteString {
        let n = self.shared.next_message.fetch_add(1, Ordering::Relaxed);
        let mut number = itoa::Buffer::new();
        let number = number.format(n);
        let node = &self.shared.config.node_id;
        // Exactly sized, so the bytes become the ByteString without a second allocation.
        let mut id = String::with_capacity(node.len() + 1 + number.len());
        id.push_str(node);
        id.push('-');
        id.push_str(number);
        ByteString::from(id)
    }

    /// Publishes a SEND from a local client: routes it here and, for topics, hands it to
    /// the relay. For a full queue with the `block` policy this waits for room, which is
    /// how producers are slowed down.
    pub async fn publish(
        &self,
        cache: &mut QueueCache,
        destination: Destination,
        headers: Headers,
        body: Bytes,
    ) -> Result<Arc<Message>, RouteError> {
        let ttl = match headers.get("expiration") {
            None => None,
            Some(raw) => {
                let ms: u64 = raw
                    .trim()
                    .parse()
                    .map_err(|_| RouteError::InvalidExpiration(raw.chars().take(64).collect()))?;
                Some(Duration::from_millis(ms))
            }
        };
        // A TTL too long for the clock to represent means the message never expires
        // (rather than a panic on a client's `expiration:18446744073709551615`).
        let expires_at = ttl.and_then(|ttl| Instant::now().checked_add(ttl));
        let message = Arc::new(Message::from_send(
            self.next_message_id(),
            destination,
            headers,
            body,
        ));
        self.shared.stats.published.fetch_add(1, Ordering::Relaxed);
        match message.destination().kind() {
            DestinationKind::Topic => {
                self.route_topic(&message, expires_at);
                self.shared.relay.forward(self.vhost(), &message);
            }
            DestinationKind::Queue => match &self.shared.store {
                Some(store) => {
                    // In a cluster the queue lives in the store; the message is accepted
                    // once it is stored there.
                    let ttl = ttl.or(self.shared.config.queue.ttl);
                    let expires = ttl.and_then(|ttl| SystemTime::now().checked_add(ttl));
                    let stored = store.append(
                        self.vhost(),
                        message.destination(),
                        message.clone(),
                        expires,
                    );
                    stored.await.map_err(|error| match error {
                        StoreError::Full(queue) => RouteError::QueueFull(queue),
                        other => RouteError::StoreUnavailable(other.to_string()),
                    })?;
                }
                None => {
                    if !cache.holds(message.destination()) {
                        cache.last = Some(self.queue_for(message.destination(), None)?);
                    }
                    let queue = cache.last.as_ref().expect("just filled");
                    self.enqueue(queue, Queued::new(message.clone(), expires_at, None))
                        .await?;
                }
            },
            DestinationKind::ReplyQueue => {
                let queue = self.queue(message.destination().as_str());
                let owner = reply_queue_node(message.destination());
                match queue {
                    Some(queue) => {
                        let ttl = queue.settings().ttl;
                        self.enqueue(&queue, Queued::new(message.clone(), expires_at, ttl))
                            .await?
                    }
                    None if owner.is_some_and(|node| node != self.node_id())
                        && self.shared.relay.forward_reply(
                            self.vhost(),
                            owner.unwrap_or_default(),
                            &message,
                        ) => {}
                    None => self.unroutable(&message),
                }
            }
            DestinationKind::TempQueue => {
                return Err(RouteError::NotOwner(message.destination().to_string()));
            }
        }
        Ok(message)
    }

    /// Offers to a queue, waiting for room under the `block` policy and following the
    /// queue if it is replaced meanwhile.
    async fn enqueue(&self, queue: &Arc<Queue>, mut queued: Queued) -> Result<(), RouteError> {
        if queued.expires_at.is_none() && queue.settings().ttl.is_some() {
            queued = Queued::new(queued.message, None, queue.settings().ttl);
        }
        // The queue that took `queue`'s name, after a deletion.
        let mut replacement: Option<Arc<Queue>> = None;
        loop {
            let queue = replacement.as_ref().unwrap_or(queue);
            match queue.offer(queued) {
                Offer::Accepted => return Ok(()),
                Offer::Rejected => {
                    return Err(RouteError::QueueFull(queue.destination().to_string()));
                }
                Offer::Full(back) => {
                    queued = back;
                    // Boxed: rare, and its waiter would otherwise be part of every
                    // session's task (see the broker's per-connection memory).
                    Box::pin(queue.room(queued.size())).await;
                }
                Offer::Deleted(back) => {
                    queued = back;
                    let destination = queue.destination().clone();
                    replacement = Some(match destination.kind() {
                        DestinationKind::ReplyQueue => match self.queue(destination.as_str()) {
                            Some(queue) => queue,
                            None => return Ok(()),
                        },
                        _ => self.queue_for_accepted(&destination),
                    });
                }
            }
        }
    }

    /// Delivers a message that came from another node to local subscribers only.
    pub fn publish_local(&self, message: Arc<Message>) {
        self.shared.stats.published.fetch_add(1, Ordering::Relaxed);
        match message.destination().kind() {
            DestinationKind::Topic => self.route_topic(&message, None),
            DestinationKind::ReplyQueue => match self.queue(message.destination().as_str()) {
                Some(queue) => {
                    let ttl = queue.settings().ttl;
                    if queue
                        .force(Queued::new(message.clone(), None, ttl))
                        .is_err()
                    {
                        self.unroutable(&message);
                    }
                }
                None => self.unroutable(&message),
            },
            DestinationKind::Queue | DestinationKind::TempQueue => {}
        }
    }

    /// A reply whose temporary queue is gone; like an unroutable reply in RabbitMQ.
    fn unroutable(&self, message: &Message) {
        self.shared.stats.unroutable.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(destination = %message.destination(), "reply to a closed temporary queue dropped");
    }

    /// Fans a topic message out to every matching subscription.
    fn route_topic(&self, message: &Arc<Message>, expires_at: Option<Instant>) {
        let name = ByteString::from(message.destination().name());
        let matches = self.lock_topics().lookup(&name);
        let stats = &self.shared.stats;
        let mut delivered = 0;
        for entry in matches.iter() {
            match &entry.sink {
                TopicSink::Direct {
                    outbox,
                    subscription,
                } => {
                    let delivery = Delivery {
                        message: message.clone(),
                        subscription: subscription.clone(),
                        ack: None,
                        redelivered: false,
                        settle: None,
                    };
                    match outbox.deliver(delivery) {
                        Ok(()) => delivered += 1,
                        Err(PushError::Overflow) => {
                            stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(PushError::Closed) => {}
                    }
                }
                TopicSink::Queue(queue) => {
                    if let Offer::Accepted =
                        queue.offer(Queued::new(message.clone(), expires_at, None))
                    {
                        delivered += 1;
                    }
                }
            }
        }
        stats.delivered.fetch_add(delivered, Ordering::Relaxed);
    }

    /// Moves dead letters to their dead-letter queues, marked with why and from where.
    fn bury(&self, letters: Vec<DeadLetter>) {
        for letter in letters {
            let Some(to) = letter.to else {
                self.shared
                    .stats
                    .dead_letters_dropped
                    .fetch_add(1, Ordering::Relaxed);
                if let (Some(store), Some(receipt)) = (&self.shared.store, letter.queued.receipt) {
                    store.settle(self.vhost(), &letter.from, vec![receipt]);
                }
                continue;
            };
            let original = &letter.queued.message;
            let mut headers = original.headers().clone();
            headers.set("x-dead-letter-reason", letter.reason.as_str());
            headers.set("x-original-destination", letter.from.as_str());
            headers.set("x-delivery-count", letter.queued.deliveries.to_string());
            let message = Arc::new(Message::new(
                original.id().clone(),
                to.clone(),
                headers,
                original.body().clone(),
            ));
            if let Some(store) = &self.shared.store {
                self.bury_in_store(
                    store.clone(),
                    letter.from,
                    letter.queued.receipt,
                    to,
                    message,
                );
                continue;
            }
            let mut queued = Queued::new(message, None, None);
            // Dead letters are never refused: losing them would lose accepted messages.
            loop {
                match self.queue_for_accepted(&to).force(queued) {
                    Ok(()) => break,
                    Err(back) => queued = back,
                }
            }
        }
    }

    /// In a cluster: stores the dead letter, then forgets the original; if the store
    /// cannot take it, the original is released to be delivered again rather than lost.
    fn bury_in_store(
        &self,
        store: Arc<dyn QueueStore>,
        from: Destination,
        receipt: Option<crate::relay::StoreReceipt>,
        to: Destination,
        message: Arc<Message>,
    ) {
        let vhost = self.vhost().to_owned();
        tokio::spawn(async move {
            let stored = store.append(&vhost, &to, message, None).await;
            let Some(receipt) = receipt else { return };
            match stored {
                Ok(()) => store.settle(&vhost, &from, vec![receipt]),
                Err(error) => {
                    tracing::warn!(%from, %to, "dead letter not stored ({error}); it will be delivered again");
                    store.release(&vhost, &from, vec![receipt]);
                }
            }
        });
    }

    fn lock_topics(&self) -> MutexGuard<'_, TopicIndex<TopicSink>> {
        // A panic while holding the lock cannot leave the index half-updated in a way
        // that matters more than stopping the broker would, so poisoning is ignored.
        self.shared.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_queues(&self) -> MutexGuard<'_, HashMap<ByteString, Arc<Queue>>> {
        self.shared.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The node that owns a reply queue: its names start with `<node>-`.
fn reply_queue_node(destination: &Destination) -> Option<&str> {
    destination.name().split_once('-').map(|(node, _)| node)
}

/// The most unacknowledged messages one subscription may hold.
pub const MAX_PREFETCH: usize = 65_535;

/// What happens to a queue when its consumer goes.
#[derive(Debug, Clone, Copy)]
enum Cleanup {
    /// A shared queue: forgotten only when idle.
    Shared,
    /// A temporary queue: its [`TempQueue`] handle deletes it.
    Owned,
}

#[derive(Debug)]
enum Target {
    Topic {
        name: ByteString,
        wildcard: bool,
        /// The private queue of an acknowledging topic subscription.
        queue: Option<Arc<Queue>>,
    },
    Queue {
        queue: Arc<Queue>,
        cleanup: Cleanup,
    },
}

/// An active subscription; dropping it unsubscribes, and a queue gets back what the
/// subscription had not acknowledged.
#[derive(Debug)]
pub struct Subscription {
    router: Router,
    key: u64,
    ack: AckMode,
    target: Target,
}

impl Subscription {
    /// The key that appears first in this subscription's `ack` ids.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The acknowledgement mode.
    pub fn ack_mode(&self) -> AckMode {
        self.ack
    }

    fn queue(&self) -> Option<&Arc<Queue>> {
        match &self.target {
            Target::Topic { queue, .. } => queue.as_ref(),
            Target::Queue { queue, .. } => Some(queue),
        }
    }

    /// Acknowledges delivery `tag` (cumulatively in `client` mode).
    pub fn ack(&self, tag: u64) -> Result<(), UnknownAck> {
        let queue = self.queue().ok_or(UnknownAck)?;
        queue.ack(self.key, tag, self.ack == AckMode::Client)
    }

    /// Refuses delivery `tag` (cumulatively in `client` mode). With `requeue` the
    /// messages are delivered again; without, or past the delivery limit, they go to the
    /// dead-letter queue.
    pub fn nack(&self, tag: u64, requeue: bool) -> Result<(), UnknownAck> {
        let queue = self.queue().ok_or(UnknownAck)?;
        let dead = queue.nack(self.key, tag, self.ack == AckMode::Client, requeue)?;
        self.router.bury(dead);
        Ok(())
    }

    /// The delivery tag of an unacknowledged message, by `message-id`.
    pub fn tag_of(&self, message_id: &str) -> Option<u64> {
        self.queue()?.tag_of(self.key, message_id)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        match &self.target {
            Target::Topic {
                name,
                wildcard,
                queue,
            } => {
                self.router.unsubscribe_topic(self.key, name, *wildcard);
                if let Some(queue) = queue {
                    queue.delete();
                }
            }
            Target::Queue { queue, cleanup } => {
                let (dead, idle) = queue.remove_consumer(self.key);
                self.router.bury(dead);
                if let Cleanup::Shared = cleanup {
                    self.router.queue_interest(queue);
                    if idle {
                        self.router.forget_if_idle(queue);
                    }
                }
            }
        }
    }
}

/// A connection's temporary queue; dropping it deletes the queue and its messages
/// (RabbitMQ's semantics for `/temp-queue/`).
#[derive(Debug)]
pub struct TempQueue {
    router: Router,
    reply_to: Destination,
    queue: Arc<Queue>,
}

impl TempQueue {
    /// The routable name to put in `reply-to`.
    pub fn reply_to(&self) -> &Destination {
        &self.reply_to
    }
}

impl Drop for TempQueue {
    fn drop(&mut self) {
        self.router.lock_queues().remove(self.reply_to.shared());
        self.queue.delete();
    }
}
