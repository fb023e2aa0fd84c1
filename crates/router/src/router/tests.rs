//! Unit tests of the router against a relay that records what it is asked to do.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use postbox_stomp::{ByteString, Headers};

use super::{QueueCache, Router, RouterConfig, Subscriber, Subscription};
use crate::delivery::AckMode;
use crate::outbox::{Notification, OutboxReceiver, outbox};
use crate::relay::Relay;
use crate::{Destination, Message};

/// One call the router made to its relay.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    /// `forward(vhost, message)`, by the message's destination.
    Forward { vhost: String, destination: String },
    /// `forward_reply(vhost, node, message)`.
    ForwardReply {
        vhost: String,
        node: String,
        destination: String,
    },
    /// `interest(vhost, destination, count)`.
    Interest {
        vhost: String,
        destination: String,
        count: usize,
    },
}

/// A relay that only records its calls; replies to other nodes cannot be delivered.
#[derive(Debug, Default)]
struct Recording {
    calls: Mutex<Vec<Call>>,
}

impl Recording {
    /// Every call so far, emptying the record.
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl Relay for Recording {
    fn forward(&self, vhost: &str, message: &Arc<Message>) {
        self.calls.lock().unwrap().push(Call::Forward {
            vhost: vhost.to_owned(),
            destination: message.destination().to_string(),
        });
    }

    fn forward_reply(&self, vhost: &str, node: &str, message: &Arc<Message>) -> bool {
        self.calls.lock().unwrap().push(Call::ForwardReply {
            vhost: vhost.to_owned(),
            node: node.to_owned(),
            destination: message.destination().to_string(),
        });
        false
    }

    fn interest(&self, vhost: &str, destination: &str, count: usize) {
        self.calls.lock().unwrap().push(Call::Interest {
            vhost: vhost.to_owned(),
            destination: destination.to_owned(),
            count,
        });
    }
}

const VHOST: &str = "tests";

fn router() -> (Router, Arc<Recording>) {
    let relay = Arc::new(Recording::default());
    let config = RouterConfig {
        vhost: VHOST.into(),
        node_id: "here".into(),
        ..RouterConfig::default()
    };
    (Router::with_relay(config, relay.clone()), relay)
}

fn destination(name: &str) -> Destination {
    Destination::parse(&ByteString::from(name)).unwrap()
}

/// Subscribes to `name` with a fresh outbox; returns the subscription and its receiver.
fn subscribe(router: &Router, name: &str, ack: AckMode) -> (Subscription, OutboxReceiver) {
    let (outbox, rx) = outbox(1 << 20);
    let subscriber = Subscriber {
        outbox,
        id: "sub".into(),
        ack,
        prefetch: None,
        queue_ttl: None,
        member: None,
        list_members: false,
    };
    (
        router.subscribe(&destination(name), subscriber).unwrap(),
        rx,
    )
}

async fn publish(router: &Router, name: &str) {
    let mut cache = QueueCache::default();
    let body = Bytes::from_static(b"hello");
    router
        .publish(&mut cache, destination(name), Headers::new(), body)
        .await
        .unwrap();
}

/// A message as a relay hands it over from another node.
fn relayed(router: &Router, name: &str) -> Arc<Message> {
    let body = Bytes::from_static(b"from afar");
    let message = Message::new(
        router.next_message_id(),
        destination(name),
        Headers::new(),
        body,
    );
    Arc::new(message)
}

/// How many deliveries the receiver has waiting.
fn delivered(rx: &mut OutboxReceiver) -> usize {
    std::iter::from_fn(|| rx.try_recv())
        .filter(|n| matches!(n, Notification::Deliver(_)))
        .count()
}

fn interest(destination: &str, count: usize) -> Call {
    Call::Interest {
        vhost: VHOST.into(),
        destination: destination.into(),
        count,
    }
}

// ===== One hop =====

#[tokio::test]
async fn a_local_topic_publish_is_delivered_here_and_forwarded_once() {
    let (router, relay) = router();
    let (_subscription, mut rx) = subscribe(&router, "/topic/news", AckMode::Auto);
    relay.take();
    publish(&router, "/topic/news").await;
    assert_eq!(delivered(&mut rx), 1);
    assert_eq!(
        relay.take(),
        [Call::Forward {
            vhost: VHOST.into(),
            destination: "/topic/news".into(),
        }]
    );
}

#[tokio::test]
async fn a_topic_publish_nobody_here_wants_is_still_forwarded() {
    let (router, relay) = router();
    publish(&router, "/topic/elsewhere").await;
    assert_eq!(
        relay.take(),
        [Call::Forward {
            vhost: VHOST.into(),
            destination: "/topic/elsewhere".into(),
        }]
    );
}

#[test]
fn a_relayed_topic_message_is_delivered_here_and_not_sent_back() {
    let (router, relay) = router();
    let (_auto, mut auto_rx) = subscribe(&router, "/topic/news", AckMode::Auto);
    let (_client, mut client_rx) = subscribe(&router, "/topic/#", AckMode::Client);
    relay.take();
    router.publish_local(relayed(&router, "/topic/news"));
    assert_eq!(delivered(&mut auto_rx), 1);
    assert_eq!(delivered(&mut client_rx), 1, "through its private queue");
    assert_eq!(relay.take(), [], "one hop: nothing goes back to the relay");
}

#[tokio::test]
async fn a_reply_for_another_node_goes_to_it_but_never_on_from_there() {
    let (router, relay) = router();
    publish(&router, "/reply-queue/there-7.answers").await;
    assert_eq!(
        relay.take(),
        [Call::ForwardReply {
            vhost: VHOST.into(),
            node: "there".into(),
            destination: "/reply-queue/there-7.answers".into(),
        }]
    );
    assert_eq!(router.stats().unroutable.load(Relaxed), 1, "it could not");

    router.publish_local(relayed(&router, "/reply-queue/there-7.answers"));
    assert_eq!(relay.take(), [], "a relayed reply is not relayed again");
    assert_eq!(router.stats().unroutable.load(Relaxed), 2);
}

#[tokio::test]
async fn queue_messages_are_not_forwarded_as_topic_traffic() {
    let (router, relay) = router();
    let (_subscription, mut rx) = subscribe(&router, "/queue/jobs", AckMode::Auto);
    relay.take();
    publish(&router, "/queue/jobs").await;
    assert_eq!(delivered(&mut rx), 1);
    assert_eq!(relay.take(), []);
}

// ===== Interest =====

#[test]
fn the_first_subscription_announces_interest_and_the_last_withdraws_it() {
    let (router, relay) = router();
    let (first, _rx1) = subscribe(&router, "/topic/news", AckMode::Auto);
    let (second, _rx2) = subscribe(&router, "/topic/news", AckMode::Client);
    drop(first);
    assert_eq!(router.topic_subscriptions(), [("/topic/news".into(), 1)]);
    drop(second);
    assert_eq!(
        relay.take(),
        [
            interest("/topic/news", 1),
            interest("/topic/news", 2),
            interest("/topic/news", 1),
            interest("/topic/news", 0),
        ]
    );
    assert_eq!(router.topic_subscriptions(), []);
}

#[test]
fn an_acknowledging_topic_subscription_counts_once_not_also_as_a_queue() {
    let (router, relay) = router();
    let (subscription, _rx) = subscribe(&router, "/topic/news", AckMode::ClientIndividual);
    drop(subscription);
    assert_eq!(
        relay.take(),
        [interest("/topic/news", 1), interest("/topic/news", 0)]
    );
}

#[test]
fn a_pattern_and_a_name_it_matches_are_counted_apart() {
    let (router, relay) = router();
    let (_name, _rx1) = subscribe(&router, "/topic/news.sport", AckMode::Auto);
    let (_pattern, _rx2) = subscribe(&router, "/topic/news.*", AckMode::Auto);
    assert_eq!(
        relay.take(),
        [
            interest("/topic/news.sport", 1),
            interest("/topic/news.*", 1)
        ]
    );
}

#[test]
fn queue_interest_follows_its_consumers() {
    let (router, relay) = router();
    let (first, _rx1) = subscribe(&router, "/queue/jobs", AckMode::Auto);
    let (second, _rx2) = subscribe(&router, "/queue/jobs", AckMode::Client);
    drop(second);
    drop(first);
    assert_eq!(
        relay.take(),
        [
            interest("/queue/jobs", 1),
            interest("/queue/jobs", 2),
            interest("/queue/jobs", 1),
            interest("/queue/jobs", 0),
        ]
    );
}

#[test]
fn a_temporary_queue_is_nobody_else_s_interest() {
    let (router, relay) = router();
    let temp = router.create_temp("answers").unwrap();
    let (outbox, _rx) = outbox(1 << 20);
    let subscriber = Subscriber {
        outbox,
        id: "sub".into(),
        ack: AckMode::Auto,
        prefetch: None,
        queue_ttl: None,
        member: None,
        list_members: false,
    };
    let subscription = router.subscribe_temp(&temp, subscriber);
    drop(subscription);
    drop(temp);
    assert_eq!(relay.take(), []);
}
