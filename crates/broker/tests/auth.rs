//! Authentication setups of the `postbox` binary: a users file, anonymous access, tokens
//! in the WebSocket URL, reloading on SIGHUP, and the sender header.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use postbox_testkit::certs::temp_dir;
use postbox_testkit::{Client, Command, Frame, eventually};

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
    login_within(addr, login, passcode, Duration::from_secs(5)).await
}

async fn login_within(
    addr: std::net::SocketAddr,
    login: &str,
    passcode: &str,
    wait: Duration,
) -> (Client, Frame) {
    let mut client = Client::open(addr).await;
    client
        .send(
            &Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("login", login)
                .header("passcode", passcode),
        )
        .await;
    let reply = client.next_frame(wait).await.expect("a reply");
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
    eventually(Duration::from_secs(10), "carol to be let in", async || {
        let (_, reply) = login(broker.addr, "carol", "newcomer").await;
        if reply.command == Command::Connected {
            Ok(())
        } else {
            Err(reply)
        }
    })
    .await;
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

/// The broker process's thread count.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// What one CONNECT of the wave got back.
async fn wrong_login(addr: std::net::SocketAddr, login: String) -> String {
    let mut client = Client::open(addr).await;
    client
        .send(
            &Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("login", login)
                .header("passcode", "wrong"),
        )
        .await;
    match client.next_frame(Duration::from_secs(15)).await {
        Some(frame) if frame.command == Command::Error => {
            frame.get("message").unwrap_or_default().to_owned()
        }
        other => panic!("a wrong passcode got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_of_wrong_passcodes_neither_takes_every_thread_nor_keeps_users_out() {
    let dir = temp_dir("postbox-login-wave");
    let users = users_file(
        &dir,
        &[
            ("alice", "wonderland", &["chat"]),
            ("bob", "builder", &["chat"]),
        ],
    );
    let broker = common::start(&[
        "--users-file",
        users.to_str().unwrap(),
        "--acl",
        ACL,
        // The wave comes from one address; throttling is checked on its own below.
        "--max-login-failures",
        "0",
    ]);
    let before = threads(broker.pid());
    let (mut listener, connected) = login(broker.addr, "alice", "wonderland").await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    listener.subscribe("s", "/topic/chat.room", &[]).await;

    // 200 wrong passcodes at once, half for a real user, half for unknown ones.
    let wave: Vec<_> = (0..200)
        .map(|i| {
            let login = if i % 2 == 0 {
                "alice".to_owned()
            } else {
                format!("nobody{i}")
            };
            tokio::spawn(wrong_login(broker.addr, login))
        })
        .collect();
    // A sample taken while the wave is being checked: nothing marks the moment all 200
    // are in, so give them a moment to arrive. Sampled too early, the count is low and
    // the assertion below passes without having tested anything, so it never flakes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let during = threads(broker.pid());

    // Bob gets in while the wave is checked, retrying when told the server is busy.
    let mut busy = 0;
    let mut bob = eventually(Duration::from_secs(30), "bob to get in", async || {
        let (client, reply) =
            login_within(broker.addr, "bob", "builder", Duration::from_secs(15)).await;
        if reply.command == Command::Connected {
            return Ok(client);
        }
        let message = reply.get("message").unwrap_or_default();
        assert!(message.starts_with("server busy"), "{reply:?}");
        busy += 1;
        Err(format!("busy {busy} times"))
    })
    .await;
    // A session already open is served meanwhile.
    bob.publish("/topic/chat.room", "still here").await;
    let message = listener.expect(Command::Message).await;
    assert_eq!(&message.body[..], b"still here");

    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for attempt in wave {
        let message = attempt.await.unwrap();
        let kind = if message.starts_with("server busy") {
            "busy"
        } else {
            assert_eq!(message, "authentication failed");
            "failed"
        };
        *answers.entry(kind.to_owned()).or_default() += 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        during <= before + cores + 4,
        "{before} threads before the wave, {during} during it"
    );
    assert!(
        answers.get("failed").copied().unwrap_or(0) > 0,
        "{answers:?}"
    );
}

#[tokio::test]
async fn a_login_that_keeps_failing_from_one_address_is_refused_unchecked() {
    let dir = temp_dir("postbox-login-throttle");
    let users = users_file(&dir, &[("alice", "wonderland", &[])]);
    let broker = common::start(&[
        "--users-file",
        users.to_str().unwrap(),
        "--max-login-failures",
        "3",
    ]);
    for _ in 0..3 {
        let (_, reply) = login(broker.addr, "alice", "wrong").await;
        assert_eq!(reply.get("message"), Some("authentication failed"));
    }
    // Now even the right passcode is not checked, and the ERROR says for how long.
    let (mut client, reply) = login(broker.addr, "alice", "wonderland").await;
    let message = reply.get("message").unwrap_or_default();
    assert!(
        message.starts_with("too many failed logins")
            && message.contains("try again in ")
            && message.contains("(max-login-failures)"),
        "{reply:?}"
    );
    client.expect_closed().await;
}
