//! What operators use: metrics, health and readiness, the admin API, reloading on
//! SIGHUP, and logs that say what happened without leaking secrets.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use postbox_testkit::certs::temp_dir;
use postbox_testkit::http::{get, request};
use postbox_testkit::{
    Broker, Client, Command, Frame, RedisServer, eventually, eventually_blocking,
};

use common::metric;

const TOKEN: &str = "admin-token-for-tests";

fn start(extra: &[&str]) -> Broker {
    let mut args = vec!["--http-listen", "127.0.0.1:0", "--admin-token", TOKEN];
    args.extend_from_slice(extra);
    common::start(&args)
}

#[tokio::test]
async fn metrics_count_connections_traffic_queues_and_disconnect_reasons() {
    let broker = start(&["--ws-listen", "127.0.0.1:0", "--ws-http-endpoints"]);
    let http = broker.listener("http");
    let mut client = Client::connect(broker.addr, &[]).await;
    client.subscribe("0", "/topic/metrics", &[]).await;
    client.publish("/topic/metrics", "hello").await;
    client.expect(Command::Message).await;
    let mut producer = Client::connect(broker.addr, &[]).await;
    for i in 0..3 {
        producer.publish("/queue/metrics", &i.to_string()).await;
    }
    let mut bad = Client::connect(broker.addr, &[]).await;
    bad.send_raw(b"NOPE\n\n\0").await;
    bad.expect_error().await;
    producer
        .send(&Frame::new(Command::Disconnect).header("receipt", "r"))
        .await;
    producer.expect_receipt("r").await;

    bad.expect_closed().await;
    // Sessions finish their bookkeeping just after their sockets close.
    let text = eventually(
        Duration::from_secs(10),
        "one client disconnect and one open connection in the metrics",
        async || {
            let (status, text) = get(http, "/metrics").await;
            assert_eq!(status, 200);
            let seen = (
                metric(&text, r#"postbox_disconnects_total{reason="client"}"#),
                metric(&text, r#"postbox_connections{transport="stomp",vhost="/"}"#),
            );
            if seen == (Some(1.0), Some(1.0)) {
                Ok(text)
            } else {
                Err(seen)
            }
        },
    )
    .await;
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    assert_eq!(
        metric(&text, r#"postbox_connections{transport="stomp",vhost="/"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, r#"postbox_connects_total{transport="stomp"}"#),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"postbox_disconnects_total{reason="protocol_error"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, r#"postbox_disconnects_total{reason="client"}"#),
        Some(1.0)
    );
    assert_eq!(metric(&text, "postbox_messages_received_total"), Some(4.0));
    assert_eq!(metric(&text, "postbox_messages_delivered_total"), Some(1.0));
    assert_eq!(metric(&text, "postbox_subscriptions"), Some(1.0));
    assert_eq!(
        metric(
            &text,
            r#"postbox_queue_depth{vhost="/",queue="/queue/metrics"}"#
        ),
        Some(3.0)
    );
    assert!(metric(&text, "postbox_received_bytes_total").unwrap() > 0.0);
    // With ws-http-endpoints, the WebSocket listener serves the same.
    let (status, text) = get(broker.listener("ws"), "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("postbox_connections"));
}

#[tokio::test]
async fn health_and_readiness() {
    let broker = start(&[]);
    let http = broker.listener("http");
    assert_eq!(get(http, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(http, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(get(http, "/nope").await.0, 404);
    assert_eq!(request(http, "POST", "/healthz", &[]).await.0, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clustered_node_is_not_ready_while_redis_is_unreachable() {
    let mut redis = RedisServer::start();
    let broker = start(&["--cluster", &redis.url(), "--node-id", "ready1"]);
    let http = broker.listener("http");
    assert_eq!(get(http, "/readyz").await.0, 200);
    redis.stop();
    eventually(
        Duration::from_secs(15),
        "not ready without Redis",
        async || get(http, "/readyz").await.0 == 503,
    )
    .await;
    assert_eq!(
        get(http, "/readyz").await.1,
        "not ready: Redis is unreachable\n"
    );
    assert_eq!(get(http, "/healthz").await.0, 200, "alive all the same");
    redis.restart();
    eventually(
        Duration::from_secs(20),
        "ready again with Redis back",
        async || get(http, "/readyz").await.0 == 200,
    )
    .await;
}

#[tokio::test]
async fn the_admin_api_lists_and_closes_connections() {
    let broker = start(&[]);
    let http = broker.listener("http");
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];

    assert_eq!(get(http, "/admin/connections").await.0, 401);
    let wrong = [("Authorization", "Bearer nope")];
    assert_eq!(
        request(http, "GET", "/admin/connections", &wrong).await.0,
        401
    );

    let mut client = Client::connect(broker.addr, &[]).await;
    client
        .subscribe(
            "watch",
            "/queue/admin.jobs",
            &[("ack", "client-individual")],
        )
        .await;
    let mut producer = Client::connect(broker.addr, &[]).await;
    producer.publish("/queue/admin.jobs", "one").await;
    producer.publish("/queue/admin.jobs", "two").await;
    client.expect(Command::Message).await;

    let (status, body) = request(http, "GET", "/admin/connections", &auth).await;
    assert_eq!(status, 200, "{body}");
    let listing: serde_json::Value = serde_json::from_str(&body).unwrap();
    let connections = listing["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 2);
    let watcher = connections
        .iter()
        .find(|c| !c["subscriptions"].as_array().unwrap().is_empty())
        .expect("the subscriber is listed");
    assert_eq!(watcher["transport"], "stomp");
    assert_eq!(watcher["version"], "1.2");
    assert_eq!(watcher["user"], "anonymous");
    assert_eq!(
        watcher["subscriptions"][0]["destination"],
        "/queue/admin.jobs"
    );
    assert_eq!(watcher["subscriptions"][0]["ack"], "client-individual");
    assert!(watcher["traffic"]["bytes_in"].as_u64().unwrap() > 0);

    let (_, body) = request(http, "GET", "/admin/queues", &auth).await;
    let queues: serde_json::Value = serde_json::from_str(&body).unwrap();
    let queue = &queues["queues"][0];
    assert_eq!(queue["queue"], "/queue/admin.jobs");
    assert_eq!(queue["unacked"], 2);
    assert_eq!(queue["consumers"], 1);

    let (_, body) = request(http, "GET", "/admin/destinations", &auth).await;
    assert!(body.contains("/queue/admin.jobs"), "{body}");

    let id = watcher["id"].as_str().unwrap();
    let (status, _) = request(
        http,
        "POST",
        &format!("/admin/connections/{id}/close"),
        &auth,
    )
    .await;
    assert_eq!(status, 202);
    let error = loop {
        let frame = client
            .next_frame(Duration::from_secs(5))
            .await
            .expect("an ERROR");
        if frame.command == Command::Error {
            break frame;
        }
    };
    assert_eq!(
        error.get("message"),
        Some("connection closed by an operator")
    );
    client.expect_closed().await;
    let (status, _) = request(http, "POST", "/admin/connections/nope/close", &auth).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn sighup_applies_new_limits_to_new_connections() {
    let dir = temp_dir("postbox-reload");
    let file = dir.join("postbox.toml");
    std::fs::write(&file, "max-subscriptions = 1\n").unwrap();
    let broker = common::start(&["--config", file.to_str().unwrap()]);
    let mut before = Client::connect(broker.addr, &[]).await;
    before.subscribe("1", "/topic/a", &[]).await;
    std::fs::write(&file, "max-subscriptions = 3\n").unwrap();
    broker.signal("HUP");
    eventually(
        Duration::from_secs(10),
        "a new connection to get a second subscription",
        async || {
            let mut client = Client::connect(broker.addr, &[]).await;
            client.subscribe("1", "/topic/a", &[]).await;
            client
                .send(
                    &Frame::new(Command::Subscribe)
                        .header("id", "2")
                        .header("destination", "/topic/b")
                        .header("receipt", "second"),
                )
                .await;
            let reply = client
                .next_frame(Duration::from_secs(2))
                .await
                .expect("a reply");
            if reply.command == Command::Receipt {
                Ok(())
            } else {
                Err(reply)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn connections_are_logged_when_they_open_and_close_without_secrets() {
    let dir = temp_dir("postbox-logs");
    let hash = {
        let mut child = Process::new(common::binary())
            .arg("hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "correct-horse").unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    };
    let users = dir.join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[[user]]\nname = \"alice\"\npassword = \"{}\"\n",
            hash.trim()
        ),
    )
    .unwrap();
    let log = dir.join("postbox.log");
    let mut child = Process::new("sh")
        .arg("-c")
        .arg(format!(
            "RUST_LOG=debug exec {} --listen 127.0.0.1:0 --users-file {} 2>{}",
            common::binary().display(),
            users.display(),
            log.display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().unwrap().unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    let mut ok = Client::open(addr).await;
    ok.send(
        &Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("login", "alice")
            .header("passcode", "correct-horse"),
    )
    .await;
    ok.expect(Command::Connected).await;
    ok.disconnect().await;
    let mut bad = Client::open(addr).await;
    bad.send(
        &Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("login", "alice")
            .header("passcode", "battery-staple-secret"),
    )
    .await;
    bad.expect_error().await;
    bad.expect_closed().await;
    // Both connections are over; stop the broker once their lines are in the log.
    eventually(
        Duration::from_secs(10),
        "both connections to be logged",
        async || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let missing: Vec<_> = [
                "connection opened",
                "connection closed",
                "authentication failed",
            ]
            .into_iter()
            .filter(|line| !text.contains(line))
            .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(missing)
            }
        },
    )
    .await;
    let _ = Process::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("connection opened"), "{text}");
    assert!(text.contains("connection closed"), "{text}");
    assert!(
        text.contains("reason=\"client\"") || text.contains("reason=client"),
        "{text}"
    );
    assert!(text.contains("authentication failed"), "{text}");
    for secret in ["correct-horse", "battery-staple-secret"] {
        assert!(!text.contains(secret), "a secret reached the log:\n{text}");
    }
}

#[tokio::test]
async fn a_jwt_with_the_admin_role_opens_the_admin_api() {
    let secret = "a-secret-for-the-admin-api-test-0123456789";
    let broker = common::start(&["--http-listen", "127.0.0.1:0", "--jwt-secret", secret]);
    let http = broker.listener("http");
    let exp = postbox_broker::auth::now() + 600;
    let admin = common::hs256(
        secret,
        &format!(r#"{{"sub":"root","roles":["admin"],"exp":{exp}}}"#),
    );
    let user = common::hs256(
        secret,
        &format!(r#"{{"sub":"alice","roles":["chat"],"exp":{exp}}}"#),
    );
    let bearer = |token: &str| format!("Bearer {token}");
    let as_admin = bearer(&admin);
    let (status, _) = request(
        http,
        "GET",
        "/admin/connections",
        &[("Authorization", &as_admin)],
    )
    .await;
    assert_eq!(status, 200);
    let as_user = bearer(&user);
    let (status, body) = request(
        http,
        "GET",
        "/admin/connections",
        &[("Authorization", &as_user)],
    )
    .await;
    assert_eq!(status, 403, "{body}");
}

// ===== reloads =====

/// A broker whose log (stderr, human format) goes to a file the test can read.
struct Logged {
    child: std::process::Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Logged {
    fn start(dir: &Path, args: &[&str]) -> Logged {
        let log = dir.join("postbox.log");
        let mut child = Process::new(common::binary())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addr = None;
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
            if line == "ready" {
                break;
            }
            if let Some(listening) = line.strip_prefix("listening stomp ") {
                addr = listening.parse().ok();
            }
        }
        let addr = addr.unwrap_or_else(|| {
            panic!(
                "postbox did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        Logged { child, addr, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Sends SIGHUP and waits until the log has a line containing every one of `words`;
    /// returns that line.
    fn reload_and_wait(&self, words: &[&str]) -> String {
        let status = Process::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait_for_line(words)
    }

    fn wait_for_line(&self, words: &[&str]) -> String {
        let what = format!("a log line with {words:?}");
        eventually_blocking(Duration::from_secs(10), &what, || {
            let text = self.log();
            text.lines()
                .find(|line| words.iter().all(|word| line.contains(word)))
                .map(str::to_owned)
                .ok_or(text)
        })
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a users file with alice (password `correct-horse`) into `dir`.
fn users_file(dir: &Path) -> PathBuf {
    let mut child = Process::new(common::binary())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "correct-horse").unwrap();
    }
    let hash = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    let users = dir.join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[[user]]\nname = \"alice\"\npassword = \"{}\"\n",
            hash.trim()
        ),
    )
    .unwrap();
    users
}

/// CONNECTs with `headers` and returns the reply (CONNECTED or ERROR) and the client.
async fn try_connect(addr: SocketAddr, headers: &[(&str, &str)]) -> (Frame, Client) {
    let mut client = Client::open(addr).await;
    let mut connect = Frame::new(Command::Connect).header("accept-version", "1.2");
    for (name, value) in headers {
        connect = connect.header(*name, *value);
    }
    client.send(&connect).await;
    let reply = client
        .next_frame(Duration::from_secs(10))
        .await
        .expect("a reply to CONNECT");
    (reply, client)
}

/// The JWT secret of the reload tests, and a bearer token for alice signed with it.
/// Tokens, not passwords, check the old settings: an argon2 check in a debug build on a
/// loaded machine can outlast the broker's 5 s deadline for it.
const RELOAD_JWT: &str = "a-jwt-secret-for-the-reload-tests-0123456789";

fn alice_bearer() -> String {
    let exp = postbox_broker::auth::now() + 600;
    let token = common::hs256(RELOAD_JWT, &format!(r#"{{"sub":"alice","exp":{exp}}}"#));
    format!("Bearer {token}")
}

#[tokio::test]
async fn a_reload_that_would_remove_authentication_is_refused_entirely() {
    let dir = temp_dir("postbox-reload-auth");
    let users = users_file(&dir);
    let file = dir.join("postbox.toml");
    let config = format!(
        "users-file = {:?}\njwt-secret = {RELOAD_JWT:?}\nmax-subscriptions = 1\n\
         acl = [{{ user = \"alice\", read = [\"/topic/#\"] }}]\n",
        users.display().to_string()
    );
    std::fs::write(&file, &config).unwrap();
    let broker = Logged::start(&dir, &["--config", file.to_str().unwrap()]);
    let bearer = alice_bearer();
    let alice = [("Authorization", bearer.as_str())];
    assert_eq!(
        try_connect(broker.addr, &[]).await.0.command,
        Command::Error
    );

    // The users file and the JWT secret go away, and a limit changes in the same edit.
    std::fs::write(&file, "max-subscriptions = 3\n").unwrap();
    let line = broker.reload_and_wait(&["reload refused"]);
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("users-file and jwt-secret"), "{line}");
    assert!(!broker.log().contains("reloaded"), "{}", broker.log());

    // Still no anonymous access...
    let (reply, _) = try_connect(broker.addr, &[]).await;
    assert_eq!(reply.command, Command::Error, "{reply:?}");
    // ...alice still gets in, and the old subscription limit still holds.
    let (reply, mut client) = try_connect(broker.addr, &alice).await;
    assert_eq!(reply.command, Command::Connected, "{reply:?}");
    client.subscribe("1", "/topic/a", &[]).await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "2")
                .header("destination", "/topic/b")
                .header("receipt", "second"),
        )
        .await;
    let error = client.expect_error().await;
    assert!(
        error.get("message").unwrap().contains("subscriptions"),
        "{error:?}"
    );

    // Putting authentication back makes the next reload go through.
    std::fs::write(&file, format!("{config}max-headers = 32\n")).unwrap();
    broker.reload_and_wait(&["reloaded", "max-headers"]);
}

#[tokio::test]
async fn allow_anonymous_changes_on_reload() {
    let dir = temp_dir("postbox-reload-anonymous");
    let file = dir.join("postbox.toml");
    let auth = format!("jwt-secret = {RELOAD_JWT:?}\n");
    std::fs::write(&file, format!("{auth}allow-anonymous = true\n")).unwrap();
    let broker = Logged::start(&dir, &["--config", file.to_str().unwrap()]);
    let (reply, _) = try_connect(broker.addr, &[]).await;
    assert_eq!(reply.command, Command::Connected, "{reply:?}");

    std::fs::write(&file, format!("{auth}allow-anonymous = false\n")).unwrap();
    broker.reload_and_wait(&["reloaded", "allow-anonymous"]);
    let (reply, _) = try_connect(broker.addr, &[]).await;
    assert_eq!(reply.command, Command::Error, "{reply:?}");
    let bearer = alice_bearer();
    assert_eq!(
        try_connect(broker.addr, &[("Authorization", bearer.as_str())])
            .await
            .0
            .command,
        Command::Connected
    );
}

#[tokio::test]
async fn options_that_need_a_restart_say_so_on_reload() {
    let dir = temp_dir("postbox-reload-restart");
    let file = dir.join("postbox.toml");
    std::fs::write(&file, "max-deliveries = 10\n").unwrap();
    let broker = Logged::start(&dir, &["--config", file.to_str().unwrap()]);
    std::fs::write(&file, "max-deliveries = 3\nmax-headers = 10\n").unwrap();
    let line = broker.reload_and_wait(&["needs a restart", "max-deliveries"]);
    assert!(line.contains("WARN"), "{line}");
    broker.wait_for_line(&["reloaded", "max-headers"]);
    let log = broker.log();
    assert!(
        !log.lines()
            .any(|line| line.contains("reloaded") && line.contains("max-deliveries")),
        "{log}"
    );
}

// ===== secrets =====

#[test]
fn print_config_and_check_config_show_no_secret() {
    let jwt = "a-jwt-secret-that-must-stay-hidden-0123456789";
    let output = Process::new(common::binary())
        .args([
            "print-config",
            "--cluster",
            "redis://postbox:redis-pw-hidden@127.0.0.1:1",
        ])
        .env("POSTBOX_JWT_SECRET", jwt)
        .env("POSTBOX_ADMIN_TOKEN", "admin-token-hidden")
        .env("POSTBOX_CLUSTER_PASSWORD", "cluster-pw-hidden")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    for secret in [
        jwt,
        "admin-token-hidden",
        "redis-pw-hidden",
        "cluster-pw-hidden",
    ] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    assert!(printed.contains("jwt-secret = \"****\""), "{printed}");
    assert!(
        printed.contains("cluster = \"redis://postbox:****@127.0.0.1:1\""),
        "{printed}"
    );

    let dir = temp_dir("postbox-check-secret");
    let file = dir.join("broken.toml");
    std::fs::write(
        &file,
        format!("listen = [\"127.0.0.1:0\"]\njwt-secret = \"{jwt}\n"),
    )
    .unwrap();
    let output = Process::new(common::binary())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let complaint = String::from_utf8_lossy(&output.stderr);
    assert!(complaint.contains("line 2"), "{complaint}");
    assert!(!complaint.contains(jwt), "{complaint}");
}
