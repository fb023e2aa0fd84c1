//! Bad input: one connection at a time with one kind of malformed or oversized frame,
//! each of which the broker should answer with an ERROR and a close.

use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::clients::{CONNECT_TIMEOUT, raw_connect};
use super::rng::Rng;
use super::stats::Stats;
use crate::conn::Target;

/// Time the broker has to answer a bad input with ERROR and close; longer than its
/// default CONNECT timeout (10 s), which is what answers some inputs before CONNECT.
const BAD_TIMEOUT: Duration = Duration::from_secs(15);

/// Bad-input connections waiting for their answer at once, at most.
const BAD_IN_FLIGHT: usize = 64;

/// Bad input, one kind per connection.
const BAD_KINDS: [&str; 13] = [
    "nul-in-header-value",
    "nul-in-header-name",
    "garbage",
    "garbage-without-line-end",
    "garbage-before-connect",
    "huge-content-length",
    "oversize-frame",
    "long-header-line",
    "too-many-headers",
    "bad-content-length",
    "unknown-command",
    "send-before-connect",
    "body-without-nul",
];

/// One connection per `every` with one kind of bad input; the broker should answer
/// each with an ERROR and close.
pub(super) async fn bad_frames(
    target: Target,
    void: String,
    every: Duration,
    stats: Arc<Stats>,
    started: Instant,
    stop: CancellationToken,
) {
    let mut rng = Rng::new();
    let mut round = 0usize;
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // One connection per tick, each waiting for its answer on its own, so one that is
    // never answered does not hold the others back; at most BAD_IN_FLIGHT at once.
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= BAD_IN_FLIGHT {
            continue;
        }
        let kind = BAD_KINDS[round % BAD_KINDS.len()];
        round += 1;
        let input = bad_input(kind, &void, &mut rng);
        in_flight.spawn(bad_frame(
            target.clone(),
            kind,
            input,
            stats.clone(),
            started,
            stop.clone(),
        ));
    }
}

/// One connection with one bad input, and what the broker made of it.
async fn bad_frame(
    target: Target,
    kind: &'static str,
    (head, tail): (Vec<u8>, usize),
    stats: Arc<Stats>,
    started: Instant,
    stop: CancellationToken,
) {
    let before_connect = matches!(kind, "garbage-before-connect" | "send-before-connect");
    let stream = if before_connect {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target.addr)).await {
            Ok(Ok(stream)) => stream,
            _ => {
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    } else {
        match raw_connect(&target, None, &stats).await {
            Ok(stream) => stream,
            Err(_) => return,
        }
    };
    stats.bad_sent.fetch_add(1, Ordering::Relaxed);
    let outcome = tokio::select! {
        _ = stop.cancelled() => return,
        outcome = send_bad(stream, head, tail) => outcome,
    };
    match outcome {
        BadOutcome::Answered => {
            stats.bad_answered.fetch_add(1, Ordering::Relaxed);
        }
        BadOutcome::ClosedSilently(how) => {
            stats.bad_closed_silently.fetch_add(1, Ordering::Relaxed);
            stats.anomaly(started, format!("bad input {kind}: {how} without an ERROR"));
        }
        BadOutcome::LeftOpen(seen) => {
            stats.bad_left_open.fetch_add(1, Ordering::Relaxed);
            stats.anomaly(
                started,
                format!(
                    "bad input {kind}: connection still open {} s later ({seen})",
                    BAD_TIMEOUT.as_secs()
                ),
            );
        }
    }
}

/// The bytes of one bad input: a head, then `tail` bytes of `x` sent in chunks.
fn bad_input(kind: &str, void: &str, rng: &mut Rng) -> (Vec<u8>, usize) {
    let frame = |s: String| (s.into_bytes(), 0);
    match kind {
        "nul-in-header-value" => frame(format!(
            "SEND\ndestination:{void}\nx:a\0ERROR\nmessage:forged\n\n\0"
        )),
        "nul-in-header-name" => frame(format!("SEND\ndestination:{void}\nx\0y:1\n\nbody\0")),
        "garbage" | "garbage-before-connect" => {
            let mut bytes: Vec<u8> = (0..1024).map(|_| rng.next() as u8).collect();
            // Bytes that open no valid command, and a line end soon, so the command
            // line is complete and wrong.
            bytes[0] = 0xff;
            bytes[64] = b'\n';
            (bytes, 0)
        }
        // A command line that can never become a command, and no line end yet.
        "garbage-without-line-end" => {
            let bytes: Vec<u8> = (0..1024)
                .map(|_| match rng.next() as u8 {
                    b'\n' | b'\r' | 0 => 0xff,
                    b => b,
                })
                .collect();
            (bytes, 0)
        }
        "huge-content-length" => frame(format!(
            "SEND\ndestination:{void}\ncontent-length:1073741824\n\n"
        )),
        // 16 MiB of body and no NUL, past any sensible frame limit.
        "oversize-frame" => (
            format!("SEND\ndestination:{void}\n\n").into_bytes(),
            16 * 1024 * 1024,
        ),
        "long-header-line" => (
            format!("SEND\ndestination:{void}\nx:").into_bytes(),
            1024 * 1024,
        ),
        "too-many-headers" => {
            let mut head = format!("SEND\ndestination:{void}\n");
            for i in 0..5000 {
                let _ = writeln!(head, "h{i}:v");
            }
            head.push_str("\n\0");
            frame(head)
        }
        "bad-content-length" => frame(format!(
            "SEND\ndestination:{void}\ncontent-length:12abc\n\nbody\0"
        )),
        "unknown-command" => frame("FROB\nx:y\n\n\0".to_owned()),
        "send-before-connect" => frame(format!("SEND\ndestination:{void}\n\nearly\0")),
        _ => frame(format!(
            "SEND\ndestination:{void}\ncontent-length:2\n\nabcdef\0"
        )),
    }
}

/// What the broker did with one bad input.
#[derive(Debug)]
enum BadOutcome {
    /// An ERROR came, then the close.
    Answered,
    /// Closed (or reset) with no ERROR seen.
    ClosedSilently(String),
    /// Neither an ERROR and close nor a close within the timeout.
    LeftOpen(String),
}

/// Writes the input (the head, then `tail` bytes of filler) while reading the answer,
/// and waits up to [`BAD_TIMEOUT`] for the close.
async fn send_bad(stream: TcpStream, head: Vec<u8>, tail: usize) -> BadOutcome {
    let (mut read, mut write) = stream.into_split();
    let writing = tokio::spawn(async move {
        write.write_all(&head).await?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = tail;
        while left > 0 {
            let n = left.min(chunk.len());
            write.write_all(&chunk[..n]).await?;
            left -= n;
        }
        // Keep the write half (no FIN) until the reader is done.
        Ok::<_, io::Error>(write)
    });
    // Only the start of what comes back matters: is there an ERROR?
    let mut seen = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    let result = tokio::time::timeout(BAD_TIMEOUT, async {
        loop {
            match read.read(&mut buffer).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    if seen.len() < 4096 {
                        seen.extend_from_slice(&buffer[..n.min(4096)]);
                    }
                }
                Err(error) => return Err(error),
            }
        }
    })
    .await;
    writing.abort();
    let errored = memchr::memmem::find(&seen, b"ERROR\n").is_some();
    match result {
        Ok(_) if errored => BadOutcome::Answered,
        Ok(Ok(())) => BadOutcome::ClosedSilently("closed".to_owned()),
        Ok(Err(error)) => BadOutcome::ClosedSilently(format!("reset ({error})")),
        Err(_) => BadOutcome::LeftOpen(if errored {
            "after an ERROR".to_owned()
        } else if seen.is_empty() {
            "no answer at all".to_owned()
        } else {
            format!(
                "got {:?}",
                String::from_utf8_lossy(&seen[..seen.len().min(80)])
            )
        }),
    }
}
