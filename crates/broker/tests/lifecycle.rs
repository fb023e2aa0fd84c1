//! Starting, configuring and stopping the `postbox` binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Command as Process;
use std::time::Duration;

use postbox_testkit::client::Received;
use postbox_testkit::{Broker, Client, Command, Frame, eventually_blocking};

#[tokio::test]
async fn sigterm_flushes_queued_messages_then_says_why_and_exits() {
    let mut broker = common::start(&["--drain-timeout-ms", "3000", "--lame-duck-ms", "500"]);
    let mut subscriber = Client::connect(broker.addr, &[]).await;
    subscriber.subscribe("0", "/topic/drain", &[]).await;
    let mut publisher = Client::connect(broker.addr, &[]).await;
    for i in 0..500 {
        publisher.publish("/topic/drain", &i.to_string()).await;
    }
    publisher
        .send(&Frame::new(Command::Disconnect).header("receipt", "done"))
        .await;
    publisher.expect_receipt("done").await;
    broker.signal("TERM");
    for i in 0..500 {
        let message = subscriber.expect(Command::Message).await;
        assert_eq!(std::str::from_utf8(&message.body).unwrap(), i.to_string());
    }
    let error = subscriber.expect_error().await;
    assert_eq!(error.get("message"), Some("server is shutting down"));
    subscriber.expect_closed().await;
    let status = broker
        .wait_exit(Duration::from_secs(5))
        .expect("postbox exited");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_public_address_without_auth_is_refused() {
    let output = Process::new(common::binary())
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-anonymous"), "{stderr}");
}

#[tokio::test]
async fn allow_anonymous_permits_a_public_address() {
    let broker = common::start(&["--listen", "0.0.0.0:0", "--allow-anonymous"]);
    assert!(broker.addr.ip().is_unspecified());
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], broker.addr.port()));
    Client::connect(loopback, &[]).await.disconnect().await;
}

#[tokio::test]
async fn options_come_from_file_env_and_flags() {
    let dir = std::env::temp_dir().join(format!("postbox-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("postbox.toml");
    std::fs::write(&file, "max-subscriptions = 1\nconnect-timeout-ms = 250\n").unwrap();
    let broker = Broker::start_binary_env(
        common::binary(),
        &[
            "--config",
            file.to_str().unwrap(),
            "--connect-timeout-ms",
            "400",
        ],
        &[
            ("POSTBOX_MAX_SUBSCRIPTIONS", "5"),
            ("POSTBOX_MAX_HEADERS", "3"),
        ],
    );
    // The file's max-subscriptions (1) beats the environment's (5).
    let mut client = Client::connect(broker.addr, &[]).await;
    client.subscribe("1", "/topic/a", &[]).await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "2")
                .header("destination", "/topic/b"),
        )
        .await;
    assert!(
        client
            .expect_error()
            .await
            .get("message")
            .unwrap()
            .contains("at most 1")
    );
    // The flag's connect timeout (400) beats the file's (250).
    let mut idle = Client::open(broker.addr).await;
    let error = idle.expect_error().await;
    assert_eq!(error.get("message"), Some("no CONNECT frame within 400 ms"));
    // The environment's max-headers (3) applies where nothing else sets it.
    let mut client = Client::connect(broker.addr, &[]).await;
    let frame = Frame::new(Command::Send)
        .header("destination", "/topic/a")
        .header("a", "1")
        .header("b", "2")
        .header("c", "3");
    client.send(&frame).await;
    assert!(
        client
            .expect_error()
            .await
            .get("message")
            .unwrap()
            .contains("too many headers: more than 3 (max-headers)")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn print_config_and_check_config() {
    let output = Process::new(common::binary())
        .args(["print-config", "--max-headers", "7"])
        .env("POSTBOX_MAX_BODY_SIZE", "1000")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("max-headers = 7  # flag"), "{printed}");
    assert!(
        printed.contains("max-body-size = 1000  # env POSTBOX_MAX_BODY_SIZE"),
        "{printed}"
    );
    assert!(
        printed.contains("listen = [\"127.0.0.1:61613\"]  # default"),
        "{printed}"
    );

    let dir = std::env::temp_dir().join(format!("postbox-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, "max-headers = 10\n").unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "max-headers = \"ten\"\n").unwrap();
    let check = |file: &std::path::Path| {
        Process::new(common::binary())
            .arg("check-config")
            .arg(file)
            .output()
            .unwrap()
    };
    assert!(check(&good).status.success());
    let failed = check(&bad);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("max-headers"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn json_logs_on_request() {
    let mut child = Process::new(common::binary())
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt it once it has started (and logged its start), not during start-up.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (lines, printed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut last = None;
    eventually_blocking(Duration::from_secs(10), "postbox to print ready", || {
        while let Ok(line) = printed.try_recv() {
            if line == "ready" {
                return Ok(());
            }
            last = Some(line);
        }
        Err(last.clone())
    });
    let _ = Process::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not JSON: {line}"
        );
        assert!(line.contains("\"level\""), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lame_duck_shutdown_spreads_the_goodbyes_over_its_window() {
    let mut broker = common::start(&["--lame-duck-ms", "1500", "--drain-timeout-ms", "5000"]);
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(Client::connect(broker.addr, &[]).await);
    }
    let started = std::time::Instant::now();
    broker.signal("TERM");
    let mut goodbyes = Vec::new();
    for client in &mut clients {
        let error = client
            .next_frame(Duration::from_secs(5))
            .await
            .expect("an ERROR");
        assert_eq!(error.get("message"), Some("server is shutting down"));
        goodbyes.push(started.elapsed());
    }
    goodbyes.sort();
    let spread = goodbyes[goodbyes.len() - 1] - goodbyes[0];
    assert!(
        spread >= Duration::from_millis(800),
        "all at once: {goodbyes:?}"
    );
    // Nobody new gets in meanwhile: the connection is refused or never answered.
    if let Ok(stream) = tokio::net::TcpStream::connect(broker.addr).await {
        let mut late = Client::over(Box::pin(stream));
        let _ = late
            .try_send_raw(b"CONNECT\naccept-version:1.2\n\n\0")
            .await;
        assert!(late.next_frame(Duration::from_secs(2)).await.is_none());
    }
    let status = broker
        .wait_exit(Duration::from_secs(6))
        .expect("postbox exited");
    assert!(status.success());
}

#[tokio::test]
async fn idle_connections_are_closed_on_shutdown_too() {
    let mut broker = common::start(&[]);
    let mut idle = Client::open(broker.addr).await;
    broker.signal("INT");
    assert!(matches!(
        idle.receive(Duration::from_secs(5)).await,
        Received::Closed
    ));
    assert!(broker.wait_exit(Duration::from_secs(5)).unwrap().success());
}

#[test]
fn the_container_config_is_valid() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docker/postbox.toml");
    let output = Process::new(common::binary())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_configuration_reference_matches_the_code() {
    let output = Process::new(common::binary())
        .arg("config-reference")
        .output()
        .unwrap();
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == written,
        "docs/configuration.md is out of date: run `cargo run --bin postbox -- config-reference > docs/configuration.md`"
    );
}
