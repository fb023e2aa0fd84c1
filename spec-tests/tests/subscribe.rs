//! STOMP 1.2 "SUBSCRIBE", "UNSUBSCRIBE" and "MESSAGE".

use std::collections::HashSet;
use std::time::Duration;

use postbox_spec_tests::*;

#[tokio::test]
async fn subscribe_without_destination_gets_error_and_close() {
    let target = Target::new();
    let mut client = target.connect().await;
    client
        .send(&Frame::new(Command::Subscribe).header("id", "0"))
        .await;
    client.expect_error().await;
    client.expect_closed().await;
}

#[tokio::test]
async fn subscribe_without_id_gets_error_and_close() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "no-id");
    client
        .send(&Frame::new(Command::Subscribe).header("destination", topic.as_str()))
        .await;
    client.expect_error().await;
    client.expect_closed().await;
}

#[tokio::test]
async fn message_has_destination_message_id_and_subscription() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "message-headers");
    client.subscribe("sub-7", &topic, &[]).await;
    client.publish(&topic, "hello").await;
    let message = client.expect(Command::Message).await;
    assert_eq!(message.get("destination"), Some(topic.as_str()));
    assert_eq!(message.get("subscription"), Some("sub-7"));
    assert!(message.get("message-id").is_some_and(|id| !id.is_empty()));
    assert_eq!(&message.body[..], b"hello");
}

#[tokio::test]
async fn message_ids_are_unique() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "ids");
    client.subscribe("0", &topic, &[]).await;
    for i in 0..50 {
        client.publish(&topic, &i.to_string()).await;
    }
    let mut ids = HashSet::new();
    for _ in 0..50 {
        let message = client.expect(Command::Message).await;
        ids.insert(message.get("message-id").unwrap().to_owned());
    }
    assert_eq!(ids.len(), 50);
}

#[tokio::test]
async fn every_subscriber_of_a_topic_gets_each_message() {
    let target = Target::new();
    let topic = unique("/topic/", "fan-out");
    let mut subscribers = Vec::new();
    for i in 0..3 {
        let mut client = target.connect().await;
        client.subscribe(&format!("s{i}"), &topic, &[]).await;
        subscribers.push(client);
    }
    let mut publisher = target.connect().await;
    publisher.publish(&topic, "one").await;
    publisher.publish(&topic, "two").await;
    for client in &mut subscribers {
        for body in ["one", "two"] {
            let message = client.expect(Command::Message).await;
            assert_eq!(&message.body[..], body.as_bytes());
        }
    }
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "unsubscribe");
    client.subscribe("0", &topic, &[]).await;
    client
        .send(
            &Frame::new(Command::Unsubscribe)
                .header("id", "0")
                .header("receipt", "u"),
        )
        .await;
    client.expect_receipt("u").await;
    client.publish(&topic, "after").await;
    client.expect_no_frame(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn unsubscribe_without_id_gets_error_and_close() {
    let target = Target::new();
    let mut client = target.connect().await;
    client.send(&Frame::new(Command::Unsubscribe)).await;
    client.expect_error().await;
    client.expect_closed().await;
}

#[tokio::test]
async fn a_duplicate_subscription_id_gets_error() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "dup");
    client.subscribe("same", &topic, &[]).await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "same")
                .header("destination", topic.as_str()),
        )
        .await;
    client.expect_error().await;
    client.expect_closed().await;
}

#[tokio::test]
async fn two_subscriptions_on_one_connection_each_get_a_copy() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "two-subs");
    client.subscribe("a", &topic, &[]).await;
    client.subscribe("b", &topic, &[]).await;
    client.publish(&topic, "x").await;
    let mut seen = HashSet::new();
    for _ in 0..2 {
        let message = client.expect(Command::Message).await;
        seen.insert(message.get("subscription").unwrap().to_owned());
    }
    assert_eq!(seen, HashSet::from(["a".to_owned(), "b".to_owned()]));
}
