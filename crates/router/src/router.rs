//! The router of one virtual host: where a destination is routed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use postbox_stomp::{ByteString, Headers};

use crate::outbox::{Delivery, Outbox, PushError};
use crate::relay::{Interest, NoRelay, Relay};
use crate::topic::{Entry, Pattern, TopicIndex};
use crate::{Destination, Kind, Message, RouteError};

/// How a subscription acknowledges messages (the SUBSCRIBE `ack` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AckMode {
    /// Messages count as acknowledged once sent.
    Auto,
    /// ACK is cumulative: it acknowledges every earlier message of the subscription.
    Client,
    /// ACK acknowledges only the named message.
    ClientIndividual,
}

impl AckMode {
    /// Parses the `ack` header value.
    pub fn parse(value: &str) -> Option<AckMode> {
        match value {
            "auto" => Some(AckMode::Auto),
            "client" => Some(AckMode::Client),
            "client-individual" => Some(AckMode::ClientIndividual),
            _ => None,
        }
    }
}

/// Settings of one router.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// The virtual host this router serves (passed to the relay).
    pub vhost: String,
    /// A short id unique to this broker process, used in message ids.
    pub node_id: String,
}

impl Default for RouterConfig {
    fn default() -> RouterConfig {
        RouterConfig {
            vhost: "/".into(),
            node_id: "local".into(),
        }
    }
}

/// Counters of one router, for logs and metrics.
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Messages accepted from publishers (local and relayed).
    pub published: AtomicU64,
    /// Deliveries queued to subscribers.
    pub delivered: AtomicU64,
    /// Subscribers closed because they fell behind.
    pub slow_consumers: AtomicU64,
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
}

/// Where a topic entry sends its matches.
#[derive(Debug)]
struct TopicSink {
    outbox: Outbox,
    subscription: ByteString,
}

#[derive(Debug)]
struct Shared {
    config: RouterConfig,
    topics: Mutex<TopicIndex<TopicSink>>,
    relay: Arc<dyn Relay>,
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

    /// Subscribes to a destination. The subscription lasts until the returned handle is
    /// dropped.
    pub fn subscribe(
        &self,
        destination: &Destination,
        subscriber: Subscriber,
    ) -> Result<Subscription, RouteError> {
        match destination.kind() {
            Kind::Topic => Ok(self.subscribe_topic(destination, subscriber)),
            Kind::Queue | Kind::TempQueue => Err(RouteError::InvalidDestination {
                destination: destination.to_string(),
                reason: "queues are not available yet",
            }),
        }
    }

    fn subscribe_topic(&self, destination: &Destination, subscriber: Subscriber) -> Subscription {
        let key = self.shared.next_key.fetch_add(1, Ordering::Relaxed);
        let name = ByteString::from(destination.name());
        let entry = Arc::new(Entry {
            key,
            pattern: Pattern::parse(&name),
            name: name.clone(),
            sink: TopicSink {
                outbox: subscriber.outbox,
                subscription: subscriber.id,
            },
        });
        let wildcard = entry.pattern.is_some();
        let first = self.lock_topics().insert(entry);
        if first {
            self.shared
                .relay
                .interest(self.vhost(), Interest::Added(name.to_string()));
        }
        Subscription {
            router: self.clone(),
            key,
            name,
            wildcard,
        }
    }

    fn unsubscribe_topic(&self, key: u64, name: &ByteString, wildcard: bool) {
        let last = self.lock_topics().remove(key, name, wildcard);
        if last {
            self.shared
                .relay
                .interest(self.vhost(), Interest::Removed(name.to_string()));
        }
    }

    /// A new broker-wide unique message id.
    pub fn next_message_id(&self) -> ByteString {
        let n = self.shared.next_message.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(self.shared.config.node_id.len() + 12);
        id.push_str(&self.shared.config.node_id);
        id.push('-');
        id.push_str(itoa::Buffer::new().format(n));
        ByteString::from(id)
    }

    /// Publishes a SEND from a local client: routes it here and hands it to the relay.
    pub async fn publish(
        &self,
        destination: Destination,
        headers: &Headers,
        body: Bytes,
    ) -> Result<Arc<Message>, RouteError> {
        let message = Arc::new(Message::from_send(
            self.next_message_id(),
            destination,
            headers,
            body,
        ));
        match message.destination().kind() {
            Kind::Topic => {
                self.route_topic(&message);
                self.shared.relay.forward(self.vhost(), &message);
            }
            Kind::Queue | Kind::TempQueue => {
                return Err(RouteError::InvalidDestination {
                    destination: message.destination().to_string(),
                    reason: "queues are not available yet",
                });
            }
        }
        Ok(message)
    }

    /// Delivers a message that came from another node to local subscribers only.
    pub fn publish_local(&self, message: Arc<Message>) {
        if message.destination().kind() == Kind::Topic {
            self.route_topic(&message);
        }
    }

    /// Fans a topic message out to every matching subscription.
    fn route_topic(&self, message: &Arc<Message>) {
        let name = ByteString::from(message.destination().name());
        let matches = self.lock_topics().lookup(&name);
        let stats = &self.shared.stats;
        stats.published.fetch_add(1, Ordering::Relaxed);
        let mut delivered = 0;
        for entry in matches.iter() {
            let delivery = Delivery {
                message: message.clone(),
                subscription: entry.sink.subscription.clone(),
                ack_id: None,
                redelivered: false,
            };
            match entry.sink.outbox.deliver(delivery) {
                Ok(()) => delivered += 1,
                Err(PushError::Overflow) => {
                    stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                }
                Err(PushError::Closed) => {}
            }
        }
        stats.delivered.fetch_add(delivered, Ordering::Relaxed);
    }

    fn lock_topics(&self) -> std::sync::MutexGuard<'_, TopicIndex<TopicSink>> {
        // A panic while holding the lock cannot leave the index half-updated in a way
        // that matters more than stopping the broker would, so poisoning is ignored.
        self.shared
            .topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An active subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    router: Router,
    key: u64,
    name: ByteString,
    wildcard: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.router
            .unsubscribe_topic(self.key, &self.name, self.wildcard);
    }
}
