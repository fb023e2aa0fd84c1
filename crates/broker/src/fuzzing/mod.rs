//! The session fuzzer's harness, behind the `fuzzing` feature (and in this crate's own
//! tests, which replay the seed corpus through it). Not an API: it exists for
//! `crates/broker/fuzz` and may change with it.
//!
//! An input is a short script of client actions and transport events (frames written in
//! pieces, reads, closes, resets, stalls, time passing) played against a real broker
//! state over `tokio::io::duplex` pipes, on a current-thread runtime with paused time so
//! that stalls and timeouts cost nothing. A model of what each client saw checks:
//! - no session panics, and every session ends once its client is gone;
//! - no queue message is delivered again after an acknowledgement the broker confirmed;
//! - no queue message reaches clients twice without `redelivered:true`;
//! - every queue message the broker confirmed is consumed, acknowledged or still queued;
//! - once every client is gone, no queue holds unacknowledged deliveries or consumers.
//!
//! Layout, one job per file: `input` (the script and its decoding from fuzzer bytes),
//! `seed` (its encoding, for the hand-written corpus), `frames` (the frame text the
//! clients write), `client` (one client connection and what it believes it holds),
//! `oracle` (the invariants), `world` (the broker and the pipes, reading and writing),
//! `script` (playing each event) and `teardown` (everyone leaves, the queues are
//! checked and emptied).
#![allow(
    clippy::print_stderr,
    reason = "POSTBOX_FUZZ_TRACE prints scripts to stderr for whoever replays a crash"
)]

mod client;
mod frames;
mod input;
mod oracle;
mod script;
mod seed;
mod teardown;
mod world;

pub use input::{Event, Input, Leave, Setup};
pub use oracle::Summary;

use world::World;

/// Plays one raw fuzz input; panics when an invariant breaks.
pub fn run_bytes(data: &[u8]) -> Summary {
    run(&Input::from_bytes(data))
}

/// Plays one input on a fresh broker, then closes everything and checks what is left.
pub fn run(input: &Input) -> Summary {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut world = World::new(&input.setup);
        for event in &input.events {
            world.play(event).await;
        }
        world.finish().await
    })
}

#[cfg(test)]
mod tests;
