//! STOMP 1.2 "Header receipt", "RECEIPT" and "DISCONNECT".

use postbox_spec_tests::*;

#[tokio::test]
async fn every_client_frame_may_ask_for_a_receipt() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "receipts");
    let frames = [
        Frame::new(Command::Subscribe)
            .header("id", "0")
            .header("destination", topic.as_str()),
        Frame::new(Command::Begin).header("transaction", "t1"),
        Frame::new(Command::Send)
            .header("destination", topic.as_str())
            .header("transaction", "t1")
            .body("staged"),
        Frame::new(Command::Commit).header("transaction", "t1"),
        Frame::new(Command::Begin).header("transaction", "t2"),
        Frame::new(Command::Abort).header("transaction", "t2"),
        Frame::new(Command::Unsubscribe).header("id", "0"),
    ];
    for (i, frame) in frames.into_iter().enumerate() {
        let receipt = format!("r-{i}");
        let command = frame.command;
        client
            .send(&frame.header("receipt", receipt.as_str()))
            .await;
        // The committed SEND reaches our own subscription before the COMMIT's receipt.
        let mut next = next_reply(&mut client, command).await;
        if next.command == Command::Message {
            next = next_reply(&mut client, command).await;
        }
        assert_eq!(next.command, Command::Receipt, "after {command}: {next:?}");
        assert_eq!(next.get("receipt-id"), Some(receipt.as_str()));
    }
}

#[tokio::test]
async fn a_receipt_confirms_every_earlier_frame() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "ordering");
    client.subscribe("0", &topic, &[]).await;
    for i in 0..200 {
        client.publish(&topic, &i.to_string()).await;
    }
    client
        .send(
            &Frame::new(Command::Send)
                .header("destination", topic.as_str())
                .header("receipt", "last")
                .body("200"),
        )
        .await;
    for i in 0..=200 {
        let message = client.expect(Command::Message).await;
        assert_eq!(std::str::from_utf8(&message.body).unwrap(), i.to_string());
    }
    client.expect_receipt("last").await;
}

#[tokio::test]
async fn disconnect_with_receipt_gets_receipt_then_close() {
    let target = Target::new();
    let client = target.connect().await;
    client.disconnect().await;
}

#[tokio::test]
async fn frames_before_disconnect_are_processed_first() {
    let target = Target::new();
    let mut subscriber = target.connect().await;
    let topic = unique("/topic/", "before-disconnect");
    subscriber.subscribe("0", &topic, &[]).await;
    let mut publisher = target.connect().await;
    for i in 0..20 {
        publisher.publish(&topic, &i.to_string()).await;
    }
    publisher.disconnect().await;
    for i in 0..20 {
        let message = subscriber.expect(Command::Message).await;
        assert_eq!(std::str::from_utf8(&message.body).unwrap(), i.to_string());
    }
}

async fn next_reply(client: &mut Client, command: Command) -> Frame {
    client
        .next_frame(DEFAULT_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("no reply to {command} with a receipt header"))
}
