//! Many connections: how fast they open, what an idle subscribed connection costs the
//! broker in memory, and how long one message takes to reach all of them.
//!
//! Connections come from `--sources` loopback addresses (127.0.0.1, 127.0.0.2, ...)
//! so that one source's ephemeral ports do not run out.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use postbox_stomp::{Command, Frame};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::conn::{self, Target};

/// Connection scenario parameters.
#[derive(Debug, Clone)]
pub struct Options {
    pub count: usize,
    pub sources: u8,
    pub parallel: usize,
    pub broker_pid: Option<u32>,
    pub broadcasts: usize,
}

/// What the run measured.
#[derive(Debug)]
pub struct Outcome {
    pub connects_per_sec: f64,
    pub rss_per_connection: Option<f64>,
    pub broadcast_ms: Vec<f64>,
}

impl Outcome {
    pub fn human(&self, options: &Options) -> String {
        let mut sorted = self.broadcast_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
        format!(
            "connections: {} idle subscribed connections from {} sources\n  opened     {:>12.0} connections/s\n  memory     {} per connection (broker RSS growth)\n  broadcast  {median:.2} ms until the last of {} has the message (median of {})\n",
            options.count,
            options.sources,
            self.connects_per_sec,
            self.rss_per_connection
                .map_or("unknown (give --broker-pid)".to_owned(), |b| format!(
                    "{:.1} KiB",
                    b / 1024.0
                )),
            options.count,
            sorted.len(),
        )
    }

    pub fn json(&self, options: &Options) -> serde_json::Value {
        let mut sorted = self.broadcast_ms.clone();
        sorted.sort_by(f64::total_cmp);
        json!({
            "scenario": "connections",
            "connections": options.count,
            "connects_per_sec": self.connects_per_sec,
            "rss_bytes_per_connection": self.rss_per_connection,
            "broadcast_ms_median": sorted.get(sorted.len() / 2),
            "broadcast_ms": sorted,
        })
    }
}

/// Resident memory of a process, in bytes.
pub fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How long one connection may take from connect() to CONNECTED before the run fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(target: &Target, options: &Options) -> io::Result<Outcome> {
    let topic = crate::unique_destination("/topic/bench.broadcast");
    let rss_before = options.broker_pid.and_then(rss);

    // Phase 1: open and CONNECT, `parallel` at a time.
    let limiter = Arc::new(Semaphore::new(options.parallel));
    let started = Instant::now();
    let mut opening = Vec::with_capacity(options.count);
    for index in 0..options.count {
        let permit = limiter
            .clone()
            .acquire_owned()
            .await
            .map_err(io::Error::other)?;
        let target = target.clone();
        let source = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (index % usize::from(options.sources)) as u8,
        ));
        opening.push(tokio::spawn(async move {
            let connected =
                tokio::time::timeout(CONNECT_TIMEOUT, conn::connect_from(&target, Some(source)))
                    .await
                    .unwrap_or_else(|_| {
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "connection {index} got no CONNECTED within {} s \
                         (the broker stopped accepting: check its open-files limit)",
                                CONNECT_TIMEOUT.as_secs()
                            ),
                        ))
                    });
            drop(permit);
            connected
        }));
    }
    let mut connections = Vec::with_capacity(options.count);
    for task in opening {
        connections.push(task.await.map_err(io::Error::other)??);
    }
    let connects_per_sec = options.count as f64 / started.elapsed().as_secs_f64();

    // Phase 2: subscribe them all at once, each waiting for its receipt, then let each
    // wait for broadcasts.
    let (arrivals, mut arrived) = mpsc::unbounded_channel::<Instant>();
    let (subscribed_tx, mut subscribed) = mpsc::unbounded_channel::<io::Result<()>>();
    let mut readers = Vec::with_capacity(options.count);
    for (mut reader, mut writer) in connections {
        let subscribe = Frame::new(Command::Subscribe)
            .header("id", "0")
            .header("destination", topic.as_str())
            .header("receipt", "s");
        let arrivals = arrivals.clone();
        let subscribed_tx = subscribed_tx.clone();
        readers.push(tokio::spawn(async move {
            let done = async {
                writer.send(&subscribe).await?;
                reader.expect(Command::Receipt).await.map(drop)
            }
            .await;
            let failed = done.is_err();
            let _ = subscribed_tx.send(done);
            if failed {
                return;
            }
            while let Ok(Some(frame)) = reader.next().await {
                if frame.command == Command::Message && arrivals.send(Instant::now()).is_err() {
                    break;
                }
            }
            drop(writer);
        }));
    }
    for _ in 0..options.count {
        match tokio::time::timeout(Duration::from_secs(120), subscribed.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(error))) => return Err(error),
            _ => {
                return Err(io::Error::other(
                    "subscriptions were not confirmed in 120 s",
                ));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss_per_connection = match (rss_before, options.broker_pid.and_then(rss)) {
        (Some(before), Some(after)) => {
            Some(after.saturating_sub(before) as f64 / options.count as f64)
        }
        _ => None,
    };

    // Phase 3: broadcast one message at a time and time the last arrival.
    let (_publisher_reader, mut publisher) = conn::connect(target).await?;
    let mut broadcast_ms = Vec::new();
    for _ in 0..options.broadcasts {
        let sent = Instant::now();
        publisher
            .send(
                &Frame::new(Command::Send)
                    .header("destination", topic.as_str())
                    .body("now"),
            )
            .await?;
        let mut last = sent;
        for _ in 0..options.count {
            match tokio::time::timeout(Duration::from_secs(30), arrived.recv()).await {
                Ok(Some(at)) => last = last.max(at),
                _ => {
                    return Err(io::Error::other(
                        "a subscriber never received the broadcast",
                    ));
                }
            }
        }
        broadcast_ms.push((last - sent).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for reader in readers {
        reader.abort();
    }
    Ok(Outcome {
        connects_per_sec,
        rss_per_connection,
        broadcast_ms,
    })
}
