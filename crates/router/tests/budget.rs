//! The byte budget shared by every queue of every virtual host.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use postbox_router::{
    AckMode, Budget, Destination, Notification, Overflow, QueueCache, RouteError, Router,
    RouterConfig, Subscriber, outbox,
};
use postbox_stomp::{ByteString, Headers};

fn destination(name: &str) -> Destination {
    Destination::parse(&ByteString::from(name)).expect("destination")
}

fn router(vhost: &str, budget: &Arc<Budget>, overflow: Overflow) -> Router {
    let mut config = RouterConfig {
        vhost: vhost.into(),
        budget: budget.clone(),
        ..RouterConfig::default()
    };
    config.queue.overflow = overflow;
    Router::new(config)
}

/// A message's body; the budget also counts its headers, id and destination (a few
/// dozen bytes), so five of them fit in [`BUDGET`] and six do not.
const BODY: usize = 200_000;
const BUDGET: usize = 5 * BODY + 1000;

async fn send(router: &Router, name: &str, body: usize) -> Result<(), RouteError> {
    let mut cache = QueueCache::default();
    router
        .publish(
            &mut cache,
            destination(name),
            Headers::new(),
            Bytes::from(vec![b'x'; body]),
        )
        .await
        .map(|_| ())
}

/// A send expected to go through at once: never waits for good.
async fn send_now(router: &Router, name: &str) -> Result<(), RouteError> {
    tokio::time::timeout(Duration::from_secs(1), send(router, name, BODY))
        .await
        .expect("not held")
}

/// Takes and acknowledges everything `name` holds.
async fn drain(router: &Router, name: &str) -> usize {
    let (outbox, mut rx) = outbox(1 << 30);
    let subscription = router
        .subscribe(
            &destination(name),
            Subscriber {
                outbox,
                id: "s".into(),
                ack: AckMode::ClientIndividual,
                prefetch: Some(1000),
                queue_ttl: None,
                member: None,
                list_members: false,
            },
        )
        .expect("subscribe");
    let mut taken = 0;
    while let Some(Notification::Deliver(delivery)) = rx.try_recv() {
        subscription
            .ack(delivery.ack_tag().expect("client ack").tag)
            .expect("ack");
        taken += 1;
    }
    taken
}

#[tokio::test(start_paused = true)]
async fn a_full_budget_holds_the_publisher_until_any_queue_drains() {
    let budget = Arc::new(Budget::new(BUDGET));
    let one = router("one", &budget, Overflow::Block);
    let two = router("two", &budget, Overflow::Block);
    for _ in 0..4 {
        send_now(&one, "/queue/a").await.expect("room");
    }
    send_now(&two, "/queue/b").await.expect("room");
    assert!(budget.used() > 5 * BODY && budget.used() <= BUDGET);

    // Both queues are far from their own limits; the budget is what is full.
    let held = tokio::spawn({
        let two = two.clone();
        async move { send(&two, "/queue/b", BODY).await }
    });
    // Proving that it stays held takes a wait; the clock is paused, so these five
    // seconds pass at once, after every task has had its chance to run.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !held.is_finished(),
        "the publisher waits while the budget is full"
    );

    // Another virtual host's queue drains: the publisher goes on.
    assert_eq!(drain(&one, "/queue/a").await, 4);
    tokio::time::timeout(Duration::from_secs(1), held)
        .await
        .expect("resumed")
        .unwrap()
        .expect("accepted");
    assert_eq!(drain(&two, "/queue/b").await, 2);
    assert_eq!(budget.used(), 0, "every byte comes back once drained");
}

#[tokio::test]
async fn a_full_budget_refuses_under_the_reject_policy() {
    let budget = Arc::new(Budget::new(BUDGET));
    let one = router("one", &budget, Overflow::Reject);
    let two = router("two", &budget, Overflow::Reject);
    for _ in 0..5 {
        send_now(&one, "/queue/a").await.expect("room");
    }
    assert!(matches!(
        send_now(&two, "/queue/b").await,
        Err(RouteError::QueueFull(_))
    ));
    assert_eq!(drain(&one, "/queue/a").await, 5);
    assert_eq!(budget.used(), 0);
    send_now(&two, "/queue/b").await.expect("room again");
}
