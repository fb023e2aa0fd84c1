//! STOMP 1.2 "SEND".

use postbox_spec_tests::*;

#[tokio::test]
async fn send_without_destination_gets_error_and_close() {
    let target = Target::new();
    let mut client = target.connect().await;
    client
        .send(&Frame::new(Command::Send).header("receipt", "r1").body("x"))
        .await;
    let error = client.expect_error().await;
    assert_eq!(error.get("receipt-id"), Some("r1"));
    client.expect_closed().await;
}

#[tokio::test]
async fn user_headers_pass_through_to_message() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "user-headers");
    client.subscribe("0", &topic, &[]).await;
    let frame = Frame::new(Command::Send)
        .header("destination", topic.as_str())
        .header("x-order", "42")
        .header("correlation-id", "abc")
        .header("content-type", "application/json")
        .body("{}");
    client.send(&frame).await;
    let message = client.expect(Command::Message).await;
    assert_eq!(message.get("x-order"), Some("42"));
    assert_eq!(message.get("correlation-id"), Some("abc"));
    assert_eq!(message.get("content-type"), Some("application/json"));
    assert_eq!(&message.body[..], b"{}");
}

#[tokio::test]
async fn send_with_no_subscribers_is_accepted() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "nobody");
    client
        .send(
            &Frame::new(Command::Send)
                .header("destination", topic.as_str())
                .header("receipt", "sent")
                .body("into the void"),
        )
        .await;
    client.expect_receipt("sent").await;
}

#[tokio::test]
async fn an_empty_body_is_delivered_empty() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "empty");
    client.subscribe("0", &topic, &[]).await;
    client
        .send(&Frame::new(Command::Send).header("destination", topic.as_str()))
        .await;
    let message = client.expect(Command::Message).await;
    assert!(message.body.is_empty());
}
