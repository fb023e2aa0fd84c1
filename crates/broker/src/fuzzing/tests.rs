//! The seed corpus of the session fuzzer, written out by hand, and its replay: CI runs
//! the harness on every seed without cargo-fuzz.
//!
//! The seed files in `crates/broker/fuzz/seeds/session` are these scripts encoded with
//! [`Input::to_bytes`]; after changing a script, rewrite them with
//! `POSTBOX_WRITE_SEEDS=1 cargo test -p postbox-broker --lib fuzzing`.

use std::path::PathBuf;

use super::{Event, Input, Leave, Setup, run, run_bytes};

const SMALL: Setup = Setup {
    outbound: 0,
    queue_length: 2,
    max_deliveries: 3,
};
const ROOMY: Setup = Setup {
    outbound: 4,
    queue_length: 7,
    max_deliveries: 0,
};

fn connect(slot: u8) -> Event {
    Event::Connect {
        slot,
        pipe: 4,
        version: 0,
        chunk: 0,
        heart_beat: 0,
    }
}

fn subscribe(slot: u8, sub: u8, destination: u8, ack: u8, prefetch: u8) -> Event {
    Event::Subscribe {
        slot,
        sub,
        destination,
        ack,
        prefetch,
        receipt: true,
    }
}

fn send(slot: u8, destination: u8, transaction: u8) -> Event {
    Event::Send {
        slot,
        destination,
        transaction,
        size: 1,
        receipt: true,
    }
}

fn ack(slot: u8, nack: bool, transaction: u8) -> Event {
    Event::Ack {
        slot,
        pick: 0,
        nack,
        requeue: true,
        transaction,
        receipt: true,
    }
}

fn read(slot: u8) -> Event {
    Event::Read { slot }
}

/// The hand-written scripts, by file name.
fn seeds() -> Vec<(&'static str, Input)> {
    let mut out = Vec::new();
    // CONNECT, a client-individual subscription, SENDs, ACK and NACK.
    out.push((
        "individual-ack-nack",
        Input {
            setup: ROOMY,
            events: vec![
                connect(0),
                subscribe(0, 0, 0, 2, 2),
                connect(1),
                send(1, 0, 0),
                send(1, 0, 0),
                send(1, 0, 0),
                read(0),
                ack(0, false, 0),
                ack(0, true, 0),
                read(0),
                ack(0, false, 0),
                read(0),
                ack(0, false, 0),
                Event::Close {
                    slot: 0,
                    how: Leave::Disconnect,
                },
                Event::Close {
                    slot: 1,
                    how: Leave::Disconnect,
                },
            ],
        },
    ));
    // Cumulative ACKs, then a transaction that sends and acknowledges, one aborted.
    out.push((
        "transactions",
        Input {
            setup: ROOMY,
            events: vec![
                connect(0),
                subscribe(0, 1, 0, 1, 0),
                send(0, 0, 0),
                send(0, 0, 0),
                Event::Begin {
                    slot: 0,
                    transaction: 0,
                },
                send(0, 0, 1),
                send(0, 1, 1),
                Event::Commit {
                    slot: 0,
                    transaction: 0,
                    receipt: true,
                },
                read(0),
                Event::Begin {
                    slot: 0,
                    transaction: 1,
                },
                Event::Ack {
                    slot: 0,
                    pick: 1,
                    nack: false,
                    requeue: true,
                    transaction: 2,
                    receipt: false,
                },
                send(0, 0, 2),
                Event::Abort {
                    slot: 0,
                    transaction: 1,
                },
                read(0),
                ack(0, false, 0),
                read(0),
                Event::Close {
                    slot: 0,
                    how: Leave::Reset,
                },
            ],
        },
    ));
    // Three client-individual consumers with a prefetch on one queue, a producer, and
    // the consumers all leaving at once, by each way of leaving.
    for (name, how) in [
        ("consumers-reset-at-once", Leave::Reset),
        ("consumers-disconnect-at-once", Leave::DisconnectAndDrop),
        ("consumers-stall-at-once", Leave::StallThenReset),
        ("consumers-fin-at-once", Leave::Fin),
    ] {
        let mut events = vec![connect(3)];
        for slot in 0..3 {
            events.push(Event::Connect {
                slot,
                pipe: 0,
                version: 0,
                chunk: 0,
                heart_beat: 0,
            });
            events.push(subscribe(slot, 0, 0, 2, 4));
        }
        for _ in 0..12 {
            events.push(Event::Send {
                slot: 3,
                destination: 0,
                transaction: 0,
                size: 8,
                receipt: false,
            });
        }
        events.push(send(3, 0, 0));
        events.push(Event::Yield { times: 8 });
        events.push(Event::CloseMany { mask: 0b111, how });
        events.push(connect(0));
        events.push(subscribe(0, 0, 0, 0, 0));
        events.push(Event::Advance { tenths: 50 });
        events.push(read(0));
        out.push((
            name,
            Input {
                setup: SMALL,
                events,
            },
        ));
    }
    // A consumer that stops reading past its outbound bound is cut off.
    out.push((
        "stalled-consumer",
        Input {
            setup: SMALL,
            events: vec![
                Event::Connect {
                    slot: 0,
                    pipe: 0,
                    version: 0,
                    chunk: 0,
                    heart_beat: 1,
                },
                subscribe(0, 0, 2, 1, 0),
                subscribe(0, 1, 1, 0, 0),
                connect(1),
                Event::Send {
                    slot: 1,
                    destination: 2,
                    transaction: 0,
                    size: 200,
                    receipt: false,
                },
                Event::Send {
                    slot: 1,
                    destination: 1,
                    transaction: 0,
                    size: 200,
                    receipt: true,
                },
                Event::Advance { tenths: 300 },
                read(0),
                read(1),
            ],
        },
    ));
    // Older versions acknowledge by message id; writes go out a few bytes at a time.
    out.push((
        "versions-and-pieces",
        Input {
            setup: ROOMY,
            events: vec![
                Event::Connect {
                    slot: 0,
                    pipe: 1,
                    version: 1,
                    chunk: 3,
                    heart_beat: 0,
                },
                subscribe(0, 0, 1, 2, 1),
                Event::Connect {
                    slot: 1,
                    pipe: 1,
                    version: 2,
                    chunk: 7,
                    heart_beat: 0,
                },
                subscribe(1, 0, 1, 1, 0),
                send(0, 1, 0),
                send(1, 1, 0),
                read(0),
                read(1),
                ack(0, false, 0),
                ack(1, false, 0),
                read(0),
                read(1),
                Event::Close {
                    slot: 0,
                    how: Leave::Fin,
                },
                read(0),
            ],
        },
    ));
    // Every hostile frame of the table, each on a fresh connection.
    let mut events = Vec::new();
    for kind in 0..12 {
        events.push(connect(kind % 4));
        events.push(Event::Garbage {
            slot: kind % 4,
            kind,
        });
        events.push(read(kind % 4));
    }
    out.push((
        "garbage",
        Input {
            setup: ROOMY,
            events,
        },
    ));
    out
}

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/session")
}

#[test]
fn seed_files_are_the_hand_written_scripts() {
    let write = std::env::var_os("POSTBOX_WRITE_SEEDS").is_some();
    for (name, input) in seeds() {
        let bytes = input.to_bytes();
        assert_eq!(
            Input::from_bytes(&bytes),
            input,
            "{name} does not round-trip"
        );
        let path = seed_dir().join(name);
        if write {
            std::fs::create_dir_all(seed_dir()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let stored = std::fs::read(&path).unwrap_or_default();
        assert!(
            stored == bytes,
            "{} is stale; see this module's doc",
            path.display()
        );
    }
}

#[test]
fn hand_written_scripts_hold_every_invariant() {
    for (name, input) in seeds() {
        let summary = run(&input);
        eprintln!("seed {name}: {summary:?}");
        assert!(
            summary.accepted > 0 || name == "garbage",
            "{name}: {summary:?}"
        );
        if name == "individual-ack-nack" || name == "transactions" {
            assert!(summary.acked > 0, "{name}: {summary:?}");
        }
        if name.starts_with("consumers-") {
            assert!(summary.delivered > 0, "{name}: {summary:?}");
        }
    }
}

/// Every file of the seed directory (minimized crashes land there too) replays cleanly.
#[test]
fn seed_corpus_replays_cleanly() {
    let mut files: Vec<_> = std::fs::read_dir(seed_dir())
        .expect("the seed directory")
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        eprintln!("replaying {}", file.display());
        run_bytes(&std::fs::read(&file).unwrap());
    }
}

/// Replays one fuzzer input (a crash or a minimized one), with the script and the frames
/// printed: `POSTBOX_FUZZ_INPUT=path POSTBOX_FUZZ_TRACE=1 cargo test -p postbox-broker
/// --lib fuzzing::tests::replay -- --ignored --nocapture`.
#[test]
#[ignore = "replays the file named by POSTBOX_FUZZ_INPUT"]
fn replay() {
    let path = std::env::var_os("POSTBOX_FUZZ_INPUT").expect("POSTBOX_FUZZ_INPUT");
    let summary = run_bytes(&std::fs::read(path).unwrap());
    eprintln!("{summary:?}");
}
