//! The well-behaved load: publishers to the topic and the queues at a steady rate, and
//! topic subscribers that read promptly.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use postbox_stomp::{Command, Frame};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::clients::{connect, pause};
use super::rng::Rng;
use super::stats::Stats;
use crate::conn::{self, Target};

/// Bodies are slices of one shared buffer.
fn filler() -> Bytes {
    Bytes::from(vec![b'x'; 4096])
}

/// Sends to `destinations` in turn at `rate` messages per second, reconnecting when the
/// broker drops it.
pub(super) async fn publisher(
    target: Target,
    destinations: Vec<String>,
    rate: f64,
    stats: Arc<Stats>,
    started: Instant,
    stop: CancellationToken,
) {
    let mut rng = Rng::new();
    let filler = filler();
    let mut turn = 0usize;
    while !stop.is_cancelled() {
        let Ok((mut reader, mut writer)) = connect(&target, &stats).await else {
            pause(&stop, Duration::from_millis(500)).await;
            continue;
        };
        let mut ticker = tokio::time::interval(Duration::from_millis(10));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut owed = 0.0;
        let ended = loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                more = reader.fill() => match more {
                    Ok(true) => match reader.buffered() {
                        Ok(Some(frame)) => break format!("{} {:?}", frame.command, frame.get("message")),
                        Ok(None) => continue,
                        Err(error) => break error.to_string(),
                    },
                    Ok(false) => break "closed".to_owned(),
                    Err(error) => break error.to_string(),
                },
                _ = ticker.tick() => {}
            }
            owed += rate / 100.0;
            let count = owed as u64;
            owed -= count as f64;
            for _ in 0..count {
                let destination = &destinations[turn % destinations.len()];
                turn += 1;
                let size = rng.between(16, filler.len() as u64) as usize;
                let _ = write!(
                    Hex(&mut writer.buf),
                    "SEND\ndestination:{destination}\ncontent-length:{size}\n\n"
                );
                writer.buf.extend_from_slice(&filler[..size]);
                writer.buf.extend_from_slice(b"\0");
            }
            // A queue that is full stops reading this socket: the write waits, the
            // buffer does not grow since the next batch comes after it.
            let flushed = tokio::select! {
                _ = stop.cancelled() => return,
                flushed = writer.flush() => flushed,
            };
            if let Err(error) = flushed {
                break error.to_string();
            }
            stats.published.fetch_add(count, Ordering::Relaxed);
        };
        stats.publisher_reconnects.fetch_add(1, Ordering::Relaxed);
        stats.anomaly(started, format!("a publisher was cut off: {ended}"));
        pause(&stop, Duration::from_millis(200)).await;
    }
}

/// A topic subscriber that reads everything promptly.
pub(super) async fn subscriber(
    target: Target,
    topic: String,
    stats: Arc<Stats>,
    started: Instant,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let Ok((mut reader, mut writer)) = connect(&target, &stats).await else {
            pause(&stop, Duration::from_millis(500)).await;
            continue;
        };
        let subscribe = Frame::new(Command::Subscribe)
            .header("id", "0")
            .header("destination", topic.as_str());
        if writer.send(&subscribe).await.is_err() {
            continue;
        }
        let ended = loop {
            match reader.buffered_message() {
                Ok(Some(conn::Received::Message { .. })) => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Ok(Some(conn::Received::Frame(frame))) if frame.command == Command::Message => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Ok(Some(conn::Received::Frame(frame))) => {
                    break format!("{} {:?}", frame.command, frame.get("message"));
                }
                Ok(None) => {}
                Err(error) => break error.to_string(),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                more = reader.fill() => match more {
                    Ok(true) => {}
                    Ok(false) => break "closed".to_owned(),
                    Err(error) => break error.to_string(),
                },
            }
        };
        stats.anomaly(
            started,
            format!("a prompt topic subscriber was cut off: {ended}"),
        );
    }
}

/// `write!` into a `BytesMut`.
struct Hex<'a>(&'a mut BytesMut);

impl std::fmt::Write for Hex<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}
