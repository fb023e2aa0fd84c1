//! Presence: users enter and leave rooms at a rate while one watcher per room counts
//! the broker's ENTER and QUIT events.
//!
//! Every user is a connection of its own, so against a broker without authentication
//! (where each connection is a member) every SUBSCRIBE to a room is an ENTER and every
//! UNSUBSCRIBE a QUIT. The run checks that each room's watcher got exactly one event per
//! transition, and measures how long after the last user left every watcher's count is
//! back to one (the watcher itself). The broker must have presence on the rooms:
//! `--presence "/topic/bench.#"`.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use postbox_stomp::{Command, Frame};
use tokio::time::Instant;

use crate::conn::{self, Target};
use crate::report::{self, Report};

/// Presence parameters.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections that enter and leave rooms.
    pub users: usize,
    /// Rooms, each with one watcher.
    pub rooms: usize,
    /// Entries per second over all users (each followed by a leave).
    pub rate: u64,
    pub duration: Duration,
    /// How long after the last leave the counts may take to settle.
    pub settle_within: Duration,
}

/// What one room's watcher has seen.
#[derive(Default)]
struct Watched {
    /// ENTER and QUIT events.
    events: AtomicU64,
    /// The `presence-count` of the latest one.
    count: AtomicU64,
}

/// Runs the scenario against `target`.
pub async fn run(target: &Target, options: &Options) -> io::Result<Report> {
    let prefix = crate::unique_destination("/topic/bench");
    let room = |index: usize| format!("{prefix}.room{index}");
    let rooms = options.rooms.max(1);
    let watched: Arc<Vec<Watched>> = Arc::new((0..rooms).map(|_| Watched::default()).collect());
    let stop = Arc::new(AtomicBool::new(false));

    let mut watchers = Vec::new();
    for index in 0..rooms {
        let (mut reader, mut writer) = conn::connect(target).await?;
        let subscribe = Frame::new(Command::Subscribe)
            .header("id", "0")
            .header("destination", room(index).as_str())
            .header("receipt", "watching");
        writer.send(&subscribe).await?;
        // Passes over the watcher's own ENTER.
        reader.expect(Command::Receipt).await?;
        let watched = watched.clone();
        watchers.push(tokio::spawn(async move {
            let _writer = writer;
            while let Some(frame) = reader.next().await? {
                if !conn::is_presence_event(&frame) || frame.get("presence") == Some("members") {
                    continue;
                }
                let seen = &watched[index];
                let count = frame.get("presence-count").and_then(|c| c.parse().ok());
                seen.count
                    .store(count.unwrap_or(u64::MAX), Ordering::Relaxed);
                seen.events.fetch_add(1, Ordering::Relaxed);
            }
            io::Result::Ok(())
        }));
    }

    // Each user enters a room, stays half its period, leaves, and waits the other half.
    let users = options.users.max(1);
    let period = Duration::from_secs_f64(users as f64 / options.rate.max(1) as f64);
    let cycles = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut walkers = Vec::new();
    for user in 0..users {
        let (mut reader, mut writer) = conn::connect(target).await?;
        // What the rooms say to this user is read and dropped, so its outbox never fills;
        // it ends at the DISCONNECT's receipt. Closing earlier, with frames unread, would
        // reset the connection, and the broker could lose the last UNSUBSCRIBE unread.
        let drain = tokio::spawn(async move {
            while let Ok(Some(frame)) = reader.next().await {
                if frame.command == Command::Receipt {
                    return;
                }
            }
        });
        let stop = stop.clone();
        let cycles = cycles.clone();
        let rooms_of = (0..rooms).map(room).collect::<Vec<_>>();
        walkers.push(tokio::spawn(async move {
            let mut turn = user;
            while !stop.load(Ordering::Relaxed) {
                let destination = &rooms_of[turn % rooms_of.len()];
                turn += 1;
                let enter = Frame::new(Command::Subscribe)
                    .header("id", "1")
                    .header("destination", destination.as_str());
                writer.send(&enter).await?;
                tokio::time::sleep(period / 2).await;
                writer
                    .send(&Frame::new(Command::Unsubscribe).header("id", "1"))
                    .await?;
                cycles.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(period / 2).await;
            }
            let bye = Frame::new(Command::Disconnect).header("receipt", "bye");
            writer.send(&bye).await?;
            let _ = drain.await;
            io::Result::Ok(())
        }));
    }

    tokio::time::sleep(options.duration).await;
    stop.store(true, Ordering::Relaxed);
    // A broker (or this machine) too far behind must not hold the run for ever.
    let give_up = Instant::now() + Duration::from_secs(30);
    for walker in walkers {
        match tokio::time::timeout_at(give_up, walker).await {
            Ok(joined) => joined.map_err(io::Error::other)??,
            Err(_) => {
                return Err(io::Error::other(
                    "users did not stop within 30 s: overloaded",
                ));
            }
        }
    }
    let measured = started.elapsed();
    let stopped = Instant::now();
    let expected = 2 * cycles.load(Ordering::Relaxed);
    let total = || {
        watched
            .iter()
            .map(|w| w.events.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let settled = || watched.iter().all(|w| w.count.load(Ordering::Relaxed) == 1);
    let deadline = stopped + options.settle_within;
    while (total() < expected || !settled()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let converged = stopped.elapsed();
    // Anything still on its way shows up as a duplicate or stays missing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = total();
    for watcher in watchers {
        watcher.abort();
    }
    let mut extra = vec![
        ("events_expected".to_owned(), serde_json::json!(expected)),
        (
            "converged_ms".to_owned(),
            serde_json::json!(converged.as_secs_f64() * 1000.0),
        ),
        ("settled".to_owned(), serde_json::json!(settled())),
    ];
    if received < expected {
        extra.push(("missing".to_owned(), serde_json::json!(expected - received)));
    }
    if received > expected {
        extra.push((
            "duplicates".to_owned(),
            serde_json::json!(received - expected),
        ));
    }
    Ok(Report {
        scenario: format!(
            "presence: {users} user(s) entering and leaving {rooms} room(s), {} entries/s",
            options.rate
        ),
        measured,
        published: expected,
        delivered: received,
        latency: report::histogram(),
        extra,
    })
}
