//! What a fuzz input is: the broker [`Setup`] and a script of [`Event`]s, decoded from
//! raw fuzzer bytes with `arbitrary`. Indices in events are small and taken modulo what
//! they pick from, so every byte string is a valid script.

use arbitrary::{Arbitrary, Unstructured};

/// Events played from one input at most; the rest is ignored.
const MAX_EVENTS: usize = 200;

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
}
