//! Publishing: from local clients, and from other nodes through the relay.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use postbox_stomp::{ByteString, Headers};
use tokio::time::Instant;

use super::core::{Router, TopicSink};

/// Which subscriptions of a topic a message reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// Every matching subscription, patterns included.
    All,
    /// Only subscriptions to exactly its name: presence events, which say who is in a
    /// room, go only to those whose SUBSCRIBE to that name was authorized (a pattern
    /// such as `/topic/*.presence` is checked against no room).
    Exact,
}
use super::temp::reply_queue_node;
use crate::delivery::{Acknowledge, Delivery};
use crate::error::StoreError;
use crate::outbox::PushError;
use crate::queue::{Offer, Queue, Queued};
use crate::{Destination, DestinationKind, Message, RouteError};

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
        let mut headers = headers;
        if self.shared.presence.is_some() {
            self.stamp_presence(&destination, &mut headers)?;
        }
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
                // Only here, for a local client's message, is the relay called: other
                // nodes deliver what it forwards through `publish_local`, which never
                // calls it, so a message crosses at most one hop.
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
                        other => RouteError::StoreUnavailable(other),
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

    /// Delivers a message that came from another node to local subscribers only; the
    /// relay is never called from here (one hop, see [`crate::relay`]).
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
    pub(super) fn route_topic(&self, message: &Arc<Message>, expires_at: Option<Instant>) {
        self.route_topic_to(message, expires_at, Reach::All);
    }

    /// Fans a topic message out to the subscriptions `reach` allows.
    pub(super) fn route_topic_to(
        &self,
        message: &Arc<Message>,
        expires_at: Option<Instant>,
        reach: Reach,
    ) {
        let name = ByteString::from(message.destination().name());
        let matches = self.lock_topics().lookup(&name);
        let stats = &self.shared.stats;
        let mut delivered = 0;
        for entry in matches.iter() {
            if reach == Reach::Exact && entry.pattern.is_some() {
                continue;
            }
            match &entry.sink {
                TopicSink::Direct {
                    outbox,
                    subscription,
                } => {
                    let delivery = Delivery {
                        message: message.clone(),
                        subscription: subscription.clone(),
                        ack: Acknowledge::None,
                        redelivered: false,
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
}
