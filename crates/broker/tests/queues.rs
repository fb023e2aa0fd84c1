//! Postbox's queue policies: dead-lettering, overflow, TTL, and acknowledgement by
//! message id in STOMP 1.0 and 1.1.

mod common;

use std::time::Duration;

use postbox_testkit::{Client, Command, Frame, Version};

fn text(frame: &Frame) -> String {
    String::from_utf8_lossy(&frame.body).into_owned()
}

async fn ack(client: &mut Client, message: &Frame, command: Command, extra: &[(&str, &str)]) {
    let mut frame = Frame::new(command)
        .header("id", message.get("ack").unwrap())
        .header("receipt", "acked");
    for (name, value) in extra {
        frame = frame.header(*name, *value);
    }
    client.send(&frame).await;
    client.expect_receipt("acked").await;
}

#[tokio::test]
async fn nack_without_requeue_dead_letters_with_reason_headers() {
    let broker = common::start(&[]);
    let mut client = Client::connect(broker.addr, &[]).await;
    client
        .subscribe("0", "/queue/orders", &[("ack", "client-individual")])
        .await;
    client.publish("/queue/orders", "bad order").await;
    let message = client.expect(Command::Message).await;
    ack(
        &mut client,
        &message,
        Command::Nack,
        &[("requeue", "false")],
    )
    .await;
    client.expect_no_frame(Duration::from_millis(200)).await;
    client.subscribe("dlq", "/queue/orders.dlq", &[]).await;
    let dead = client.expect(Command::Message).await;
    assert_eq!(text(&dead), "bad order");
    assert_eq!(dead.get("destination"), Some("/queue/orders.dlq"));
    assert_eq!(dead.get("x-dead-letter-reason"), Some("rejected"));
    assert_eq!(dead.get("x-original-destination"), Some("/queue/orders"));
    assert_eq!(dead.get("x-delivery-count"), Some("1"));
    assert_eq!(dead.get("message-id"), message.get("message-id"));
}

#[tokio::test]
async fn the_delivery_limit_moves_a_message_to_the_dead_letter_queue() {
    let broker = common::start(&["--max-deliveries", "3", "--dead-letter-suffix", ".dead"]);
    let mut client = Client::connect(broker.addr, &[]).await;
    client
        .subscribe("0", "/queue/poison", &[("ack", "client-individual")])
        .await;
    client.publish("/queue/poison", "crash me").await;
    for attempt in 1..=3 {
        let message = client.expect(Command::Message).await;
        assert_eq!(message.get("redelivered") == Some("true"), attempt > 1);
        ack(&mut client, &message, Command::Nack, &[]).await;
    }
    client.expect_no_frame(Duration::from_millis(200)).await;
    client.subscribe("dlq", "/queue/poison.dead", &[]).await;
    let dead = client.expect(Command::Message).await;
    assert_eq!(dead.get("x-dead-letter-reason"), Some("delivery-limit"));
    assert_eq!(dead.get("x-delivery-count"), Some("3"));
}

#[tokio::test]
async fn a_full_queue_rejects_with_the_reject_policy() {
    let broker = common::start(&["--queue-max-length", "2", "--queue-overflow", "reject"]);
    let mut producer = Client::connect(broker.addr, &[]).await;
    producer.publish("/queue/small", "1").await;
    producer.publish("/queue/small", "2").await;
    producer
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/queue/small")
                .header("receipt", "third")
                .body("3"),
        )
        .await;
    let error = producer.expect_error().await;
    assert_eq!(error.get("message"), Some("queue '/queue/small' is full"));
    assert_eq!(error.get("receipt-id"), Some("third"));
    let mut consumer = Client::connect(broker.addr, &[]).await;
    consumer.subscribe("0", "/queue/small", &[]).await;
    for body in ["1", "2"] {
        assert_eq!(text(&consumer.expect(Command::Message).await), body);
    }
}

#[tokio::test]
async fn a_full_queue_holds_the_producer_back_until_there_is_room() {
    let broker = common::start(&["--queue-max-length", "2"]);
    let mut producer = Client::connect(broker.addr, &[]).await;
    for body in ["1", "2", "3"] {
        producer.publish("/queue/backpressure", body).await;
    }
    producer
        .send(&Frame::new(Command::Disconnect).header("receipt", "flushed"))
        .await;
    // The third SEND waits for room, so the DISCONNECT behind it is not processed yet.
    producer.expect_no_frame(Duration::from_millis(300)).await;
    let mut consumer = Client::connect(broker.addr, &[]).await;
    consumer.subscribe("0", "/queue/backpressure", &[]).await;
    producer.expect_receipt("flushed").await;
    for body in ["1", "2", "3"] {
        assert_eq!(text(&consumer.expect(Command::Message).await), body);
    }
}

#[tokio::test]
async fn drop_head_keeps_the_newest_messages() {
    let broker = common::start(&["--queue-max-length", "2", "--queue-overflow", "drop-head"]);
    let mut producer = Client::connect(broker.addr, &[]).await;
    for body in ["1", "2", "3", "4"] {
        producer.publish("/queue/latest", body).await;
    }
    producer.disconnect().await;
    let mut consumer = Client::connect(broker.addr, &[]).await;
    consumer.subscribe("0", "/queue/latest", &[]).await;
    for body in ["3", "4"] {
        assert_eq!(text(&consumer.expect(Command::Message).await), body);
    }
    consumer.expect_no_frame(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn queue_ttl_from_config_and_from_the_subscribe_that_creates_the_queue() {
    let broker = common::start(&["--queue-ttl-ms", "100"]);
    let mut producer = Client::connect(broker.addr, &[]).await;
    producer.publish("/queue/short-lived", "old").await;
    // This queue is created by a SUBSCRIBE asking for a longer TTL.
    let mut holder = Client::connect(broker.addr, &[]).await;
    holder
        .subscribe(
            "0",
            "/queue/long-lived",
            &[
                ("x-message-ttl", "60000"),
                ("ack", "client"),
                ("prefetch-count", "1"),
            ],
        )
        .await;
    producer.publish("/queue/long-lived", "first").await;
    producer.publish("/queue/long-lived", "kept").await;
    producer.disconnect().await;
    assert_eq!(text(&holder.expect(Command::Message).await), "first");
    // Time passing is what is tested: wait well past the 100 ms TTL (and far short of
    // the 60 s one) before anyone looks at the queues.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut consumer = Client::connect(broker.addr, &[]).await;
    consumer.subscribe("0", "/queue/short-lived", &[]).await;
    consumer.expect_no_frame(Duration::from_millis(200)).await;
    consumer.subscribe("1", "/queue/long-lived", &[]).await;
    assert_eq!(text(&consumer.expect(Command::Message).await), "kept");
}

async fn connect_version(addr: std::net::SocketAddr, version: &str) -> Client {
    let mut client = Client::open(addr).await;
    let mut frame = Frame::new(Command::Connect);
    if version != "1.0" {
        frame = frame.header("accept-version", version);
    }
    client.send(&frame).await;
    client.expect(Command::Connected).await;
    client.set_version(Version::parse(version).unwrap());
    client
}

#[tokio::test]
async fn stomp_1_1_acknowledges_by_message_id_and_subscription() {
    let broker = common::start(&[]);
    let mut client = connect_version(broker.addr, "1.1").await;
    client
        .subscribe("s", "/queue/v11", &[("ack", "client-individual")])
        .await;
    client.publish("/queue/v11", "one").await;
    let message = client.expect(Command::Message).await;
    let id = message.get("message-id").unwrap();
    client
        .send(&Frame::new(Command::Ack).header("message-id", id))
        .await;
    let error = client.expect_error().await;
    assert_eq!(
        error.get("message"),
        Some("ACK frame is missing the required 'subscription' header")
    );

    let mut client = connect_version(broker.addr, "1.1").await;
    client
        .subscribe("s", "/queue/v11", &[("ack", "client-individual")])
        .await;
    let message = client.expect(Command::Message).await;
    client
        .send(
            &Frame::new(Command::Ack)
                .header("message-id", message.get("message-id").unwrap())
                .header("subscription", "s")
                .header("receipt", "r"),
        )
        .await;
    client.expect_receipt("r").await;
    client.disconnect().await;
    let mut check = Client::connect(broker.addr, &[]).await;
    check.subscribe("0", "/queue/v11", &[]).await;
    check.expect_no_frame(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn stomp_1_0_acknowledges_by_message_id() {
    let broker = common::start(&[]);
    let mut client = connect_version(broker.addr, "1.0").await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/v10")
                .header("ack", "client")
                .header("receipt", "s"),
        )
        .await;
    client.expect_receipt("s").await;
    client.publish("/queue/v10", "one").await;
    let message = client.expect(Command::Message).await;
    assert!(message.get("ack").is_some());
    client
        .send(
            &Frame::new(Command::Ack)
                .header("message-id", message.get("message-id").unwrap())
                .header("receipt", "r"),
        )
        .await;
    client.expect_receipt("r").await;
    client
        .send(&Frame::new(Command::Ack).header("message-id", "nope"))
        .await;
    let error = client.expect_error().await;
    assert_eq!(
        error.get("message"),
        Some("no message awaiting acknowledgement with message-id 'nope'")
    );
}

#[tokio::test]
async fn a_transaction_mixes_sends_and_acks_atomically() {
    let broker = common::start(&[]);
    let mut worker = Client::connect(broker.addr, &[]).await;
    worker
        .subscribe("in", "/queue/tx-in", &[("ack", "client-individual")])
        .await;
    let mut producer = Client::connect(broker.addr, &[]).await;
    producer.publish("/queue/tx-in", "job").await;
    let job = worker.expect(Command::Message).await;
    worker
        .send(&Frame::new(Command::Begin).header("transaction", "t"))
        .await;
    worker
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/queue/tx-out")
                .header("transaction", "t")
                .body("result"),
        )
        .await;
    worker
        .send(
            &Frame::new(Command::Ack)
                .header("id", job.get("ack").unwrap())
                .header("transaction", "t"),
        )
        .await;
    let mut observer = Client::connect(broker.addr, &[]).await;
    observer.subscribe("out", "/queue/tx-out", &[]).await;
    observer.expect_no_frame(Duration::from_millis(200)).await;
    worker
        .send(
            &Frame::new(Command::Commit)
                .header("transaction", "t")
                .header("receipt", "c"),
        )
        .await;
    worker.expect_receipt("c").await;
    assert_eq!(text(&observer.expect(Command::Message).await), "result");
    worker.disconnect().await;
    let mut check = Client::connect(broker.addr, &[]).await;
    check.subscribe("0", "/queue/tx-in", &[]).await;
    check.expect_no_frame(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn temporary_queues_are_private_to_their_connection() {
    let broker = common::start(&[]);
    let mut owner = Client::connect(broker.addr, &[]).await;
    owner.subscribe("mine", "/temp-queue/inbox", &[]).await;
    owner
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/queue/echo")
                .header("reply-to", "/temp-queue/inbox")
                .body("hi"),
        )
        .await;
    let mut other = Client::connect(broker.addr, &[]).await;
    other.subscribe("0", "/queue/echo", &[]).await;
    let request = other.expect(Command::Message).await;
    let reply_to = request.get("reply-to").unwrap().to_owned();
    assert!(reply_to.starts_with("/reply-queue/"), "{reply_to}");
    // Another connection cannot subscribe to it.
    other
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "steal")
                .header("destination", reply_to.as_str()),
        )
        .await;
    let error = other.expect_error().await;
    assert!(
        error.get("message").unwrap().contains("temporary queue"),
        "{error:?}"
    );
    // Replies reach the owner's own subscription.
    let mut replier = Client::connect(broker.addr, &[]).await;
    replier.publish(&reply_to, "hello back").await;
    let reply = owner.expect(Command::Message).await;
    assert_eq!(reply.get("subscription"), Some("mine"));
    assert_eq!(text(&reply), "hello back");
}

#[tokio::test]
async fn a_producer_keeps_reaching_a_queue_that_was_forgotten_and_created_again() {
    let broker = common::start(&[]);
    let mut producer = Client::connect(broker.addr, &[]).await;
    for round in 0..3 {
        // A consumer comes, takes one message and leaves: the queue is then idle and
        // forgotten, and the producer's next SEND must create it again.
        let mut consumer = Client::connect(broker.addr, &[]).await;
        consumer.subscribe("0", "/queue/comes-and-goes", &[]).await;
        producer
            .send(
                &Frame::new(Command::Send)
                    .header("destination", "/queue/comes-and-goes")
                    .header("receipt", "sent")
                    .body(format!("round {round}")),
            )
            .await;
        producer.expect_receipt("sent").await;
        let message = consumer.expect(Command::Message).await;
        assert_eq!(text(&message), format!("round {round}"));
        consumer.disconnect().await;
    }
    // Sent while nobody listens: kept for the next consumer.
    producer.publish("/queue/comes-and-goes", "kept").await;
    let mut late = Client::connect(broker.addr, &[]).await;
    late.subscribe("0", "/queue/comes-and-goes", &[]).await;
    assert_eq!(text(&late.expect(Command::Message).await), "kept");
}

/// A queue nobody consumes from frees its expired messages on its own, so a producer
/// blocked on it goes on once they have expired.
#[tokio::test]
async fn expired_messages_make_room_in_a_queue_without_consumers() {
    let broker = common::start(&[
        "--queue-max-length",
        "2",
        "--queue-overflow",
        "block",
        "--queue-ttl-ms",
        "300",
    ]);
    let mut producer = Client::connect(broker.addr, &[]).await;
    producer.publish("/queue/stale", "1").await;
    producer.publish("/queue/stale", "2").await;
    producer
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/queue/stale")
                .header("receipt", "third")
                .body("3"),
        )
        .await;
    producer.expect_receipt("third").await;
    // The third message's time counts from its arrival, so it may have expired too.
    producer.publish("/queue/stale", "4").await;
    let mut consumer = Client::connect(broker.addr, &[]).await;
    consumer.subscribe("0", "/queue/stale", &[]).await;
    let mut message = consumer.expect(Command::Message).await;
    if &message.body[..] == b"3" {
        message = consumer.expect(Command::Message).await;
    }
    assert_eq!(&message.body[..], b"4");
}
