//! Receipt floods: clients that send receipted frames and never read, which the broker
//! should stop reading and then close.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clients::{pause, raw_connect};
use super::stats::Stats;
use crate::conn::Target;

/// A receipt flood that the broker has not closed after this long is an anomaly (its
/// outbound stall time is 10 s by default).
pub(super) const FLOOD_LIMIT: Duration = Duration::from_secs(40);

/// Sends receipted SENDs to a destination nobody reads as fast as the broker takes them,
/// never reading a byte; the broker should stop reading it and then close it.
pub(super) async fn receipt_flood(
    target: Target,
    void: String,
    stats: Arc<Stats>,
    started: Instant,
    stop: CancellationToken,
) {
    let mut chunk = Vec::new();
    for i in 0..256 {
        let _ = std::io::Write::write_fmt(
            &mut chunk,
            format_args!("SEND\ndestination:{void}\nreceipt:flood-{i}\n\nx\0"),
        );
    }
    while !stop.is_cancelled() {
        let Ok(mut stream) = raw_connect(&target, None, &stats).await else {
            pause(&stop, Duration::from_millis(500)).await;
            continue;
        };
        stats.flood_sessions.fetch_add(1, Ordering::Relaxed);
        let flooding = async {
            loop {
                stream.write_all(&chunk).await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), io::Error>(())
        };
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = flooding => { stats.flood_closed.fetch_add(1, Ordering::Relaxed); }
            _ = tokio::time::sleep(FLOOD_LIMIT) => {
                stats.flood_outlived.fetch_add(1, Ordering::Relaxed);
                stats.anomaly(started, format!(
                    "a client flooding receipts without reading was still open after {} s",
                    FLOOD_LIMIT.as_secs()
                ));
            }
        }
        let _ = stream.set_zero_linger();
        drop(stream);
        pause(&stop, Duration::from_millis(500)).await;
    }
}
