//! STOMP 1.2 "BEGIN", "COMMIT", "ABORT" and transactional SEND.

use std::time::Duration;

use postbox_spec_tests::*;

fn send_in(topic: &str, transaction: &str, body: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", topic)
        .header("transaction", transaction)
        .body(body.to_owned())
}

#[tokio::test]
async fn sends_in_a_transaction_are_delivered_on_commit() {
    let target = Target::new();
    let mut subscriber = target.connect().await;
    let topic = unique("/topic/", "tx-commit");
    subscriber.subscribe("0", &topic, &[]).await;
    let mut client = target.connect().await;
    client
        .send(&Frame::new(Command::Begin).header("transaction", "tx"))
        .await;
    client.send(&send_in(&topic, "tx", "a")).await;
    client.send(&send_in(&topic, "tx", "b")).await;
    subscriber.expect_no_frame(Duration::from_millis(300)).await;
    client
        .send(
            &Frame::new(Command::Commit)
                .header("transaction", "tx")
                .header("receipt", "c"),
        )
        .await;
    client.expect_receipt("c").await;
    for body in ["a", "b"] {
        let message = subscriber.expect(Command::Message).await;
        assert_eq!(&message.body[..], body.as_bytes());
    }
}

#[tokio::test]
async fn abort_discards_the_transaction() {
    let target = Target::new();
    let mut subscriber = target.connect().await;
    let topic = unique("/topic/", "tx-abort");
    subscriber.subscribe("0", &topic, &[]).await;
    let mut client = target.connect().await;
    client
        .send(&Frame::new(Command::Begin).header("transaction", "tx"))
        .await;
    client.send(&send_in(&topic, "tx", "never")).await;
    client
        .send(
            &Frame::new(Command::Abort)
                .header("transaction", "tx")
                .header("receipt", "a"),
        )
        .await;
    client.expect_receipt("a").await;
    client.publish(&topic, "outside").await;
    let message = subscriber.expect(Command::Message).await;
    assert_eq!(&message.body[..], b"outside");
}

#[tokio::test]
async fn disconnect_aborts_open_transactions() {
    let target = Target::new();
    let mut subscriber = target.connect().await;
    let topic = unique("/topic/", "tx-disconnect");
    subscriber.subscribe("0", &topic, &[]).await;
    let mut client = target.connect().await;
    client
        .send(&Frame::new(Command::Begin).header("transaction", "tx"))
        .await;
    client.send(&send_in(&topic, "tx", "never")).await;
    client.disconnect().await;
    subscriber.expect_no_frame(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_lost_connection_aborts_open_transactions() {
    let target = Target::new();
    let mut subscriber = target.connect().await;
    let topic = unique("/topic/", "tx-lost");
    subscriber.subscribe("0", &topic, &[]).await;
    let mut client = target.connect().await;
    client
        .send(&Frame::new(Command::Begin).header("transaction", "tx"))
        .await;
    client.send(&send_in(&topic, "tx", "never")).await;
    drop(client);
    subscriber.expect_no_frame(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn an_unknown_transaction_gets_error() {
    let target = Target::new();
    let mut client = target.connect().await;
    client
        .send(&Frame::new(Command::Commit).header("transaction", "nope"))
        .await;
    client.expect_error().await;
    client.expect_closed().await;
}

#[tokio::test]
async fn send_in_an_unknown_transaction_gets_error() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "tx-unknown");
    client.send(&send_in(&topic, "nope", "x")).await;
    client.expect_error().await;
    client.expect_closed().await;
}

#[tokio::test]
async fn begin_needs_a_transaction_header() {
    let target = Target::new();
    let mut client = target.connect().await;
    client.send(&Frame::new(Command::Begin)).await;
    client.expect_error().await;
    client.expect_closed().await;
}

#[tokio::test]
async fn a_transaction_id_cannot_be_begun_twice() {
    let target = Target::new();
    let mut client = target.connect().await;
    client
        .send(&Frame::new(Command::Begin).header("transaction", "tx"))
        .await;
    client
        .send(&Frame::new(Command::Begin).header("transaction", "tx"))
        .await;
    client.expect_error().await;
    client.expect_closed().await;
}
