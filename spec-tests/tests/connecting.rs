//! STOMP 1.2 "Connecting", "Protocol Negotiation" and the CONNECT/STOMP/CONNECTED frames.

use postbox_spec_tests::*;

#[tokio::test]
async fn connect_gets_connected_with_version() {
    let target = Target::new();
    let mut client = Client::open(target.addr).await;
    client.send(&target.connect_frame()).await;
    let connected = client.expect(Command::Connected).await;
    assert_eq!(connected.get("version"), Some("1.2"));
}

#[tokio::test]
async fn stomp_frame_is_handled_like_connect() {
    let target = Target::new();
    let mut client = Client::open(target.addr).await;
    let mut frame = target.connect_frame();
    frame.command = Command::Stomp;
    client.send(&frame).await;
    let connected = client.expect(Command::Connected).await;
    assert_eq!(connected.get("version"), Some("1.2"));
    let topic = unique("/topic/", "stomp-frame");
    client.subscribe("0", &topic, &[]).await;
}

#[tokio::test]
async fn highest_common_version_is_chosen() {
    let target = Target::new();
    for (offered, expected) in [
        ("1.0,1.1,1.2", "1.2"),
        ("1.1,1.0", "1.1"),
        ("1.2,1.1", "1.2"),
    ] {
        let mut client = Client::open(target.addr).await;
        let mut frame = Frame::new(Command::Connect).header("accept-version", offered);
        for (name, value) in target.connect_frame().headers.iter().skip(1) {
            frame = frame.header(name.to_owned(), value.to_owned());
        }
        client.send(&frame).await;
        let connected = client.expect(Command::Connected).await;
        assert_eq!(
            connected.get("version"),
            Some(expected),
            "offered {offered}"
        );
    }
}

#[tokio::test]
async fn no_accept_version_means_1_0() {
    let target = Target::new();
    let mut client = Client::open(target.addr).await;
    let mut frame = Frame::new(Command::Connect);
    for (name, value) in target.connect_frame().headers.iter().skip(1) {
        frame = frame.header(name.to_owned(), value.to_owned());
    }
    client.send(&frame).await;
    let connected = client.expect(Command::Connected).await;
    assert!(
        matches!(connected.get("version"), None | Some("1.0")),
        "{connected:?}"
    );
}

#[tokio::test]
async fn no_common_version_gets_error_with_version_header_then_close() {
    let target = Target::new();
    let mut client = Client::open(target.addr).await;
    let mut frame = Frame::new(Command::Connect).header("accept-version", "2.1,3.0");
    for (name, value) in target.connect_frame().headers.iter().skip(1) {
        frame = frame.header(name.to_owned(), value.to_owned());
    }
    client.send(&frame).await;
    let error = client.expect_error().await;
    let versions = error
        .get("version")
        .expect("ERROR names the supported versions");
    assert!(versions.split(',').any(|v| v.trim() == "1.2"), "{versions}");
    client.expect_closed().await;
}

#[tokio::test]
async fn connected_answers_heart_beat() {
    let target = Target::new();
    let mut client = Client::open(target.addr).await;
    let mut frame = target.connect_frame();
    frame.headers.push("heart-beat", "1000,1000");
    client.send(&frame).await;
    let connected = client.expect(Command::Connected).await;
    let value = connected
        .get("heart-beat")
        .expect("CONNECTED has heart-beat");
    let parts: Vec<&str> = value.split(',').collect();
    assert_eq!(parts.len(), 2, "{value}");
    assert!(parts.iter().all(|p| p.parse::<u64>().is_ok()), "{value}");
}

#[tokio::test]
async fn a_frame_before_connect_gets_error_and_close() {
    let target = Target::new();
    let mut client = Client::open(target.addr).await;
    client
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/topic/early")
                .body("x"),
        )
        .await;
    client.expect_error().await;
    client.expect_closed().await;
}

#[tokio::test]
async fn a_second_connect_is_an_error() {
    let target = Target::new();
    let mut client = target.connect().await;
    client.send(&target.connect_frame()).await;
    client.expect_error().await;
    client.expect_closed().await;
}
