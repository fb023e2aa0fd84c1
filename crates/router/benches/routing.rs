//! The router's hot paths, measured without sockets.
//!
//! `cargo bench -p postbox-router --bench routing`. A regression here shows up before
//! an end-to-end run: publishing one message to N topic subscribers (the per-message
//! cost a broadcast pays before any write), a SEND's whole routing path, and wildcard
//! matching on a cache miss against many patterns.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use postbox_router::topic::Pattern;
use postbox_router::{
    AckMode, Destination, Message, Notification, OutboxReceiver, QueueCache, Router, RouterConfig,
    Subscriber, Subscription, outbox,
};
use postbox_stomp::{ByteString, Headers};

/// `count` subscriptions to `destination`, each with its own outbox, as sessions hold them.
fn subscribe(
    router: &Router,
    destination: &str,
    count: usize,
) -> Vec<(Subscription, OutboxReceiver)> {
    let destination = Destination::parse(&ByteString::from(destination)).expect("destination");
    (0..count)
        .map(|i| {
            let (outbox, rx) = outbox(usize::MAX / 2);
            let subscriber = Subscriber {
                outbox,
                id: ByteString::from(format!("sub-{i}")),
                ack: AckMode::Auto,
                prefetch: None,
                queue_ttl: None,
                member: None,
                list_members: false,
            };
            let subscription = router
                .subscribe(&destination, subscriber)
                .expect("subscribe");
            (subscription, rx)
        })
        .collect()
}

/// Empties every outbox, as the sessions' writers would.
fn drain(subscribers: &mut [(Subscription, OutboxReceiver)]) -> usize {
    let mut taken = 0;
    for (_, rx) in subscribers.iter_mut() {
        while let Some(notification) = rx.try_recv() {
            rx.release(notification.cost());
            taken += matches!(notification, Notification::Deliver(_)) as usize;
        }
    }
    taken
}

fn message(topic: &str) -> Arc<Message> {
    let destination = Destination::parse(&ByteString::from(topic)).expect("destination");
    let mut headers = Headers::new();
    headers.push("content-type", "application/octet-stream");
    Arc::new(Message::new(
        "m-1".into(),
        destination,
        headers,
        Bytes::from(vec![b'x'; 128]),
    ))
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_fan_out");
    for subscribers in [1usize, 10, 100, 1000] {
        let router = Router::new(RouterConfig::default());
        let mut subs = subscribe(&router, "/topic/bench.prices", subscribers);
        let message = message("/topic/bench.prices");
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, _| {
                b.iter(|| {
                    router.publish_local(message.clone());
                    black_box(drain(&mut subs))
                })
            },
        );
    }
    group.finish();
}

fn send_path(c: &mut Criterion) {
    // A SEND's whole route: destination lookup, message built from the frame's headers,
    // fan-out to 10 subscribers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let router = Router::new(RouterConfig::default());
    let mut subs = subscribe(&router, "/topic/bench.prices", 10);
    let destination =
        Destination::parse(&ByteString::from("/topic/bench.prices")).expect("destination");
    let mut headers = Headers::new();
    headers.push("destination", "/topic/bench.prices");
    headers.push("content-type", "application/octet-stream");
    let body = Bytes::from(vec![b'x'; 128]);
    let mut group = c.benchmark_group("send_path");
    group.throughput(Throughput::Elements(10));
    group.bench_function("publish_to_10", |b| {
        b.iter(|| {
            runtime
                .block_on(router.publish(
                    &mut QueueCache::default(),
                    destination.clone(),
                    headers.clone(),
                    body.clone(),
                ))
                .expect("published");
            black_box(drain(&mut subs))
        })
    });
    group.finish();
}

fn wildcards(c: &mut Criterion) {
    let mut group = c.benchmark_group("wildcard");
    let pattern = Pattern::parse("prices.*.eu.#").expect("pattern");
    group.bench_function("match_one_pattern", |b| {
        b.iter(|| black_box(pattern.matches(black_box("prices.stocks.eu.paris.cac40"))))
    });

    // A cache miss against 1,000 patterns: every name is new to the match cache (more
    // distinct names than it holds), so each publish scans all patterns.
    let router = Router::new(RouterConfig::default());
    let mut subs = Vec::new();
    for i in 0..1000 {
        subs.extend(subscribe(&router, &format!("/topic/prices.s{i}.*.#"), 1));
    }
    subs.extend(subscribe(&router, "/topic/prices.#", 1));
    let messages: Vec<_> = (0..40_000)
        .map(|i| message(&format!("/topic/prices.s{}.eu.n{i}", i % 1000)))
        .collect();
    let mut next = 0;
    group.throughput(Throughput::Elements(1));
    group.bench_function("route_miss_1000_patterns", |b| {
        b.iter(|| {
            router.publish_local(messages[next].clone());
            next = (next + 1) % messages.len();
            black_box(drain(&mut subs))
        })
    });
    group.finish();
}

criterion_group!(benches, fan_out, send_path, wildcards);
criterion_main!(benches);
