//! Presence through the `postbox` binary: signed-in users entering and leaving a room
//! from several connections, the member list on SUBSCRIBE, the count on every MESSAGE,
//! the admin API and the metrics.

mod common;

use std::time::Duration;

use postbox_testkit::http::request;
use postbox_testkit::{Broker, Client, Command, Frame, eventually};

const SECRET: &str = "presence-tests-secret-of-at-least-32-bytes";
const ADMIN: &str = "presence-admin-token";

fn start(extra: &[&str]) -> Broker {
    let mut args = vec![
        "--jwt-secret",
        SECRET,
        "--presence",
        "/topic/chat.room.*",
        "--http-listen",
        "127.0.0.1:0",
        "--admin-token",
        ADMIN,
    ];
    args.extend_from_slice(extra);
    common::start(&args)
}

/// A connection signed in as `user`, allowed to read and write the chat rooms.
async fn user(broker: &Broker, user: &str) -> Client {
    let claims = format!(
        r#"{{"sub":"{user}","exp":4102444800,"scope":"read:/topic/chat.# write:/topic/chat.#"}}"#
    );
    let token = common::hs256(SECRET, &claims);
    Client::connect(broker.addr, &[("passcode", &token)]).await
}

/// The next frame, which must be a presence event of `kind` about `who`, with `count`.
async fn expect_event(client: &mut Client, kind: &str, who: &str, count: &str) -> Frame {
    let frame = client.expect(Command::Message).await;
    assert_eq!(frame.get("presence"), Some(kind), "{frame:?}");
    assert_eq!(frame.get("presence-user"), Some(who), "{frame:?}");
    assert_eq!(frame.get("presence-count"), Some(count), "{frame:?}");
    frame
}

#[tokio::test]
async fn a_room_hears_each_person_enter_and_leave_once() {
    let broker = start(&[]);
    let room = "/topic/chat.room.1";

    let mut carol = user(&broker, "carol").await;
    carol
        .subscribe("0", room, &[("presence-members", "true")])
        .await;
    let members = carol.expect(Command::Message).await;
    assert_eq!(members.get("presence"), Some("members"));
    let body = String::from_utf8(members.body.to_vec()).unwrap();
    assert_eq!(
        body,
        r#"{"type":"MEMBERS","roomId":"chat.room.1","members":["carol"],"userCount":1}"#
    );
    let own = expect_event(&mut carol, "enter", "carol", "1").await;
    assert_eq!(
        String::from_utf8(own.body.to_vec()).unwrap(),
        r#"{"type":"ENTER","roomId":"chat.room.1","sender":"carol","userCount":1}"#
    );

    // Alice in two tabs: one ENTER.
    let mut tab_one = user(&broker, "alice").await;
    tab_one.subscribe("0", room, &[]).await;
    expect_event(&mut carol, "enter", "alice", "2").await;
    let mut tab_two = user(&broker, "alice").await;
    tab_two.subscribe("0", room, &[]).await;

    // A message carries the count, and a client cannot forge an event.
    tab_two
        .send(
            &Frame::new(Command::Send)
                .header("destination", room)
                .header("presence", "quit")
                .header("presence-user", "carol")
                .body("hello"),
        )
        .await;
    let own = tab_two.expect(Command::Message).await;
    assert_eq!(
        own.body.as_ref(),
        b"hello",
        "the second tab heard no ENTER of its own"
    );
    let message = carol.expect(Command::Message).await;
    assert_eq!(message.body.as_ref(), b"hello", "no event came in between");
    assert_eq!(message.get("presence-count"), Some("2"));
    assert_eq!(message.get("presence"), None);
    assert_eq!(message.get("presence-user"), None);

    // The admin API lists the room.
    let http = broker.listener("http");
    let auth = format!("Bearer {ADMIN}");
    let (status, body) = request(http, "GET", "/admin/presence", &[("Authorization", &auth)]).await;
    assert_eq!(status, 200, "{body}");
    let listing: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listing["rooms"][0]["destination"], room, "{listing}");
    assert_eq!(listing["rooms"][0]["count"], 2, "{listing}");
    assert_eq!(
        listing["rooms"][0]["members"],
        serde_json::json!([
            {"user": "alice", "subscriptions": 2},
            {"user": "carol", "subscriptions": 1}
        ])
    );

    // One tab reset, the other leaves with DISCONNECT: one QUIT, after the second.
    drop(tab_one);
    carol.expect_no_frame(Duration::from_millis(300)).await;
    tab_two.disconnect().await;
    expect_event(&mut carol, "quit", "alice", "1").await;

    // An UNSUBSCRIBE is a QUIT too, for those still in the room.
    let mut bob = user(&broker, "bob").await;
    bob.subscribe("0", room, &[]).await;
    expect_event(&mut carol, "enter", "bob", "2").await;
    expect_event(&mut bob, "enter", "bob", "2").await;
    bob.send(&Frame::new(Command::Unsubscribe).header("id", "0"))
        .await;
    expect_event(&mut carol, "quit", "bob", "1").await;

    let metrics = eventually(Duration::from_secs(5), "presence metrics", async || {
        let (_, text) = request(http, "GET", "/metrics", &[]).await;
        let members = common::metric(&text, "postbox_presence_members");
        let enters = common::metric(&text, "postbox_presence_events_total{kind=\"enter\"}");
        let quits = common::metric(&text, "postbox_presence_events_total{kind=\"quit\"}");
        match (members, enters, quits) {
            (Some(1.0), Some(3.0), Some(2.0)) => Ok(()),
            other => Err(other),
        }
    })
    .await;
    let () = metrics;
}

#[tokio::test]
async fn events_can_go_to_a_companion_topic_and_anonymous_connections_count_each() {
    let broker = common::start(&[
        "--presence",
        "/topic/lobby",
        "--presence-companion-suffix",
        ".presence",
    ]);
    let mut watcher = Client::connect(broker.addr, &[]).await;
    watcher.subscribe("0", "/topic/lobby.presence", &[]).await;
    let mut one = Client::connect(broker.addr, &[]).await;
    one.subscribe("0", "/topic/lobby", &[]).await;
    let enter = watcher.expect(Command::Message).await;
    assert_eq!(enter.get("presence"), Some("enter"));
    assert_eq!(enter.get("presence-count"), Some("1"));
    let mut two = Client::connect(broker.addr, &[]).await;
    two.subscribe("0", "/topic/lobby", &[]).await;
    let enter = watcher.expect(Command::Message).await;
    assert_eq!(
        enter.get("presence-count"),
        Some("2"),
        "each connection is a member"
    );
    one.expect_no_frame(Duration::from_millis(200)).await;
    drop(two);
    let quit = watcher.expect(Command::Message).await;
    assert_eq!(quit.get("presence"), Some("quit"));
    assert_eq!(quit.get("presence-count"), Some("1"));
}

#[test]
fn presence_is_refused_with_a_cluster_until_it_is_cluster_wide() {
    let output = std::process::Command::new(common::binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--presence",
            "/topic/chat.#",
            "--cluster",
            "redis://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("presence is not cluster-wide yet"),
        "{stderr}"
    );
}

#[tokio::test]
async fn who_is_in_a_room_is_told_only_to_those_who_may_read_it() {
    let broker = start(&["--presence-companion-suffix", ".presence"]);
    let claims = r#"{"sub":"mallory","exp":4102444800,"scope":"read:/topic/chat.room.1.presence"}"#;
    let token = common::hs256(SECRET, claims);
    let mut mallory = Client::connect(broker.addr, &[("passcode", &token)]).await;
    mallory
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "0")
                .header("destination", "/topic/chat.room.1.presence"),
        )
        .await;
    let error = mallory.expect_error().await;
    let message = error.get("message").unwrap_or_default();
    assert!(
        message.contains("may not read from '/topic/chat.room.1'"),
        "{error:?}"
    );

    let mut carol = user(&broker, "carol").await;
    carol
        .subscribe("0", "/topic/chat.room.1.presence", &[])
        .await;
    let mut alice = user(&broker, "alice").await;
    alice.subscribe("0", "/topic/chat.room.1", &[]).await;
    expect_event(&mut carol, "enter", "alice", "1").await;
}

#[tokio::test]
async fn only_the_broker_speaks_where_a_rooms_events_go() {
    let broker = start(&["--presence-companion-suffix", ".presence"]);
    let mut carol = user(&broker, "carol").await;
    carol
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/topic/chat.room.1.presence")
                .body(r#"{"type":"QUIT","sender":"alice"}"#),
        )
        .await;
    let error = carol.expect_error().await;
    assert!(
        error
            .get("message")
            .unwrap_or_default()
            .contains("clients may not send to it"),
        "{error:?}"
    );
}

#[test]
fn a_queue_room_needs_a_companion_topic_for_its_events() {
    let output = std::process::Command::new(common::binary())
        .args(["--listen", "127.0.0.1:0", "--presence", "/queue/desk"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("set presence-companion-suffix"), "{stderr}");
}

#[tokio::test]
async fn the_admin_listing_of_rooms_is_bounded() {
    let broker = start(&[]);
    let mut crowd = user(&broker, "crowd").await;
    for room in 0..1_001 {
        crowd
            .send(
                &Frame::new(Command::Subscribe)
                    .header("id", room.to_string())
                    .header("destination", format!("/topic/chat.room.{room}")),
            )
            .await;
    }
    crowd.subscribe("last", "/topic/chat.room.last", &[]).await;
    let auth = format!("Bearer {ADMIN}");
    let http = broker.listener("http");
    let (status, body) = request(http, "GET", "/admin/presence", &[("Authorization", &auth)]).await;
    assert_eq!(status, 200);
    let listing: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listing["rooms"].as_array().unwrap().len(), 1_000);
    assert_eq!(listing["truncated"], true);
}
