//! The driver: one broker state, the client slots of one input, and the transport
//! under them. It opens sessions over `tokio::io::duplex` pipes, writes frames in
//! pieces, reads what the broker wrote without waiting, and hands every frame it reads
//! to the client model and the oracle.

use std::sync::Arc;
use std::time::Duration;

use postbox_stomp::{Command, Frame, Item, Version};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::client::{Conn, Held, Pending, try_read};
use super::frames;
use super::input::{Leave, Setup};
use super::oracle::Oracle;
use crate::Config;
use crate::auth::AuthHandle;
use crate::session::{Context, Peer, Services, Settings, serve};
use crate::vhost::Vhosts;

/// Client connections a script can hold open at once.
pub(super) const SLOTS: usize = 4;

/// The broker and the clients of one input.
pub(super) struct World {
    /// What every session is given: the broker state and its shutdown token.
    context: Context,
    /// Client connections, `SLOTS` of them, `None` where closed.
    pub(super) slots: Vec<Option<Conn>>,
    /// Sessions of closed slots, which must end.
    pub(super) closed: Vec<JoinHandle<()>>,
    /// What was sent and confirmed, for the invariants.
    pub(super) oracle: Oracle,
}

/// The broker configuration a [`Setup`] asks for.
fn config_for(setup: &Setup) -> Config {
    let mut config = Config::defaults();
    config.outbound_buffer = 1024 << (setup.outbound % 8);
    config.queue_max_length = 4 << (setup.queue_length % 8);
    config.max_deliveries = u32::from(setup.max_deliveries % 6);
    config
}

impl World {
    /// A fresh broker configured by `setup`, with no client connected.
    pub(super) fn new(setup: &Setup) -> World {
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
            oracle: Oracle::default(),
        }
    }

    /// The broker's shared state.
    pub(super) fn services(&self) -> &Arc<Services> {
        &self.context.services
    }

    /// Starts a session on a new pipe of `pipe` bytes; returns the client's end.
    pub(super) fn open(&self, pipe: usize) -> (DuplexStream, JoinHandle<()>) {
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

    /// The connection in `slot`, if it can still write.
    pub(super) fn live(&mut self, slot: usize) -> Option<&mut Conn> {
        self.slots[slot]
            .as_mut()
            .filter(|c| !c.write_closed && !c.ended && c.io.is_some())
    }

    /// Sends a frame without a body, recording `effect` (staged in its transaction, if
    /// any) to be confirmed by a receipt.
    pub(super) async fn send_frame(
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

    /// Sends a frame, numbering it; with `receipt` it asks for a receipt that names
    /// that number. `effect` is confirmed by that receipt or any later one, unless it
    /// belongs to transaction `tx`, where it waits for the COMMIT.
    pub(super) async fn send_body(
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
            head += &frames::receipt(seq);
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
        let frame = frames::complete(&head, body);
        self.write(slot, frame.as_bytes()).await;
    }

    /// Writes bytes in the connection's piece size, letting the broker run between
    /// pieces. A write that cannot finish (the broker stopped reading) leaves a partial
    /// frame behind, so the connection writes nothing more.
    pub(super) async fn write(&mut self, slot: usize, bytes: &[u8]) {
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
    pub(super) fn read_available(&mut self, slot: usize) {
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
                let seq = frames::receipt_seq(id).expect("a receipt id of ours");
                // Frames are handled in order: everything up to this one took effect.
                let (done, rest): (Vec<_>, Vec<_>) =
                    conn.pending.drain(..).partition(|(s, _)| *s <= seq);
                conn.pending = rest;
                for (_, effect) in done {
                    self.oracle.confirmed(effect);
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
                let Some(n) = frames::message_number(&frame) else {
                    return;
                };
                let key = (destination, n);
                self.oracle
                    .delivered(&key, frame.get("redelivered") == Some("true"));
                let subscription = frame.get("subscription").unwrap_or_default().to_owned();
                let ack = conn
                    .subs
                    .get(&subscription)
                    .map(|s| s.ack)
                    .unwrap_or("auto");
                if ack == "auto" {
                    self.oracle.auto_acked(n);
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
    pub(super) async fn leave(&mut self, slot: usize, how: Leave) {
        if self.slots[slot].is_none() {
            return;
        }
        match how {
            Leave::Disconnect | Leave::DisconnectAndDrop => {
                let receipt = how == Leave::Disconnect;
                self.send_frame(slot, frames::DISCONNECT.into(), receipt, None)
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
}

/// Whether to print the script and the frames received (`POSTBOX_FUZZ_TRACE`).
pub(super) fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("POSTBOX_FUZZ_TRACE").is_some())
}

/// Lets every ready task of the broker run.
pub(super) async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}
