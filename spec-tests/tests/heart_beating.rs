//! STOMP 1.2 "Heart-beating".

use std::time::{Duration, Instant};

use postbox_spec_tests::*;

/// Connects asking for `heart-beat:cx,cy` and returns the client with the server's
/// (sx, sy) from CONNECTED.
async fn connect_beating(target: &Target, cx: u64, cy: u64) -> (Client, u64, u64) {
    let mut client = Client::open(target.addr).await;
    let mut frame = target.connect_frame();
    frame.headers.push("heart-beat", format!("{cx},{cy}"));
    client.send(&frame).await;
    let connected = client.expect(Command::Connected).await;
    let (sx, sy) = connected
        .get("heart-beat")
        .and_then(|v| v.split_once(','))
        .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()))
        .unwrap_or((0, 0));
    (client, sx, sy)
}

#[tokio::test]
async fn the_server_sends_heart_beats_at_the_negotiated_interval() {
    let target = Target::new();
    let (mut client, sx, _) = connect_beating(&target, 0, 100).await;
    if sx == 0 {
        panic!("the server offers no heart-beats");
    }
    let interval = Duration::from_millis(sx.max(100));
    let window = interval * 6;
    let start = Instant::now();
    while start.elapsed() < window {
        client.next_frame(window - start.elapsed()).await;
    }
    // About six beats are due; allow scheduling slack but require real beating.
    assert!(
        client.heart_beats >= 3,
        "only {} heart-beats in {window:?}",
        client.heart_beats
    );
}

#[tokio::test]
async fn no_heart_beats_without_agreement() {
    let target = Target::new();
    let (mut client, _, _) = connect_beating(&target, 0, 0).await;
    let period = Duration::from_millis(600);
    client.expect_no_frame(period).await;
    assert_eq!(client.heart_beats, 0);
}

#[tokio::test]
async fn a_silent_client_is_disconnected() {
    let target = Target::new();
    let (mut client, _, sy) = connect_beating(&target, 100, 0).await;
    if sy == 0 {
        panic!("the server does not ask for heart-beats");
    }
    let interval = Duration::from_millis(sy.max(100));
    let start = Instant::now();
    // The server may send an ERROR first; then it must close.
    let limit = interval * 4 + Duration::from_secs(2);
    loop {
        match client.receive(limit.saturating_sub(start.elapsed())).await {
            postbox_testkit::client::Received::Closed => break,
            postbox_testkit::client::Received::Frame(frame) if frame.command == Command::Error => {}
            postbox_testkit::client::Received::TimedOut => {
                panic!("still connected after {:?} of silence", start.elapsed())
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        start.elapsed() >= interval,
        "closed too early: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn heart_beats_from_the_client_keep_it_connected() {
    let target = Target::new();
    let (mut client, _, sy) = connect_beating(&target, 100, 0).await;
    let interval = Duration::from_millis(sy.max(100));
    let start = Instant::now();
    // The client's own heart-beat, twice per interval for five intervals: the pauses are
    // what is tested (a client that beats in time is never cut off).
    while start.elapsed() < interval * 5 {
        client.send_raw(b"\n").await;
        tokio::time::sleep(interval / 2).await;
    }
    client
        .send(&Frame::new(Command::Disconnect).header("receipt", "alive"))
        .await;
    client.expect_receipt("alive").await;
}

#[tokio::test]
async fn any_frame_counts_as_activity() {
    let target = Target::new();
    let (mut client, _, sy) = connect_beating(&target, 100, 0).await;
    let interval = Duration::from_millis(sy.max(100));
    let topic = unique("/topic/", "activity");
    let start = Instant::now();
    let mut n = 0;
    // A frame instead of a heart-beat, at the same pace as above.
    while start.elapsed() < interval * 5 {
        client.publish(&topic, "keepalive").await;
        n += 1;
        tokio::time::sleep(interval / 2).await;
    }
    assert!(n > 3);
    client
        .send(&Frame::new(Command::Disconnect).header("receipt", "alive"))
        .await;
    client.expect_receipt("alive").await;
}
