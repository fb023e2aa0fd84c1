//! Session rules beyond the conformance suite: versions, vhosts, server frames.

mod common;

use std::time::Duration;

use postbox_testkit::{Client, Command, Frame, Version};

async fn connect_version(addr: std::net::SocketAddr, version: &str) -> Client {
    let mut client = Client::open(addr).await;
    let mut frame = Frame::new(Command::Connect);
    if version != "1.0" {
        frame = frame.header("accept-version", version);
    }
    client.send(&frame).await;
    let connected = client.expect(Command::Connected).await;
    let negotiated = connected.get("version").unwrap_or("1.0");
    assert_eq!(negotiated, version);
    client.set_version(Version::parse(negotiated).unwrap());
    client
}

#[tokio::test]
async fn each_subscriber_gets_headers_escaped_for_its_own_version() {
    let broker = common::start(&[]);
    let topic = "/topic/escaping";
    let mut subscribers = Vec::new();
    for version in ["1.0", "1.1", "1.2"] {
        let mut client = connect_version(broker.addr, version).await;
        client.subscribe(version, topic, &[]).await;
        subscribers.push((version, client));
    }
    let mut publisher = Client::connect(broker.addr, &[]).await;
    let frame = Frame::new(Command::Send)
        .header("destination", topic)
        .header("x-text", "a:b\nc\\d");
    publisher.send(&frame).await;
    for (version, client) in &mut subscribers {
        let message = client.expect(Command::Message).await;
        let expected = match *version {
            // 1.0 cannot carry a line break in a header value.
            "1.0" => "a:b c\\d",
            _ => "a:b\nc\\d",
        };
        assert_eq!(message.get("x-text"), Some(expected), "version {version}");
    }
}

#[tokio::test]
async fn stomp_1_0_subscriptions_may_omit_the_id() {
    let broker = common::start(&[]);
    let mut client = connect_version(broker.addr, "1.0").await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/topic/old")
                .header("receipt", "s"),
        )
        .await;
    client.expect_receipt("s").await;
    client.publish("/topic/old", "hi").await;
    let message = client.expect(Command::Message).await;
    assert_eq!(message.get("destination"), Some("/topic/old"));
    client
        .send(
            &Frame::new(Command::Unsubscribe)
                .header("destination", "/topic/old")
                .header("receipt", "u"),
        )
        .await;
    client.expect_receipt("u").await;
}

#[tokio::test]
async fn nack_is_not_part_of_stomp_1_0() {
    let broker = common::start(&[]);
    let mut client = connect_version(broker.addr, "1.0").await;
    client
        .send(&Frame::new(Command::Nack).header("message-id", "1"))
        .await;
    let error = client.expect_error().await;
    assert_eq!(error.get("message"), Some("NACK is not part of STOMP 1.0"));
}

#[tokio::test]
async fn stomp_1_1_has_no_cr_escape() {
    let broker = common::start(&[]);
    let mut client = connect_version(broker.addr, "1.1").await;
    client
        .send_raw(b"SEND\ndestination:/topic/x\nx-h:a\\rb\n\n\0")
        .await;
    let error = client.expect_error().await;
    assert!(
        error.get("message").unwrap().contains("invalid escape"),
        "{error:?}"
    );
}

#[tokio::test]
async fn clients_may_not_send_server_frames() {
    let broker = common::start(&[]);
    for command in [
        Command::Message,
        Command::Receipt,
        Command::Connected,
        Command::Error,
    ] {
        let mut client = Client::connect(broker.addr, &[]).await;
        client.send(&Frame::new(command)).await;
        let error = client.expect_error().await;
        assert_eq!(
            error.get("message"),
            Some(format!("{command} is a server frame; clients may not send it").as_str())
        );
        client.expect_closed().await;
    }
}

#[tokio::test]
async fn virtual_hosts_are_separate() {
    let broker = common::start(&["--vhosts", "alpha,beta"]);
    let mut unknown = Client::open(broker.addr).await;
    unknown
        .send(
            &Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("host", "gamma"),
        )
        .await;
    let error = unknown.expect_error().await;
    assert_eq!(error.get("message"), Some("unknown virtual host 'gamma'"));
    unknown.expect_closed().await;

    let connect = |host: &'static str| async move {
        let mut client = Client::open(broker.addr).await;
        client
            .send(
                &Frame::new(Command::Connect)
                    .header("accept-version", "1.2")
                    .header("host", host),
            )
            .await;
        client.expect(Command::Connected).await;
        client
    };
    let mut alpha = connect("alpha").await;
    let mut beta = connect("beta").await;
    alpha.subscribe("0", "/topic/news", &[]).await;
    beta.subscribe("0", "/topic/news", &[]).await;
    beta.publish("/topic/news", "for beta").await;
    let message = beta.expect(Command::Message).await;
    assert_eq!(&message.body[..], b"for beta");
    alpha.expect_no_frame(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn unknown_destination_kinds_are_refused() {
    let broker = common::start(&[]);
    let mut client = Client::connect(broker.addr, &[]).await;
    client.publish("/exchange/amq.direct/x", "x").await;
    let error = client.expect_error().await;
    assert!(
        error
            .get("message")
            .unwrap()
            .starts_with("unknown destination '/exchange/amq.direct/x'"),
        "{error:?}"
    );
}

/// Bytes that can never open a command get an ERROR at once, whether or not a line end
/// or a blank line ever follows: before CONNECT and in a session.
#[tokio::test]
async fn a_command_line_that_cannot_be_a_command_is_refused_before_it_ends() {
    let broker = common::start(&[]);
    let garbage: &[u8] = b"\xffnot a command and no line end";
    let unended: &[u8] = b"FROB\nx:y\n";
    for bytes in [garbage, unended] {
        let mut client = Client::connect(broker.addr, &[]).await;
        client.send_raw(bytes).await;
        let error = client.expect_error().await;
        let message = error.get("message").unwrap_or_default();
        assert!(message.contains("unknown command"), "{error:?}");
        client.expect_closed().await;

        let mut client = Client::open(broker.addr).await;
        client.send_raw(bytes).await;
        let error = client.expect_error().await;
        let message = error.get("message").unwrap_or_default();
        assert!(message.contains("unknown command"), "{error:?}");
        client.expect_closed().await;
    }
}
