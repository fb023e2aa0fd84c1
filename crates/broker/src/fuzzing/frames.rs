//! The frames the scripted clients write, as text, and the few things the model reads
//! back out of the broker's frames (receipt ids, message numbers). Kept apart from the
//! driver so that what goes on the wire can be read in one place.

use postbox_stomp::{Frame, Version};

/// Destinations a script can name (the queues are the ones whose invariants are checked).
pub(super) const DESTINATIONS: [&str; 5] = [
    "/queue/a",
    "/queue/b",
    "/topic/t",
    "/temp-queue/r",
    "/queue/a",
];

/// The ack modes a script can ask for, as SUBSCRIBE spells them.
pub(super) const ACK_MODES: [&str; 3] = ["auto", "client", "client-individual"];

/// Malformed or hostile frames a script can send.
pub(super) const GARBAGE: [&[u8]; 12] = [
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

/// The head of a DISCONNECT.
pub(super) const DISCONNECT: &str = "DISCONNECT\n";

// Heads below end with the last header's line end; `complete` adds the blank line, the
// body and the NUL, so a receipt header can still be appended in between.

/// A whole CONNECT frame.
pub(super) fn connect(accept: &str, heart_beat: &str) -> String {
    format!("CONNECT\naccept-version:{accept}\nhost:/\nheart-beat:{heart_beat}\n\n\0")
}

/// The head of a SUBSCRIBE, with `prefetch-count` when one is given.
pub(super) fn subscribe(id: &str, destination: &str, ack: &str, prefetch: Option<u8>) -> String {
    let mut head = format!("SUBSCRIBE\nid:{id}\ndestination:{destination}\nack:{ack}\n");
    if let Some(prefetch) = prefetch {
        head += &format!("prefetch-count:{prefetch}\n");
    }
    head
}

/// The head of an UNSUBSCRIBE.
pub(super) fn unsubscribe(id: &str) -> String {
    format!("UNSUBSCRIBE\nid:{id}\n")
}

/// The head of a SEND, in transaction `t{tx}` when one is given.
pub(super) fn send(destination: &str, tx: Option<u8>) -> String {
    let mut head = format!("SEND\ndestination:{destination}\n");
    if let Some(t) = tx {
        head += &format!("transaction:t{t}\n");
    }
    head
}

/// A SEND body: the message number the model follows it by, then `size` units of
/// 16 bytes of padding.
pub(super) fn body(n: u64, size: u8) -> String {
    format!("m{n};{}", "x".repeat(16 * size as usize))
}

/// The head of an ACK or NACK. 1.2 names the delivery by its `ack` header alone; 1.0
/// and 1.1 by `message-id` and `subscription`.
pub(super) fn ack(
    version: Version,
    nack: bool,
    ack_id: &str,
    subscription: &str,
    requeue: bool,
    tx: Option<u8>,
) -> String {
    let command = if nack { "NACK" } else { "ACK" };
    let mut head = match version {
        Version::V1_2 => format!("{command}\nid:{ack_id}\n"),
        _ => format!("{command}\nmessage-id:{ack_id}\nsubscription:{subscription}\n"),
    };
    if nack && !requeue {
        head += "requeue:false\n";
    }
    if let Some(t) = tx {
        head += &format!("transaction:t{t}\n");
    }
    head
}

/// The head of a BEGIN, COMMIT or ABORT of transaction `t{t}`.
pub(super) fn transaction(command: &str, t: u8) -> String {
    format!("{command}\ntransaction:t{t}\n")
}

/// The `receipt` header line of the frame numbered `seq`.
pub(super) fn receipt(seq: u64) -> String {
    format!("receipt:r{seq}\n")
}

/// The frame number a `receipt-id` written by `receipt` carries.
pub(super) fn receipt_seq(id: &str) -> Option<u64> {
    id.strip_prefix('r').and_then(|n| n.parse().ok())
}

/// A head and a body made into one frame.
pub(super) fn complete(head: &str, body: &str) -> String {
    format!("{head}\n{body}\0")
}

/// CONNECT, then one SUBSCRIBE per queue with a prefetch large enough to take all of it:
/// what the connection that empties the queues at the end sends.
pub(super) fn drain(queues: &[String]) -> String {
    let mut frames = String::from("CONNECT\naccept-version:1.2\nhost:/\n\n\0");
    for (i, queue) in queues.iter().enumerate() {
        frames += &format!("SUBSCRIBE\nid:d{i}\ndestination:{queue}\nprefetch-count:1000000\n\n\0");
    }
    frames
}

/// The number in a body `m<n>;...` that the script wrote.
pub(super) fn message_number(frame: &Frame) -> Option<u64> {
    let body = frame.body.strip_prefix(b"m")?;
    let digits = body.split(|&c| c == b';').next()?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}
