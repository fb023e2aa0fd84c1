//! Queue semantics as RabbitMQ's STOMP plugin gives them: `/queue/` (competing
//! consumers, waiting messages, prefetch, expiry) and `/temp-queue/` request/reply.

use std::collections::HashSet;
use std::time::Duration;

use postbox_spec_tests::*;

#[tokio::test]
async fn each_message_goes_to_exactly_one_consumer() {
    let target = Target::new();
    let queue = unique("/queue/", "competing");
    let mut a = target.connect().await;
    let mut b = target.connect().await;
    a.subscribe("0", &queue, &[]).await;
    b.subscribe("0", &queue, &[]).await;
    let mut producer = target.connect().await;
    for i in 0..40 {
        producer.publish(&queue, &i.to_string()).await;
    }
    let mut seen = HashSet::new();
    let mut counts = [0usize; 2];
    for (index, client) in [&mut a, &mut b].into_iter().enumerate() {
        while let Some(message) = client.next_frame(Duration::from_millis(500)).await {
            assert!(
                seen.insert(text(&message)),
                "delivered twice: {}",
                text(&message)
            );
            counts[index] += 1;
        }
    }
    assert_eq!(seen.len(), 40);
    assert!(counts.iter().all(|&n| n >= 10), "unbalanced: {counts:?}");
}

#[tokio::test]
async fn messages_wait_for_a_consumer() {
    let target = Target::new();
    let queue = unique("/queue/", "waiting");
    let mut producer = target.connect().await;
    for body in ["a", "b", "c"] {
        producer.publish(&queue, body).await;
    }
    producer.disconnect().await;
    let mut consumer = target.connect().await;
    consumer.subscribe("0", &queue, &[]).await;
    assert_eq!(consumer.bodies(3).await, ["a", "b", "c"]);
}

#[tokio::test]
async fn consumers_with_credit_are_served_in_turn() {
    let target = Target::new();
    let queue = unique("/queue/", "round-robin");
    let mut a = target.connect().await;
    let mut b = target.connect().await;
    a.subscribe("0", &queue, &[]).await;
    b.subscribe("0", &queue, &[]).await;
    let mut producer = target.connect().await;
    for i in 0..6 {
        producer.publish(&queue, &i.to_string()).await;
    }
    assert_eq!(a.bodies(3).await, ["0", "2", "4"]);
    assert_eq!(b.bodies(3).await, ["1", "3", "5"]);
}

#[tokio::test]
async fn prefetch_count_bounds_unacknowledged_messages() {
    let target = Target::new();
    let queue = unique("/queue/", "prefetch");
    let mut producer = target.connect().await;
    for i in 0..5 {
        producer.publish(&queue, &i.to_string()).await;
    }
    let mut consumer = target.connect().await;
    consumer
        .subscribe(
            "0",
            &queue,
            &[("ack", "client-individual"), ("prefetch-count", "2")],
        )
        .await;
    let first = consumer.expect(Command::Message).await;
    let _second = consumer.expect(Command::Message).await;
    consumer.expect_no_frame(Duration::from_millis(300)).await;
    consumer.ack(&first, false).await;
    assert_eq!(consumer.bodies(1).await, ["2"]);
    consumer.expect_no_frame(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn expired_messages_are_not_delivered() {
    let target = Target::new();
    let queue = unique("/queue/", "expiry");
    let mut producer = target.connect().await;
    producer
        .send(
            &Frame::new(Command::Send)
                .header("destination", queue.as_str())
                .header("expiration", "100")
                .body("stale"),
        )
        .await;
    producer.publish(&queue, "fresh").await;
    producer.disconnect().await;
    // Time passing is what is tested: wait well past the 100 ms expiration.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut consumer = target.connect().await;
    consumer.subscribe("0", &queue, &[]).await;
    assert_eq!(consumer.bodies(1).await, ["fresh"]);
    consumer.expect_no_frame(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_leaving_consumers_messages_come_back_ahead_of_newer_ones() {
    let target = Target::new();
    let queue = unique("/queue/", "requeue-order");
    let mut producer = target.connect().await;
    for body in ["1", "2", "3"] {
        producer.publish(&queue, body).await;
    }
    let mut first = target.connect().await;
    first
        .subscribe(
            "0",
            &queue,
            &[("ack", "client-individual"), ("prefetch-count", "2")],
        )
        .await;
    assert_eq!(first.bodies(2).await, ["1", "2"]);
    first.disconnect().await;
    producer.publish(&queue, "4").await;
    let mut second = target.connect().await;
    second
        .subscribe("0", &queue, &[("ack", "client-individual")])
        .await;
    assert_eq!(second.bodies(4).await, ["1", "2", "3", "4"]);
}

#[tokio::test]
async fn temporary_queues_carry_replies_across_connections() {
    let target = Target::new();
    let service = unique("/queue/", "service");
    let mut responder = target.connect().await;
    responder.subscribe("0", &service, &[]).await;
    let mut requester = target.connect().await;
    requester
        .send(
            &Frame::new(Command::Send)
                .header("destination", service.as_str())
                .header("reply-to", "/temp-queue/answers")
                .header("receipt", "asked")
                .body("what time is it?"),
        )
        .await;
    requester.expect_receipt("asked").await;
    let request = responder.expect(Command::Message).await;
    let reply_to = request.get("reply-to").expect("reply-to passes through");
    assert!(
        !reply_to.starts_with("/temp-queue/"),
        "not rewritten: {reply_to}"
    );
    responder
        .send(
            &Frame::new(Command::Send)
                .header("destination", reply_to)
                .body("tea time"),
        )
        .await;
    let reply = requester.expect(Command::Message).await;
    assert_eq!(text(&reply), "tea time");
}

#[tokio::test]
async fn a_reply_after_the_requester_left_is_accepted_and_dropped() {
    let target = Target::new();
    let service = unique("/queue/", "late-service");
    let mut responder = target.connect().await;
    responder.subscribe("0", &service, &[]).await;
    let mut requester = target.connect().await;
    requester
        .send(
            &Frame::new(Command::Send)
                .header("destination", service.as_str())
                .header("reply-to", "/temp-queue/gone")
                .body("ping"),
        )
        .await;
    let request = responder.expect(Command::Message).await;
    let reply_to = request.get("reply-to").unwrap().to_owned();
    requester.disconnect().await;
    responder
        .send(
            &Frame::new(Command::Send)
                .header("destination", reply_to.as_str())
                .header("receipt", "late")
                .body("pong"),
        )
        .await;
    responder.expect_receipt("late").await;
}
