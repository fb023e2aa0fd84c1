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
//!
//! Layout: `options` (the parameters), `load` (which tasks run, on which destinations),
//! one file per kind of client (`publishers`, `consumers`, `slow`, `flood`,
//! `bad_frames`, `storms`, `drain`, and the `probe`), `clients` (connecting and waiting,
//! shared by all of them), `stats` (their counters), `process` (/proc samples),
//! `summary` (the final report) and the small `units` and `rng`.

mod bad_frames;
mod clients;
mod consumers;
mod drain;
mod flood;
mod load;
mod options;
mod probe;
mod process;
mod publishers;
mod rng;
mod slow;
mod stats;
mod storms;
mod summary;
mod units;

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use options::{Options, parse_duration};

use crate::conn::Target;
use drain::drain;
use load::{Names, spawn_load};
use probe::{Probe, gone, probe_connect, run_probe};
use process::{describe, sample};
use stats::Stats;
use summary::summary;
use units::{clock, millis};

/// The result of a soak.
#[derive(Debug)]
pub struct Outcome {
    /// The final report, printed by the caller.
    pub report: String,
    /// A stall, or the broker stopped answering.
    pub failed: bool,
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
    let probe = Arc::new(Probe::new());

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
