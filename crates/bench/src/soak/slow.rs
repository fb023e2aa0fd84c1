//! Slow readers: topic subscribers that read far slower than the topic flows, which the
//! broker should cut off.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clients::{CLOSE_TIMEOUT, pause, raw_connect};
use super::stats::Stats;
use crate::conn::Target;

/// How long a slow reader reads slowly before it checks whether the broker cut it off.
pub(super) const SLOW_PHASE: Duration = Duration::from_secs(15);

/// Subscribes to the topic with a small receive buffer and reads 4 KiB every 200 ms for
/// [`SLOW_PHASE`], far slower than the topic flows; the broker should cut it off as a slow
/// consumer. Then it reads as fast as it can to find out whether it was: whatever the
/// kernel still holds comes first, then the close.
pub(super) async fn slow_reader(
    target: Target,
    topic: String,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    while !stop.is_cancelled() {
        let Ok(mut stream) = raw_connect(&target, Some(16 * 1024), &stats).await else {
            pause(&stop, Duration::from_millis(500)).await;
            continue;
        };
        stats.slow_sessions.fetch_add(1, Ordering::Relaxed);
        let subscribe = format!("SUBSCRIBE\nid:0\ndestination:{topic}\n\n\0");
        if stream.write_all(subscribe.as_bytes()).await.is_err() {
            continue;
        }
        let slow_until = Instant::now() + SLOW_PHASE;
        let mut closed = false;
        while Instant::now() < slow_until && !closed {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            closed = matches!(stream.read(&mut buffer[..4096]).await, Ok(0) | Err(_));
        }
        let catch_up = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while !matches!(stream.read(&mut buffer).await, Ok(0) | Err(_)) {}
        });
        if closed || catch_up.await.is_ok() {
            stats.slow_closed.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.slow_kept.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_zero_linger();
        }
    }
}
