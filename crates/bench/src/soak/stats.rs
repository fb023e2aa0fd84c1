//! The counters every load task adds to, and the capped list of anomalies.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use super::units::clock;

/// Anomalies kept word for word; the rest are only counted.
const ANOMALIES_KEPT: usize = 40;

/// Counters shared by every task.
#[derive(Debug, Default)]
pub(super) struct Stats {
    /// Messages read by subscribers and consumers.
    pub(super) delivered: AtomicU64,
    /// Messages written by the publishers.
    pub(super) published: AtomicU64,
    /// Connections that reached CONNECTED, of every kind.
    pub(super) connects: AtomicU64,
    /// Connections that did not.
    pub(super) connect_failures: AtomicU64,
    /// Times a publisher was cut off and connected again.
    pub(super) publisher_reconnects: AtomicU64,
    /// Queue consumers that subscribed.
    pub(super) consumers: AtomicU64,
    /// Consumers that left, by `Exit` (as an index).
    pub(super) exits: [AtomicU64; 4],
    /// Slow-reader connections.
    pub(super) slow_sessions: AtomicU64,
    /// Slow readers the broker cut off.
    pub(super) slow_closed: AtomicU64,
    /// Still connected, and keeping up once it read fast again.
    pub(super) slow_kept: AtomicU64,
    /// Receipt-flood connections.
    pub(super) flood_sessions: AtomicU64,
    /// Floods the broker closed.
    pub(super) flood_closed: AtomicU64,
    /// Floods still open after `FLOOD_LIMIT`.
    pub(super) flood_outlived: AtomicU64,
    /// Bad inputs sent.
    pub(super) bad_sent: AtomicU64,
    /// ERROR then close (or reset).
    pub(super) bad_answered: AtomicU64,
    /// Closed or reset without an ERROR.
    pub(super) bad_closed_silently: AtomicU64,
    /// No close within the timeout.
    pub(super) bad_left_open: AtomicU64,
    /// Reconnect storms.
    pub(super) storms: AtomicU64,
    /// Storm connections that reached CONNECTED.
    pub(super) storm_connects: AtomicU64,
    /// Storm connections that did not.
    pub(super) storm_failures: AtomicU64,
    /// The slowest storm CONNECT, in microseconds.
    pub(super) storm_slowest_us: AtomicU64,
    /// Messages drained from the queues after the load.
    pub(super) drained: AtomicU64,
    /// Anomalies, kept or not.
    pub(super) anomaly_count: AtomicU64,
    /// The first `ANOMALIES_KEPT` anomalies, word for word.
    pub(super) anomalies: Mutex<Vec<String>>,
}

impl Stats {
    /// Counts an anomaly, and keeps its text, stamped with the time since `started`,
    /// while fewer than `ANOMALIES_KEPT` are kept.
    pub(super) fn anomaly(&self, started: Instant, what: String) {
        self.anomaly_count.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.anomalies.lock().expect("anomalies lock");
        if kept.len() < ANOMALIES_KEPT {
            kept.push(format!("[{}] {what}", clock(started.elapsed())));
        }
    }
}
