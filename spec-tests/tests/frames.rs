//! STOMP 1.2 "Frames and Headers", "Value Encoding", "Header Escaping", "Body",
//! "Standard Headers", "Repeated Header Entries" and "Size Limits".

use postbox_spec_tests::*;

#[tokio::test]
async fn crlf_line_endings_are_accepted() {
    let target = Target::new();
    let mut client = Client::open(target.addr).await;
    let mut connect = format!("CONNECT\r\naccept-version:1.2\r\nhost:{}\r\n", target.host);
    for (name, value) in target.connect_frame().headers.iter().skip(2) {
        connect.push_str(&format!("{name}:{value}\r\n"));
    }
    connect.push_str("\r\n\0");
    client.send_raw(connect.as_bytes()).await;
    client.expect(Command::Connected).await;
    let topic = unique("/topic/", "crlf");
    let subscribe = format!("SUBSCRIBE\r\nid:0\r\ndestination:{topic}\r\nreceipt:s\r\n\r\n\0\r\n");
    client.send_raw(subscribe.as_bytes()).await;
    client.expect_receipt("s").await;
    let send = format!("SEND\r\ndestination:{topic}\r\n\r\nhello\0\r\n");
    client.send_raw(send.as_bytes()).await;
    let message = client.expect(Command::Message).await;
    assert_eq!(&message.body[..], b"hello");
}

#[tokio::test]
async fn commands_are_case_sensitive() {
    let target = Target::new();
    let mut client = target.connect().await;
    client.send_raw(b"send\ndestination:/topic/x\n\nhi\0").await;
    client.expect_error().await;
    client.expect_closed().await;
}

#[tokio::test]
async fn escaped_header_values_round_trip() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "escape");
    client.subscribe("0", &topic, &[]).await;
    let send = format!("SEND\ndestination:{topic}\nx-test:a\\cb\\nc\\\\d\\re\n\nbody\0");
    client.send_raw(send.as_bytes()).await;
    let message = client.expect(Command::Message).await;
    assert_eq!(message.get("x-test"), Some("a:b\nc\\d\re"));
}

#[tokio::test]
async fn undefined_escape_is_a_fatal_error() {
    let target = Target::new();
    let mut client = target.connect().await;
    client
        .send_raw(b"SEND\ndestination:/topic/x\nx-bad:tab\\there\n\nhi\0")
        .await;
    client.expect_error().await;
    client.expect_closed().await;
}

#[tokio::test]
async fn header_values_are_not_trimmed() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "trim");
    client.subscribe("0", &topic, &[]).await;
    let send = format!("SEND\ndestination:{topic}\nx-pad:  padded  \n\nbody\0");
    client.send_raw(send.as_bytes()).await;
    let message = client.expect(Command::Message).await;
    assert_eq!(message.get("x-pad"), Some("  padded  "));
}

#[tokio::test]
async fn repeated_header_first_value_wins() {
    let target = Target::new();
    let mut client = target.connect().await;
    let first = unique("/topic/", "first");
    let second = unique("/topic/", "second");
    client.subscribe("a", &first, &[]).await;
    client.subscribe("b", &second, &[]).await;
    let send = format!("SEND\ndestination:{first}\ndestination:{second}\nx-r:1\nx-r:2\n\nbody\0");
    client.send_raw(send.as_bytes()).await;
    let message = client.expect(Command::Message).await;
    assert_eq!(message.get("destination"), Some(first.as_str()));
    assert_eq!(message.get("subscription"), Some("a"));
    assert_eq!(message.get("x-r"), Some("1"));
    client
        .expect_no_frame(std::time::Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn a_body_with_nul_octets_needs_and_gets_content_length() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "nul");
    client.subscribe("0", &topic, &[]).await;
    let body = b"a\0b\0\0c";
    let mut send = format!(
        "SEND\ndestination:{topic}\ncontent-type:application/octet-stream\ncontent-length:{}\n\n",
        body.len()
    )
    .into_bytes();
    send.extend_from_slice(body);
    send.push(0);
    client.send_raw(&send).await;
    let message = client.expect(Command::Message).await;
    assert_eq!(&message.body[..], body);
    assert_eq!(message.get("content-length"), Some("6"));
    assert_eq!(
        message.get("content-type"),
        Some("application/octet-stream")
    );
}

#[tokio::test]
async fn utf8_headers_and_bodies() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "utf8");
    client.subscribe("0", &topic, &[]).await;
    let frame = Frame::new(Command::Send)
        .header("destination", topic.as_str())
        .header("x-name", "Grüße, 世界 😀")
        .header("content-type", "text/plain;charset=utf-8")
        .body("ünïcödé ✓");
    client.send(&frame).await;
    let message = client.expect(Command::Message).await;
    assert_eq!(message.get("x-name"), Some("Grüße, 世界 😀"));
    assert_eq!(std::str::from_utf8(&message.body).unwrap(), "ünïcödé ✓");
}

#[tokio::test]
async fn message_carries_content_length_and_content_type() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "standard");
    client.subscribe("0", &topic, &[]).await;
    client.publish(&topic, "twelve bytes").await;
    let message = client.expect(Command::Message).await;
    assert_eq!(message.get("content-length"), Some("12"));
    assert_eq!(message.get("content-type"), Some("text/plain"));
}

#[tokio::test]
async fn only_send_message_and_error_may_have_a_body() {
    let target = Target::new();
    let mut client = target.connect().await;
    let topic = unique("/topic/", "body");
    let subscribe = format!("SUBSCRIBE\nid:0\ndestination:{topic}\n\nnot allowed\0");
    client.send_raw(subscribe.as_bytes()).await;
    client.expect_error().await;
    client.expect_closed().await;
}

#[tokio::test]
async fn a_frame_past_the_size_limit_gets_error_and_close() {
    let target = Target::with_postbox_args(&["--max-body-size", "1024"]);
    if !target.is_postbox() {
        // Other brokers' limits are not known here; the rule is tested on Postbox.
        return;
    }
    let mut client = target.connect().await;
    let frame = Frame::new(Command::Send)
        .header("destination", "/topic/limits")
        .body(vec![b'x'; 2048]);
    client.send(&frame).await;
    let error = client.expect_error().await;
    assert!(error.get("message").unwrap().contains("1024"), "{error:?}");
    client.expect_closed().await;
}

#[tokio::test]
async fn too_many_headers_gets_error_and_close() {
    let target = Target::with_postbox_args(&["--max-headers", "8"]);
    if !target.is_postbox() {
        return;
    }
    let mut client = target.connect().await;
    let mut frame = Frame::new(Command::Send).header("destination", "/topic/limits");
    for i in 0..9 {
        frame = frame.header(format!("x-{i}"), "v");
    }
    client.send(&frame).await;
    let error = client.expect_error().await;
    assert!(
        error.get("message").unwrap().contains("headers"),
        "{error:?}"
    );
    client.expect_closed().await;
}
