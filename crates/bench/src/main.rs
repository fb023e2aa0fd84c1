//! `postbox-bench`: a load generator for STOMP brokers (Postbox, RabbitMQ, ActiveMQ...).
//!
//! `postbox-bench fanout --addr 127.0.0.1:61613 --subscribers 10 --duration 10`
//! (add `--ws --addr 127.0.0.1:15674` to go through the WebSocket listener)
//! prints delivered and published messages per second and end-to-end latency
//! percentiles; `--json` prints one JSON object instead, for comparison scripts.
//! `postbox-bench soak --duration 30m --broker-pid PID` mixes load and client faults
//! against one broker and checks that it keeps answering (see `soak/`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod conn;
mod connections;
mod fanout;
mod null_broker;
mod presence;
mod queue;
mod report;
mod soak;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

/// Phases of a run, shared with the workers.
pub const WARMUP: u8 = 0;
pub const MEASURE: u8 = 1;
pub const DONE: u8 = 2;

/// Microseconds since the process's clock started; comparable across its tasks.
pub fn clock_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A destination no other run uses.
pub fn unique_destination(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}.{}.{nanos}", std::process::id())
}

#[derive(Parser, Debug)]
#[command(
    name = "postbox-bench",
    version,
    about = "Load generator for STOMP brokers"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Topic fan-out: publishers send to one topic, every subscriber gets every message.
    Fanout(FanoutArgs),
    /// Queue: producers send to one queue, consumers compete and acknowledge; checks
    /// that every message arrived exactly once.
    Queue(QueueArgs),
    /// Many idle subscribed connections: open rate, broker memory per connection, and
    /// time for one message to reach them all.
    Connections(ConnectionsArgs),
    /// Presence: users enter and leave rooms at a rate while a watcher per room counts
    /// ENTER and QUIT events; checks one event per transition and times how long the
    /// counts take to settle. Needs a broker without authentication and with
    /// `--presence "/topic/bench.#"`.
    Presence(PresenceArgs),
    /// Fault-and-load soak: publishers, vanishing queue consumers in every ack mode, slow
    /// readers, a receipt flood, bad frames and reconnect storms against one broker, while
    /// a probe times one SEND→MESSAGE round trip per second. Exits 1 on a stall or if
    /// the broker stops answering.
    Soak(SoakArgs),
    /// Not a scenario: a stand-in broker that parses nothing, answering just enough for
    /// the connections scenario, to measure what the machine allows without a broker.
    NullBroker {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:61613")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Args, Debug)]
struct PresenceArgs {
    #[command(flatten)]
    common: Common,
    /// Connections entering and leaving rooms.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Rooms, each watched by one more connection.
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Room entries per second over all users, each followed by a leave.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds the counts may take to settle after the last leave.
    #[arg(long, default_value_t = 10.0)]
    settle_within: f64,
}

#[derive(Args, Debug)]
struct ConnectionsArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Loopback source addresses to spread them over (127.0.0.1 ...).
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// The broker's process id, to read its memory from /proc.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Broadcasts to time.
    #[arg(long, default_value_t = 5)]
    broadcasts: usize,
}

#[derive(Args, Debug)]
struct SoakArgs {
    /// Broker STOMP address.
    #[arg(long, default_value = "127.0.0.1:61613")]
    addr: SocketAddr,
    /// CONNECT login.
    #[arg(long)]
    login: Option<String>,
    /// CONNECT passcode.
    #[arg(long)]
    passcode: Option<String>,
    /// CONNECT host (virtual host).
    #[arg(long, default_value = "/")]
    host: String,
    /// The broker's process id: its VmRSS, Threads and open descriptors are sampled.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// How long the load runs (30m, 90s, 1h; a bare number is seconds).
    #[arg(long, default_value = "5m", value_parser = soak::parse_duration)]
    duration: Duration,
    /// A probe round trip longer than this is a stall.
    #[arg(long, default_value = "1s", value_parser = soak::parse_duration)]
    stall: Duration,
    /// Interval between progress lines.
    #[arg(long, default_value = "10s", value_parser = soak::parse_duration)]
    report_every: Duration,
    /// Wait after the load stops and the queues are drained, before the end sample.
    #[arg(long, default_value = "10s", value_parser = soak::parse_duration)]
    settle: Duration,
    /// Messages per second offered by all publishers together.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Publishers to the topic, and as many to the queues.
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// Topic subscribers that read promptly.
    #[arg(long, default_value_t = 2)]
    subscribers: usize,
    /// Queues, each with a cohort of consumers that come and go together.
    #[arg(long, default_value_t = 3)]
    cohorts: usize,
    /// Consumers per cohort (ack modes and ways of leaving rotate among them).
    #[arg(long, default_value_t = 4)]
    cohort_size: usize,
    /// Topic subscribers that read 4 KiB every 200 ms.
    #[arg(long, default_value_t = 2)]
    slow_readers: usize,
    /// Clients that send receipted frames and never read.
    #[arg(long, default_value_t = 1)]
    floods: usize,
    /// Connections opened and dropped together in one reconnect storm (0: none).
    #[arg(long, default_value_t = 50)]
    storm_size: usize,
    /// Interval between reconnect storms.
    #[arg(long, default_value = "5s", value_parser = soak::parse_duration)]
    storm_every: Duration,
    /// Interval between connections that send one bad input each.
    #[arg(long, default_value = "200ms", value_parser = soak::parse_duration)]
    bad_every: Duration,
}

#[derive(Args, Debug)]
struct Common {
    /// Broker STOMP address.
    #[arg(long, default_value = "127.0.0.1:61613")]
    addr: SocketAddr,
    /// CONNECT login.
    #[arg(long)]
    login: Option<String>,
    /// CONNECT passcode.
    #[arg(long)]
    passcode: Option<String>,
    /// CONNECT host (virtual host).
    #[arg(long, default_value = "/")]
    host: String,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Connect over WebSocket (ws://ADDR/ws) instead of plain TCP.
    #[arg(long)]
    ws: bool,
    /// The WebSocket path, with --ws.
    #[arg(long, default_value = "/ws")]
    ws_path: String,
}

#[derive(Args, Debug)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Publishing connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscribing connections.
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// Body size in bytes (at least 8: the send timestamp).
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Total messages per second; omit for as fast as the broker sustains.
    #[arg(long)]
    rate: Option<u64>,
    /// Most messages in flight to the slowest subscriber in unlimited runs.
    #[arg(long, default_value_t = 2000)]
    window: u64,
    /// Connect publishers here instead of --addr (another node of a cluster).
    #[arg(long)]
    publish_addr: Option<SocketAddr>,
}

#[derive(Args, Debug)]
struct QueueArgs {
    #[command(flatten)]
    common: Common,
    /// Producing connections.
    #[arg(long, default_value_t = 2)]
    producers: usize,
    /// Consuming connections.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Body size in bytes (at least 20: timestamp, producer, sequence).
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Acknowledgement mode: auto, client or client-individual (one ACK per message).
    #[arg(long, default_value = "client-individual")]
    ack: String,
    /// prefetch-count per consumer.
    #[arg(long, default_value_t = 100)]
    prefetch: usize,
    /// Most messages sent but not yet consumed.
    #[arg(long, default_value_t = 5000)]
    window: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    clock_us();
    // Thousands of connections need thousands of descriptors.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    match &cli.scenario {
        Scenario::Connections(args) => return run_connections(args),
        Scenario::Soak(args) => return run_soak(args),
        Scenario::NullBroker { listen } => return run_null_broker(*listen),
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ws = match &cli.scenario {
        Scenario::Fanout(args) => args.common.ws,
        Scenario::Queue(args) => args.common.ws,
        Scenario::Presence(args) => args.common.ws,
        Scenario::Connections(_) | Scenario::Soak(_) | Scenario::NullBroker { .. } => {
            unreachable!("handled above")
        }
    };
    let (json, result) = runtime.block_on(async {
        match cli.scenario {
            Scenario::Fanout(args) => {
                let target = target(&args.common);
                let publish_target = conn::Target {
                    addr: args.publish_addr.unwrap_or(args.common.addr),
                    ..target.clone()
                };
                let options = fanout::Options {
                    publishers: args.publishers,
                    subscribers: args.subscribers,
                    size: args.size,
                    duration: Duration::from_secs_f64(args.common.duration),
                    warmup: Duration::from_secs_f64(args.common.warmup),
                    rate: args.rate,
                    window: args.window,
                };
                (
                    args.common.json,
                    fanout::run(&target, &publish_target, &options).await,
                )
            }
            Scenario::Connections(_) | Scenario::Soak(_) | Scenario::NullBroker { .. } => {
                unreachable!("handled above")
            }
            Scenario::Presence(args) => {
                let options = presence::Options {
                    users: args.users,
                    rooms: args.rooms,
                    rate: args.rate,
                    duration: Duration::from_secs_f64(args.common.duration),
                    settle_within: Duration::from_secs_f64(args.settle_within),
                };
                (
                    args.common.json,
                    presence::run(&target(&args.common), &options).await,
                )
            }
            Scenario::Queue(args) => {
                let target = target(&args.common);
                let options = queue::Options {
                    producers: args.producers,
                    consumers: args.consumers,
                    size: args.size,
                    duration: Duration::from_secs_f64(args.common.duration),
                    warmup: Duration::from_secs_f64(args.common.warmup),
                    ack: args.ack,
                    prefetch: args.prefetch,
                    window: args.window,
                };
                (args.common.json, queue::run(&target, &options).await)
            }
        }
    });
    let result = result.map(|mut report| {
        report
            .scenario
            .push_str(if ws { ", over WebSocket" } else { ", over TCP" });
        report
    });
    match result {
        Ok(report) if json => println!("{}", report.json()),
        Ok(report) => print!("{}", report.human()),
        Err(error) => {
            eprintln!("postbox-bench: {error}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn run_null_broker(listen: std::net::SocketAddr) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(null_broker::run(listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("postbox-bench null-broker: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_connections(args: &ConnectionsArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let options = connections::Options {
        count: args.count,
        sources: args.sources.max(1),
        parallel: args.parallel.max(1),
        broker_pid: args.broker_pid,
        broadcasts: args.broadcasts,
    };
    match runtime.block_on(connections::run(&target(&args.common), &options)) {
        Ok(outcome) if args.common.json => println!("{}", outcome.json(&options)),
        Ok(outcome) => print!("{}", outcome.human(&options)),
        Err(error) => {
            eprintln!("postbox-bench: {error}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn run_soak(args: &SoakArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let target = conn::Target {
        addr: args.addr,
        login: args.login.clone(),
        passcode: args.passcode.clone(),
        host: args.host.clone(),
        ws_path: None,
    };
    let options = soak::Options {
        duration: args.duration,
        report_every: args.report_every.max(Duration::from_millis(100)),
        settle: args.settle,
        stall: args.stall,
        broker_pid: args.broker_pid,
        rate: args.rate,
        publishers: args.publishers,
        subscribers: args.subscribers,
        cohorts: args.cohorts,
        cohort_size: args.cohort_size,
        slow_readers: args.slow_readers,
        floods: args.floods,
        storm_size: args.storm_size,
        storm_every: args.storm_every,
        bad_every: args.bad_every,
    };
    let outcome = runtime.block_on(soak::run(&target, &options));
    // Tasks stuck on a dead broker must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(outcome) => {
            print!("{}", outcome.report);
            if outcome.failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("postbox-bench soak: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A value on a cache line of its own, so counters of different tasks do not share one.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

fn target(common: &Common) -> conn::Target {
    conn::Target {
        addr: common.addr,
        login: common.login.clone(),
        passcode: common.passcode.clone(),
        host: common.host.clone(),
        ws_path: common.ws.then(|| common.ws_path.clone()),
    }
}
