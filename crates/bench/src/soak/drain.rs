//! Emptying the queues once the load has stopped, so that what the broker still holds
//! afterwards is its own and not queued messages.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use postbox_stomp::{Command, Frame};
use tokio::time::Instant;

use super::clients::CONNECT_TIMEOUT;
use super::stats::Stats;
use crate::conn::{self, Target};

/// Empties `queue` with an auto-ack subscriber until it has been quiet for a second.
pub(super) async fn drain(target: Target, queue: String, stats: Arc<Stats>) {
    let Ok(Ok((mut reader, mut writer))) =
        tokio::time::timeout(CONNECT_TIMEOUT, conn::connect(&target)).await
    else {
        return;
    };
    let subscribe = Frame::new(Command::Subscribe)
        .header("id", "0")
        .header("destination", queue.as_str())
        .header("ack", "auto");
    if writer.send(&subscribe).await.is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        while let Ok(Some(conn::Received::Message { .. })) = reader.buffered_message() {
            stats.drained.fetch_add(1, Ordering::Relaxed);
        }
        match tokio::time::timeout(Duration::from_secs(1), reader.fill()).await {
            Ok(Ok(true)) => {}
            _ => break,
        }
    }
    let _ = writer.send(&Frame::new(Command::Disconnect)).await;
}
