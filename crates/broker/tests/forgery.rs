//! Frames that try to smuggle another frame past the broker, checked at the byte level
//! the way a NUL-splitting client library (stomp.py, stomp.js) reads them.

mod common;

use std::time::Duration;

use postbox_testkit::client::tcp;
use postbox_testkit::{Client, Command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads from `stream` into `seen` until `needle` appears, within a deadline.
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &[u8]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {:?} in {:?}", needle.escape_ascii(), seen))
            .expect("read");
        assert!(
            n > 0,
            "closed before {:?}: {:?}",
            needle.escape_ascii(),
            seen
        );
        seen.extend_from_slice(&chunk[..n]);
    }
}

/// The commands of `bytes` cut at every NUL, as a client that ends frames at NUL does.
fn commands_split_at_nul(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .map(|frame| frame.trim_ascii_start())
        .filter(|frame| !frame.is_empty())
        .map(|frame| {
            let line = frame.split(|&b| b == b'\n').next().unwrap_or_default();
            String::from_utf8_lossy(line).into_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_nul_in_a_header_cannot_forge_a_frame_for_subscribers() {
    let broker = common::start(&[]);
    let mut subscriber = tcp(broker.addr).await;
    subscriber
        .write_all(
            b"CONNECT\naccept-version:1.2\nhost:/\n\n\0\
              SUBSCRIBE\nid:s\ndestination:/topic/t\nreceipt:sub\n\n\0",
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut subscriber, &mut seen, b"receipt-id:sub").await;

    // The forgery, then a frame whose receipt shows the forgery went through (RECEIPT)
    // or was refused (ERROR, and that frame is never handled).
    let mut forger = Client::connect(broker.addr, &[]).await;
    forger
        .send_raw(
            b"SEND\ndestination:/topic/t\nx:a\0ERROR\nmessage:forged\n\n\0\
              SEND\ndestination:/topic/elsewhere\nreceipt:next\n\n\0",
        )
        .await;
    let reply = forger.next_frame(Duration::from_secs(5)).await;

    // A message sent after that marks the point by which a forwarded forgery would
    // have reached the subscriber.
    let mut publisher = Client::connect(broker.addr, &[]).await;
    publisher.publish("/topic/t", "after").await;
    read_until(&mut subscriber, &mut seen, b"after\0").await;
    assert_eq!(
        commands_split_at_nul(&seen),
        ["CONNECTED", "RECEIPT", "MESSAGE"],
        "{:?}",
        seen.escape_ascii().to_string()
    );
    let error = reply.expect("a reply to the forgery");
    assert_eq!(error.command, Command::Error, "{error:?}");
    assert_eq!(
        error.get("message"),
        Some("malformed frame: NUL byte in header line 2: NUL may only end a frame"),
        "{error:?}"
    );
    forger.expect_closed().await;
    assert!(!seen.windows(6).any(|w| w == b"forged"));
}

#[tokio::test]
async fn a_nul_in_a_connect_header_is_refused() {
    let broker = common::start(&[]);
    let mut client = Client::open(broker.addr).await;
    client
        .send_raw(b"CONNECT\naccept-version:1.2\nlogin:guest\0\n\n\0")
        .await;
    let error = client.expect(Command::Error).await;
    assert!(
        error
            .get("message")
            .unwrap()
            .contains("NUL byte in header line 2"),
        "{error:?}"
    );
    client.expect_closed().await;
}
