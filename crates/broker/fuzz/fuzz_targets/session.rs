//! Plays arbitrary scripts of client frames and transport events (pieces, reads,
//! closes, resets, stalls, time passing, consumers leaving together) against an
//! in-process broker and checks the delivery invariants listed in
//! `postbox_broker::fuzzing`. Seeds: `../seeds/session`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postbox_broker::fuzzing::run_bytes(data);
});
