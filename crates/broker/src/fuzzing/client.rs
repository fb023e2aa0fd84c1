//! One scripted client connection: its end of the pipe, its decoder, and what it
//! believes it holds (subscriptions, unacknowledged deliveries, effects awaiting a
//! receipt, open transactions).

use std::collections::HashMap;
use std::pin::Pin;
use std::task::Poll;

use bytes::BytesMut;
use postbox_stomp::{Limits, StompCodec, Version};
use tokio::io::{AsyncRead, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;

/// A queue delivery a client holds and has not acknowledged.
#[derive(Debug, Clone)]
pub(super) struct Held {
    /// The subscription it came on.
    pub(super) subscription: String,
    /// What ACK names it by: the `ack` header (1.2) or the `message-id`.
    pub(super) ack_id: String,
    /// The queue and the message number.
    pub(super) key: (String, u64),
}

/// A frame whose effect is known once a later RECEIPT arrives.
#[derive(Debug)]
pub(super) enum Pending {
    /// A queue SEND was accepted.
    Sent(u64),
    /// These deliveries were acknowledged.
    Acked(Vec<(String, u64)>),
}

/// A client subscription, as the client asked for it.
#[derive(Debug, Clone)]
pub(super) struct Sub {
    /// Its ack mode.
    pub(super) ack: &'static str,
}

/// One client connection and what it has seen.
#[derive(Debug)]
pub(super) struct Conn {
    /// The client's end of the pipe; `None` once dropped.
    pub(super) io: Option<DuplexStream>,
    /// The broker's session task for this connection.
    pub(super) session: JoinHandle<()>,
    /// Bytes read and not yet decoded.
    pub(super) buf: BytesMut,
    /// Decodes the broker's frames.
    pub(super) codec: StompCodec,
    /// Write piece size (0: whole frames).
    pub(super) chunk: usize,
    /// The version the client asked for, which picks how it acknowledges.
    pub(super) version: Version,
    /// The client's write side is closed or a write stalled midway.
    pub(super) write_closed: bool,
    /// The broker sent ERROR or closed.
    pub(super) ended: bool,
    /// Frames sent, which number receipts.
    pub(super) seq: u64,
    /// Subscriptions by id.
    pub(super) subs: HashMap<String, Sub>,
    /// Deliveries held in client and client-individual subscriptions.
    pub(super) held: Vec<Held>,
    /// Effects of frames sent, by sequence number, not yet confirmed by a receipt.
    pub(super) pending: Vec<(u64, Pending)>,
    /// Open transactions' staged effects.
    pub(super) transactions: HashMap<u8, Vec<Pending>>,
}

impl Conn {
    /// A connection that has sent nothing yet; `version` is what its CONNECT asks for.
    /// Its decoder is a 1.2 one whichever version that is.
    pub(super) fn new(
        io: DuplexStream,
        session: JoinHandle<()>,
        chunk: usize,
        version: Version,
    ) -> Conn {
        Conn {
            io: Some(io),
            session,
            buf: BytesMut::new(),
            codec: StompCodec::new(Version::V1_2, Limits::default()),
            chunk,
            version,
            write_closed: false,
            ended: false,
            seq: 0,
            subs: HashMap::new(),
            held: Vec::new(),
            pending: Vec::new(),
            transactions: HashMap::new(),
        }
    }
}

/// Reads what is there without waiting: `None` when nothing is.
pub(super) fn try_read(io: &mut DuplexStream, chunk: &mut [u8]) -> Option<usize> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut buf = ReadBuf::new(chunk);
    match Pin::new(io).poll_read(&mut cx, &mut buf) {
        Poll::Ready(Ok(())) => Some(buf.filled().len()),
        Poll::Ready(Err(_)) => Some(0),
        Poll::Pending => None,
    }
}
