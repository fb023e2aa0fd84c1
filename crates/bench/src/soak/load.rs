//! Which tasks make up the load, and the destinations they share.

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bad_frames::bad_frames;
use super::consumers::cohorts;
use super::flood::receipt_flood;
use super::options::Options;
use super::publishers::{publisher, subscriber};
use super::slow::slow_reader;
use super::stats::Stats;
use super::storms::storms;
use crate::conn::Target;

/// Destinations of one run.
#[derive(Debug, Clone)]
pub(super) struct Names {
    /// The topic the publishers, subscribers, slow readers and storms share.
    pub(super) topic: String,
    /// One queue per consumer cohort.
    pub(super) queues: Vec<String>,
    /// The probe's own queue.
    pub(super) probe: String,
    /// A topic nobody subscribes to, for floods and bad frames.
    pub(super) void: String,
}

/// Starts every load task; each ends when `stop` is cancelled.
pub(super) fn spawn_load(
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
