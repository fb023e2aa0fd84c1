//! Presence across nodes with a real redis-server: subscription counts add up across
//! nodes, and a node that dies stops counting within a few seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use postbox_cluster::{ClusterConfig, ClusterRelay};
use postbox_router::{AckMode, Destination, Overflow, Router, RouterConfig, Subscriber, outbox};
use postbox_testkit::{RedisServer, eventually};

/// How long presence may take to spread between nodes.
const WITHIN: Duration = Duration::from_secs(10);

async fn relay(redis: &RedisServer, node: &str) -> (ClusterRelay, Router) {
    let relay = ClusterRelay::connect(ClusterConfig {
        url: redis.url(),
        password: None,
        tls_ca: None,
        node_id: node.into(),
        prefix: "presence-test".into(),
        wait: false,
        claim_idle: Duration::from_secs(5),
        node_ttl: Duration::from_millis(600),
        queue_max_length: 1000,
        queue_overflow: Overflow::Block,
        store_timeout: Duration::from_secs(2),
    })
    .await
    .expect("joins the cluster");
    let config = RouterConfig {
        node_id: node.into(),
        ..RouterConfig::default()
    };
    let router = Router::with_relay(config, Arc::new(relay.clone()));
    relay.register(router.clone());
    (relay, router)
}

fn subscriber(id: &str) -> Subscriber {
    let (outbox, receiver) = outbox(1 << 20);
    std::mem::forget(receiver);
    Subscriber {
        outbox,
        id: id.into(),
        ack: AckMode::Auto,
        prefetch: None,
        queue_ttl: None,
        member: None,
        list_members: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_add_up_across_nodes_and_a_dead_node_stops_counting() {
    let redis = RedisServer::start();
    let (a, router_a) = relay(&redis, "a").await;
    let (b, router_b) = relay(&redis, "b").await;
    let topic = Destination::parse(&"/topic/presence".into()).unwrap();
    let queue = Destination::parse(&"/queue/presence".into()).unwrap();
    let _s1 = router_a.subscribe(&topic, subscriber("1")).unwrap();
    let _s2 = router_a.subscribe(&topic, subscriber("2")).unwrap();
    let _s3 = router_b.subscribe(&topic, subscriber("3")).unwrap();
    let _q = router_b.subscribe(&queue, subscriber("4")).unwrap();

    eventually(
        WITHIN,
        "both nodes counting 3 topic subscribers",
        async || a.presence("/", "/topic/presence") == 3 && b.presence("/", "/topic/presence") == 3,
    )
    .await;
    eventually(WITHIN, "the queue consumer counted on a", async || {
        a.presence("/", "/queue/presence") == 1
    })
    .await;
    assert_eq!(a.peers(), ["b"]);

    a.halt();
    let halted_at = Instant::now();
    eventually(WITHIN, "b forgetting a's subscribers", async || {
        b.presence("/", "/topic/presence") == 1
    })
    .await;
    assert!(
        halted_at.elapsed() < Duration::from_secs(5),
        "took {:?}",
        halted_at.elapsed()
    );
    assert!(b.peers().is_empty());
}
