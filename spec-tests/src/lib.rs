//! The STOMP 1.2 conformance suite's harness.
//!
//! By default each test starts its own Postbox (the `postbox` binary, on a free loopback
//! port). Set `POSTBOX_SPEC_ADDR=host:port` to run the same tests against any broker;
//! `POSTBOX_SPEC_LOGIN`, `POSTBOX_SPEC_PASSCODE` and `POSTBOX_SPEC_HOST` then give the
//! CONNECT credentials and virtual host (RabbitMQ wants `guest`/`guest` and `/`).
//!
//! Tests are grouped in files named after the sections of the specification and use
//! unique destination names, so they can run in parallel against one shared broker.
#![deny(missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use postbox_stomp::{Command, Frame, Version};
pub use postbox_testkit::{Broker, Client, DEFAULT_TIMEOUT};

/// Server heart-beat interval the spawned Postbox offers, in ms, so heart-beat tests
/// finish quickly.
pub const SPAWNED_HEARTBEAT_MS: u64 = 200;

/// The broker under test.
#[derive(Debug)]
pub struct Target {
    _broker: Option<Broker>,
    /// Its STOMP address.
    pub addr: SocketAddr,
    login: Option<String>,
    passcode: Option<String>,
    /// The CONNECT `host` value.
    pub host: String,
}

impl Target {
    /// The broker named by `POSTBOX_SPEC_ADDR`, or a freshly started Postbox.
    pub fn new() -> Target {
        Target::with_postbox_args(&[])
    }

    /// Like [`Target::new`], passing `args` to a started Postbox (ignored for an external
    /// broker).
    pub fn with_postbox_args(args: &[&str]) -> Target {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(addr) = env("POSTBOX_SPEC_ADDR") {
            return Target {
                _broker: None,
                addr: addr.parse().expect("POSTBOX_SPEC_ADDR is host:port"),
                login: env("POSTBOX_SPEC_LOGIN"),
                passcode: env("POSTBOX_SPEC_PASSCODE"),
                host: env("POSTBOX_SPEC_HOST").unwrap_or_else(|| "/".into()),
            };
        }
        let heart_beat = SPAWNED_HEARTBEAT_MS.to_string();
        let mut all = vec![
            "--heartbeat-send-ms",
            &heart_beat,
            "--heartbeat-receive-ms",
            &heart_beat,
        ];
        all.extend_from_slice(args);
        let broker = Broker::start(&all);
        Target {
            addr: broker.addr,
            _broker: Some(broker),
            login: None,
            passcode: None,
            host: "/".into(),
        }
    }

    /// Whether the tests started this broker themselves.
    pub fn is_postbox(&self) -> bool {
        self._broker.is_some()
    }

    /// A CONNECT frame for this broker: `accept-version:1.2`, host and credentials.
    pub fn connect_frame(&self) -> Frame {
        let mut frame = Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("host", self.host.as_str());
        if let Some(login) = &self.login {
            frame = frame.header("login", login.as_str());
        }
        if let Some(passcode) = &self.passcode {
            frame = frame.header("passcode", passcode.as_str());
        }
        frame
    }

    /// A connected 1.2 session.
    pub async fn connect(&self) -> Client {
        self.connect_with(&[]).await
    }

    /// A connected session whose CONNECT also carries `headers` (they come first, so
    /// they win over the defaults).
    pub async fn connect_with(&self, headers: &[(&str, &str)]) -> Client {
        let mut client = Client::open(self.addr).await;
        let mut frame = Frame::new(Command::Connect);
        for (name, value) in headers {
            frame = frame.header(*name, *value);
        }
        for (name, value) in self.connect_frame().headers.iter() {
            frame = frame.header(name.to_owned(), value.to_owned());
        }
        client.send(&frame).await;
        let connected = client.expect(Command::Connected).await;
        let version = connected
            .get("version")
            .and_then(Version::parse)
            .unwrap_or(Version::V1_0);
        client.set_version(version);
        client
    }
}

impl Default for Target {
    fn default() -> Self {
        Target::new()
    }
}

/// Helpers for tests that acknowledge messages.
pub trait ClientExt {
    /// Receives `n` MESSAGE frames and returns their bodies as text.
    fn bodies(&mut self, n: usize) -> impl std::future::Future<Output = Vec<String>>;
    /// Sends ACK (or NACK) for `message`'s `ack` header, with a receipt, and waits for it.
    fn ack(&mut self, message: &Frame, nack: bool) -> impl std::future::Future<Output = ()>;
}

impl ClientExt for Client {
    async fn bodies(&mut self, n: usize) -> Vec<String> {
        let mut bodies = Vec::with_capacity(n);
        for _ in 0..n {
            let message = self.expect(Command::Message).await;
            bodies.push(String::from_utf8_lossy(&message.body).into_owned());
        }
        bodies
    }

    async fn ack(&mut self, message: &Frame, nack: bool) {
        let id = message.get("ack").expect("MESSAGE has an ack header");
        let command = if nack { Command::Nack } else { Command::Ack };
        let receipt = format!("ack-{id}");
        self.send(
            &Frame::new(command)
                .header("id", id)
                .header("receipt", receipt.as_str()),
        )
        .await;
        self.expect_receipt(&receipt).await;
    }
}

/// The body of a frame as text.
pub fn text(frame: &Frame) -> String {
    String::from_utf8_lossy(&frame.body).into_owned()
}

/// A destination name no other test (or earlier run) uses: `/topic/` or `/queue/` plus
/// `name` plus a unique suffix.
pub fn unique(prefix: &str, name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}{name}-{}-{nanos}-{n}", std::process::id())
}
