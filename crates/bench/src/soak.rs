//! Soak: ordinary load and client faults mixed against one broker for a long time, while a
//! separate probe checks that the broker still answers.
//!
//! The load: publishers to a topic and to queues; cohorts of queue consumers in every ack
//! mode that leave together at one moment, each in its own way (reset, FIN without
//! DISCONNECT, DISCONNECT, stop reading and then close); slow topic readers; a client that
//! floods frames with `receipt` headers and never reads; bad frames of many kinds; waves
//! of connections opened and dropped at once. The probe does one SEND→MESSAGE round trip
//! per second on a connection of its own; a round trip longer than the stall threshold is
//! a stall, and one with no answer at all means the broker stopped answering.
//!
//! Every task holds a bounded amount: counters, fixed-size histograms, a capped list of
//! anomalies, and buffers no larger than a frame, so the generator's own memory stays flat
//! however long it runs.

use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use postbox_stomp::{Command, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Target};
use crate::report;

/// Soak parameters.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the load runs.
    pub duration: Duration,
    /// Interval between progress lines.
    pub report_every: Duration,
    /// Time after the load stops (and the queues are drained) before the end sample.
    pub settle: Duration,
    /// A probe round trip longer than this is a stall.
    pub stall: Duration,
    /// The broker's process, sampled in /proc.
    pub broker_pid: Option<u32>,
    /// Messages per second offered by all publishers together.
    pub rate: u64,
    /// Publishers per kind (topic, queue).
    pub publishers: usize,
    /// Steady topic subscribers that read promptly.
    pub subscribers: usize,
    /// Consumer cohorts, each on a queue of its own.
    pub cohorts: usize,
    /// Consumers in one cohort; they all leave at the same moment.
    pub cohort_size: usize,
    /// Topic subscribers that read a little now and then.
    pub slow_readers: usize,
    /// Clients that send receipted frames and never read.
    pub floods: usize,
    /// Connections in one reconnect storm.
    pub storm_size: usize,
    /// Interval between reconnect storms.
    pub storm_every: Duration,
    /// Interval between bad-frame connections.
    pub bad_every: Duration,
}

/// What a probe that gets no answer at all waits before the broker counts as gone.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting (TCP and CONNECT→CONNECTED) may take this long before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the broker has to close a connection it should close (after FIN, DISCONNECT or
/// an ERROR) before that counts as an anomaly.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A receipt flood that the broker has not closed after this long is an anomaly (its
/// outbound stall time is 10 s by default).
const FLOOD_LIMIT: Duration = Duration::from_secs(40);
/// How long a slow reader reads slowly before it checks whether the broker cut it off.
const SLOW_PHASE: Duration = Duration::from_secs(15);
/// Time the broker has to answer a bad input with ERROR and close; longer than its
/// default CONNECT timeout (10 s), which is what answers some inputs before CONNECT.
const BAD_TIMEOUT: Duration = Duration::from_secs(15);
/// Bad-input connections waiting for their answer at once, at most.
const BAD_IN_FLIGHT: usize = 64;
/// Anomalies kept word for word; the rest are only counted.
const ANOMALIES_KEPT: usize = 40;

/// How a consumer leaves.
#[derive(Debug, Clone, Copy)]
enum Exit {
    /// `SO_LINGER` 0 and close: the broker sees a reset.
    Reset,
    /// Half-close without DISCONNECT; the broker should close its side.
    Fin,
    /// DISCONNECT with a receipt.
    Disconnect,
    /// Stop reading for a while with messages arriving, then close.
    StopReading,
}

const EXITS: [Exit; 4] = [Exit::Reset, Exit::Fin, Exit::Disconnect, Exit::StopReading];
const ACK_MODES: [&str; 3] = ["auto", "client", "client-individual"];

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

/// Counters shared by every task.
#[derive(Debug, Default)]
struct Stats {
    delivered: AtomicU64,
    published: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    publisher_reconnects: AtomicU64,
    consumers: AtomicU64,
    exits: [AtomicU64; 4],
    slow_sessions: AtomicU64,
    slow_closed: AtomicU64,
    /// Still connected, and keeping up once it read fast again.
    slow_kept: AtomicU64,
    flood_sessions: AtomicU64,
    flood_closed: AtomicU64,
    flood_outlived: AtomicU64,
    bad_sent: AtomicU64,
    /// ERROR then close (or reset).
    bad_answered: AtomicU64,
    /// Closed or reset without an ERROR.
    bad_closed_silently: AtomicU64,
    /// No close within the timeout.
    bad_left_open: AtomicU64,
    storms: AtomicU64,
    storm_connects: AtomicU64,
    storm_failures: AtomicU64,
    storm_slowest_us: AtomicU64,
    drained: AtomicU64,
    anomaly_count: AtomicU64,
    anomalies: Mutex<Vec<String>>,
}

impl Stats {
    fn anomaly(&self, started: Instant, what: String) {
        self.anomaly_count.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.anomalies.lock().expect("anomalies lock");
        if kept.len() < ANOMALIES_KEPT {
            kept.push(format!("[{}] {what}", clock(started.elapsed())));
        }
    }
}

/// What the probe saw.
#[derive(Debug)]
struct Probe {
    /// Round trips since the last progress line.
    interval: Mutex<Histogram<u64>>,
    /// Every round trip.
    total: Mutex<Histogram<u64>>,
    stalls: AtomicU64,
    /// Worst round trip in microseconds, and when it started.
    worst: Mutex<(u64, Duration)>,
    /// Set when the broker stopped answering (no round trip, no reconnect).
    gone: CancellationToken,
    gone_reason: Mutex<Option<String>>,
}

/// A /proc sample of the broker.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub rss: Option<u64>,
    pub threads: Option<u64>,
    pub fds: Option<u64>,
}

/// Reads VmRSS, Threads and the number of open descriptors of `pid`.
pub fn sample(pid: Option<u32>) -> Sample {
    let Some(pid) = pid else {
        return Sample::default();
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Sample {
        rss: field("VmRSS:").map(|kib| kib * 1024),
        threads: field("Threads:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()
            .map(|dir| dir.count() as u64),
    }
}

/// The result of a soak.
#[derive(Debug)]
pub struct Outcome {
    pub report: String,
    /// A stall, or the broker stopped answering.
    pub failed: bool,
}

/// Destinations of one run.
#[derive(Debug, Clone)]
struct Names {
    topic: String,
    queues: Vec<String>,
    probe: String,
    void: String,
}

/// Runs the soak and returns the final report; progress lines go to stdout meanwhile.
pub async fn run(target: &Target, options: &Options) -> io::Result<Outcome> {
    let base = crate::unique_destination("soak");
    let names = Names {
        topic: format!("/topic/{base}.t"),
        queues: (0..options.cohorts.max(1))
            .map(|i| format!("/queue/{base}.q{i}"))
            .collect(),
        probe: format!("/queue/{base}.probe"),
        void: format!("/topic/{base}.void"),
    };
    let started = Instant::now();
    let stats = Arc::new(Stats::default());
    let probe = Arc::new(Probe {
        interval: Mutex::new(report::histogram()),
        total: Mutex::new(report::histogram()),
        stalls: AtomicU64::new(0),
        worst: Mutex::new((0, Duration::ZERO)),
        gone: CancellationToken::new(),
        gone_reason: Mutex::new(None),
    });

    // The probe's first connection proves the broker is there before anything starts.
    let probe_conn = probe_connect(target, &names.probe)
        .await
        .map_err(|e| io::Error::other(format!("the probe cannot reach {}: {e}", target.addr)))?;
    let start = sample(options.broker_pid);
    if options.broker_pid.is_some() && start.rss.is_none() {
        return Err(io::Error::other("cannot read /proc of --broker-pid"));
    }
    println!(
        "soak against {} for {} (then drain and {} settle); stall threshold {} ms",
        target.addr,
        clock(options.duration),
        clock(options.settle),
        options.stall.as_millis()
    );
    println!("start: {}", describe(&start));

    let probe_stop = CancellationToken::new();
    let probe_task = tokio::spawn(run_probe(
        target.clone(),
        names.probe.clone(),
        probe_conn,
        probe.clone(),
        stats.clone(),
        options.stall,
        started,
        probe_stop.clone(),
    ));

    let load_stop = CancellationToken::new();
    let load = spawn_load(target, options, &names, &stats, started, &load_stop);

    // Progress lines until the duration is up or the broker is gone.
    let mut ticker =
        tokio::time::interval_at(Instant::now() + options.report_every, options.report_every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let load_end = started + options.duration;
    let mut last_delivered = 0;
    let mut last_at = Instant::now();
    loop {
        tokio::select! {
            _ = probe.gone.cancelled() => break,
            _ = tokio::time::sleep_until(load_end) => break,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let delivered = stats.delivered.load(Ordering::Relaxed);
        let rate = (delivered - last_delivered) as f64 / (now - last_at).as_secs_f64();
        (last_delivered, last_at) = (delivered, now);
        let (p50, max) = {
            let mut interval = probe.interval.lock().expect("probe lock");
            let figures = if interval.is_empty() {
                (0, 0)
            } else {
                (interval.value_at_quantile(0.5), interval.max())
            };
            interval.reset();
            figures
        };
        let now_sample = sample(options.broker_pid);
        println!(
            "[{}] delivered {:>9.0}/s  probe p50 {} max {}  {}  stalls {}",
            clock(started.elapsed()),
            rate,
            millis(p50),
            millis(max),
            describe(&now_sample),
            probe.stalls.load(Ordering::Relaxed),
        );
        if options.broker_pid.is_some() && now_sample.rss.is_none() {
            gone(&probe, "the broker process is gone".into());
            break;
        }
    }
    let loaded_for = started.elapsed();

    // Stop the load; every task ends at its next await, a few may need their timeouts.
    load_stop.cancel();
    let mut load = load;
    if probe.gone.is_cancelled() {
        // Tasks waiting on a broker that is gone would only run into their timeouts.
        load.abort_all();
    }
    let join_deadline = Instant::now() + Duration::from_secs(15);
    while !load.is_empty() {
        match tokio::time::timeout_at(join_deadline, load.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                stats.anomaly(
                    started,
                    format!(
                        "{} load tasks had not ended 15 s after the stop",
                        load.len()
                    ),
                );
                load.abort_all();
                while load.join_next().await.is_some() {}
            }
        }
    }

    // Empty the queues (and their dead-letter queues), so what stays is the broker's own.
    if !probe.gone.is_cancelled() {
        println!(
            "[{}] load stopped; draining queues",
            clock(started.elapsed())
        );
        let mut drains = JoinSet::new();
        for queue in &names.queues {
            for name in [queue.clone(), format!("{queue}.dlq")] {
                drains.spawn(drain(target.clone(), name, stats.clone()));
            }
        }
        while drains.join_next().await.is_some() {}
        println!(
            "[{}] drained {} messages; settling {}",
            clock(started.elapsed()),
            stats.drained.load(Ordering::Relaxed),
            clock(options.settle)
        );
        tokio::select! {
            _ = probe.gone.cancelled() => {}
            _ = tokio::time::sleep(options.settle) => {}
        }
    }
    probe_stop.cancel();
    let _ = probe_task.await;
    let end = sample(options.broker_pid);
    if options.broker_pid.is_some() && end.rss.is_none() {
        gone(&probe, "the broker process is gone".into());
    }
    let report = summary(options, &stats, &probe, &start, &end, loaded_for);
    let failed = probe.stalls.load(Ordering::Relaxed) > 0 || probe.gone.is_cancelled();
    Ok(Outcome { report, failed })
}

fn spawn_load(
    target: &Target,
    options: &Options,
    names: &Names,
    stats: &Arc<Stats>,
    started: Instant,
    stop: &CancellationToken,
) -> JoinSet<()> {
    let mut load = JoinSet::new();
    let publishers = options.publishers.max(1);
    let per_publisher = options.rate as f64 / (2 * publishers) as f64;
    for index in 0..publishers {
        load.spawn(publisher(
            target.clone(),
            vec![names.topic.clone()],
            per_publisher,
            stats.clone(),
            started,
            stop.clone(),
        ));
        // Each queue publisher serves every queue in turn, starting at a different one.
        let mut queues = names.queues.clone();
        let first = index % queues.len();
        queues.rotate_left(first);
        load.spawn(publisher(
            target.clone(),
            queues,
            per_publisher,
            stats.clone(),
            started,
            stop.clone(),
        ));
    }
    for _ in 0..options.subscribers {
        load.spawn(subscriber(
            target.clone(),
            names.topic.clone(),
            stats.clone(),
            started,
            stop.clone(),
        ));
    }
    for (index, queue) in names.queues.iter().enumerate() {
        load.spawn(cohorts(
            target.clone(),
            queue.clone(),
            options.cohort_size.max(1),
            index,
            stats.clone(),
            started,
            stop.clone(),
        ));
    }
    for _ in 0..options.slow_readers {
        load.spawn(slow_reader(
            target.clone(),
            names.topic.clone(),
            stats.clone(),
            stop.clone(),
        ));
    }
    for _ in 0..options.floods {
        load.spawn(receipt_flood(
            target.clone(),
            names.void.clone(),
            stats.clone(),
            started,
            stop.clone(),
        ));
    }
    if options.storm_size > 0 {
        load.spawn(storms(
            target.clone(),
            names.topic.clone(),
            options.storm_size,
            options.storm_every,
            stats.clone(),
            stop.clone(),
        ));
    }
    load.spawn(bad_frames(
        target.clone(),
        names.void.clone(),
        options.bad_every,
        stats.clone(),
        started,
        stop.clone(),
    ));
    load
}

// ===== the probe =====

fn gone(probe: &Probe, reason: String) {
    let mut slot = probe.gone_reason.lock().expect("probe lock");
    if slot.is_none() {
        *slot = Some(reason);
    }
    probe.gone.cancel();
}

async fn probe_connect(target: &Target, queue: &str) -> io::Result<(conn::Reader, conn::Writer)> {
    tokio::time::timeout(ANSWER_TIMEOUT, async {
        let (mut reader, mut writer) = conn::connect(target).await?;
        writer
            .send(
                &Frame::new(Command::Subscribe)
                    .header("id", "probe")
                    .header("destination", queue)
                    .header("ack", "auto")
                    .header("receipt", "probe-subscribed"),
            )
            .await?;
        reader.expect(Command::Receipt).await?;
        Ok((reader, writer))
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))?
}

#[allow(clippy::too_many_arguments)]
async fn run_probe(
    target: Target,
    queue: String,
    connection: (conn::Reader, conn::Writer),
    probe: Arc<Probe>,
    stats: Arc<Stats>,
    stall: Duration,
    started: Instant,
    stop: CancellationToken,
) {
    let (mut reader, mut writer) = connection;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sequence = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        sequence += 1;
        let body = format!("probe-{sequence}");
        let sent_at = Instant::now();
        let at = started.elapsed();
        let round_trip = tokio::time::timeout(ANSWER_TIMEOUT, async {
            writer
                .send(
                    &Frame::new(Command::Send)
                        .header("destination", queue.as_str())
                        .body(body.clone()),
                )
                .await?;
            loop {
                match reader.next().await? {
                    Some(frame) if frame.command == Command::Message => {
                        if frame.body == body.as_bytes() {
                            return Ok(());
                        }
                    }
                    Some(frame) => {
                        return Err(io::Error::other(format!(
                            "probe got {} {:?}",
                            frame.command,
                            frame.get("message")
                        )));
                    }
                    None => return Err(io::Error::other("probe connection closed")),
                }
            }
        })
        .await;
        let latency = sent_at.elapsed();
        let us = (latency.as_micros() as u64).max(1);
        let _ = probe.interval.lock().expect("probe lock").record(us);
        let _ = probe.total.lock().expect("probe lock").record(us);
        {
            let mut worst = probe.worst.lock().expect("probe lock");
            if us > worst.0 {
                *worst = (us, at);
            }
        }
        let failure = match round_trip {
            Ok(Ok(())) if latency <= stall => continue,
            Ok(Ok(())) => {
                probe.stalls.fetch_add(1, Ordering::Relaxed);
                stats.anomaly(
                    started,
                    format!("probe stall: round trip took {}", millis(us)),
                );
                continue;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => {
                probe.stalls.fetch_add(1, Ordering::Relaxed);
                gone(
                    &probe,
                    format!(
                        "no probe answer within {} s (at {})",
                        ANSWER_TIMEOUT.as_secs(),
                        clock(at)
                    ),
                );
                return;
            }
        };
        // The broker closed or refused the probe: that round trip failed, and a probe
        // that cannot reconnect means the broker is gone.
        probe.stalls.fetch_add(1, Ordering::Relaxed);
        stats.anomaly(started, format!("probe failed: {failure}; reconnecting"));
        match probe_connect(&target, &queue).await {
            Ok((r, w)) => (reader, writer) = (r, w),
            Err(error) => {
                gone(&probe, format!("the probe cannot reconnect: {error}"));
                return;
            }
        }
    }
}

// ===== well-behaved load =====

async fn connect(target: &Target, stats: &Stats) -> io::Result<(conn::Reader, conn::Writer)> {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, conn::connect(target))
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no CONNECTED")));
    match &connected {
        Ok(_) => stats.connects.fetch_add(1, Ordering::Relaxed),
        Err(_) => stats.connect_failures.fetch_add(1, Ordering::Relaxed),
    };
    connected
}

/// Bodies are slices of one shared buffer.
fn filler() -> Bytes {
    Bytes::from(vec![b'x'; 4096])
}

/// Sends to `destinations` in turn at `rate` messages per second, reconnecting when the
/// broker drops it.
async fn publisher(
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
async fn subscriber(
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

// ===== consumers that vanish =====

/// Cohort after cohort of consumers on `queue`: each cohort lives a random while, then
/// all its members leave at the same moment, each with another ack mode and exit.
async fn cohorts(
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

/// Reads and discards until end of stream; false if it has not come within `timeout`.
async fn closes_within(reader: &mut conn::Reader, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, async {
        loop {
            while let Ok(Some(_)) = reader.buffered_message() {}
            match reader.fill().await {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
    })
    .await
    .is_ok()
}

/// Waits for the RECEIPT `id`, skipping messages; false on anything else.
async fn receipt_within(reader: &mut conn::Reader, id: &str, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, async {
        loop {
            while let Ok(Some(received)) = reader.buffered_message() {
                if let conn::Received::Frame(frame) = received
                    && frame.command != Command::Message
                {
                    return frame.command == Command::Receipt
                        && frame.get("receipt-id") == Some(id);
                }
            }
            match reader.fill().await {
                Ok(true) => {}
                Ok(false) | Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

// ===== hostile clients =====

/// Opens a plain TCP connection and completes CONNECT, leaving nothing unread.
/// `receive_buffer` sets `SO_RCVBUF` first.
async fn raw_connect(
    target: &Target,
    receive_buffer: Option<u32>,
    stats: &Stats,
) -> io::Result<TcpStream> {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let socket = if target.addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let mut stream = socket.connect(target.addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&connect_frame(target)).await?;
        let mut head = Vec::new();
        let mut byte = [0u8; 256];
        while !head.contains(&0) {
            let n = stream.read(&mut byte).await?;
            if n == 0 || head.len() > 64 * 1024 {
                return Err(io::Error::other("no CONNECTED"));
            }
            head.extend_from_slice(&byte[..n]);
        }
        if !head.starts_with(b"CONNECTED") {
            return Err(io::Error::other(format!(
                "CONNECT refused: {}",
                String::from_utf8_lossy(&head[..head.len().min(200)])
            )));
        }
        Ok(stream)
    })
    .await
    .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no CONNECTED")));
    match &connected {
        Ok(_) => stats.connects.fetch_add(1, Ordering::Relaxed),
        Err(_) => stats.connect_failures.fetch_add(1, Ordering::Relaxed),
    };
    connected
}

fn connect_frame(target: &Target) -> BytesMut {
    let mut frame = Frame::new(Command::Connect)
        .header("accept-version", "1.2")
        .header("host", target.host.as_str())
        .header("heart-beat", "0,0");
    if let Some(login) = &target.login {
        frame = frame.header("login", login.as_str());
    }
    if let Some(passcode) = &target.passcode {
        frame = frame.header("passcode", passcode.as_str());
    }
    let mut out = BytesMut::new();
    postbox_stomp::encode::encode_frame(&frame, postbox_stomp::Version::V1_2, &mut out);
    out
}

/// Subscribes to the topic with a small receive buffer and reads 4 KiB every 200 ms for
/// [`SLOW_PHASE`], far slower than the topic flows; the broker should cut it off as a slow
/// consumer. Then it reads as fast as it can to find out whether it was: whatever the
/// kernel still holds comes first, then the close.
async fn slow_reader(target: Target, topic: String, stats: Arc<Stats>, stop: CancellationToken) {
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

/// Sends receipted SENDs to a destination nobody reads as fast as the broker takes them,
/// never reading a byte; the broker should stop reading it and then close it.
async fn receipt_flood(
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

/// One connection per `every` with one kind of bad input; the broker should answer
/// each with an ERROR and close.
async fn bad_frames(
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

#[derive(Debug)]
enum BadOutcome {
    /// An ERROR came, then the close.
    Answered,
    /// Closed (or reset) with no ERROR seen.
    ClosedSilently(String),
    /// Neither an ERROR and close nor a close within the timeout.
    LeftOpen(String),
}

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

/// Every `every`, opens `size` connections at once, subscribes each to the topic, and
/// drops them all together in mixed ways.
async fn storms(
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

/// Empties `queue` with an auto-ack subscriber until it has been quiet for a second.
async fn drain(target: Target, queue: String, stats: Arc<Stats>) {
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

// ===== helpers =====

/// Sleeps unless stopped first.
async fn pause(stop: &CancellationToken, period: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(period) => {}
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

/// xorshift64*: enough randomness to vary sizes and timings, no dependency.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        static SEED: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
        let seed = SEED.fetch_add(0x6a09_e667_f3bc_c909, Ordering::Relaxed) ^ crate::clock_us();
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// `m:ss` (or `h:mm:ss`).
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn millis(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn describe(s: &Sample) -> String {
    let or = |v: Option<u64>, f: &dyn Fn(u64) -> String| v.map_or("?".to_owned(), f);
    format!(
        "rss {}  threads {}  fds {}",
        or(s.rss, &mib),
        or(s.threads, &|t| t.to_string()),
        or(s.fds, &|f| f.to_string()),
    )
}

/// Parses `30m`, `10s`, `500ms`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((text, "s"), |at| text.split_at(at));
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 30m, 10s, 500ms)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: the unit is one of ms, s, m, h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

fn summary(
    options: &Options,
    stats: &Stats,
    probe: &Probe,
    start: &Sample,
    end: &Sample,
    loaded_for: Duration,
) -> String {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let total = probe.total.lock().expect("probe lock");
    let (p50, p99, max) = if total.is_empty() {
        (0, 0, 0)
    } else {
        (
            total.value_at_quantile(0.5),
            total.value_at_quantile(0.99),
            total.max(),
        )
    };
    let (worst, worst_at) = *probe.worst.lock().expect("probe lock");
    let stalls = get(&probe.stalls);
    let mut out = String::new();
    let _ = writeln!(out, "soak summary ({} of load)", clock(loaded_for));
    let _ = writeln!(
        out,
        "  delivered   {} messages ({:.0}/s), {} published",
        get(&stats.delivered),
        get(&stats.delivered) as f64 / loaded_for.as_secs_f64().max(1e-3),
        get(&stats.published),
    );
    let _ = writeln!(
        out,
        "  probe       {} round trips: p50 {} p99 {} max {}; worst {} at {}; stalls (> {} ms) {}",
        total.len(),
        millis(p50),
        millis(p99),
        millis(max),
        millis(worst),
        clock(worst_at),
        options.stall.as_millis(),
        stalls,
    );
    let change =
        |label: &str, a: Option<u64>, b: Option<u64>, unit: &dyn Fn(u64) -> String| match (a, b) {
            (Some(a), Some(b)) => {
                let delta = b as i128 - a as i128;
                let sign = if delta < 0 { "-" } else { "+" };
                let percent = if a == 0 {
                    0.0
                } else {
                    delta as f64 * 100.0 / a as f64
                };
                format!(
                    "  {label:<11} start {} end {}: {sign}{} ({percent:+.1}%)\n",
                    unit(a),
                    unit(b),
                    unit(delta.unsigned_abs() as u64)
                )
            }
            _ => format!("  {label:<11} unknown (give --broker-pid)\n"),
        };
    out.push_str(&change("rss", start.rss, end.rss, &mib));
    out.push_str(&change("threads", start.threads, end.threads, &|t| {
        t.to_string()
    }));
    out.push_str(&change("fds", start.fds, end.fds, &|f| f.to_string()));
    let _ = writeln!(
        out,
        "  connections {} opened, {} failed to connect, {} publisher reconnects",
        get(&stats.connects),
        get(&stats.connect_failures),
        get(&stats.publisher_reconnects),
    );
    let _ = writeln!(
        out,
        "  consumers   {} left: {} reset, {} FIN, {} DISCONNECT, {} stopped reading; {} drained at the end",
        get(&stats.consumers),
        get(&stats.exits[Exit::Reset as usize]),
        get(&stats.exits[Exit::Fin as usize]),
        get(&stats.exits[Exit::Disconnect as usize]),
        get(&stats.exits[Exit::StopReading as usize]),
        get(&stats.drained),
    );
    let _ = writeln!(
        out,
        "  slow        {} sessions: {} cut off by the broker, {} still connected after {} s",
        get(&stats.slow_sessions),
        get(&stats.slow_closed),
        get(&stats.slow_kept),
        SLOW_PHASE.as_secs(),
    );
    let _ = writeln!(
        out,
        "  floods      {} sessions, {} closed by the broker, {} still open after {} s",
        get(&stats.flood_sessions),
        get(&stats.flood_closed),
        get(&stats.flood_outlived),
        FLOOD_LIMIT.as_secs(),
    );
    let _ = writeln!(
        out,
        "  bad frames  {} sent: {} ERROR and close, {} closed without ERROR, {} left open",
        get(&stats.bad_sent),
        get(&stats.bad_answered),
        get(&stats.bad_closed_silently),
        get(&stats.bad_left_open),
    );
    let _ = writeln!(
        out,
        "  storms      {} waves of {}: {} connected, {} failed, slowest CONNECT {}",
        get(&stats.storms),
        options.storm_size,
        get(&stats.storm_connects),
        get(&stats.storm_failures),
        millis(get(&stats.storm_slowest_us)),
    );
    let own = sample(Some(std::process::id()));
    let _ = writeln!(
        out,
        "  generator   rss {}",
        own.rss.map_or("?".to_owned(), mib)
    );
    let anomalies = stats.anomalies.lock().expect("anomalies lock");
    let _ = writeln!(out, "  anomalies   {}", get(&stats.anomaly_count));
    for line in anomalies.iter() {
        let _ = writeln!(out, "    {line}");
    }
    let gone_reason = probe.gone_reason.lock().expect("probe lock").clone();
    let verdict = match (gone_reason, stalls) {
        (Some(reason), _) => format!("FAIL: the broker stopped answering: {reason}"),
        (None, 0) => "OK: no stall, the broker answered throughout".to_owned(),
        (None, n) => format!("FAIL: {n} probe stall(s)"),
    };
    let _ = writeln!(out, "{verdict}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
