//! Several `postbox` processes sharing one real `redis-server`: topics, wildcards and
//! queues across nodes, a node killed with unacknowledged messages, request/reply across
//! nodes, and Redis restarted in the middle of a stream.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use postbox_testkit::{Broker, Client, Command, Frame, RedisServer};

fn node(redis: &RedisServer, id: &str) -> Broker {
    common::start(&[
        "--cluster",
        &redis.url(),
        "--node-id",
        id,
        "--cluster-node-ttl-ms",
        "1000",
        "--cluster-claim-ms",
        "1500",
    ])
}

fn text(frame: &Frame) -> String {
    String::from_utf8_lossy(&frame.body).into_owned()
}

/// Publishes probes until every subscriber has seen one (interest takes a moment to
/// reach other nodes), then drains the probes.
async fn until_routed(publisher: &mut Client, topic: &str, subscribers: &mut [&mut Client]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut reached = vec![false; subscribers.len()];
    while reached.iter().any(|r| !r) {
        assert!(Instant::now() < deadline, "interest never propagated");
        publisher.publish(topic, "probe").await;
        for (i, subscriber) in subscribers.iter_mut().enumerate() {
            while let Some(frame) = subscriber.next_frame(Duration::from_millis(100)).await {
                if text(&frame) == "probe" {
                    reached[i] = true;
                }
            }
        }
    }
    for subscriber in subscribers.iter_mut() {
        while subscriber
            .next_frame(Duration::from_millis(300))
            .await
            .is_some()
        {}
    }
}

async fn bodies(client: &mut Client, quiet: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(frame) = client.next_frame(quiet).await {
        assert_eq!(frame.command, Command::Message, "{frame:?}");
        out.push(text(&frame));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_wildcards_reach_every_node_exactly_once() {
    let redis = RedisServer::start();
    let (n1, n2, n3) = (node(&redis, "n1"), node(&redis, "n2"), node(&redis, "n3"));
    let mut exact = Client::connect(n1.addr, &[]).await;
    exact.subscribe("a", "/topic/cl.room1", &[]).await;
    let mut wildcard = Client::connect(n2.addr, &[]).await;
    wildcard.subscribe("b", "/topic/cl.*", &[]).await;
    let mut unrelated = Client::connect(n3.addr, &[]).await;
    unrelated.subscribe("c", "/topic/other", &[]).await;
    let mut local = Client::connect(n3.addr, &[]).await;
    local.subscribe("d", "/topic/cl.room1", &[]).await;
    let mut publisher = Client::connect(n3.addr, &[]).await;
    until_routed(
        &mut publisher,
        "/topic/cl.room1",
        &mut [&mut exact, &mut wildcard, &mut local],
    )
    .await;

    let sent: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for body in &sent {
        publisher.publish("/topic/cl.room1", body).await;
    }
    let quiet = Duration::from_millis(700);
    assert_eq!(
        bodies(&mut exact, quiet).await,
        sent,
        "exact subscriber on another node"
    );
    assert_eq!(
        bodies(&mut wildcard, quiet).await,
        sent,
        "wildcard subscriber on another node"
    );
    assert_eq!(
        bodies(&mut local, quiet).await,
        sent,
        "subscriber on the publisher's node"
    );
    assert!(
        bodies(&mut unrelated, Duration::from_millis(100))
            .await
            .is_empty()
    );
    drop((n1, n2, n3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_is_one_queue_across_nodes() {
    let redis = RedisServer::start();
    let (n1, n2, n3) = (node(&redis, "q1"), node(&redis, "q2"), node(&redis, "q3"));
    let mut consumers = Vec::new();
    for broker in [&n1, &n2] {
        let mut client = Client::connect(broker.addr, &[]).await;
        client
            .subscribe(
                "w",
                "/queue/cl.jobs",
                &[("ack", "client-individual"), ("prefetch-count", "5")],
            )
            .await;
        consumers.push(client);
    }
    let mut producer = Client::connect(n3.addr, &[]).await;
    for i in 0..100 {
        producer.publish("/queue/cl.jobs", &i.to_string()).await;
    }
    producer.disconnect().await;

    // Nothing is acknowledged until both nodes hold messages: a node fetches only as many
    // as its consumer's prefetch, so the other node must take the rest. Acknowledging from
    // the start would let one fast node drain the queue alone on a loaded machine.
    let mut seen = HashSet::new();
    let mut per_consumer = [0usize; 2];
    let mut unacked: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 100 && Instant::now() < deadline {
        for (i, consumer) in consumers.iter_mut().enumerate() {
            while let Some(message) = consumer.next_frame(Duration::from_millis(50)).await {
                assert!(
                    seen.insert(text(&message)),
                    "{} delivered twice",
                    text(&message)
                );
                per_consumer[i] += 1;
                unacked[i].push(message.get("ack").unwrap().to_owned());
            }
        }
        if per_consumer.iter().all(|&n| n > 0) {
            for (consumer, tags) in consumers.iter_mut().zip(unacked.iter_mut()) {
                for tag in tags.drain(..) {
                    consumer
                        .send(&Frame::new(Command::Ack).header("id", tag.as_str()))
                        .await;
                }
            }
        }
    }
    assert!(
        per_consumer.iter().all(|&n| n > 0),
        "one node got nothing: {per_consumer:?}"
    );
    assert_eq!(seen.len(), 100, "missing messages");
    drop((n1, n2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_held_by_a_killed_node_are_delivered_by_another() {
    let redis = RedisServer::start();
    let mut doomed = node(&redis, "k1");
    let survivor = node(&redis, "k2");
    let mut producer = Client::connect(survivor.addr, &[]).await;
    for i in 0..20 {
        producer.publish("/queue/cl.crash", &i.to_string()).await;
    }
    producer.disconnect().await;

    let mut held = Client::connect(doomed.addr, &[]).await;
    held.subscribe(
        "w",
        "/queue/cl.crash",
        &[("ack", "client-individual"), ("prefetch-count", "10")],
    )
    .await;
    let mut held_bodies = HashSet::new();
    for _ in 0..10 {
        held_bodies.insert(text(&held.expect(Command::Message).await));
    }
    doomed.signal("KILL");
    doomed.wait_exit(Duration::from_secs(5)).expect("killed");

    let mut rescuer = Client::connect(survivor.addr, &[]).await;
    rescuer
        .subscribe(
            "w",
            "/queue/cl.crash",
            &[("ack", "client-individual"), ("prefetch-count", "100")],
        )
        .await;
    let mut seen = HashSet::new();
    let mut redelivered = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 20 && Instant::now() < deadline {
        let Some(message) = rescuer.next_frame(Duration::from_millis(200)).await else {
            continue;
        };
        let body = text(&message);
        assert!(seen.insert(body.clone()), "{body} delivered twice");
        if message.get("redelivered") == Some("true") {
            redelivered.insert(body);
        }
    }
    assert_eq!(seen.len(), 20, "messages were lost with the node");
    assert_eq!(
        redelivered, held_bodies,
        "the killed node's messages are the redelivered ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_reply_across_nodes() {
    let redis = RedisServer::start();
    let (n1, n2) = (node(&redis, "r1"), node(&redis, "r2"));
    let mut responder = Client::connect(n2.addr, &[]).await;
    responder.subscribe("svc", "/queue/cl.service", &[]).await;
    let mut requester = Client::connect(n1.addr, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        requester
            .send(
                &Frame::new(Command::Send)
                    .header("destination", "/queue/cl.service")
                    .header("reply-to", "/temp-queue/answers")
                    .body("ping"),
            )
            .await;
        let request = responder.expect(Command::Message).await;
        let reply_to = request.get("reply-to").unwrap().to_owned();
        responder
            .send(
                &Frame::new(Command::Send)
                    .header("destination", reply_to.as_str())
                    .body("pong"),
            )
            .await;
        // The requester's node must be known to the responder's before replies can route.
        if let Some(reply) = requester.next_frame(Duration::from_millis(500)).await {
            assert_eq!(text(&reply), "pong");
            assert_eq!(reply.get("subscription"), Some("/temp-queue/answers"));
            break;
        }
        assert!(Instant::now() < deadline, "the reply never crossed nodes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_mid_stream_loses_no_order_and_duplicates_nothing() {
    let mut redis = RedisServer::start();
    let (n1, n2) = (node(&redis, "s1"), node(&redis, "s2"));
    let mut subscriber = Client::connect(n2.addr, &[]).await;
    subscriber.subscribe("s", "/topic/cl.stream", &[]).await;
    let mut publisher = Client::connect(n1.addr, &[]).await;
    until_routed(&mut publisher, "/topic/cl.stream", &mut [&mut subscriber]).await;

    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        while let Some(frame) = subscriber.next_frame(Duration::from_secs(4)).await {
            received.push(text(&frame).parse::<u32>().unwrap());
        }
        received
    });
    // Queue messages accepted before the restart are in Redis's append-only file.
    let mut producer = Client::connect(n1.addr, &[]).await;
    for i in 0..10 {
        producer.publish("/queue/cl.durable", &i.to_string()).await;
    }
    producer.disconnect().await;

    // A steady stream, one message every 5 ms, for half a second before the restart and
    // six seconds after it: the pauses are the stream's pace, not waits for an event.
    let mut n = 0u32;
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        publisher.publish("/topic/cl.stream", &n.to_string()).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.restart();
    let restarted_at = n;
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        publisher.publish("/topic/cl.stream", &n.to_string()).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let received = reader.await.unwrap();
    let mut consumer = Client::connect(n2.addr, &[]).await;
    consumer.subscribe("q", "/queue/cl.durable", &[]).await;
    let durable: Vec<String> = bodies(&mut consumer, Duration::from_secs(2)).await;
    assert_eq!(durable, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "out of order or duplicated"
    );
    assert!(
        received.iter().any(|&v| v > restarted_at + 10),
        "nothing arrived after Redis came back"
    );
    drop((n1, n2));
}

#[test]
fn an_unreachable_redis_stops_the_start_with_a_clear_message() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = std::process::Command::new(common::binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--cluster",
            &format!("redis://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach Redis at redis://127.0.0.1"),
        "{stderr}"
    );
}
