//! Queue load: P producers send to one queue, C consumers compete for the messages and
//! acknowledge each one (or use auto acknowledgement).
//!
//! Every body carries its producer and sequence number, so the run checks that each
//! message sent was delivered exactly once and reports duplicates and missing ones.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use hdrhistogram::Histogram;
use postbox_stomp::{Command, Frame};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Target};
use crate::report::{self, Report};
use crate::{DONE, MEASURE, WARMUP, clock_us};

/// Queue scenario parameters.
#[derive(Debug, Clone)]
pub struct Options {
    pub producers: usize,
    pub consumers: usize,
    pub size: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// `auto`, `client` or `client-individual`.
    pub ack: String,
    pub prefetch: usize,
    /// Most messages sent but not yet consumed.
    pub window: u64,
}

struct Shared {
    phase: AtomicU8,
    sent: AtomicU64,
    sent_measured: AtomicU64,
    consumed: AtomicU64,
}

/// What a consumer saw.
struct Seen {
    ids: HashSet<u64>,
    received: u64,
    measured: u64,
    histogram: Histogram<u64>,
}

/// Body layout: send time (8), producer (4), sequence (8), padding.
const HEADER: usize = 20;

pub async fn run(target: &Target, options: &Options) -> io::Result<Report> {
    let queue = crate::unique_destination("/queue/bench");
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMUP),
        sent: AtomicU64::new(0),
        sent_measured: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
    });
    let stop = CancellationToken::new();

    let mut consumers = Vec::new();
    for _ in 0..options.consumers {
        let (mut reader, mut writer) = conn::connect(target).await?;
        let subscribe = Frame::new(Command::Subscribe)
            .header("id", "0")
            .header("destination", queue.as_str())
            .header("ack", options.ack.as_str())
            .header("prefetch-count", options.prefetch.to_string())
            .header("receipt", "subscribed");
        writer.send(&subscribe).await?;
        reader.expect(Command::Receipt).await?;
        let shared = shared.clone();
        let stop = stop.clone();
        let acks = options.ack != "auto";
        consumers.push(tokio::spawn(async move {
            consume(&mut reader, &mut writer, acks, &shared, &stop).await
        }));
    }

    let mut producers = Vec::new();
    for index in 0..options.producers {
        let (reader, writer) = conn::connect(target).await?;
        let shared = shared.clone();
        let stop = stop.clone();
        let options = options.clone();
        let queue = queue.clone();
        producers.push(tokio::spawn(async move {
            produce(
                reader,
                writer,
                index as u32,
                &queue,
                &options,
                &shared,
                &stop,
            )
            .await
        }));
    }

    tokio::time::sleep(options.warmup).await;
    shared.phase.store(MEASURE, Ordering::SeqCst);
    let started = Instant::now();
    tokio::time::sleep(options.duration).await;
    shared.phase.store(DONE, Ordering::SeqCst);
    let measured = started.elapsed();

    let mut sent_by_producer = Vec::new();
    for producer in producers {
        sent_by_producer.push(producer.await.map_err(io::Error::other)??);
    }
    let total_sent: u64 = sent_by_producer.iter().sum();
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while shared.consumed.load(Ordering::SeqCst) < total_sent && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A little longer, so duplicates arriving late are seen too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();

    let mut latency = report::histogram();
    let mut delivered = 0;
    let mut received = 0;
    let mut distinct: HashSet<u64> = HashSet::new();
    for consumer in consumers {
        let seen = consumer.await.map_err(io::Error::other)??;
        latency
            .add(seen.histogram)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        delivered += seen.measured;
        received += seen.received;
        distinct.extend(seen.ids);
    }
    let expected: u64 = total_sent;
    let missing = (0..options.producers as u64)
        .flat_map(|p| (0..sent_by_producer[p as usize]).map(move |s| key(p as u32, s)))
        .filter(|k| !distinct.contains(k))
        .count() as u64;
    let duplicates = received - distinct.len() as u64;
    Ok(Report {
        scenario: format!(
            "queue: {} producer(s) x {} consumer(s), {} B bodies, ack {}, prefetch {}",
            options.producers, options.consumers, options.size, options.ack, options.prefetch
        ),
        measured,
        published: shared.sent_measured.load(Ordering::SeqCst),
        delivered,
        latency,
        extra: vec![
            ("sent".into(), expected.into()),
            ("received".into(), received.into()),
            ("duplicates".into(), duplicates.into()),
            ("missing".into(), missing.into()),
        ],
    })
}

fn key(producer: u32, sequence: u64) -> u64 {
    (u64::from(producer) << 40) | sequence
}

async fn consume(
    reader: &mut conn::Reader,
    writer: &mut conn::Writer,
    acks: bool,
    shared: &Shared,
    stop: &CancellationToken,
) -> io::Result<Seen> {
    let mut seen = Seen {
        ids: HashSet::new(),
        received: 0,
        measured: 0,
        histogram: report::histogram(),
    };
    loop {
        // Everything that one read brought arrived at the same moment.
        let arrived = clock_us();
        let measuring = shared.phase.load(Ordering::Relaxed) == MEASURE;
        let mut batch = 0;
        while let Some(received) = reader.buffered_message()? {
            let (body, ack) = match received {
                conn::Received::Message { body, ack } => (body, ack),
                conn::Received::Frame(frame) if frame.command == Command::Message => {
                    if acks && let Some(id) = frame.get("ack") {
                        writer.queue(&Frame::new(Command::Ack).header("id", id));
                    }
                    (frame.body, None)
                }
                conn::Received::Frame(frame) => {
                    return Err(io::Error::other(format!(
                        "consumer got {} {:?}",
                        frame.command,
                        frame.get("message")
                    )));
                }
            };
            if body.len() >= HEADER {
                let sent = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
                let producer = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
                let sequence = u64::from_le_bytes(body[12..20].try_into().expect("8 bytes"));
                seen.ids.insert(key(producer, sequence));
                if measuring {
                    let _ = seen.histogram.record(arrived.saturating_sub(sent).max(1));
                    seen.measured += 1;
                }
            }
            batch += 1;
            if acks && let Some(id) = ack {
                // The raw header value, escapes and all, is exactly what ACK's id needs.
                writer.buf.extend_from_slice(b"ACK\nid:");
                writer.buf.extend_from_slice(&id);
                writer.buf.extend_from_slice(b"\n\n\0");
            }
        }
        seen.received += batch;
        shared.consumed.fetch_add(batch, Ordering::Relaxed);
        if !writer.buf.is_empty() {
            writer.flush().await?;
        }
        let more = tokio::select! {
            _ = stop.cancelled() => return Ok(seen),
            more = reader.fill() => more?,
        };
        if !more {
            return Err(io::Error::other("consumer: connection closed"));
        }
    }
}

async fn produce(
    mut reader: conn::Reader,
    mut writer: conn::Writer,
    index: u32,
    queue: &str,
    options: &Options,
    shared: &Shared,
    stop: &CancellationToken,
) -> io::Result<u64> {
    let watch = tokio::spawn(async move { reader.next().await });
    let size = options.size.max(HEADER);
    let mut template = BytesMut::new();
    template.put_slice(
        format!("SEND\ndestination:{queue}\ncontent-type:application/octet-stream\ncontent-length:{size}\n\n")
            .as_bytes(),
    );
    let body_at = template.len();
    template.put_bytes(b'x', size);
    template.put_u8(0);
    let mut sequence: u64 = 0;
    while !stop.is_cancelled() && shared.phase.load(Ordering::Relaxed) != DONE {
        if watch.is_finished() {
            let frame = watch.await.map_err(io::Error::other)??;
            return Err(io::Error::other(format!(
                "producer got {:?}",
                frame.map(|f| (f.command, f.get("message").map(str::to_owned)))
            )));
        }
        while shared.sent.load(Ordering::Relaxed)
            > shared.consumed.load(Ordering::Relaxed) + options.window
        {
            if stop.is_cancelled() || shared.phase.load(Ordering::Relaxed) == DONE {
                break;
            }
            tokio::time::sleep(Duration::from_micros(50)).await;
        }
        const BATCH: u64 = 32;
        for _ in 0..BATCH {
            let at = writer.buf.len() + body_at;
            writer.buf.extend_from_slice(&template);
            writer.buf[at..at + 8].copy_from_slice(&clock_us().to_le_bytes());
            writer.buf[at + 8..at + 12].copy_from_slice(&index.to_le_bytes());
            writer.buf[at + 12..at + 20].copy_from_slice(&sequence.to_le_bytes());
            sequence += 1;
        }
        writer.flush().await?;
        shared.sent.fetch_add(BATCH, Ordering::Relaxed);
        if shared.phase.load(Ordering::Relaxed) == MEASURE {
            shared.sent_measured.fetch_add(BATCH, Ordering::Relaxed);
        }
    }
    // A receipt proves the broker has read (and so accepted) every SEND before it.
    writer
        .send(&Frame::new(Command::Disconnect).header("receipt", "done"))
        .await?;
    match tokio::time::timeout(Duration::from_secs(10), watch).await {
        Ok(Ok(Ok(Some(frame)))) if frame.command == Command::Receipt => Ok(sequence),
        other => Err(io::Error::other(format!(
            "producer: no receipt at the end: {other:?}"
        ))),
    }
}
