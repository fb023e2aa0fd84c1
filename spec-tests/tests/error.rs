//! STOMP 1.2 "ERROR" and the server's duty to close after it.

use postbox_spec_tests::*;

#[tokio::test]
async fn error_has_a_message_header_and_the_server_closes() {
    let target = Target::new();
    let mut client = target.connect().await;
    client
        .send(&Frame::new(Command::Send).body("no destination"))
        .await;
    let error = client.expect_error().await;
    assert!(
        error.get("message").is_some_and(|m| !m.is_empty()),
        "{error:?}"
    );
    client.expect_closed().await;
}

#[tokio::test]
async fn error_names_the_receipt_of_the_failed_frame() {
    let target = Target::new();
    let mut client = target.connect().await;
    client
        .send(&Frame::new(Command::Subscribe).header("receipt", "sub-1"))
        .await;
    let error = client.expect_error().await;
    assert_eq!(error.get("receipt-id"), Some("sub-1"));
    client.expect_closed().await;
}

#[tokio::test]
async fn an_unknown_command_gets_error_and_close() {
    let target = Target::new();
    let mut client = target.connect().await;
    client
        .send_raw(b"PUBLISH\ndestination:/topic/x\n\n\0")
        .await;
    client.expect_error().await;
    client.expect_closed().await;
}

#[tokio::test]
async fn an_error_body_describes_the_problem() {
    let target = Target::new();
    let mut client = target.connect().await;
    client.send_raw(b"SEND\nno-colon-here\n\n\0").await;
    let error = client.expect_error().await;
    if let Some(length) = error.get("content-length") {
        assert_eq!(length.parse::<usize>().unwrap(), error.body.len());
    }
    client.expect_closed().await;
}
