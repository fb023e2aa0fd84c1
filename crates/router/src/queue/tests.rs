//! Unit tests of queues.

use super::*;
use crate::budget::Budget;
use crate::outbox::{Notification, OutboxReceiver, outbox};
use crate::relay::LocalQueue;
use crate::{Destination, Message};
use bytes::Bytes;
use postbox_stomp::Headers;
use std::time::Duration;

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
            let tag = match &delivery.ack {
                Acknowledge::Client(ack) => ack.tag,
                Acknowledge::OnWrite(settle) => settle.tag(),
                Acknowledge::None => panic!("a queue delivery is acknowledged somehow"),
            };
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
    assert!(delivery.ack_tag().is_none());
    assert!(rx.try_recv().is_none(), "prefetch 1 holds the second back");
    delivery.take_settle().unwrap().written();
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

#[test]
fn a_pending_auto_delivery_does_not_keep_its_queue_alive() {
    let queue = queue(QueueSettings::default());
    let (outbox, mut rx) = outbox(1 << 30);
    queue.add_consumer(1, outbox, "sub".into(), AckMode::Auto, 10);
    offer(&queue, "1");
    offer(&queue, "2");
    // One delivery taken by the writer, one still in the outbox, which the queue's
    // consumer owns: neither may hold the queue, or the queue could never be freed
    // without removing its consumer first.
    let Some(Notification::Deliver(mut taken)) = rx.try_recv() else {
        panic!("no delivery")
    };
    let weak = Arc::downgrade(&queue);
    drop(queue);
    assert!(weak.upgrade().is_none(), "the queue was freed");
    // Settling against a freed queue is a no-op.
    taken.take_settle().unwrap().written();
}
