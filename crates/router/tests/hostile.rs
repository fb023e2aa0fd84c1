//! The router against what a careless or hostile client can make a session do: values
//! at the edge of their types, and consumers whose sessions vanish while producers send.

use std::time::Duration;

use bytes::Bytes;
use postbox_router::{
    AckMode, Destination, Notification, QueueCache, Router, RouterConfig, Subscriber, outbox,
};
use postbox_stomp::{ByteString, Headers};

fn destination(name: &str) -> Destination {
    Destination::parse(&ByteString::from(name)).expect("destination")
}

fn subscriber(outbox: postbox_router::Outbox, id: &str, ack: AckMode) -> Subscriber {
    Subscriber {
        outbox,
        id: ByteString::from(id),
        ack,
        prefetch: Some(4),
        queue_ttl: None,
        member: None,
        list_members: false,
    }
}

#[tokio::test]
async fn an_expiration_past_the_clock_means_never_not_a_panic() {
    let router = Router::new(RouterConfig::default());
    let mut cache = QueueCache::default();
    for name in ["/topic/t", "/queue/q"] {
        let (outbox, mut rx) = outbox(1 << 20);
        let _subscription = router
            .subscribe(&destination(name), subscriber(outbox, "s", AckMode::Auto))
            .expect("subscribe");
        for expiration in ["18446744073709551615", "9223372036854775807"] {
            let mut headers = Headers::new();
            headers.set("expiration", expiration);
            router
                .publish(
                    &mut cache,
                    destination(name),
                    headers,
                    Bytes::from_static(b"x"),
                )
                .await
                .expect("accepted");
            assert!(
                matches!(rx.try_recv(), Some(Notification::Deliver(_))),
                "{name} {expiration}: delivered, not expired"
            );
        }
    }
}

/// Producers on two threads send to one queue while its consumers' sessions end in
/// every order: writer gone first, subscription dropped first, both at once. Every
/// message sent is either delivered to a live consumer or still in the queue, and the
/// whole run finishes (a spinning dispatch would hold the queue's lock for good).
#[test]
fn consumers_vanishing_under_load_never_freeze_the_queue() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (finished, wait) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        // Redelivered any number of times, never dead-lettered: every message stays here.
        let mut config = RouterConfig {
            default_prefetch: 10_000,
            ..RouterConfig::default()
        };
        config.queue.max_deliveries = 0;
        let router = Router::new(config);
        let queue = destination("/queue/jobs");
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let router = router.clone();
                let queue = queue.clone();
                tokio::spawn(async move {
                    let mut cache = QueueCache::default();
                    for _ in 0..2_000 {
                        router
                            .publish(
                                &mut cache,
                                queue.clone(),
                                Headers::new(),
                                Bytes::from_static(b"job"),
                            )
                            .await
                            .expect("accepted");
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let mut round = 0;
        while producers.iter().any(|p| !p.is_finished()) {
            round += 1;
            let ack = [AckMode::Auto, AckMode::Client, AckMode::ClientIndividual][round % 3];
            let mut leaving = Vec::new();
            for i in 0..4 {
                let (outbox, rx) = outbox(1 << 20);
                let id = format!("c{round}-{i}");
                let subscription = router
                    .subscribe(&queue, subscriber(outbox, &id, ack))
                    .expect("subscribe");
                leaving.push((subscription, rx));
            }
            tokio::task::yield_now().await;
            for (n, (subscription, rx)) in leaving.into_iter().enumerate() {
                match n % 3 {
                    0 => {
                        // The writer ends and producers go on before the session
                        // gets round to removing the subscription: the pause is that
                        // gap, part of the interleaving under test, not a wait.
                        drop(rx);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        drop(subscription);
                    }
                    1 => {
                        drop(subscription);
                        drop(rx);
                    }
                    _ => drop((rx, subscription)),
                }
            }
        }
        for producer in producers {
            producer.await.unwrap();
        }
        // Everything is still there for a consumer that stays.
        let (outbox, mut rx) = outbox(1 << 30);
        let _stays = router
            .subscribe(
                &queue,
                Subscriber {
                    prefetch: None,
                    ..subscriber(outbox, "last", AckMode::Auto)
                },
            )
            .expect("subscribe");
        let mut delivered = 0;
        while let Some(Notification::Deliver(mut delivery)) = rx.try_recv() {
            if let Some(settle) = delivery.take_settle() {
                settle.written();
            }
            delivered += 1;
        }
        let _ = finished.send(delivered);
    });
    let Ok(delivered) = wait.recv_timeout(Duration::from_secs(60)) else {
        // Dropping a runtime whose workers spin would hang the test instead of failing it.
        std::mem::forget(runtime);
        panic!("the run did not finish: a consumer froze the queue");
    };
    assert_eq!(delivered, 4_000, "nothing acknowledged, so nothing is lost");
}

/// One client sending to a million distinct queue names must not create a million
/// queues: past `max_queues` new names are refused, existing queues still take
/// messages, and an idle queue forgotten frees a place.
#[tokio::test]
async fn queues_per_router_are_capped_by_count() {
    let router = Router::new(RouterConfig {
        max_queues: 3,
        ..RouterConfig::default()
    });
    let send = |name: &str| {
        let router = router.clone();
        let name = name.to_owned();
        async move {
            let mut cache = QueueCache::default();
            router
                .publish(
                    &mut cache,
                    destination(&name),
                    Headers::new(),
                    Bytes::from_static(b"x"),
                )
                .await
        }
    };
    for name in ["/queue/a", "/queue/b", "/queue/c"] {
        send(name).await.expect("room for three queues");
    }
    let refused = send("/queue/d")
        .await
        .expect_err("a fourth queue is refused");
    assert_eq!(refused, postbox_router::RouteError::TooManyQueues(3));
    assert!(refused.to_string().contains("max-queues"), "{refused}");
    send("/queue/a")
        .await
        .expect("an existing queue still takes messages");
    let (spare, _rx) = outbox(1 << 20);
    let refused = router
        .subscribe(
            &destination("/queue/e"),
            subscriber(spare, "s", AckMode::Auto),
        )
        .err();
    assert_eq!(refused, Some(postbox_router::RouteError::TooManyQueues(3)));
    assert!(
        router.create_temp("t").is_err(),
        "temporary queues count too"
    );
    assert_eq!(router.queues().len(), 3);

    // Draining /queue/b and leaving makes it idle: it is forgotten and frees a place.
    let (consumer, mut rx) = outbox(1 << 20);
    let subscription = router
        .subscribe(
            &destination("/queue/b"),
            subscriber(consumer, "s", AckMode::Auto),
        )
        .expect("an existing queue can be subscribed");
    while let Some(Notification::Deliver(mut delivery)) = rx.try_recv() {
        if let Some(settle) = delivery.take_settle() {
            settle.written();
        }
    }
    drop(subscription);
    assert_eq!(router.queues().len(), 2, "the drained queue is forgotten");
    send("/queue/d").await.expect("room again");
}

/// A `client` topic subscriber that never acknowledges keeps a backlog of its own; it
/// may grow to its connection's outbound bound, not to a shared queue's 64 MiB, before
/// the subscriber is cut off as a slow consumer.
#[tokio::test]
async fn a_topic_subscriber_that_never_acks_is_held_to_its_outbound_bound() {
    const OUTBOUND: usize = 64 * 1024;
    let router = Router::new(RouterConfig::default());
    let mut cache = QueueCache::default();
    let (outbox, mut rx) = outbox(OUTBOUND);
    let closed = outbox.clone();
    let _subscription = router
        .subscribe(
            &destination("/topic/news"),
            subscriber(outbox, "s", AckMode::Client),
        )
        .expect("subscribe");
    let body = Bytes::from(vec![b'x'; 1024]);
    let mut sent = 0;
    while !closed.is_closed() && sent < 4096 {
        router
            .publish(
                &mut cache,
                destination("/topic/news"),
                Headers::new(),
                body.clone(),
            )
            .await
            .expect("a topic publisher is never refused");
        sent += 1;
    }
    assert!(closed.is_closed(), "4 MiB backlog and still subscribed");
    assert!(sent < 2 * OUTBOUND / 1024, "cut off only after {sent} KiB");
    let mut delivered = 0;
    while let Some(notification) = rx.try_recv() {
        delivered += matches!(notification, Notification::Deliver(_)) as usize;
    }
    assert_eq!(delivered, 4, "the prefetch was delivered, the rest held");
}
