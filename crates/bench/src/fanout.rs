//! Topic fan-out: P publishers send to one topic, S subscribers each receive everything.
//!
//! Publishers stamp each body with the send time, subscribers record the end-to-end
//! latency. Unlimited runs keep at most `window` messages in flight (published but not
//! yet received by the slowest subscriber), so the run measures the throughput a broker
//! can sustain rather than how fast its buffers fill.

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
use crate::{MEASURE, WARMUP, clock_us};

/// Fan-out parameters.
#[derive(Debug, Clone)]
pub struct Options {
    pub publishers: usize,
    pub subscribers: usize,
    pub size: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Total messages per second across publishers; `None` for as fast as possible.
    pub rate: Option<u64>,
    pub window: u64,
}

struct Shared {
    phase: AtomicU8,
    published: AtomicU64,
    published_measured: AtomicU64,
    received: Vec<crate::Padded<AtomicU64>>,
}

impl Shared {
    fn slowest(&self) -> u64 {
        self.received
            .iter()
            .map(|r| r.0.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }
}

/// Runs the scenario: subscribers connect to `target`, publishers to `publish_target`
/// (the same broker, or another node of its cluster).
pub async fn run(
    target: &Target,
    publish_target: &Target,
    options: &Options,
) -> io::Result<Report> {
    let destination = crate::unique_destination("/topic/bench");
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMUP),
        published: AtomicU64::new(0),
        published_measured: AtomicU64::new(0),
        received: (0..options.subscribers)
            .map(|_| crate::Padded(AtomicU64::new(0)))
            .collect(),
    });
    let stop = CancellationToken::new();

    let mut subscribers = Vec::new();
    for index in 0..options.subscribers {
        let (mut reader, mut writer) = conn::connect(target).await?;
        let subscribe = Frame::new(Command::Subscribe)
            .header("id", "0")
            .header("destination", destination.as_str())
            .header("receipt", "subscribed");
        writer.send(&subscribe).await?;
        reader.expect(Command::Receipt).await?;
        let shared = shared.clone();
        let stop = stop.clone();
        subscribers.push(tokio::spawn(async move {
            let _writer = writer;
            subscribe_loop(&mut reader, index, &shared, &stop).await
        }));
    }

    if publish_target.addr != target.addr {
        // Another node learns of the subscriptions through the cluster: wait until a
        // probe gets through before measuring.
        wait_for_route(publish_target, &destination, &shared).await?;
    }
    let mut publishers = Vec::new();
    for _ in 0..options.publishers {
        let (reader, writer) = conn::connect(publish_target).await?;
        let shared = shared.clone();
        let stop = stop.clone();
        let options = options.clone();
        let destination = destination.clone();
        publishers.push(tokio::spawn(async move {
            publish_loop(reader, writer, &destination, &options, &shared, &stop).await
        }));
    }

    tokio::time::sleep(options.warmup).await;
    shared.phase.store(MEASURE, Ordering::SeqCst);
    let started = Instant::now();
    tokio::time::sleep(options.duration).await;
    shared.phase.store(crate::DONE, Ordering::SeqCst);
    let measured = started.elapsed();

    // Let in-flight messages arrive, then stop everything.
    let published = shared.published.load(Ordering::SeqCst);
    let drain_deadline = Instant::now() + Duration::from_secs(3);
    while shared.slowest() < published && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    for publisher in publishers {
        publisher.await.map_err(io::Error::other)??;
    }
    let mut latency = report::histogram();
    let mut delivered = 0;
    for subscriber in subscribers {
        let (histogram, count) = subscriber.await.map_err(io::Error::other)??;
        latency
            .add(histogram)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        delivered += count;
    }
    Ok(Report {
        scenario: format!(
            "fan-out: {} publisher(s) -> {} subscriber(s), {} B bodies, {}",
            options.publishers,
            options.subscribers,
            options.size,
            options
                .rate
                .map_or("unlimited rate".to_owned(), |r| format!("{r} msg/s"))
        ),
        measured,
        published: shared.published_measured.load(Ordering::SeqCst),
        delivered,
        latency,
        extra: Vec::new(),
    })
}

/// Publishes probes (which subscribers count) until one has been received by all.
async fn wait_for_route(target: &Target, destination: &str, shared: &Shared) -> io::Result<()> {
    let (_reader, mut writer) = conn::connect(target).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = shared.slowest();
    while shared.slowest() == before {
        if Instant::now() > deadline {
            return Err(io::Error::other(
                "subscriptions never became visible to the publishing node",
            ));
        }
        let probe = Frame::new(Command::Send)
            .header("destination", destination)
            .body(vec![0u8; 8]);
        writer.send(&probe).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn subscribe_loop(
    reader: &mut conn::Reader,
    index: usize,
    shared: &Shared,
    stop: &CancellationToken,
) -> io::Result<(Histogram<u64>, u64)> {
    let mut histogram = report::histogram();
    let mut count = 0;
    loop {
        // Everything that one read brought arrived at the same moment.
        let arrived = clock_us();
        let measuring = shared.phase.load(Ordering::Relaxed) == MEASURE;
        let mut batch = 0;
        while let Some(received) = reader.buffered_message()? {
            let body = match received {
                conn::Received::Message { body, .. } => body,
                // Another subscriber entering the room, when the broker has presence on.
                conn::Received::Frame(frame) if conn::is_presence_event(&frame) => continue,
                conn::Received::Frame(frame) if frame.command == Command::Message => frame.body,
                conn::Received::Frame(frame) => {
                    return Err(io::Error::other(format!(
                        "subscriber {index}: got {} {:?}",
                        frame.command,
                        frame.get("message")
                    )));
                }
            };
            batch += 1;
            if measuring && body.len() >= 8 {
                let sent = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
                let _ = histogram.record(arrived.saturating_sub(sent).max(1));
                count += 1;
            }
        }
        shared.received[index].0.fetch_add(batch, Ordering::Relaxed);
        let more = tokio::select! {
            _ = stop.cancelled() => return Ok((histogram, count)),
            more = reader.fill() => more?,
        };
        if !more {
            return Err(io::Error::other(format!(
                "subscriber {index}: connection closed"
            )));
        }
    }
}

async fn publish_loop(
    mut reader: conn::Reader,
    mut writer: conn::Writer,
    destination: &str,
    options: &Options,
    shared: &Shared,
    stop: &CancellationToken,
) -> io::Result<()> {
    // Any frame sent to a publisher (an ERROR) ends the run.
    let watch = tokio::spawn(async move { reader.next().await });
    let size = options.size.max(8);
    let mut template = BytesMut::new();
    template.put_slice(
        format!(
            "SEND\ndestination:{destination}\ncontent-type:application/octet-stream\ncontent-length:{size}\n\n"
        )
        .as_bytes(),
    );
    let stamp_at = template.len();
    template.put_bytes(b'x', size);
    template.put_u8(0);

    let batch = if options.rate.is_some() { 1 } else { 64 };
    let period = options
        .rate
        .map(|rate| Duration::from_secs_f64(options.publishers as f64 / rate as f64));
    let start = Instant::now();
    let mut sent: u64 = 0;
    while !stop.is_cancelled() && shared.phase.load(Ordering::Relaxed) != crate::DONE {
        if watch.is_finished() {
            break;
        }
        match period {
            Some(period) => tokio::time::sleep_until(start + period.mul_f64(sent as f64)).await,
            None => {
                while shared.published.load(Ordering::Relaxed) > shared.slowest() + options.window {
                    if stop.is_cancelled() || watch.is_finished() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_micros(50)).await;
                }
            }
        }
        for _ in 0..batch {
            let at = writer.buf.len() + stamp_at;
            writer.buf.extend_from_slice(&template);
            writer.buf[at..at + 8].copy_from_slice(&clock_us().to_le_bytes());
        }
        writer.flush().await?;
        sent += batch as u64;
        shared.published.fetch_add(batch as u64, Ordering::Relaxed);
        if shared.phase.load(Ordering::Relaxed) == MEASURE {
            shared
                .published_measured
                .fetch_add(batch as u64, Ordering::Relaxed);
        }
    }
    if watch.is_finished() {
        let frame = watch.await.map_err(io::Error::other)??;
        return Err(io::Error::other(format!(
            "publisher got {:?}",
            frame.map(|f| (f.command, f.get("message").map(str::to_owned)))
        )));
    }
    watch.abort();
    Ok(())
}
