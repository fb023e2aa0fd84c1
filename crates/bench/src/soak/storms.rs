//! Reconnect storms: waves of connections opened together and dropped together.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use postbox_stomp::{Command, Frame};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::clients::CONNECT_TIMEOUT;
use super::stats::Stats;
use crate::conn::{self, Target};

/// Every `every`, opens `size` connections at once, subscribes each to the topic, and
/// drops them all together in mixed ways.
pub(super) async fn storms(
    target: Target,
    topic: String,
    size: usize,
    every: Duration,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        stats.storms.fetch_add(1, Ordering::Relaxed);
        let mut wave = JoinSet::new();
        for index in 0..size {
            let target = target.clone();
            let topic = topic.clone();
            wave.spawn(async move {
                let began = Instant::now();
                let connected = tokio::time::timeout(CONNECT_TIMEOUT, conn::connect(&target)).await;
                let Ok(Ok((reader, mut writer))) = connected else {
                    return Err(());
                };
                let took = began.elapsed();
                let _ = writer
                    .send(
                        &Frame::new(Command::Subscribe)
                            .header("id", "0")
                            .header("destination", topic.as_str()),
                    )
                    .await;
                Ok((index, reader, writer, took))
            });
        }
        let mut open = Vec::with_capacity(size);
        while let Some(joined) = wave.join_next().await {
            match joined {
                Ok(Ok((index, reader, writer, took))) => {
                    stats.connects.fetch_add(1, Ordering::Relaxed);
                    stats.storm_connects.fetch_add(1, Ordering::Relaxed);
                    stats
                        .storm_slowest_us
                        .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
                    open.push((index, reader, writer));
                }
                _ => {
                    stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    stats.storm_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // All leave at once: a third reset, a third DISCONNECT, a third just close.
        for (index, reader, mut writer) in open {
            match index % 3 {
                0 => {
                    if let Some(stream) = conn::into_tcp(reader, writer) {
                        let _ = stream.set_zero_linger();
                    }
                }
                1 => {
                    writer.queue(&Frame::new(Command::Disconnect));
                    let _ = tokio::time::timeout(Duration::from_millis(100), writer.flush()).await;
                }
                _ => drop((reader, writer)),
            }
        }
    }
}
