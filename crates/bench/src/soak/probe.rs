//! The probe: one SEND→MESSAGE round trip per second on a connection of its own, which
//! tells a broker that is slow (a stall) from one that stopped answering (gone).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use postbox_stomp::{Command, Frame};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::stats::Stats;
use super::units::{clock, millis};
use crate::conn::{self, Target};
use crate::report;

/// What a probe that gets no answer at all waits before the broker counts as gone.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the probe saw.
#[derive(Debug)]
pub(super) struct Probe {
    /// Round trips since the last progress line.
    pub(super) interval: Mutex<Histogram<u64>>,
    /// Every round trip.
    pub(super) total: Mutex<Histogram<u64>>,
    /// Round trips slower than the threshold, or failed.
    pub(super) stalls: AtomicU64,
    /// Worst round trip in microseconds, and when it started.
    pub(super) worst: Mutex<(u64, Duration)>,
    /// Set when the broker stopped answering (no round trip, no reconnect).
    pub(super) gone: CancellationToken,
    /// Why the broker counts as gone; the first reason given wins.
    pub(super) gone_reason: Mutex<Option<String>>,
}

impl Probe {
    /// A probe that has seen nothing yet.
    pub(super) fn new() -> Probe {
        Probe {
            interval: Mutex::new(report::histogram()),
            total: Mutex::new(report::histogram()),
            stalls: AtomicU64::new(0),
            worst: Mutex::new((0, Duration::ZERO)),
            gone: CancellationToken::new(),
            gone_reason: Mutex::new(None),
        }
    }
}

/// Marks the broker as gone, keeping the first reason.
pub(super) fn gone(probe: &Probe, reason: String) {
    let mut slot = probe.gone_reason.lock().expect("probe lock");
    if slot.is_none() {
        *slot = Some(reason);
    }
    probe.gone.cancel();
}

/// Connects the probe and subscribes it to its queue, under [`ANSWER_TIMEOUT`].
pub(super) async fn probe_connect(
    target: &Target,
    queue: &str,
) -> io::Result<(conn::Reader, conn::Writer)> {
    tokio::time::timeout(ANSWER_TIMEOUT, async {
        let (mut reader, mut writer) = conn::connect(target).await?;
        writer
            .send(
                &Frame::new(Command::Subscribe)
                    .header("id", "probe")
                    .header("destination", queue)
                    .header("ack", "auto")
                    .header("receipt", "probe-subscribed"),
            )
            .await?;
        reader.expect(Command::Receipt).await?;
        Ok((reader, writer))
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))?
}

/// One round trip per second until `stop`: records its latency, counts stalls and
/// reconnects after a failure; marks the broker gone when it gets no answer at all.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_probe(
    target: Target,
    queue: String,
    connection: (conn::Reader, conn::Writer),
    probe: Arc<Probe>,
    stats: Arc<Stats>,
    stall: Duration,
    started: Instant,
    stop: CancellationToken,
) {
    let (mut reader, mut writer) = connection;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sequence = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        sequence += 1;
        let body = format!("probe-{sequence}");
        let sent_at = Instant::now();
        let at = started.elapsed();
        let round_trip = tokio::time::timeout(ANSWER_TIMEOUT, async {
            writer
                .send(
                    &Frame::new(Command::Send)
                        .header("destination", queue.as_str())
                        .body(body.clone()),
                )
                .await?;
            loop {
                match reader.next().await? {
                    Some(frame) if frame.command == Command::Message => {
                        if frame.body == body.as_bytes() {
                            return Ok(());
                        }
                    }
                    Some(frame) => {
                        return Err(io::Error::other(format!(
                            "probe got {} {:?}",
                            frame.command,
                            frame.get("message")
                        )));
                    }
                    None => return Err(io::Error::other("probe connection closed")),
                }
            }
        })
        .await;
        let latency = sent_at.elapsed();
        let us = (latency.as_micros() as u64).max(1);
        let _ = probe.interval.lock().expect("probe lock").record(us);
        let _ = probe.total.lock().expect("probe lock").record(us);
        {
            let mut worst = probe.worst.lock().expect("probe lock");
            if us > worst.0 {
                *worst = (us, at);
            }
        }
        let failure = match round_trip {
            Ok(Ok(())) if latency <= stall => continue,
            Ok(Ok(())) => {
                probe.stalls.fetch_add(1, Ordering::Relaxed);
                stats.anomaly(
                    started,
                    format!("probe stall: round trip took {}", millis(us)),
                );
                continue;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => {
                probe.stalls.fetch_add(1, Ordering::Relaxed);
                gone(
                    &probe,
                    format!(
                        "no probe answer within {} s (at {})",
                        ANSWER_TIMEOUT.as_secs(),
                        clock(at)
                    ),
                );
                return;
            }
        };
        // The broker closed or refused the probe: that round trip failed, and a probe
        // that cannot reconnect means the broker is gone.
        probe.stalls.fetch_add(1, Ordering::Relaxed);
        stats.anomaly(started, format!("probe failed: {failure}; reconnecting"));
        match probe_connect(&target, &queue).await {
            Ok((r, w)) => (reader, writer) = (r, w),
            Err(error) => {
                gone(&probe, format!("the probe cannot reconnect: {error}"));
                return;
            }
        }
    }
}
