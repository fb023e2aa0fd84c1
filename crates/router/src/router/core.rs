//! The router itself: its settings, counters and shared state, and its map of queues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use postbox_stomp::ByteString;

use crate::budget::Budget;
use crate::outbox::Outbox;
use crate::presence::{Presence, PresenceConfig, Rules};
use crate::queue::{Queue, QueueSettings, QueueStats};
use crate::relay::{NoRelay, QueueStore, Relay};
use crate::topic::TopicIndex;
use crate::{Destination, DestinationKind, RouteError};

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
    /// Which destinations announce who enters and leaves.
    pub presence: PresenceConfig,
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
            presence: PresenceConfig::default(),
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
    /// Presence ENTER events published.
    pub presence_enters: AtomicU64,
    /// Presence QUIT events published.
    pub presence_quits: AtomicU64,
}

/// Where a topic entry sends its matches.
#[derive(Debug)]
pub(super) enum TopicSink {
    /// Straight into a session's outbox (auto acknowledgement).
    Direct {
        outbox: Outbox,
        subscription: ByteString,
    },
    /// Into the subscription's private queue (client acknowledgement).
    Queue(Arc<Queue>),
}

/// What every clone of a [`Router`] shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) config: RouterConfig,
    pub(super) topics: Mutex<TopicIndex<TopicSink>>,
    pub(super) queues: Mutex<HashMap<ByteString, Arc<Queue>>>,
    pub(super) relay: Arc<dyn Relay>,
    /// Where queues keep their messages in a cluster; `None` when running alone.
    pub(super) store: Option<Arc<dyn QueueStore>>,
    /// Counters of all queues, kept when idle queues are forgotten.
    pub(super) queue_totals: Arc<QueueStats>,
    pub(super) next_key: AtomicU64,
    pub(super) next_message: AtomicU64,
    pub(super) stats: RouterStats,
    /// Rooms and their members; `None` when no destination has presence.
    pub(super) presence: Option<Presence>,
}

/// Routes published messages to subscriptions. Cheap to clone; one per virtual host.
///
/// The router neither knows nor cares where a publish comes from: a local session calls
/// [`Router::publish`], a cluster relay calls [`Router::publish_local`].
#[derive(Debug, Clone)]
pub struct Router {
    pub(super) shared: Arc<Shared>,
}

impl Router {
    /// A router for a node that runs alone.
    pub fn new(config: RouterConfig) -> Router {
        Router::with_relay(config, Arc::new(NoRelay))
    }

    /// A router that shares topics with other nodes through `relay`.
    pub fn with_relay(config: RouterConfig, relay: Arc<dyn Relay>) -> Router {
        let presence = Rules::new(&config.presence).map(Presence::new);
        Router {
            shared: Arc::new(Shared {
                presence,
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

    /// A new key, unique in this router: for subscriptions and temporary queue names.
    pub(super) fn next_key(&self) -> u64 {
        self.shared.next_key.fetch_add(1, Ordering::Relaxed)
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

    /// The queue for `destination`, created on first use unless this router already
    /// holds `max-queues` queues.
    pub(super) fn queue_for(
        &self,
        destination: &Destination,
        ttl: Option<Duration>,
    ) -> Result<Arc<Queue>, RouteError> {
        self.find_or_create(destination, ttl, true)
    }

    /// The queue for `destination`, created on first use whatever the queue count:
    /// for dead letters and for a queue recreated after its deletion, which must not be
    /// refused (that would lose accepted messages).
    pub(super) fn queue_for_accepted(&self, destination: &Destination) -> Arc<Queue> {
        self.find_or_create(destination, None, false)
            .expect("an uncapped lookup cannot be refused")
    }

    /// Refuses a new queue when the router already holds `max-queues`.
    pub(super) fn check_queue_count(
        &self,
        queues: &HashMap<ByteString, Arc<Queue>>,
    ) -> Result<(), RouteError> {
        let max = self.shared.config.max_queues;
        if queues.len() >= max {
            return Err(RouteError::TooManyQueues(max));
        }
        Ok(())
    }

    /// The queue for `destination`, created with this router's settings when missing
    /// (and, if `capped`, refused past `max-queues`).
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
    pub(super) fn forget_if_idle(&self, queue: &Arc<Queue>) {
        let mut queues = self.lock_queues();
        let current = queues.get(queue.destination().shared());
        if current.is_some_and(|q| Arc::ptr_eq(q, queue)) && queue.delete_if_idle() {
            queues.remove(queue.destination().shared());
        }
    }

    /// The topic index. Taken before `queues` when both are held.
    pub(super) fn lock_topics(&self) -> MutexGuard<'_, TopicIndex<TopicSink>> {
        // A panic while holding the lock cannot leave the index half-updated in a way
        // that matters more than stopping the broker would, so poisoning is ignored.
        self.shared.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The queue map by name. Taken after `topics` and before any queue's state.
    pub(super) fn lock_queues(&self) -> MutexGuard<'_, HashMap<ByteString, Arc<Queue>>> {
        self.shared.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}
