//! Queue consumers that vanish: cohorts whose members, in every ack mode, all leave at
//! one moment, each in another way.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use postbox_stomp::{Command, Frame};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clients::{CLOSE_TIMEOUT, closes_within, connect, pause, receipt_within};
use super::rng::Rng;
use super::stats::Stats;
use crate::conn::{self, Target};

/// How a consumer leaves.
#[derive(Debug, Clone, Copy)]
pub(super) enum Exit {
    /// `SO_LINGER` 0 and close: the broker sees a reset.
    Reset,
    /// Half-close without DISCONNECT; the broker should close its side.
    Fin,
    /// DISCONNECT with a receipt.
    Disconnect,
    /// Stop reading for a while with messages arriving, then close.
    StopReading,
}

/// The ways of leaving, which members of a cohort take in turn.
const EXITS: [Exit; 4] = [Exit::Reset, Exit::Fin, Exit::Disconnect, Exit::StopReading];
/// The ack modes, as SUBSCRIBE spells them, which members take in turn.
const ACK_MODES: [&str; 3] = ["auto", "client", "client-individual"];

/// Cohort after cohort of consumers on `queue`: each cohort lives a random while, then
/// all its members leave at the same moment, each with another ack mode and exit.
pub(super) async fn cohorts(
    target: Target,
    queue: String,
    size: usize,
    index: usize,
    stats: Arc<Stats>,
    started: Instant,
    stop: CancellationToken,
) {
    let mut rng = Rng::new();
    let mut round = index;
    while !stop.is_cancelled() {
        let leave_at = Instant::now() + Duration::from_millis(rng.between(300, 4000));
        let mut members = JoinSet::new();
        for member in 0..size {
            members.spawn(consumer(
                target.clone(),
                queue.clone(),
                ACK_MODES[(round + member) % ACK_MODES.len()],
                EXITS[(round + member) % EXITS.len()],
                rng.between(1, 200),
                leave_at,
                stats.clone(),
                started,
                stop.clone(),
            ));
        }
        while members.join_next().await.is_some() {}
        round += 1;
    }
}

/// One member of a cohort: subscribes with `ack` and `prefetch`, acknowledges as its
/// mode asks (now and then a NACK), and at `leave_at` leaves the way `exit` says, checking
/// that the broker closes what it should.
#[allow(clippy::too_many_arguments)]
async fn consumer(
    target: Target,
    queue: String,
    ack: &'static str,
    exit: Exit,
    prefetch: u64,
    leave_at: Instant,
    stats: Arc<Stats>,
    started: Instant,
    stop: CancellationToken,
) {
    let Ok((mut reader, mut writer)) = connect(&target, &stats).await else {
        return;
    };
    stats.consumers.fetch_add(1, Ordering::Relaxed);
    let subscribe = Frame::new(Command::Subscribe)
        .header("id", "0")
        .header("destination", queue.as_str())
        .header("ack", ack)
        .header("prefetch-count", prefetch.to_string());
    if writer.send(&subscribe).await.is_err() {
        return;
    }
    let mut received = 0u64;
    let problem = loop {
        let mut last_ack: Option<Bytes> = None;
        let mut refused = None;
        loop {
            let ack_id = match reader.buffered_message() {
                Ok(Some(conn::Received::Message { ack, .. })) => ack,
                Ok(Some(conn::Received::Frame(frame))) if frame.command == Command::Message => {
                    frame
                        .get("ack")
                        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                }
                Ok(Some(conn::Received::Frame(frame))) => {
                    refused = Some(format!("{} {:?}", frame.command, frame.get("message")));
                    break;
                }
                Ok(None) => break,
                Err(error) => {
                    refused = Some(error.to_string());
                    break;
                }
            };
            received += 1;
            stats.delivered.fetch_add(1, Ordering::Relaxed);
            match (ack, ack_id) {
                ("client-individual", Some(id)) => {
                    // Now and then a NACK, so redelivery and dead-lettering run too.
                    let verb: &[u8] = if received % 37 == 0 { b"NACK" } else { b"ACK" };
                    writer.buf.extend_from_slice(verb);
                    writer.buf.extend_from_slice(b"\nid:");
                    writer.buf.extend_from_slice(&id);
                    writer.buf.extend_from_slice(b"\n\n\0");
                }
                ("client", Some(id)) => last_ack = Some(id),
                _ => {}
            }
        }
        if refused.is_some() {
            break refused;
        }
        // Cumulative acknowledgement of everything so far, once per read.
        if let Some(id) = last_ack {
            writer.buf.extend_from_slice(b"ACK\nid:");
            writer.buf.extend_from_slice(&id);
            writer.buf.extend_from_slice(b"\n\n\0");
        }
        if !writer.buf.is_empty() {
            let flushed = tokio::select! {
                _ = stop.cancelled() => break None,
                _ = tokio::time::sleep_until(leave_at) => break None,
                flushed = writer.flush() => flushed,
            };
            if let Err(error) = flushed {
                break Some(error.to_string());
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break None,
            _ = tokio::time::sleep_until(leave_at) => break None,
            more = reader.fill() => match more {
                Ok(true) => {}
                Ok(false) => break Some("closed".to_owned()),
                Err(error) => break Some(error.to_string()),
            },
        }
    };
    if let Some(problem) = problem {
        stats.anomaly(
            started,
            format!("a {ack} consumer (prefetch {prefetch}) was cut off: {problem}"),
        );
        return;
    }
    stats.exits[exit as usize].fetch_add(1, Ordering::Relaxed);
    match exit {
        Exit::Reset => {
            if let Some(stream) = conn::into_tcp(reader, writer) {
                let _ = stream.set_zero_linger();
            }
        }
        Exit::Fin => {
            let _ = writer.shutdown().await;
            if !closes_within(&mut reader, CLOSE_TIMEOUT).await {
                stats.anomaly(
                    started,
                    format!(
                        "a {ack} consumer half-closed (FIN, no DISCONNECT) and the broker \
                         had not closed its side {} s later",
                        CLOSE_TIMEOUT.as_secs()
                    ),
                );
            }
        }
        Exit::Disconnect => {
            let answered = writer
                .send(&Frame::new(Command::Disconnect).header("receipt", "bye"))
                .await
                .is_ok()
                && receipt_within(&mut reader, "bye", CLOSE_TIMEOUT).await;
            if !answered {
                stats.anomaly(
                    started,
                    format!("a {ack} consumer's DISCONNECT got no RECEIPT"),
                );
            } else if !closes_within(&mut reader, CLOSE_TIMEOUT).await {
                stats.anomaly(
                    started,
                    format!("the broker kept a {ack} consumer open after DISCONNECT's RECEIPT"),
                );
            }
        }
        Exit::StopReading => {
            let idle = Duration::from_millis(Rng::new().between(500, 3000));
            pause(&stop, idle).await;
        }
    }
}
