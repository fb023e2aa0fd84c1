//! Topic fan-out with RabbitMQ-style wildcard subscriptions.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use postbox_testkit::{Client, Command};

/// Publishes to each topic in `topics` and returns which subscription ids received
/// which topic names.
async fn deliveries(patterns: &[&str], topics: &[&str]) -> HashMap<String, Vec<String>> {
    let broker = common::start(&[]);
    let mut subscriber = Client::connect(broker.addr, &[]).await;
    for (i, pattern) in patterns.iter().enumerate() {
        subscriber
            .subscribe(&i.to_string(), &format!("/topic/{pattern}"), &[])
            .await;
    }
    let mut publisher = Client::connect(broker.addr, &[]).await;
    for topic in topics {
        publisher.publish(&format!("/topic/{topic}"), topic).await;
    }
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    while let Some(frame) = subscriber.next_frame(Duration::from_millis(300)).await {
        assert_eq!(frame.command, Command::Message);
        let pattern = patterns[frame.get("subscription").unwrap().parse::<usize>().unwrap()];
        let topic = String::from_utf8(frame.body.to_vec()).unwrap();
        assert_eq!(
            frame.get("destination"),
            Some(format!("/topic/{topic}").as_str())
        );
        seen.entry(pattern.to_owned()).or_default().push(topic);
    }
    seen
}

#[tokio::test]
async fn star_matches_one_word_and_hash_any_number() {
    let seen = deliveries(
        &["stock.*", "stock.#", "#", "*.nyse.*", "stock.nyse.ibm"],
        &[
            "stock",
            "stock.ibm",
            "stock.nyse.ibm",
            "bond.nyse.x",
            "stocks.ibm",
        ],
    )
    .await;
    assert_eq!(seen["stock.*"], ["stock.ibm"]);
    assert_eq!(seen["stock.#"], ["stock", "stock.ibm", "stock.nyse.ibm"]);
    assert_eq!(
        seen["#"],
        [
            "stock",
            "stock.ibm",
            "stock.nyse.ibm",
            "bond.nyse.x",
            "stocks.ibm"
        ]
    );
    assert_eq!(seen["*.nyse.*"], ["stock.nyse.ibm", "bond.nyse.x"]);
    assert_eq!(seen["stock.nyse.ibm"], ["stock.nyse.ibm"]);
}

#[tokio::test]
async fn wildcards_follow_unsubscribe() {
    let broker = common::start(&[]);
    let mut client = Client::connect(broker.addr, &[]).await;
    client.subscribe("w", "/topic/chat.#", &[]).await;
    client.publish("/topic/chat.room1", "first").await;
    client.expect(Command::Message).await;
    client
        .send(
            &postbox_testkit::Frame::new(Command::Unsubscribe)
                .header("id", "w")
                .header("receipt", "u"),
        )
        .await;
    client.expect_receipt("u").await;
    client.publish("/topic/chat.room1", "second").await;
    client.expect_no_frame(Duration::from_millis(300)).await;
}
