//! Subscriptions: subscribing, acknowledging through them, and their end.

use std::sync::Arc;
use std::time::Duration;

use postbox_stomp::ByteString;

use super::core::{Router, TopicSink};
use super::temp::TempQueue;
use crate::delivery::AckMode;
use crate::outbox::Outbox;
use crate::presence::{Member, Seat};
use crate::queue::{Overflow, Queue, QueueSettings, UnknownAck};
use crate::topic::{Entry, Pattern};
use crate::{Destination, DestinationKind, RouteError};

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
    /// Who subscribes, for destinations with presence; `None` never counts as a member.
    pub member: Option<Member>,
    /// Whether the subscription's first MESSAGE should be the room's member list
    /// (`presence-members:true`).
    pub list_members: bool,
}

impl Router {
    /// Subscribes to a topic or queue. The subscription lasts until the handle is dropped.
    /// Temporary queues are subscribed through [`Router::subscribe_temp`].
    pub fn subscribe(
        &self,
        destination: &Destination,
        subscriber: Subscriber,
    ) -> Result<Subscription, RouteError> {
        let queue = match destination.kind() {
            DestinationKind::Topic => None,
            DestinationKind::Queue => Some(self.queue_for(destination, subscriber.queue_ttl)?),
            DestinationKind::TempQueue | DestinationKind::ReplyQueue => {
                return Err(RouteError::NotOwner(destination.to_string()));
            }
        };
        let subscribe = |subscriber: Subscriber| match queue {
            None => self.subscribe_topic(destination, subscriber),
            Some(queue) => self.consume(queue, subscriber, Cleanup::Shared),
        };
        match self.member_of_room(destination, &subscriber) {
            Some(member) => Ok(self.join_room(destination, member, subscriber, subscribe)),
            None => Ok(subscribe(subscriber)),
        }
    }

    /// Subscribes to the session's own temporary queue.
    pub fn subscribe_temp(&self, temp: &TempQueue, subscriber: Subscriber) -> Subscription {
        self.consume(temp.queue.clone(), subscriber, Cleanup::Owned)
    }

    /// The subscriber's prefetch, defaulted and capped.
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
        let mut queue = queue;
        let add = |queue: &Queue| {
            queue.add_consumer_unless_deleted(
                key,
                subscriber.outbox.clone(),
                subscriber.id.clone(),
                subscriber.ack,
                prefetch,
            )
        };
        // A shared queue forgotten as idle since it was looked up has a successor by now
        // (or gets one here): join that one. A deleted temporary queue stays deleted.
        let mut tries = 0;
        while !add(&queue) && tries < 8 {
            tries += 1;
            let Cleanup::Shared = cleanup else { break };
            match self.queue_for(queue.destination(), subscriber.queue_ttl) {
                Ok(fresh) => queue = fresh,
                Err(_) => break,
            }
        }
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
            seat: None,
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
            seat: None,
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

/// What a subscription is attached to, and so what its end undoes.
#[derive(Debug)]
enum Target {
    /// An entry in the topic index.
    Topic {
        /// The topic name or pattern, without `/topic/`.
        name: ByteString,
        /// Whether `name` is a pattern.
        wildcard: bool,
        /// The private queue of an acknowledging topic subscription.
        queue: Option<Arc<Queue>>,
    },
    /// A consumer of a queue.
    Queue { queue: Arc<Queue>, cleanup: Cleanup },
}

/// An active subscription; dropping it unsubscribes, and a queue gets back what the
/// subscription had not acknowledged.
#[derive(Debug)]
pub struct Subscription {
    router: Router,
    key: u64,
    ack: AckMode,
    target: Target,
    /// The room this subscription makes its member present in, if any.
    pub(super) seat: Option<Seat>,
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
        match self.seat.take() {
            Some(seat) => {
                let router = self.router.clone();
                router.leave_room(&seat, || self.end());
            }
            None => self.end(),
        }
    }
}

impl Subscription {
    /// Undoes what subscribing did: out of the topic index or the queue.
    fn end(&mut self) {
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
                // The consumer leaves first: what it held is back in the queue (or on
                // its way to the dead-letter queue) before the relay hears of the lower
                // count, and before an idle queue is forgotten.
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use postbox_stomp::Headers;

    use super::*;
    use crate::outbox::{Notification, outbox};
    use crate::{QueueCache, RouterConfig};

    #[tokio::test]
    async fn a_consumer_of_a_queue_forgotten_since_its_lookup_joins_the_successor() {
        let router = Router::new(RouterConfig::default());
        let name = Destination::parse(&ByteString::from("/queue/q")).unwrap();
        // Looked up by a SUBSCRIBE, then forgotten as idle before the consumer is added:
        // the window a last consumer leaving at the same moment opens.
        let stale = router.queue_for(&name, None).unwrap();
        router.forget_if_idle(&stale);
        assert!(stale.is_deleted());
        let (outbox, mut rx) = outbox(1 << 20);
        let subscriber = Subscriber {
            outbox,
            id: "s".into(),
            ack: AckMode::Auto,
            prefetch: None,
            queue_ttl: None,
            member: None,
            list_members: false,
        };
        let _subscription = router.consume(stale.clone(), subscriber, Cleanup::Shared);
        assert_eq!(stale.consumer_count(), 0, "nobody joined the deleted queue");
        let mut cache = QueueCache::default();
        router
            .publish(&mut cache, name, Headers::new(), Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert!(
            matches!(rx.try_recv(), Some(Notification::Deliver(_))),
            "the consumer reads the queue that SENDs now reach"
        );
    }
}
