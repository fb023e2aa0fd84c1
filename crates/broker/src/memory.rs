//! The memory alarm: while the process's resident memory is above a high-watermark,
//! publishers are paused (the session does not handle their SEND, so their socket is not
//! read) and consumers keep draining, as RabbitMQ's memory alarm does. The broker's
//! memory is never the bound; this is what keeps it from becoming one when many
//! within-bounds clients add up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The alarm falls again only below this share of the watermark, so it does not flap
/// while memory hovers at the line.
const CLEAR_BELOW: f64 = 0.95;

/// The share of the machine's (or the cgroup's) memory used when no watermark is set.
pub const DEFAULT_SHARE: f64 = 0.4;

/// Whether publishers are paused for memory, and the figures behind it.
#[derive(Debug)]
pub struct MemoryAlarm {
    /// The watermark in bytes; `u64::MAX` when there is none.
    limit: AtomicU64,
    /// Resident bytes at the last sample.
    resident: AtomicU64,
    raised: AtomicBool,
    /// Times the alarm was raised, for metrics.
    raised_count: AtomicU64,
    cleared: Notify,
}

impl Default for MemoryAlarm {
    fn default() -> MemoryAlarm {
        MemoryAlarm {
            limit: AtomicU64::new(u64::MAX),
            resident: AtomicU64::new(0),
            raised: AtomicBool::new(false),
            raised_count: AtomicU64::new(0),
            cleared: Notify::new(),
        }
    }
}

impl MemoryAlarm {
    /// Sets the watermark in bytes (`u64::MAX`: none) and applies it to the last sample.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
        self.update(self.resident.load(Ordering::Relaxed));
    }

    /// The watermark in bytes, `u64::MAX` when there is none.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Resident bytes at the last sample.
    pub fn resident(&self) -> u64 {
        self.resident.load(Ordering::Relaxed)
    }

    /// Whether publishers are paused now. One atomic load: checked on every SEND.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// How many times the alarm was raised since the start.
    pub fn raised_count(&self) -> u64 {
        self.raised_count.load(Ordering::Relaxed)
    }

    /// Resolves once the alarm is not raised.
    pub async fn cleared(&self) {
        loop {
            let notified = self.cleared.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_raised() {
                return;
            }
            notified.await;
        }
    }

    /// Takes a sample of resident memory: raises the alarm above the watermark and
    /// clears it below `CLEAR_BELOW` of it, logging each change.
    pub fn update(&self, resident: u64) {
        self.resident.store(resident, Ordering::Relaxed);
        let limit = self.limit();
        let raised = self.is_raised();
        if !raised && resident > limit {
            self.raised.store(true, Ordering::Release);
            self.raised_count.fetch_add(1, Ordering::Relaxed);
            warn!(
                resident_bytes = resident,
                watermark_bytes = limit,
                "memory alarm: resident memory is above memory-high-watermark; publishers are paused until it falls"
            );
        } else if raised && (resident as f64) < limit as f64 * CLEAR_BELOW {
            self.raised.store(false, Ordering::Release);
            self.cleared.notify_waiters();
            info!(
                resident_bytes = resident,
                watermark_bytes = limit,
                "memory alarm cleared: publishers resume"
            );
        }
    }

    /// Samples the process's resident memory every `every` until `stop`.
    pub async fn watch(
        self: std::sync::Arc<MemoryAlarm>,
        every: Duration,
        stop: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Some(resident) = resident_bytes() {
                self.update(resident);
            }
        }
    }
}

/// The watermark for a configured `memory-high-watermark`: the value itself, or for 0,
/// [`DEFAULT_SHARE`] of the memory this process may use (the cgroup's limit when there
/// is one, else the machine's). `u64::MAX` (no alarm) where neither can be read.
pub fn watermark(configured: u64) -> u64 {
    if configured > 0 {
        return configured;
    }
    usable_memory().map_or(u64::MAX, |bytes| (bytes as f64 * DEFAULT_SHARE) as u64)
}

/// The memory this process may use: the smaller of the cgroup's limit and the
/// machine's memory, where either can be read.
fn usable_memory() -> Option<u64> {
    [cgroup_limit(), physical_memory()]
        .into_iter()
        .flatten()
        .min()
}

/// The share of the machine's (or the cgroup's) memory that all queues may hold when
/// `max-queued-bytes` is 0.
pub const QUEUED_SHARE: f64 = 0.25;

/// The global queue budget for a configured `max-queued-bytes`: the value itself, or for
/// 0, [`QUEUED_SHARE`] of the memory this process may use. Unlimited where that cannot
/// be read.
pub fn queued_bytes_limit(configured: u64) -> usize {
    if configured > 0 {
        return usize::try_from(configured).unwrap_or(usize::MAX);
    }
    usable_memory().map_or(usize::MAX, |bytes| (bytes as f64 * QUEUED_SHARE) as usize)
}

/// Resident bytes of this process, `VmRSS` from `/proc/self/status` (Linux only).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&status, "VmRSS:")
}

/// A `Name:   123 kB` line's value in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(name))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `MemTotal` from `/proc/meminfo`.
fn physical_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&meminfo, "MemTotal:")
}

/// The cgroup v2 memory limit, when one is set.
fn cgroup_limit() -> Option<u64> {
    let raw = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?;
    raw.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn raised_above_the_watermark_and_cleared_well_below_it() {
        let alarm = std::sync::Arc::new(MemoryAlarm::default());
        alarm.set_limit(1000);
        alarm.update(900);
        assert!(!alarm.is_raised());
        alarm.update(1001);
        assert!(alarm.is_raised());
        let waiting = {
            let alarm = alarm.clone();
            tokio::spawn(async move { alarm.cleared().await })
        };
        alarm.update(960);
        tokio::task::yield_now().await;
        assert!(alarm.is_raised(), "still within the hysteresis band");
        assert!(!waiting.is_finished());
        alarm.update(900);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken when cleared")
            .unwrap();
        assert_eq!(alarm.raised_count(), 1);
    }

    #[test]
    fn the_default_watermark_is_a_share_of_what_the_process_may_use() {
        assert_eq!(watermark(12345), 12345);
        let automatic = watermark(0);
        if let Some(total) = physical_memory() {
            assert!(automatic <= (total as f64 * DEFAULT_SHARE) as u64 + 1);
            assert!(automatic > 0);
        }
        assert!(resident_bytes().is_some_and(|bytes| bytes > 0) || !cfg!(target_os = "linux"));
    }
}
