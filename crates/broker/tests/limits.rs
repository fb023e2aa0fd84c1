//! Configured limits: slow consumers, connections, subscriptions, the CONNECT deadline,
//! header counts.

mod common;

use std::time::Duration;

use postbox_testkit::client::Received;
use postbox_testkit::http::get;
use postbox_testkit::{Broker, Client, Command, Frame, eventually};

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
    // How many messages the fast subscriber has read so far.
    let (progress, mut received) = tokio::sync::watch::channel(0);
    let reader = tokio::spawn(async move {
        for i in 0..COUNT {
            let frame = fast.next_frame(Duration::from_secs(10)).await;
            let frame = frame.unwrap_or_else(|| panic!("fast subscriber stopped at {i}"));
            assert_eq!(frame.command, Command::Message, "{frame:?}");
            progress.send_replace(i + 1);
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
            let caught_up = received.wait_for(|&read| read + BATCH > i);
            let caught_up = tokio::time::timeout(Duration::from_secs(10), caught_up)
                .await
                .expect("fast subscriber stalled");
            if caught_up.is_err() {
                panic!("the fast subscriber gave up: {:?}", reader.await);
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
    wait_for_a_free_slot(broker.addr, Duration::from_secs(10), "the freed slot").await;
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

/// Stages 64 KiB SENDs in `transaction` until the broker refuses one; returns the ERROR
/// and how many were sent. Each SEND asks for a receipt, so a refusal is seen at once.
async fn stage_until_refused(
    client: &mut Client,
    transaction: &str,
    most: usize,
) -> (Frame, usize) {
    let body = vec![b'x'; 64 * 1024];
    for i in 0..most {
        let receipt = format!("{transaction}-{i}");
        let frame = Frame::new(Command::Send)
            .header("destination", "/queue/staged")
            .header("transaction", transaction)
            .header("receipt", receipt.as_str())
            .body(body.clone());
        client.send(&frame).await;
        let reply = client.next_frame(Duration::from_secs(10)).await.unwrap();
        match reply.command {
            Command::Receipt => continue,
            Command::Error => return (reply, i),
            _ => panic!("unexpected {reply:?}"),
        }
    }
    panic!("{most} staged SENDs of 64 KiB were all accepted");
}

#[tokio::test]
async fn one_transaction_is_bounded_by_bytes() {
    let broker = common::start(&["--max-transaction-bytes", "1048576"]);
    let mut client = Client::connect(broker.addr, &[]).await;
    client
        .send(&Frame::new(Command::Begin).header("transaction", "t"))
        .await;
    let (error, sent) = stage_until_refused(&mut client, "t", 64).await;
    // 15 of 64 KiB and their headers fit in 1 MiB, the 16th does not.
    assert_eq!(sent, 15, "{error:?}");
    let message = error.get("message").unwrap();
    assert!(message.contains("max-transaction-bytes"), "{message}");
    assert!(message.contains("1048576"), "{message}");
    assert_eq!(error.get("receipt-id"), Some("t-15"));
    client.expect_closed().await;
}

#[tokio::test]
async fn all_transactions_of_a_connection_are_bounded_by_bytes() {
    let broker = common::start(&[
        "--max-transaction-bytes",
        "1048576",
        "--max-staged-bytes",
        "1572864",
    ]);
    let mut client = Client::connect(broker.addr, &[]).await;
    for transaction in ["a", "b"] {
        client
            .send(&Frame::new(Command::Begin).header("transaction", transaction))
            .await;
    }
    // Ten SENDs (640 KiB) fit in "a"; "b" then runs into the connection's 1.5 MiB.
    let body = vec![b'x'; 64 * 1024];
    for _ in 0..10 {
        let frame = Frame::new(Command::Send)
            .header("destination", "/queue/staged")
            .header("transaction", "a")
            .body(body.clone());
        client.send(&frame).await;
    }
    let (error, sent) = stage_until_refused(&mut client, "b", 64).await;
    assert!(
        sent < 15,
        "b took {sent} though the connection's limit is lower"
    );
    let message = error.get("message").unwrap();
    assert!(message.contains("max-staged-bytes"), "{message}");
    client.expect_closed().await;
}

#[tokio::test]
async fn transaction_counts_are_options() {
    let broker = common::start(&["--max-transactions", "1", "--max-transaction-frames", "2"]);
    let mut client = Client::connect(broker.addr, &[]).await;
    client
        .send(&Frame::new(Command::Begin).header("transaction", "t"))
        .await;
    client
        .send(
            &Frame::new(Command::Begin)
                .header("transaction", "u")
                .header("receipt", "r"),
        )
        .await;
    let error = client.expect_error().await;
    let message = error.get("message").unwrap();
    assert!(message.contains("at most 1 per connection"), "{message}");
    client.expect_closed().await;

    let mut client = Client::connect(broker.addr, &[]).await;
    client
        .send(&Frame::new(Command::Begin).header("transaction", "t"))
        .await;
    let (error, sent) = stage_until_refused(&mut client, "t", 10).await;
    assert_eq!(sent, 2);
    assert!(error.get("message").unwrap().contains("more than 2 frames"));
}

/// Sends to a topic with `reply-to: /temp-queue/<name>` for each name, each with a
/// receipt; returns the ERROR and how many were accepted.
async fn reply_to_until_refused(client: &mut Client, names: usize) -> (Frame, usize) {
    for i in 0..names {
        let reply_to = format!("/temp-queue/{i}");
        let receipt = format!("r-{i}");
        let frame = Frame::new(Command::Send)
            .header("destination", "/topic/requests")
            .header("reply-to", reply_to.as_str())
            .header("receipt", receipt.as_str());
        client.send(&frame).await;
        let reply = client.next_frame(Duration::from_secs(10)).await.unwrap();
        match reply.command {
            Command::Receipt => continue,
            Command::Error => return (reply, i),
            _ => panic!("unexpected {reply:?}"),
        }
    }
    panic!("{names} temporary queues were all created");
}

#[tokio::test]
async fn temporary_queues_per_connection_are_limited() {
    let broker = common::start(&["--max-temp-queues", "4"]);
    let mut client = Client::connect(broker.addr, &[]).await;
    let (error, accepted) = reply_to_until_refused(&mut client, 100).await;
    assert_eq!(accepted, 4);
    let message = error.get("message").unwrap();
    assert!(message.contains("max-temp-queues"), "{message}");
    assert_eq!(error.get("receipt-id"), Some("r-4"));
    client.expect_closed().await;
}

#[tokio::test]
async fn reply_to_subscriptions_count_against_the_subscription_limit() {
    let broker = common::start(&["--max-subscriptions", "3"]);
    let mut client = Client::connect(broker.addr, &[]).await;
    client.subscribe("mine", "/topic/a", &[]).await;
    let (error, accepted) = reply_to_until_refused(&mut client, 100).await;
    assert_eq!(accepted, 2);
    let message = error.get("message").unwrap();
    assert!(message.contains("at most 3"), "{message}");
    client.expect_closed().await;
}

/// Sends `raw` on a connection (after CONNECT when `connected`) and returns the ERROR,
/// checking that the connection then closes.
async fn refusal(addr: std::net::SocketAddr, connected: bool, raw: &[u8]) -> Frame {
    let mut client = if connected {
        Client::connect(addr, &[]).await
    } else {
        Client::open(addr).await
    };
    let _ = client.try_send_raw(raw).await;
    let error = client.expect_error().await;
    client.expect_closed().await;
    error
}

#[tokio::test]
async fn limit_errors_name_the_limit_and_answer_the_receipt() {
    let broker = common::start(&[
        "--max-frame-size",
        "4096",
        "--max-body-size",
        "2048",
        "--max-headers",
        "8",
        "--max-header-length",
        "1024",
    ]);
    let wide = |n: usize| {
        (0..n)
            .map(|i| format!("x-{i}:{}\n", "v".repeat(900)))
            .collect::<String>()
    };
    let cases = [
        (
            "SEND\ndestination:/queue/a\nreceipt:body\ncontent-length:3000\n\n".to_owned(),
            "body too large: more than 2048 bytes (max-body-size)",
            Some("body"),
        ),
        (
            format!("SEND\nreceipt:frame\n{}", wide(5)),
            "frame too large: more than 4096 bytes (max-frame-size)",
            Some("frame"),
        ),
        (
            format!("SEND\nreceipt:count\n{}", "a:1\n".repeat(8)),
            "too many headers: more than 8 (max-headers)",
            Some("count"),
        ),
        (
            format!("SEND\nreceipt:line\nx:{}", "y".repeat(2000)),
            "header line too long: more than 1024 bytes (max-header-length)",
            Some("line"),
        ),
        // The receipt comes after the line that breaks the limit: never read.
        (
            format!("SEND\nx:{}\nreceipt:late\n\n\0", "y".repeat(2000)),
            "header line too long: more than 1024 bytes (max-header-length)",
            None,
        ),
    ];
    for (raw, message, receipt) in cases {
        let error = refusal(broker.addr, true, raw.as_bytes()).await;
        assert_eq!(error.get("message"), Some(message), "{error:?}");
        assert_eq!(error.get("receipt-id"), receipt, "{error:?}");
    }
    // Before CONNECT too.
    let error = refusal(
        broker.addr,
        false,
        format!(
            "CONNECT\naccept-version:1.2\nreceipt:hello\n{}",
            "a:1\n".repeat(8)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(
        error.get("message"),
        Some("too many headers: more than 8 (max-headers)")
    );
    assert_eq!(error.get("receipt-id"), Some("hello"));
}

#[tokio::test]
async fn huge_heart_beat_values_are_capped() {
    // The largest grace multiplies the client's interval: uncapped, u64::MAX ms times
    // this overflowed a Duration and took the connection's task down before CONNECTED.
    let broker = common::start(&["--heartbeat-grace", "100"]);
    for heart_beat in [
        "18446744073709551615,0",
        "99999999999999999999,99999999999999999999",
    ] {
        let mut client = Client::open(broker.addr).await;
        client
            .send_raw(
                format!("CONNECT\naccept-version:1.2\nheart-beat:{heart_beat}\n\n\0").as_bytes(),
            )
            .await;
        client.expect(Command::Connected).await;
        client
            .send(
                &Frame::new(Command::Send)
                    .header("destination", "/topic/beats")
                    .header("receipt", "alive"),
            )
            .await;
        client.expect_receipt("alive").await;
        client.disconnect().await;
    }
}

#[tokio::test]
async fn queues_per_virtual_host_are_limited() {
    let broker = common::start(&["--max-queues", "3"]);
    let mut client = Client::connect(broker.addr, &[]).await;
    for i in 0..3 {
        let queue = format!("/queue/q{i}");
        client.publish(&queue, "kept").await;
    }
    let frame = Frame::new(Command::Send)
        .header("destination", "/queue/q3")
        .header("receipt", "fourth");
    client.send(&frame).await;
    let error = client.expect_error().await;
    let message = error.get("message").unwrap();
    assert!(
        message.contains("at most 3") && message.contains("max-queues"),
        "{message}"
    );
    assert_eq!(error.get("receipt-id"), Some("fourth"));
    client.expect_closed().await;

    // Queues that exist keep working for everyone else.
    let mut other = Client::connect(broker.addr, &[]).await;
    other.subscribe("s", "/queue/q0", &[]).await;
    let message = other.expect(Command::Message).await;
    assert_eq!(message.body, b"kept"[..]);
}

/// A publisher waiting on a full queue (`block`) whose host then resets the connection
/// is let go at once: its session, and its connection slot, do not wait for the queue.
#[tokio::test]
async fn a_publisher_held_back_by_a_full_queue_that_vanishes_is_let_go() {
    let broker = common::start(&[
        "--http-listen",
        "127.0.0.1:0",
        "--max-connections",
        "1",
        "--queue-max-length",
        "1",
        "--queue-overflow",
        "block",
    ]);
    let publisher = held_back_publisher(&broker).await;
    // Unread bytes (the queue never drains, so no RECEIPT comes) and a zero linger: the
    // close is a reset.
    publisher.set_zero_linger().unwrap();
    drop(publisher);
    wait_for_a_free_slot(
        broker.addr,
        Duration::from_secs(5),
        "the gone publisher's slot",
    )
    .await;
}

/// The same publisher closing in order (FIN, nothing unread, no heart-beats) is let go
/// too: its end of stream ends the session as it would if no frame were waiting.
#[tokio::test]
async fn a_publisher_held_back_by_a_full_queue_that_closes_is_let_go() {
    let broker = common::start(&[
        "--http-listen",
        "127.0.0.1:0",
        "--max-connections",
        "1",
        "--queue-max-length",
        "1",
        "--queue-overflow",
        "block",
    ]);
    let publisher = held_back_publisher(&broker).await;
    drop(publisher);
    wait_for_a_free_slot(
        broker.addr,
        Duration::from_secs(5),
        "the gone publisher's slot",
    )
    .await;
}

/// A connection that has sent CONNECT and two SENDs to `/queue/full`, which holds one
/// message: the second (`receipt:held`) waits. Everything the broker wrote is read.
async fn held_back_publisher(broker: &Broker) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut publisher = postbox_testkit::client::tcp(broker.addr).await;
    publisher
        .write_all(
            b"CONNECT\naccept-version:1.2\nhost:/\n\n\0\
              SEND\ndestination:/queue/full\n\nfits\0\
              SEND\ndestination:/queue/full\nreceipt:held\n\nwaits\0",
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !seen.ends_with(b"\n\n\0") {
        let mut chunk = [0; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), publisher.read(&mut chunk))
            .await
            .expect("CONNECTED in time")
            .unwrap();
        assert!(n > 0, "closed: {:?}", seen.escape_ascii().to_string());
        seen.extend_from_slice(&chunk[..n]);
    }
    assert!(
        seen.starts_with(b"CONNECTED"),
        "{:?}",
        seen.escape_ascii().to_string()
    );
    // A SEND is counted just before it is routed, which is where the second one waits.
    let http = broker.listener("http");
    eventually(
        Duration::from_secs(10),
        "both SENDs to reach the full queue",
        async || {
            let (_, text) = get(http, "/metrics").await;
            let received = common::metric(&text, "postbox_messages_received_total");
            if received == Some(2.0) {
                Ok(())
            } else {
                Err(received)
            }
        },
    )
    .await;
    publisher
}

/// Waits until a new client gets CONNECTED, retrying while the broker is full.
async fn wait_for_a_free_slot(addr: std::net::SocketAddr, within: Duration, what: &str) {
    eventually(within, what, async || {
        let mut client = Client::open(addr).await;
        client
            .send(&Frame::new(Command::Connect).header("accept-version", "1.2"))
            .await;
        match client.next_frame(Duration::from_secs(2)).await {
            Some(frame) if frame.command == Command::Connected => Ok(()),
            other => Err(other),
        }
    })
    .await;
}
