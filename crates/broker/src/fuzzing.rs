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
#![allow(
    clippy::print_stderr,
    reason = "POSTBOX_FUZZ_TRACE prints scripts to stderr for whoever replays a crash"
)]

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::BytesMut;
use postbox_stomp::{Command, Frame, Item, Limits, StompCodec, Version};
use tokio::io::{AsyncRead, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::auth::AuthHandle;
use crate::session::{Context, Peer, Services, Settings, serve};
use crate::vhost::Vhosts;

/// Client connections a script can hold open at once.
const SLOTS: usize = 4;
/// Events played from one input at most; the rest is ignored.
const MAX_EVENTS: usize = 200;
/// Destinations a script can name (the queues are the ones whose invariants are checked).
const DESTINATIONS: [&str; 5] = [
    "/queue/a",
    "/queue/b",
    "/topic/t",
    "/temp-queue/r",
    "/queue/a",
];
/// Malformed or hostile frames a script can send.
const GARBAGE: [&[u8]; 12] = [
    b"SEND\ndestination:/queue/a\nx:a\0ERROR\nmessage:forged\n\n\0",
    b"SEND\ndestination:/queue/a\ncontent-length:99999\n\nshort\0",
    b"SEND\n\nno destination\0",
    b"BOGUS\n\n\0",
    b"ACK\nid:1:99999\n\n\0",
    b"ACK\nid:not-a-tag\nsubscription:s0\nmessage-id:nope\n\n\0",
    b"NACK\nid:0:0\nrequeue:false\n\n\0",
    b"SUBSCRIBE\nid:s0\ndestination:/queue/a\nprefetch-count:-1\n\n\0",
    b"SUBSCRIBE\nid:s0\ndestination:/nowhere/x\n\n\0",
    b"COMMIT\ntransaction:never-begun\n\n\0",
    b"\n\n\n\n",
    b"SEND\ndestination:/queue/a\nreply-to:/temp-queue/back\n\nreply please\0",
];

/// How the broker is configured for one input.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// Outbound buffer: 1 KiB shifted left by this (mod 8).
    pub outbound: u8,
    /// Queue length limit: 4 shifted left by this (mod 8).
    pub queue_length: u8,
    /// Deliveries before a message is dead-lettered (mod 6; 0 never).
    pub max_deliveries: u8,
}

/// How a client leaves.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// Sends DISCONNECT with a receipt and reads until the broker closes.
    Disconnect,
    /// Sends DISCONNECT without a receipt and drops the connection at once.
    DisconnectAndDrop,
    /// Closes its writing half (FIN) and keeps reading.
    Fin,
    /// Drops the connection with whatever the broker wrote still unread (a reset).
    Reset,
    /// Stops reading for a while, then drops the connection.
    StallThenReset,
}

/// One step of a script. Slots, subscriptions and transactions are small indices.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Opens a connection in `slot` (closing what was there) and sends CONNECT.
    Connect {
        /// Which connection.
        slot: u8,
        /// Pipe buffer: 64 bytes shifted left by this (mod 8).
        pipe: u8,
        /// STOMP version asked for: 1.2, 1.1, 1.0 or all (mod 4).
        version: u8,
        /// Writes go out in pieces of this many bytes (0: whole).
        chunk: u8,
        /// Asks for heart-beats when odd.
        heart_beat: u8,
    },
    /// SUBSCRIBE.
    Subscribe {
        /// Which connection.
        slot: u8,
        /// Subscription id index.
        sub: u8,
        /// Destination index.
        destination: u8,
        /// auto, client or client-individual (mod 3).
        ack: u8,
        /// `prefetch-count` (0: none).
        prefetch: u8,
        /// Asks for a receipt.
        receipt: bool,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Which connection.
        slot: u8,
        /// Subscription id index.
        sub: u8,
        /// Asks for a receipt.
        receipt: bool,
    },
    /// SEND, in a transaction when `transaction` is not 0.
    Send {
        /// Which connection.
        slot: u8,
        /// Destination index.
        destination: u8,
        /// Transaction index + 1 (0: none).
        transaction: u8,
        /// Body padding in units of 16 bytes.
        size: u8,
        /// Asks for a receipt.
        receipt: bool,
    },
    /// ACK or NACK of one of the deliveries this connection holds.
    Ack {
        /// Which connection.
        slot: u8,
        /// Which outstanding delivery (mod their number).
        pick: u8,
        /// NACK instead of ACK.
        nack: bool,
        /// For NACK: `requeue:false` when false.
        requeue: bool,
        /// Transaction index + 1 (0: none).
        transaction: u8,
        /// Asks for a receipt.
        receipt: bool,
    },
    /// BEGIN.
    Begin {
        /// Which connection.
        slot: u8,
        /// Transaction index.
        transaction: u8,
    },
    /// COMMIT.
    Commit {
        /// Which connection.
        slot: u8,
        /// Transaction index.
        transaction: u8,
        /// Asks for a receipt.
        receipt: bool,
    },
    /// ABORT.
    Abort {
        /// Which connection.
        slot: u8,
        /// Transaction index.
        transaction: u8,
    },
    /// A malformed or hostile frame from a fixed table.
    Garbage {
        /// Which connection.
        slot: u8,
        /// Table index.
        kind: u8,
    },
    /// Reads what the broker has written so far, after letting it run.
    Read {
        /// Which connection.
        slot: u8,
    },
    /// One client leaves.
    Close {
        /// Which connection.
        slot: u8,
        /// How.
        how: Leave,
    },
    /// Every client in `mask` leaves in the same instant.
    CloseMany {
        /// Bit i: slot i.
        mask: u8,
        /// How.
        how: Leave,
    },
    /// Lets the broker's tasks run.
    Yield {
        /// How many times.
        times: u8,
    },
    /// Moves the paused clock on by this many tenths of a second.
    Advance {
        /// Tenths of a second.
        tenths: u16,
    },
}

/// A decoded fuzz input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Broker configuration.
    pub setup: Setup,
    /// The script.
    pub events: Vec<Event>,
}

impl Input {
    /// Decodes raw fuzzer bytes: a [`Setup`], then events until the bytes run out.
    pub fn from_bytes(data: &[u8]) -> Input {
        let mut u = Unstructured::new(data);
        let setup = Setup::arbitrary(&mut u).unwrap_or(Setup {
            outbound: 3,
            queue_length: 7,
            max_deliveries: 0,
        });
        let mut events = Vec::new();
        while !u.is_empty() && events.len() < MAX_EVENTS {
            match Event::arbitrary(&mut u) {
                Ok(event) => events.push(event),
                Err(_) => break,
            }
        }
        Input { setup, events }
    }

    /// Encodes an input so that [`Input::from_bytes`] gives it back: how the hand-written
    /// seeds are stored. Mirrors the derived decoders field by field.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![
            self.setup.outbound,
            self.setup.queue_length,
            self.setup.max_deliveries,
        ];
        for event in &self.events {
            event.encode(&mut out);
        }
        out
    }
}

/// The bytes a derived decoder turns into variant `index` of an enum of `count`.
fn tag(out: &mut Vec<u8>, index: u64, count: u64) {
    let value = ((index << 32).div_ceil(count)) as u32;
    out.extend_from_slice(&value.to_le_bytes());
}

impl Leave {
    fn encode(self, out: &mut Vec<u8>) {
        tag(out, self as u64, 5);
    }
}

impl Event {
    fn encode(&self, out: &mut Vec<u8>) {
        const COUNT: u64 = 14;
        let b = |v: bool| v as u8;
        match *self {
            Event::Connect {
                slot,
                pipe,
                version,
                chunk,
                heart_beat,
            } => {
                tag(out, 0, COUNT);
                out.extend([slot, pipe, version, chunk, heart_beat]);
            }
            Event::Subscribe {
                slot,
                sub,
                destination,
                ack,
                prefetch,
                receipt,
            } => {
                tag(out, 1, COUNT);
                out.extend([slot, sub, destination, ack, prefetch, b(receipt)]);
            }
            Event::Unsubscribe { slot, sub, receipt } => {
                tag(out, 2, COUNT);
                out.extend([slot, sub, b(receipt)]);
            }
            Event::Send {
                slot,
                destination,
                transaction,
                size,
                receipt,
            } => {
                tag(out, 3, COUNT);
                out.extend([slot, destination, transaction, size, b(receipt)]);
            }
            Event::Ack {
                slot,
                pick,
                nack,
                requeue,
                transaction,
                receipt,
            } => {
                tag(out, 4, COUNT);
                out.extend([slot, pick, b(nack), b(requeue), transaction, b(receipt)]);
            }
            Event::Begin { slot, transaction } => {
                tag(out, 5, COUNT);
                out.extend([slot, transaction]);
            }
            Event::Commit {
                slot,
                transaction,
                receipt,
            } => {
                tag(out, 6, COUNT);
                out.extend([slot, transaction, b(receipt)]);
            }
            Event::Abort { slot, transaction } => {
                tag(out, 7, COUNT);
                out.extend([slot, transaction]);
            }
            Event::Garbage { slot, kind } => {
                tag(out, 8, COUNT);
                out.extend([slot, kind]);
            }
            Event::Read { slot } => {
                tag(out, 9, COUNT);
                out.push(slot);
            }
            Event::Close { slot, how } => {
                tag(out, 10, COUNT);
                out.push(slot);
                how.encode(out);
            }
            Event::CloseMany { mask, how } => {
                tag(out, 11, COUNT);
                out.push(mask);
                how.encode(out);
            }
            Event::Yield { times } => {
                tag(out, 12, COUNT);
                out.push(times);
            }
            Event::Advance { tenths } => {
                tag(out, 13, COUNT);
                out.extend(tenths.to_le_bytes());
            }
        }
    }
}

/// What one input did, so tests can tell that a script exercised what it meant to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Queue messages whose acceptance a receipt confirmed.
    pub accepted: usize,
    /// Queue deliveries seen by clients.
    pub delivered: usize,
    /// Deliveries whose acknowledgement a receipt confirmed.
    pub acked: usize,
    /// Messages left in queues at the end.
    pub drained: usize,
}

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

/// The ack modes a script can ask for, as SUBSCRIBE spells them.
const ACK_MODES: [&str; 3] = ["auto", "client", "client-individual"];

/// A queue delivery a client holds and has not acknowledged.
#[derive(Debug, Clone)]
struct Held {
    subscription: String,
    /// What ACK names it by: the `ack` header (1.2) or the `message-id`.
    ack_id: String,
    key: (String, u64),
}

/// A frame whose effect is known once a later RECEIPT arrives.
#[derive(Debug)]
enum Pending {
    /// A queue SEND was accepted.
    Sent(u64),
    /// These deliveries were acknowledged.
    Acked(Vec<(String, u64)>),
}

/// A client subscription, as the client asked for it.
#[derive(Debug, Clone)]
struct Sub {
    ack: &'static str,
}

/// One client connection and what it has seen.
#[derive(Debug)]
struct Conn {
    io: Option<DuplexStream>,
    session: JoinHandle<()>,
    buf: BytesMut,
    codec: StompCodec,
    /// Write piece size (0: whole frames).
    chunk: usize,
    version: Version,
    /// The client's write side is closed or a write stalled midway.
    write_closed: bool,
    /// The broker sent ERROR or closed.
    ended: bool,
    /// Frames sent, which number receipts.
    seq: u64,
    subs: HashMap<String, Sub>,
    held: Vec<Held>,
    /// Effects of frames sent, by sequence number, not yet confirmed by a receipt.
    pending: Vec<(u64, Pending)>,
    /// Open transactions' staged effects.
    transactions: HashMap<u8, Vec<Pending>>,
}

/// The broker and the clients of one input.
struct World {
    context: Context,
    slots: Vec<Option<Conn>>,
    /// Sessions of closed slots, which must end.
    closed: Vec<JoinHandle<()>>,
    next_message: u64,
    /// Queue messages sent, whatever became of them.
    sent: HashSet<u64>,
    /// Queue messages whose SEND (or COMMIT) the broker confirmed.
    accepted: HashSet<u64>,
    /// Deliveries (queue, message) whose acknowledgement the broker confirmed.
    acked: HashSet<(String, u64)>,
    /// Messages an ACK was sent for, confirmed or not.
    ack_sent: HashSet<u64>,
    /// Messages delivered to an auto-ack subscription.
    auto_seen: HashSet<u64>,
    /// Deliveries seen without `redelivered`.
    fresh: HashSet<(String, u64)>,
    /// Queue deliveries seen.
    delivered: usize,
}

fn config_for(setup: &Setup) -> Config {
    let mut config = Config::defaults();
    config.outbound_buffer = 1024 << (setup.outbound % 8);
    config.queue_max_length = 4 << (setup.queue_length % 8);
    config.max_deliveries = u32::from(setup.max_deliveries % 6);
    config
}

impl World {
    fn new(setup: &Setup) -> World {
        let config = config_for(setup);
        let services = Arc::new(Services::new(
            Settings::from_config(&config, "fuzz"),
            Vhosts::new(&config, "fuzz"),
            AuthHandle::load(&config).expect("auth"),
        ));
        World {
            context: Context {
                services,
                shutdown: CancellationToken::new(),
            },
            slots: (0..SLOTS).map(|_| None).collect(),
            closed: Vec::new(),
            next_message: 0,
            sent: HashSet::new(),
            accepted: HashSet::new(),
            acked: HashSet::new(),
            ack_sent: HashSet::new(),
            auto_seen: HashSet::new(),
            fresh: HashSet::new(),
            delivered: 0,
        }
    }

    fn services(&self) -> &Arc<Services> {
        &self.context.services
    }

    fn open(&self, pipe: usize) -> (DuplexStream, JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(pipe);
        let (read, write) = tokio::io::split(server);
        let peer = Peer {
            addr: "fuzz".into(),
            ip: None,
            transport: "fuzz",
            query_token: None,
        };
        let session = tokio::spawn(serve(read, write, self.context.clone(), peer));
        (client, session)
    }

    async fn play(&mut self, event: &Event) {
        if trace() {
            eprintln!("{event:?}");
        }
        match *event {
            Event::Connect {
                slot,
                pipe,
                version,
                chunk,
                heart_beat,
            } => {
                let slot = slot as usize % SLOTS;
                self.leave(slot, Leave::Reset).await;
                let (io, session) = self.open(64 << (pipe % 8));
                let (accept, version) = match version % 4 {
                    0 => ("1.2", Version::V1_2),
                    1 => ("1.1", Version::V1_1),
                    2 => ("1.0", Version::V1_0),
                    _ => ("1.0,1.1,1.2", Version::V1_2),
                };
                let beats = if heart_beat % 2 == 1 {
                    "1000,1000"
                } else {
                    "0,0"
                };
                self.slots[slot] = Some(Conn {
                    io: Some(io),
                    session,
                    buf: BytesMut::new(),
                    codec: StompCodec::new(Version::V1_2, Limits::default()),
                    chunk: chunk as usize,
                    version,
                    write_closed: false,
                    ended: false,
                    seq: 0,
                    subs: HashMap::new(),
                    held: Vec::new(),
                    pending: Vec::new(),
                    transactions: HashMap::new(),
                });
                let frame =
                    format!("CONNECT\naccept-version:{accept}\nhost:/\nheart-beat:{beats}\n\n\0");
                self.write(slot, frame.as_bytes()).await;
            }
            Event::Subscribe {
                slot,
                sub,
                destination,
                ack,
                prefetch,
                receipt,
            } => {
                let slot = slot as usize % SLOTS;
                let Some(conn) = self.live(slot) else { return };
                let id = format!("s{}", sub % 4);
                let ack = ACK_MODES[ack as usize % 3];
                let destination = DESTINATIONS[destination as usize % DESTINATIONS.len()];
                let mut frame =
                    format!("SUBSCRIBE\nid:{id}\ndestination:{destination}\nack:{ack}\n");
                if prefetch > 0 {
                    frame += &format!("prefetch-count:{}\n", prefetch % 16);
                }
                // A duplicate id is refused by the broker (ERROR); the model keeps the first.
                conn.subs.entry(id).or_insert(Sub { ack });
                self.send_frame(slot, frame, receipt, None).await;
            }
            Event::Unsubscribe { slot, sub, receipt } => {
                let slot = slot as usize % SLOTS;
                let Some(conn) = self.live(slot) else { return };
                let id = format!("s{}", sub % 4);
                conn.subs.remove(&id);
                // What it held goes back to the queue: no longer acknowledgeable.
                conn.held.retain(|h| h.subscription != id);
                self.send_frame(slot, format!("UNSUBSCRIBE\nid:{id}\n"), receipt, None)
                    .await;
            }
            Event::Send {
                slot,
                destination,
                transaction,
                size,
                receipt,
            } => {
                let slot = slot as usize % SLOTS;
                if self.live(slot).is_none() {
                    return;
                }
                let destination = DESTINATIONS[destination as usize % DESTINATIONS.len()];
                let n = self.next_message;
                self.next_message += 1;
                let queue = destination.starts_with("/queue/");
                self.sent.insert(n);
                let mut frame = format!("SEND\ndestination:{destination}\n");
                let tx = transaction.checked_sub(1).map(|t| t % 2);
                if let Some(t) = tx {
                    frame += &format!("transaction:t{t}\n");
                }
                let body = format!("m{n};{}", "x".repeat(16 * size as usize));
                let effect = queue.then_some(Pending::Sent(n));
                self.send_body(slot, frame, &body, receipt, effect, tx)
                    .await;
            }
            Event::Ack {
                slot,
                pick,
                nack,
                requeue,
                transaction,
                receipt,
            } => {
                let slot = slot as usize % SLOTS;
                let Some(conn) = self.live(slot) else { return };
                if conn.held.is_empty() {
                    return;
                }
                let index = pick as usize % conn.held.len();
                let held = conn.held[index].clone();
                let cumulative = conn.subs.get(&held.subscription).map(|s| s.ack) == Some("client");
                let tx = transaction.checked_sub(1).map(|t| t % 2);
                // A cumulative ACK settles every earlier delivery of the subscription. A NACK
                // is only sure to settle its own delivery, and within a transaction not even
                // that (the transaction may be aborted): what the model keeps may still be
                // acknowledged by a later cumulative ACK.
                let forgets = !nack || tx.is_none();
                let cumulative = cumulative && !nack;
                let mut settled = Vec::new();
                let mut position = 0;
                conn.held.retain(|h| {
                    let this = position == index && forgets;
                    let earlier =
                        position < index && cumulative && h.subscription == held.subscription;
                    position += 1;
                    if this || earlier {
                        settled.push(h.key.clone());
                        false
                    } else {
                        true
                    }
                });
                let version = conn.version;
                let command = if nack { "NACK" } else { "ACK" };
                let mut frame = match version {
                    Version::V1_2 => format!("{command}\nid:{}\n", held.ack_id),
                    _ => format!(
                        "{command}\nmessage-id:{}\nsubscription:{}\n",
                        held.ack_id, held.subscription
                    ),
                };
                if nack && !requeue {
                    frame += "requeue:false\n";
                }
                if let Some(t) = tx {
                    frame += &format!("transaction:t{t}\n");
                }
                let effect = if nack {
                    None
                } else {
                    self.ack_sent.extend(settled.iter().map(|k| k.1));
                    Some(Pending::Acked(settled))
                };
                self.send_frame(slot, frame, receipt, effect.map(|e| (e, tx)))
                    .await;
            }
            Event::Begin { slot, transaction } => {
                let slot = slot as usize % SLOTS;
                let Some(conn) = self.live(slot) else { return };
                let t = transaction % 2;
                conn.transactions.insert(t, Vec::new());
                self.send_frame(slot, format!("BEGIN\ntransaction:t{t}\n"), false, None)
                    .await;
            }
            Event::Commit {
                slot,
                transaction,
                receipt,
            } => {
                let slot = slot as usize % SLOTS;
                let Some(conn) = self.live(slot) else { return };
                let t = transaction % 2;
                let staged = conn.transactions.remove(&t).unwrap_or_default();
                // Confirmed by the COMMIT's own receipt or a later one.
                let seq = conn.seq + 1;
                conn.pending.extend(staged.into_iter().map(|p| (seq, p)));
                self.send_frame(slot, format!("COMMIT\ntransaction:t{t}\n"), receipt, None)
                    .await;
            }
            Event::Abort { slot, transaction } => {
                let slot = slot as usize % SLOTS;
                let Some(conn) = self.live(slot) else { return };
                let t = transaction % 2;
                conn.transactions.remove(&t);
                self.send_frame(slot, format!("ABORT\ntransaction:t{t}\n"), false, None)
                    .await;
            }
            Event::Garbage { slot, kind } => {
                let slot = slot as usize % SLOTS;
                if self.live(slot).is_none() {
                    return;
                }
                let bytes = GARBAGE[kind as usize % GARBAGE.len()];
                self.write(slot, bytes).await;
            }
            Event::Read { slot } => {
                let slot = slot as usize % SLOTS;
                settle().await;
                self.read_available(slot);
            }
            Event::Close { slot, how } => {
                self.leave(slot as usize % SLOTS, how).await;
            }
            Event::CloseMany { mask, how } => {
                // No broker task runs between two resets (or two DISCONNECTs that fit
                // in their pipes): the sessions see their clients go in one instant.
                for slot in 0..SLOTS {
                    if mask & (1 << slot) != 0 {
                        self.leave(slot, how).await;
                    }
                }
            }
            Event::Yield { times } => {
                for _ in 0..times % 32 {
                    tokio::task::yield_now().await;
                }
            }
            Event::Advance { tenths } => {
                tokio::time::advance(Duration::from_millis(u64::from(tenths) * 100)).await;
            }
        }
    }

    /// The connection in `slot`, if it can still write.
    fn live(&mut self, slot: usize) -> Option<&mut Conn> {
        self.slots[slot]
            .as_mut()
            .filter(|c| !c.write_closed && !c.ended && c.io.is_some())
    }

    /// Sends a frame without a body, recording `effect` (staged in its transaction, if
    /// any) to be confirmed by a receipt.
    async fn send_frame(
        &mut self,
        slot: usize,
        head: String,
        receipt: bool,
        effect: Option<(Pending, Option<u8>)>,
    ) {
        let (effect, tx) = match effect {
            Some((effect, tx)) => (Some(effect), tx),
            None => (None, None),
        };
        self.send_body(slot, head, "", receipt, effect, tx).await;
    }

    async fn send_body(
        &mut self,
        slot: usize,
        mut head: String,
        body: &str,
        receipt: bool,
        effect: Option<Pending>,
        tx: Option<u8>,
    ) {
        let Some(conn) = self.live(slot) else { return };
        conn.seq += 1;
        let seq = conn.seq;
        if receipt {
            head += &format!("receipt:r{seq}\n");
        }
        if let Some(effect) = effect {
            match tx {
                // Staged in an open transaction; one the client never began is refused.
                Some(t) => {
                    if let Some(staged) = conn.transactions.get_mut(&t) {
                        staged.push(effect);
                    }
                }
                None => conn.pending.push((seq, effect)),
            }
        }
        let frame = format!("{head}\n{body}\0");
        self.write(slot, frame.as_bytes()).await;
    }

    /// Writes bytes in the connection's piece size, letting the broker run between
    /// pieces. A write that cannot finish (the broker stopped reading) leaves a partial
    /// frame behind, so the connection writes nothing more.
    async fn write(&mut self, slot: usize, bytes: &[u8]) {
        let Some(conn) = self.live(slot) else { return };
        let chunk = if conn.chunk == 0 {
            bytes.len()
        } else {
            conn.chunk
        };
        let io = conn.io.as_mut().expect("live");
        let mut ok = true;
        for piece in bytes.chunks(chunk.max(1)) {
            let written = tokio::time::timeout(Duration::from_secs(30), io.write_all(piece)).await;
            if !matches!(written, Ok(Ok(()))) {
                ok = false;
                break;
            }
            if chunk < bytes.len() {
                tokio::task::yield_now().await;
            }
        }
        if !ok {
            conn.write_closed = true;
        }
        // Keeps what the broker wrote meanwhile from piling up unseen in the model.
        self.read_available(slot);
    }

    /// Reads and handles everything the broker has written to `slot` so far.
    fn read_available(&mut self, slot: usize) {
        let Some(conn) = self.slots[slot].as_mut() else {
            return;
        };
        let Some(io) = conn.io.as_mut() else { return };
        let mut chunk = [0u8; 8192];
        loop {
            match try_read(io, &mut chunk) {
                Some(0) => {
                    conn.ended = true;
                    break;
                }
                Some(n) => conn.buf.extend_from_slice(&chunk[..n]),
                None => break,
            }
        }
        loop {
            let conn = self.slots[slot].as_mut().expect("open");
            let decoded = match conn.codec.decode(&mut conn.buf) {
                Ok(decoded) => decoded,
                Err(error) => panic!("the broker wrote an invalid frame: {error}"),
            };
            match decoded {
                Some(Item::Frame(frame)) => self.received(slot, frame),
                Some(Item::HeartBeat) => {}
                None => break,
            }
        }
    }

    /// Checks and records one frame from the broker.
    fn received(&mut self, slot: usize, frame: Frame) {
        if trace() {
            eprintln!("  <- {slot}: {frame:?}");
        }
        let conn = self.slots[slot].as_mut().expect("open");
        match frame.command {
            Command::Receipt => {
                let id = frame.get("receipt-id").expect("receipt-id");
                let seq: u64 = id
                    .strip_prefix('r')
                    .and_then(|n| n.parse().ok())
                    .expect("a receipt id of ours");
                // Frames are handled in order: everything up to this one took effect.
                let (done, rest): (Vec<_>, Vec<_>) =
                    conn.pending.drain(..).partition(|(s, _)| *s <= seq);
                conn.pending = rest;
                for (_, effect) in done {
                    match effect {
                        Pending::Sent(n) => {
                            self.accepted.insert(n);
                        }
                        Pending::Acked(keys) => self.acked.extend(keys),
                    }
                }
            }
            Command::Error => conn.ended = true,
            Command::Connected => {}
            Command::Message => {
                let destination = frame.get("destination").unwrap_or_default().to_owned();
                if !destination.starts_with("/queue/") {
                    return;
                }
                // Bodies of the garbage table are not numbered: not followed.
                let Some(n) = message_number(&frame) else {
                    return;
                };
                assert!(self.sent.contains(&n), "message m{n} was never sent");
                self.delivered += 1;
                let key = (destination, n);
                assert!(
                    !self.acked.contains(&key),
                    "m{n} on {} delivered again after its ACK was confirmed",
                    key.0
                );
                if frame.get("redelivered") != Some("true") {
                    assert!(
                        self.fresh.insert(key.clone()),
                        "m{n} on {} delivered twice without redelivered:true",
                        key.0
                    );
                }
                let subscription = frame.get("subscription").unwrap_or_default().to_owned();
                let ack = conn
                    .subs
                    .get(&subscription)
                    .map(|s| s.ack)
                    .unwrap_or("auto");
                if ack == "auto" {
                    self.auto_seen.insert(n);
                    return;
                }
                let ack_id = match conn.version {
                    Version::V1_2 => frame.get("ack"),
                    _ => frame.get("message-id"),
                };
                let ack_id = ack_id.expect("an id to acknowledge by").to_owned();
                conn.held.push(Held {
                    subscription,
                    ack_id,
                    key,
                });
            }
            other => panic!("unexpected {other:?} from the broker"),
        }
    }

    /// The client in `slot` leaves.
    async fn leave(&mut self, slot: usize, how: Leave) {
        if self.slots[slot].is_none() {
            return;
        }
        match how {
            Leave::Disconnect | Leave::DisconnectAndDrop => {
                let receipt = how == Leave::Disconnect;
                self.send_frame(slot, "DISCONNECT\n".into(), receipt, None)
                    .await;
                if receipt {
                    for _ in 0..8 {
                        settle().await;
                        self.read_available(slot);
                    }
                }
            }
            Leave::Fin => {
                if let Some(conn) = self.live(slot) {
                    let io = conn.io.as_mut().expect("live");
                    let _ = tokio::time::timeout(Duration::from_secs(5), io.shutdown()).await;
                    conn.write_closed = true;
                }
                // It keeps reading: the slot stays until reused or the end.
                return;
            }
            Leave::Reset => {}
            Leave::StallThenReset => {
                tokio::time::advance(Duration::from_secs(15)).await;
            }
        }
        // Whatever the broker wrote before the drop counts as seen: the model must know
        // every delivery that reached the wire.
        self.read_available(slot);
        let conn = self.slots[slot].take().expect("open");
        drop(conn.io);
        self.closed.push(conn.session);
    }

    /// Every client leaves; then the sessions must end, no queue may hold deliveries
    /// or consumers, and every accepted message must be accounted for.
    async fn finish(mut self) -> Summary {
        for slot in 0..SLOTS {
            self.leave(slot, Leave::Reset).await;
        }
        for _ in 0..40 {
            if self.closed.iter().all(JoinHandle::is_finished) {
                break;
            }
            settle().await;
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        for session in self.closed.drain(..) {
            assert!(
                session.is_finished(),
                "a session did not end after its client left"
            );
            if let Err(error) = session.await {
                std::panic::resume_unwind(error.into_panic());
            }
        }
        assert!(
            self.services().registry.is_empty(),
            "sessions still registered after they ended"
        );
        let router = self
            .services()
            .vhosts
            .select(Some("/"))
            .expect("the default host");
        let mut ready = 0;
        let mut queues = Vec::new();
        for queue in router.queues() {
            let (waiting, unacked) = queue.depth();
            let name = queue.destination().as_str().to_owned();
            assert_eq!(
                unacked, 0,
                "{name} holds deliveries after every client left"
            );
            assert_eq!(queue.consumer_count(), 0, "{name} has consumers left");
            if name.starts_with("/queue/") && waiting > 0 {
                ready += waiting;
                queues.push(name);
            }
        }
        let totals = router.queue_totals();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let lossy = load(&totals.dropped) + load(&totals.expired) > 0;
        let drained = self.drain(&queues, ready).await;
        let summary = Summary {
            accepted: self.accepted.len(),
            delivered: self.delivered,
            acked: self.acked.len(),
            drained: drained.len(),
        };
        if lossy {
            return summary;
        }
        let mut accepted: Vec<_> = self.accepted.iter().copied().collect();
        accepted.sort_unstable();
        for n in accepted {
            assert!(
                drained.contains(&n) || self.auto_seen.contains(&n) || self.ack_sent.contains(&n),
                "m{n} was accepted, then neither consumed, acknowledged nor left in a queue"
            );
        }
        summary
    }

    /// Consumes what the queues still hold (`ready` messages in all) on a fresh
    /// connection; returns the message numbers.
    async fn drain(&mut self, queues: &[String], ready: usize) -> HashSet<u64> {
        let mut drained = HashSet::new();
        if queues.is_empty() {
            return drained;
        }
        let (mut io, session) = self.open(1 << 16);
        let mut frames = String::from("CONNECT\naccept-version:1.2\nhost:/\n\n\0");
        for (i, queue) in queues.iter().enumerate() {
            frames +=
                &format!("SUBSCRIBE\nid:d{i}\ndestination:{queue}\nprefetch-count:1000000\n\n\0");
        }
        io.write_all(frames.as_bytes())
            .await
            .expect("drain connect");
        let mut codec = StompCodec::new(Version::V1_2, Limits::default());
        let mut buf = BytesMut::new();
        let mut seen = 0;
        let mut chunk = [0u8; 8192];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while seen < ready {
            while let Some(item) = codec.decode(&mut buf).expect("valid frames") {
                if let Item::Frame(frame) = item {
                    assert!(
                        matches!(frame.command, Command::Connected | Command::Message),
                        "{frame:?}"
                    );
                    if frame.command == Command::Message {
                        seen += 1;
                        let Some(n) = message_number(&frame) else {
                            continue;
                        };
                        drained.insert(n);
                        let destination = frame.get("destination").unwrap_or_default();
                        let key = (destination.to_owned(), n);
                        if frame.get("redelivered") != Some("true") {
                            assert!(
                                self.fresh.insert(key),
                                "m{n} on {destination} delivered twice without redelivered:true"
                            );
                        }
                    }
                }
            }
            if seen >= ready {
                break;
            }
            use tokio::io::AsyncReadExt;
            let read = tokio::time::timeout_at(deadline, io.read(&mut chunk)).await;
            match read {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                other => panic!("draining {ready} messages stopped after {seen}: {other:?}"),
            }
        }
        drop(io);
        let _ = tokio::time::timeout(Duration::from_secs(60), session).await;
        drained
    }
}

/// The number in a body `m<n>;...` that the script wrote.
fn message_number(frame: &Frame) -> Option<u64> {
    let body = frame.body.strip_prefix(b"m")?;
    let digits = body.split(|&c| c == b';').next()?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether to print the script and the frames received (`POSTBOX_FUZZ_TRACE`).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("POSTBOX_FUZZ_TRACE").is_some())
}

/// Lets every ready task of the broker run.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// Reads what is there without waiting: `None` when nothing is.
fn try_read(io: &mut DuplexStream, chunk: &mut [u8]) -> Option<usize> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut buf = ReadBuf::new(chunk);
    match Pin::new(io).poll_read(&mut cx, &mut buf) {
        Poll::Ready(Ok(())) => Some(buf.filled().len()),
        Poll::Ready(Err(_)) => Some(0),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests;
