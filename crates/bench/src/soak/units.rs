//! How the soak prints times, latencies and sizes.

use std::time::Duration;

/// `m:ss` (or `h:mm:ss`).
pub(super) fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Microseconds as milliseconds with one decimal.
pub(super) fn millis(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// Bytes as MiB with one decimal.
pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
