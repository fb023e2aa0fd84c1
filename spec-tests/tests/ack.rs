//! STOMP 1.2 "SUBSCRIBE ack Header", "ACK", "NACK" and acknowledgements in transactions.

use std::time::Duration;

use postbox_spec_tests::*;

/// Publishes `bodies` to `destination` and waits for a receipt after the last one.
async fn fill(target: &Target, destination: &str, bodies: &[&str]) {
    let mut producer = target.connect().await;
    for body in bodies {
        producer.publish(destination, body).await;
    }
    producer.disconnect().await;
}

#[tokio::test]
async fn messages_of_acknowledging_subscriptions_carry_an_ack_header() {
    let target = Target::new();
    let queue = unique("/queue/", "ack-header");
    let mut client = target.connect().await;
    client.subscribe("0", &queue, &[("ack", "client")]).await;
    client.publish(&queue, "x").await;
    let message = client.expect(Command::Message).await;
    assert!(
        message.get("ack").is_some_and(|a| !a.is_empty()),
        "{message:?}"
    );
}

#[tokio::test]
async fn client_ack_is_cumulative() {
    let target = Target::new();
    let queue = unique("/queue/", "client-ack");
    fill(&target, &queue, &["1", "2", "3"]).await;
    let mut first = target.connect().await;
    first.subscribe("0", &queue, &[("ack", "client")]).await;
    let messages: Vec<Frame> = vec![
        first.expect(Command::Message).await,
        first.expect(Command::Message).await,
        first.expect(Command::Message).await,
    ];
    // Acknowledging the second acknowledges the first too.
    first.ack(&messages[1], false).await;
    first.disconnect().await;
    let mut second = target.connect().await;
    second.subscribe("0", &queue, &[("ack", "client")]).await;
    assert_eq!(second.bodies(1).await, ["3"]);
    second.expect_no_frame(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn client_individual_ack_acknowledges_only_that_message() {
    let target = Target::new();
    let queue = unique("/queue/", "individual-ack");
    fill(&target, &queue, &["1", "2", "3"]).await;
    let mut first = target.connect().await;
    first
        .subscribe("0", &queue, &[("ack", "client-individual")])
        .await;
    let _one = first.expect(Command::Message).await;
    let two = first.expect(Command::Message).await;
    let _three = first.expect(Command::Message).await;
    first.ack(&two, false).await;
    first.disconnect().await;
    let mut second = target.connect().await;
    second
        .subscribe("0", &queue, &[("ack", "client-individual")])
        .await;
    assert_eq!(second.bodies(2).await, ["1", "3"]);
}

#[tokio::test]
async fn unacknowledged_messages_are_redelivered_marked_redelivered() {
    let target = Target::new();
    let queue = unique("/queue/", "redeliver");
    fill(&target, &queue, &["only"]).await;
    let mut first = target.connect().await;
    first.subscribe("0", &queue, &[("ack", "client")]).await;
    let message = first.expect(Command::Message).await;
    assert_ne!(message.get("redelivered"), Some("true"));
    first.disconnect().await;
    let mut second = target.connect().await;
    second.subscribe("0", &queue, &[("ack", "client")]).await;
    let again = second.expect(Command::Message).await;
    assert_eq!(text(&again), "only");
    assert_eq!(again.get("redelivered"), Some("true"));
    assert_eq!(again.get("message-id"), message.get("message-id"));
}

#[tokio::test]
async fn nack_hands_the_message_back_for_redelivery() {
    let target = Target::new();
    let queue = unique("/queue/", "nack");
    fill(&target, &queue, &["retry me"]).await;
    let mut client = target.connect().await;
    client
        .subscribe("0", &queue, &[("ack", "client-individual")])
        .await;
    let message = client.expect(Command::Message).await;
    client.ack(&message, true).await;
    let again = client.expect(Command::Message).await;
    assert_eq!(text(&again), "retry me");
    assert_eq!(again.get("redelivered"), Some("true"));
    client.ack(&again, false).await;
    client.expect_no_frame(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn client_nack_is_cumulative_too() {
    let target = Target::new();
    let queue = unique("/queue/", "client-nack");
    fill(&target, &queue, &["1", "2"]).await;
    let mut client = target.connect().await;
    client.subscribe("0", &queue, &[("ack", "client")]).await;
    let _one = client.expect(Command::Message).await;
    let two = client.expect(Command::Message).await;
    client.ack(&two, true).await;
    let again = client.bodies(2).await;
    assert_eq!(again, ["1", "2"]);
}

#[tokio::test]
async fn ack_of_an_unknown_id_gets_error() {
    let target = Target::new();
    let mut client = target.connect().await;
    client
        .send(&Frame::new(Command::Ack).header("id", "no-such-ack"))
        .await;
    client.expect_error().await;
    client.expect_closed().await;
}

#[tokio::test]
async fn acking_twice_gets_error() {
    let target = Target::new();
    let queue = unique("/queue/", "ack-twice");
    fill(&target, &queue, &["x"]).await;
    let mut client = target.connect().await;
    client
        .subscribe("0", &queue, &[("ack", "client-individual")])
        .await;
    let message = client.expect(Command::Message).await;
    client.ack(&message, false).await;
    client
        .send(&Frame::new(Command::Ack).header("id", message.get("ack").unwrap()))
        .await;
    client.expect_error().await;
    client.expect_closed().await;
}

#[tokio::test]
async fn ack_and_nack_need_an_id() {
    let target = Target::new();
    for command in [Command::Ack, Command::Nack] {
        let mut client = target.connect().await;
        client.send(&Frame::new(command)).await;
        client.expect_error().await;
        client.expect_closed().await;
    }
}

#[tokio::test]
async fn an_ack_in_a_transaction_applies_on_commit() {
    let target = Target::new();
    let queue = unique("/queue/", "tx-ack");
    fill(&target, &queue, &["1"]).await;
    let mut client = target.connect().await;
    client
        .subscribe("0", &queue, &[("ack", "client-individual")])
        .await;
    let message = client.expect(Command::Message).await;
    client
        .send(&Frame::new(Command::Begin).header("transaction", "t"))
        .await;
    client
        .send(
            &Frame::new(Command::Ack)
                .header("id", message.get("ack").unwrap())
                .header("transaction", "t"),
        )
        .await;
    client
        .send(
            &Frame::new(Command::Commit)
                .header("transaction", "t")
                .header("receipt", "c"),
        )
        .await;
    client.expect_receipt("c").await;
    client.disconnect().await;
    let mut second = target.connect().await;
    second
        .subscribe("0", &queue, &[("ack", "client-individual")])
        .await;
    second.expect_no_frame(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn an_ack_in_an_aborted_transaction_is_discarded() {
    let target = Target::new();
    let queue = unique("/queue/", "tx-abort-ack");
    fill(&target, &queue, &["1"]).await;
    let mut client = target.connect().await;
    client
        .subscribe("0", &queue, &[("ack", "client-individual")])
        .await;
    let message = client.expect(Command::Message).await;
    client
        .send(&Frame::new(Command::Begin).header("transaction", "t"))
        .await;
    client
        .send(
            &Frame::new(Command::Ack)
                .header("id", message.get("ack").unwrap())
                .header("transaction", "t"),
        )
        .await;
    client
        .send(
            &Frame::new(Command::Abort)
                .header("transaction", "t")
                .header("receipt", "a"),
        )
        .await;
    client.expect_receipt("a").await;
    client.disconnect().await;
    let mut second = target.connect().await;
    second
        .subscribe("0", &queue, &[("ack", "client-individual")])
        .await;
    assert_eq!(second.bodies(1).await, ["1"]);
}

#[tokio::test]
async fn topic_subscriptions_acknowledge_too() {
    let target = Target::new();
    let topic = unique("/topic/", "acked-topic");
    let mut client = target.connect().await;
    client
        .subscribe(
            "0",
            &topic,
            &[("ack", "client-individual"), ("prefetch-count", "1")],
        )
        .await;
    client.publish(&topic, "1").await;
    client.publish(&topic, "2").await;
    let first = client.expect(Command::Message).await;
    assert_eq!(text(&first), "1");
    // prefetch-count 1: the second waits for the first's ACK.
    client.expect_no_frame(Duration::from_millis(300)).await;
    client.ack(&first, true).await;
    let again = client.expect(Command::Message).await;
    assert_eq!(
        (text(&again).as_str(), again.get("redelivered")),
        ("1", Some("true"))
    );
    client.ack(&again, false).await;
    assert_eq!(client.bodies(1).await, ["2"]);
}
