//! STOMP over WebSocket and WSS: subprotocols, message boundaries, heart-beats, pings,
//! limits, Origin checks and the health endpoint.

mod common;

use std::time::Duration;

use postbox_testkit::certs::{self, TestCa};
use postbox_testkit::http::{get, request};
use postbox_testkit::{Broker, Client, Command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

fn start(extra: &[&str]) -> Broker {
    let mut args = vec!["--ws-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    common::start(&args)
}

async fn ws(broker: &Broker, protocols: &[&str]) -> (Client, Option<String>) {
    Client::open_ws(broker.listener("ws"), "/ws", protocols, None).await
}

#[tokio::test]
async fn the_highest_offered_stomp_subprotocol_is_chosen() {
    let broker = start(&[]);
    for (offered, chosen) in [
        (
            &["v10.stomp", "v11.stomp", "v12.stomp"][..],
            Some("v12.stomp"),
        ),
        (&["v11.stomp", "v10.stomp"][..], Some("v11.stomp")),
        (&["mqtt", "v10.stomp"][..], Some("v10.stomp")),
        (&[][..], None),
    ] {
        let (mut client, protocol) = ws(&broker, offered).await;
        assert_eq!(protocol.as_deref(), chosen, "offered {offered:?}");
        // Every case, including no subprotocol at all, speaks STOMP.
        client.stomp_connect(&[]).await;
        client.disconnect().await;
    }
}

#[tokio::test]
async fn frames_may_be_split_across_messages_and_batched_in_one() {
    let broker = start(&[]);
    let (mut client, _) = ws(&broker, &["v12.stomp"]).await;
    client.send_raw(b"CONNECT\naccept-ver").await;
    client.send_raw(b"sion:1.2\n\n\0").await;
    client.expect(Command::Connected).await;
    client
        .send_raw(
            b"SUBSCRIBE\nid:0\ndestination:/topic/ws\nreceipt:s\n\n\0\
              SEND\ndestination:/topic/ws\n\none\0SEND\ndestination:/topic/ws\n\ntw",
        )
        .await;
    client.send_raw(b"o\0").await;
    client.expect_receipt("s").await;
    for body in ["one", "two"] {
        let message = client.expect(Command::Message).await;
        assert_eq!(&message.body[..], body.as_bytes());
    }
}

#[tokio::test]
async fn text_and_binary_messages_both_work() {
    let broker = start(&[]);
    let (mut client, _) = ws(&broker, &["v12.stomp"]).await;
    client
        .send_ws(Message::Binary(
            b"CONNECT\naccept-version:1.2\n\n\0".to_vec().into(),
        ))
        .await;
    client.expect(Command::Connected).await;
    client.subscribe("0", "/topic/bin", &[]).await;
    let mut send = b"SEND\ndestination:/topic/bin\ncontent-length:4\n\n".to_vec();
    send.extend_from_slice(&[0xff, 0x00, 0xfe, 0x01]);
    send.push(0);
    client.send_ws(Message::Binary(send.into())).await;
    // A non-UTF-8 body cannot travel in a text message: it arrives as binary.
    let message = client
        .next_ws(Duration::from_secs(5))
        .await
        .expect("a message");
    let Message::Binary(payload) = message else {
        panic!("expected a binary message, got {message:?}")
    };
    assert!(payload.ends_with(&[0xff, 0x00, 0xfe, 0x01, 0x00]));
    client
        .send_ws(Message::Text(
            "SEND\ndestination:/topic/bin\n\ntext\0".into(),
        ))
        .await;
    let message = client
        .next_ws(Duration::from_secs(5))
        .await
        .expect("a message");
    assert!(
        matches!(message, Message::Text(ref t) if t.ends_with("text\0")),
        "{message:?}"
    );
}

#[tokio::test]
async fn heart_beats_arrive_as_single_eol_messages() {
    let broker = start(&["--heartbeat-send-ms", "100"]);
    let (mut client, _) = ws(&broker, &["v12.stomp"]).await;
    client
        .send_raw(b"CONNECT\naccept-version:1.2\nheart-beat:0,100\n\n\0")
        .await;
    client.expect(Command::Connected).await;
    let beat = client
        .next_ws(Duration::from_secs(2))
        .await
        .expect("a heart-beat");
    assert!(
        matches!(beat, Message::Text(ref t) if t.as_str() == "\n"),
        "{beat:?}"
    );
}

#[tokio::test]
async fn pings_are_answered() {
    let broker = start(&[]);
    let (mut client, _) = ws(&broker, &["v12.stomp"]).await;
    client.stomp_connect(&[]).await;
    client
        .send_ws(Message::Ping(b"are you there".to_vec().into()))
        .await;
    let pong = client
        .next_ws(Duration::from_secs(5))
        .await
        .expect("a pong");
    assert_eq!(pong, Message::Pong(b"are you there".to_vec().into()));
}

#[tokio::test]
async fn an_oversize_message_closes_the_connection() {
    let broker = start(&["--ws-max-message-size", "2048"]);
    let (mut client, _) = ws(&broker, &["v12.stomp"]).await;
    client.stomp_connect(&[]).await;
    let mut big = b"SEND\ndestination:/topic/big\n\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 4096));
    big.push(0);
    let _ = client.try_send_raw(&big).await;
    let mut closed = false;
    for _ in 0..20 {
        match client.next_ws(Duration::from_secs(1)).await {
            None | Some(Message::Close(_)) => {
                closed = true;
                break;
            }
            Some(_) => continue,
        }
    }
    assert!(closed, "the connection stayed open");
}

/// Sends a raw HTTP request and returns the status line and the whole response.
async fn http(addr: std::net::SocketAddr, request: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .expect("HTTP response in time")
        .unwrap();
    let status = response.lines().next().unwrap_or_default().to_owned();
    (status, response)
}

fn upgrade_request(path: &str, origin: Option<&str>) -> String {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: v12.stomp\r\n"
    );
    if let Some(origin) = origin {
        request.push_str(&format!("Origin: {origin}\r\n"));
    }
    request.push_str("\r\n");
    request
}

#[tokio::test]
async fn origins_outside_the_allowed_list_get_403() {
    let broker = start(&["--ws-allowed-origins", "https://chat.example.com"]);
    let addr = broker.listener("ws");
    let (status, _) = http(
        addr,
        &upgrade_request("/ws", Some("https://evil.example.net")),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden");

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = upgrade_request("/ws", Some("https://chat.example.com"));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols"),
        "{head}"
    );
    // The accept key of RFC 6455's example nonce.
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    assert!(head.contains("Sec-WebSocket-Protocol: v12.stomp"), "{head}");
}

#[tokio::test]
async fn the_websocket_listener_answers_health_probes_and_refuses_other_requests() {
    let broker = start(&[]);
    let addr = broker.listener("ws");
    let (status, response) = http(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(response.ends_with("ok\n"));
    let (status, _) = http(addr, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http(addr, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 426 Upgrade Required");
    let (status, _) = http(
        addr,
        "POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
}

#[tokio::test]
async fn metrics_and_admin_on_the_websocket_port_are_opt_in() {
    let token = "ws-admin-token";
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let args = ["--http-listen", "127.0.0.1:0", "--admin-token", token];
    let broker = start(&args);
    let (ws, plain) = (broker.listener("ws"), broker.listener("http"));
    // Load balancers probe the traffic port: the probes stay.
    assert_eq!(get(ws, "/healthz").await.0, 200);
    assert_eq!(get(ws, "/readyz").await.0, 200);
    assert_eq!(get(ws, "/metrics").await.0, 404);
    for path in ["/admin", "/admin/connections"] {
        assert_eq!(request(ws, "GET", path, &auth).await.0, 404, "{path}");
    }
    // The HTTP listener serves them all.
    assert_eq!(get(plain, "/metrics").await.0, 200);
    assert_eq!(
        request(plain, "GET", "/admin/connections", &auth).await.0,
        200
    );

    let mut args = args.to_vec();
    args.push("--ws-http-endpoints");
    let broker = start(&args);
    let ws = broker.listener("ws");
    let (status, metrics) = get(ws, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("# TYPE postbox_connects counter"),
        "{metrics}"
    );
    assert_eq!(request(ws, "GET", "/admin/connections", &auth).await.0, 200);
    assert_eq!(request(ws, "GET", "/admin/connections", &[]).await.0, 401);
}

#[tokio::test]
async fn wss_round_trip_and_cross_transport_delivery() {
    let ca = TestCa::new("wss CA");
    let dir = certs::temp_dir("postbox-wss");
    let (cert, key) = certs::write_server_files(&dir, &ca.server());
    let broker = common::start(&[
        "--wss-listen",
        "127.0.0.1:0",
        "--ws-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let connector = ca.connector(None);
    let (mut secure, protocol) = Client::open_ws(
        broker.listener("wss"),
        "/ws",
        &["v12.stomp"],
        Some(&connector),
    )
    .await;
    assert_eq!(protocol.as_deref(), Some("v12.stomp"));
    secure.stomp_connect(&[]).await;
    secure.subscribe("0", "/topic/mixed", &[]).await;
    // Publishers on plain WebSocket and on TCP reach the WSS subscriber.
    let (mut plain, _) = Client::open_ws(broker.listener("ws"), "/ws", &[], None).await;
    plain.stomp_connect(&[]).await;
    plain.publish("/topic/mixed", "from ws").await;
    let mut tcp = Client::connect(broker.addr, &[]).await;
    tcp.publish("/topic/mixed", "from tcp").await;
    let mut bodies: Vec<String> = Vec::new();
    for _ in 0..2 {
        let message = secure.expect(Command::Message).await;
        bodies.push(String::from_utf8_lossy(&message.body).into_owned());
    }
    bodies.sort();
    assert_eq!(bodies, ["from tcp", "from ws"]);

    // Over TLS too, only the probes answer besides the STOMP path.
    for (path, status) in [("/metrics", "404"), ("/healthz", "200")] {
        let mut stream = postbox_testkit::client::tls(broker.listener("wss"), &connector)
            .await
            .unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
            .await
            .expect("HTTP response in time")
            .unwrap();
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {response}"
        );
    }
}
