//! Configured limits: slow consumers, connections, subscriptions, the CONNECT deadline,
//! header counts.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use postbox_testkit::client::Received;
use postbox_testkit::{Client, Command, Frame};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_disconnected_while_others_get_everything() {
    let broker = common::start(&["--outbound-buffer", "1048576"]);
    let topic = "/topic/firehose";
    let mut slow = Client::connect(broker.addr, &[]).await;
    slow.subscribe("slow", topic, &[]).await;
    let mut fast = Client::connect(broker.addr, &[]).await;
    fast.subscribe("fast", topic, &[]).await;
    let mut publisher = Client::connect(broker.addr, &[]).await;

    const COUNT: usize = 600;
    const BATCH: usize = 4;
    let body = vec![b'x'; 64 * 1024];
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let reader = tokio::spawn(async move {
        for i in 0..COUNT {
            let frame = fast.next_frame(Duration::from_secs(10)).await;
            let frame = frame.unwrap_or_else(|| panic!("fast subscriber stopped at {i}"));
            assert_eq!(frame.command, Command::Message, "{frame:?}");
            counter.fetch_add(1, Ordering::Release);
        }
    });
    // The publisher goes as fast as the fast subscriber reads (never waiting for the slow
    // one), so only the slow one can fall a whole outbound buffer behind.
    for i in 0..COUNT {
        let mut frame = Frame::new(Command::Send)
            .header("destination", topic)
            .body(body.clone());
        if i == COUNT - 1 {
            frame = frame.header("receipt", "all-sent");
        }
        publisher.send(&frame).await;
        if i % BATCH == BATCH - 1 {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while received.load(Ordering::Acquire) + BATCH <= i {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "fast subscriber stalled"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    publisher.expect_receipt("all-sent").await;
    reader.await.expect("the fast subscriber got every message");

    // The slow subscriber gets what fitted, then an ERROR naming the problem, then close.
    let mut messages = 0;
    let error = loop {
        match slow.receive(Duration::from_secs(10)).await {
            Received::Frame(frame) if frame.command == Command::Message => messages += 1,
            Received::Frame(frame) if frame.command == Command::Error => break frame,
            other => panic!("slow subscriber: unexpected {other:?} after {messages} messages"),
        }
    };
    assert!(messages < COUNT, "the slow subscriber was never cut off");
    assert!(
        error.get("message").unwrap().starts_with("slow consumer"),
        "{error:?}"
    );
    slow.expect_closed().await;
}

#[tokio::test]
async fn connections_past_the_limit_get_an_error() {
    let broker = common::start(&["--max-connections", "2"]);
    let first = Client::connect(broker.addr, &[]).await;
    let _second = Client::connect(broker.addr, &[]).await;
    let mut third = Client::open(broker.addr).await;
    let error = third.expect_error().await;
    assert!(
        error
            .get("message")
            .unwrap()
            .contains("too many connections")
    );
    third.expect_closed().await;
    first.disconnect().await;
    // The freed slot is reusable once the first session has ended.
    let mut accepted = false;
    for _ in 0..50 {
        let mut client = Client::open(broker.addr).await;
        client
            .send(&Frame::new(Command::Connect).header("accept-version", "1.2"))
            .await;
        if let Some(frame) = client.next_frame(Duration::from_secs(2)).await
            && frame.command == Command::Connected
        {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(accepted, "a slot never became free");
}

#[tokio::test]
async fn connect_must_arrive_in_time() {
    let broker = common::start(&["--connect-timeout-ms", "300"]);
    let mut client = Client::open(broker.addr).await;
    let error = client.expect_error().await;
    assert_eq!(error.get("message"), Some("no CONNECT frame within 300 ms"));
    client.expect_closed().await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_limited() {
    let broker = common::start(&["--max-subscriptions", "2"]);
    let mut client = Client::connect(broker.addr, &[]).await;
    client.subscribe("1", "/topic/a", &[]).await;
    client.subscribe("2", "/topic/b", &[]).await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "3")
                .header("destination", "/topic/c"),
        )
        .await;
    let error = client.expect_error().await;
    assert!(error.get("message").unwrap().contains("at most 2"));
    client.expect_closed().await;
}

#[tokio::test]
async fn a_header_line_past_the_limit_is_refused_before_it_ends() {
    let broker = common::start(&["--max-header-length", "1024"]);
    let mut client = Client::connect(broker.addr, &[]).await;
    let mut raw = b"SEND\ndestination:/topic/x\nx-big:".to_vec();
    raw.extend(std::iter::repeat_n(b'y', 4096));
    // No end of line: the server must not wait for one.
    let _ = client.try_send_raw(&raw).await;
    let error = client.expect_error().await;
    assert!(error.get("message").unwrap().contains("1024"), "{error:?}");
    client.expect_closed().await;
}

#[tokio::test]
async fn hundreds_of_headers_pass_with_the_default_limit() {
    let broker = common::start(&[]);
    let mut subscriber = Client::connect(broker.addr, &[]).await;
    subscriber.subscribe("s", "/topic/wide", &[]).await;
    let mut publisher = Client::connect(broker.addr, &[]).await;
    let mut frame = Frame::new(Command::Send)
        .header("destination", "/topic/wide")
        .header("receipt", "sent");
    for i in 0..900 {
        frame = frame.header(format!("x-h{i}"), i.to_string());
    }
    publisher.send(&frame).await;
    publisher.expect_receipt("sent").await;
    let message = subscriber.expect(Command::Message).await;
    assert_eq!(
        message
            .headers
            .iter()
            .filter(|(n, _)| n.starts_with("x-h"))
            .count(),
        900
    );
    assert_eq!(message.get("x-h899"), Some("899"));
}
