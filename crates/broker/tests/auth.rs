//! Authentication setups of the `postbox` binary: a users file, anonymous access, tokens
//! in the WebSocket URL, reloading on SIGHUP, and the sender header.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use postbox_testkit::certs::temp_dir;
use postbox_testkit::{Client, Command, Frame};

/// An argon2 hash from `postbox hash-password`.
fn hash(password: &str) -> String {
    let mut child = Process::new(common::binary())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn users_file(dir: &Path, users: &[(&str, &str, &[&str])]) -> PathBuf {
    let mut text = String::new();
    for (name, password, roles) in users {
        let roles: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
        text.push_str(&format!(
            "[[user]]\nname = {name:?}\npassword = {:?}\nroles = [{}]\n",
            hash(password),
            roles.join(", ")
        ));
    }
    let path = dir.join("users.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn login(addr: std::net::SocketAddr, login: &str, passcode: &str) -> (Client, Frame) {
    let mut client = Client::open(addr).await;
    client
        .send(
            &Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("login", login)
                .header("passcode", passcode),
        )
        .await;
    let reply = client
        .next_frame(Duration::from_secs(5))
        .await
        .expect("a reply");
    (client, reply)
}

const ACL: &str = r#"[{role = "chat", read = ["/topic/chat.#"], write = ["/topic/chat.#"]}, {user = "anonymous", read = ["/topic/public"]}]"#;

#[tokio::test]
async fn users_log_in_with_hashed_passwords() {
    let dir = temp_dir("postbox-users");
    let users = users_file(
        &dir,
        &[("alice", "wonderland", &["chat"]), ("bob", "builder", &[])],
    );
    let broker = common::start(&["--users-file", users.to_str().unwrap(), "--acl", ACL]);

    let (mut alice, reply) = login(broker.addr, "alice", "wonderland").await;
    assert_eq!(reply.command, Command::Connected);
    alice.subscribe("0", "/topic/chat.lobby", &[]).await;
    alice.publish("/topic/chat.lobby", "hi").await;
    let message = alice.expect(Command::Message).await;
    assert_eq!(message.get("user-id"), Some("alice"));

    let (mut bob, reply) = login(broker.addr, "bob", "builder").await;
    assert_eq!(reply.command, Command::Connected);
    bob.publish("/topic/chat.lobby", "no role, no write").await;
    let error = bob.expect_error().await;
    assert_eq!(
        error.get("message"),
        Some("access refused: 'bob' may not write to '/topic/chat.lobby'")
    );

    for (name, password) in [("alice", "guess"), ("mallory", "x")] {
        let (mut client, reply) = login(broker.addr, name, password).await;
        assert_eq!(reply.command, Command::Error);
        assert_eq!(reply.get("message"), Some("authentication failed"));
        client.expect_closed().await;
    }
}

#[tokio::test]
async fn anonymous_clients_get_only_what_the_rules_give_anonymous() {
    let dir = temp_dir("postbox-anon");
    let users = users_file(&dir, &[("alice", "wonderland", &["chat"])]);
    let broker = common::start(&[
        "--users-file",
        users.to_str().unwrap(),
        "--acl",
        ACL,
        "--allow-anonymous",
    ]);
    let mut anonymous = Client::connect(broker.addr, &[]).await;
    anonymous.subscribe("0", "/topic/public", &[]).await;
    anonymous
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "1")
                .header("destination", "/topic/chat.lobby"),
        )
        .await;
    let error = anonymous.expect_error().await;
    assert_eq!(
        error.get("message"),
        Some("access refused: 'anonymous' may not read from '/topic/chat.lobby'")
    );
}

#[test]
fn configured_authentication_permits_a_public_address() {
    let dir = temp_dir("postbox-public");
    let users = users_file(&dir, &[("alice", "wonderland", &[])]);
    let broker = common::start(&[
        "--listen",
        "0.0.0.0:0",
        "--users-file",
        users.to_str().unwrap(),
    ]);
    assert!(broker.addr.ip().is_unspecified());
}

#[tokio::test]
async fn browsers_may_pass_the_token_in_the_websocket_url() {
    let secret = "a-secret-for-the-websocket-test-1234567890";
    let broker = common::start(&[
        "--ws-listen",
        "127.0.0.1:0",
        "--jwt-secret",
        secret,
        "--acl",
        ACL,
    ]);
    let claims = format!(
        r#"{{"sub":"alice","roles":["chat"],"exp":{}}}"#,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600
    );
    let token = common::hs256(secret, &claims);
    let path = format!("/ws?access_token={token}");
    let (mut client, _) = Client::open_ws(broker.listener("ws"), &path, &["v12.stomp"], None).await;
    client.stomp_connect(&[]).await;
    client.subscribe("0", "/topic/chat.web", &[]).await;

    let (mut anonymous, _) =
        Client::open_ws(broker.listener("ws"), "/ws", &["v12.stomp"], None).await;
    anonymous
        .send(&Frame::new(Command::Connect).header("accept-version", "1.2"))
        .await;
    let error = anonymous.expect_error().await;
    assert_eq!(error.get("message"), Some("authentication failed"));
}

#[tokio::test]
async fn sighup_reloads_the_users_file() {
    let dir = temp_dir("postbox-reload-users");
    let users = users_file(&dir, &[("alice", "wonderland", &[])]);
    let broker = common::start(&["--users-file", users.to_str().unwrap()]);
    let (_, reply) = login(broker.addr, "carol", "newcomer").await;
    assert_eq!(reply.command, Command::Error);
    users_file(
        &dir,
        &[("alice", "wonderland", &[]), ("carol", "newcomer", &[])],
    );
    broker.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, reply) = login(broker.addr, "carol", "newcomer").await;
        if reply.command == Command::Connected {
            break;
        }
        assert!(Instant::now() < deadline, "carol was never let in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_sender_header_name_is_configurable_and_open_brokers_drop_forged_ones() {
    let dir = temp_dir("postbox-sender");
    let users = users_file(&dir, &[("alice", "wonderland", &["chat"])]);
    let broker = common::start(&[
        "--users-file",
        users.to_str().unwrap(),
        "--acl",
        ACL,
        "--user-header",
        "x-sender",
    ]);
    let (mut alice, _) = login(broker.addr, "alice", "wonderland").await;
    alice.subscribe("0", "/topic/chat.h", &[]).await;
    alice
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/topic/chat.h")
                .header("x-sender", "mallory"),
        )
        .await;
    let message = alice.expect(Command::Message).await;
    assert_eq!(message.get("x-sender"), Some("alice"));

    let open = common::start(&[]);
    let mut client = Client::connect(open.addr, &[]).await;
    client.subscribe("0", "/topic/t", &[]).await;
    client
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/topic/t")
                .header("user-id", "admin"),
        )
        .await;
    let message = client.expect(Command::Message).await;
    assert_eq!(
        message.get("user-id"),
        None,
        "an unauthenticated name must not pass"
    );
}

#[test]
fn a_plain_text_password_in_the_users_file_stops_the_start() {
    let dir = temp_dir("postbox-plain");
    let file = dir.join("users.toml");
    std::fs::write(&file, "[[user]]\nname = \"eve\"\npassword = \"hunter2\"\n").unwrap();
    let output = Process::new(common::binary())
        .args(["--listen", "127.0.0.1:0", "--users-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("plain text is refused"), "{stderr}");
}

#[tokio::test]
async fn tokens_with_absurd_time_claims_get_an_error_frame() {
    let secret = "a-secret-for-the-numeric-claims-test-12345";
    let broker = common::start(&["--jwt-secret", secret]);
    for claims in [
        r#"{"sub":"alice","exp":18446744073709551615}"#,
        r#"{"sub":"alice","exp":1e300}"#,
        r#"{"sub":"alice","exp":-1}"#,
        r#"{"sub":"alice","exp":4102444800,"nbf":1e300}"#,
        r#"{"sub":"alice","exp":4102444800,"iat":1e300}"#,
    ] {
        let token = common::hs256(secret, claims);
        let mut client = Client::open(broker.addr).await;
        client
            .send(
                &Frame::new(Command::Connect)
                    .header("accept-version", "1.2")
                    .header("Authorization", format!("Bearer {token}")),
            )
            .await;
        let reply = client.next_frame(Duration::from_secs(5)).await;
        let reply = reply.unwrap_or_else(|| panic!("no frame for {claims}"));
        assert_eq!(reply.command, Command::Error, "{claims}");
        assert_eq!(
            reply.get("message"),
            Some("authentication failed"),
            "{claims}"
        );
        client.expect_closed().await;
    }
    // A far but reachable expiry is fine, and the session's expiry timer copes with it.
    let token = common::hs256(
        secret,
        r#"{"sub":"alice","exp":253402300799.5,"scope":"read:/topic/t write:/topic/t"}"#,
    );
    let mut client = Client::connect(broker.addr, &[("passcode", &token)]).await;
    client.subscribe("0", "/topic/t", &[]).await;
    client.publish("/topic/t", "still here").await;
    client.expect(Command::Message).await;
}
