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
    pub(super) delivered: AtomicU64,
    pub(super) published: AtomicU64,
    pub(super) connects: AtomicU64,
    pub(super) connect_failures: AtomicU64,
    pub(super) publisher_reconnects: AtomicU64,
    pub(super) consumers: AtomicU64,
    pub(super) exits: [AtomicU64; 4],
    pub(super) slow_sessions: AtomicU64,
    pub(super) slow_closed: AtomicU64,
    /// Still connected, and keeping up once it read fast again.
    pub(super) slow_kept: AtomicU64,
    pub(super) flood_sessions: AtomicU64,
    pub(super) flood_closed: AtomicU64,
    pub(super) flood_outlived: AtomicU64,
    pub(super) bad_sent: AtomicU64,
    /// ERROR then close (or reset).
    pub(super) bad_answered: AtomicU64,
    /// Closed or reset without an ERROR.
    pub(super) bad_closed_silently: AtomicU64,
    /// No close within the timeout.
    pub(super) bad_left_open: AtomicU64,
    pub(super) storms: AtomicU64,
    pub(super) storm_connects: AtomicU64,
    pub(super) storm_failures: AtomicU64,
    pub(super) storm_slowest_us: AtomicU64,
    pub(super) drained: AtomicU64,
    pub(super) anomaly_count: AtomicU64,
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
