//! Runs the `postbox` binary for a test, on a free loopback port.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// A `postbox` process; killed when dropped.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    /// The STOMP (TCP) address it listens on.
    pub addr: SocketAddr,
    /// Every `listening <transport> <addr>` line it printed.
    pub listening: Vec<(String, SocketAddr)>,
}

impl Broker {
    /// Starts the binary found by [`Broker::binary`] with `args`, listening on a free
    /// loopback port unless `args` has its own `--listen`.
    pub fn start(args: &[&str]) -> Broker {
        Broker::start_binary(&Broker::binary(), args)
    }

    /// Starts a given `postbox` binary.
    pub fn start_binary(binary: &Path, args: &[&str]) -> Broker {
        Broker::start_binary_env(binary, args, &[])
    }

    /// Starts a given `postbox` binary with extra environment variables.
    pub fn start_binary_env(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Broker {
        let mut command = Command::new(binary);
        command.envs(env.iter().copied());
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut listening = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        // One `listening <transport> <addr>` line per listener, then `ready`.
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let mut parts = line.split_whitespace();
            if parts.next() != Some("listening") {
                break;
            }
            let transport = parts.next().unwrap_or_default().to_owned();
            let addr = parts
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("bad listening line {line:?}"));
            listening.push((transport, addr));
        }
        let addr = listening
            .iter()
            .find(|(transport, _)| transport == "stomp")
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| {
                let status = child.try_wait().ok().flatten();
                panic!("postbox did not report a stomp listener (exit status: {status:?})")
            });
        Broker {
            child,
            addr,
            listening,
        }
    }

    /// The `postbox` binary: `$POSTBOX_BIN`, or the one in this test's target directory,
    /// (re)built with cargo first when it is missing or older than the broker's sources.
    pub fn binary() -> PathBuf {
        if let Ok(path) = std::env::var("POSTBOX_BIN") {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/<test> -> target/<profile>/postbox
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test binaries live in target/<profile>/deps");
        let binary = profile_dir.join("postbox");
        let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
        if built.is_none_or(|built| built < newest_source()) {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "postbox-broker", "--bin", "postbox"]);
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(status.success(), "building postbox failed");
        }
        binary
    }

    /// The address of the listener for `transport` (`stomp`, `stomp-tls`, `ws`, `wss`).
    pub fn listener(&self, transport: &str) -> SocketAddr {
        self.listening
            .iter()
            .find(|(t, _)| t == transport)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("no {transport} listener in {:?}", self.listening))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, `HUP`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        crate::wait::poll_blocking(timeout, || self.child.try_wait().expect("try_wait")).ok()
    }
}

/// The newest modification time among the sources the `postbox` binary is built from.
fn newest_source() -> SystemTime {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut pending: Vec<PathBuf> = [
        "crates/stomp",
        "crates/router",
        "crates/broker",
        "Cargo.lock",
    ]
    .iter()
    .map(|p| root.join(p))
    .collect();
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n == "target" || n == "fuzz")
            {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        } else if let Ok(modified) = meta.modified() {
            newest = newest.max(modified);
        }
    }
    newest
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
