//! One client connection: the STOMP session state machine.
//!
//! A session reads frames, checks them against the spec and the negotiated version, and
//! turns them into router calls; replies and messages go out through its outbox and the
//! writer. The session does not know which transport carries it: it gets a byte reader
//! and a byte writer.
//!
//! Where things are: `lifecycle.rs` runs a connection from CONNECT to close,
//! `read_loop.rs` takes frames in, `Session::handle` (below) sends each to its handler,
//! one file per group of frames (`send.rs`, `subscribe.rs`, `ack.rs`, `transaction.rs`),
//! `access.rs` holds authentication and authorization, and `writer.rs` is where bytes
//! leave for the socket.

mod access;
mod ack;
mod connect;
mod context;
mod error;
mod headers;
mod lifecycle;
mod read_loop;
mod reader;
mod send;
mod settings;
mod subscribe;
#[cfg(test)]
mod tests;
mod transaction;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use postbox_auth::Principal;
use postbox_router::{Outbox, QueueCache, Router, Subscription, TempQueue};
use postbox_stomp::{ByteString, Command, Frame, Version};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument, field, info_span};

use crate::auth::AuthHandle;
use crate::memory::MemoryAlarm;
use crate::registry::Connection;
pub use context::{Context, Peer, Services};
pub use error::SessionError;
pub(crate) use lifecycle::refuse;
pub use settings::Settings;
use transaction::Transaction;

/// Serves one connection until it ends.
pub async fn serve<R, W>(read: R, write: W, context: Context, peer: Peer)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let span = info_span!(
        "conn",
        peer = %peer.addr,
        transport = peer.transport,
        session = field::Empty,
        user = field::Empty
    );
    lifecycle::run(read, write, context, peer)
        .instrument(span)
        .await
}

/// What to do after a frame.
enum Flow {
    Continue,
    Disconnect,
}

/// The reading side's state: everything the client set up on this connection.
struct Session {
    settings: Arc<Settings>,
    version: Version,
    router: Router,
    /// The queue this client last sent to.
    queue_cache: QueueCache,
    outbox: Outbox,
    /// Subscriptions by client id.
    subscriptions: HashMap<ByteString, Subscription>,
    /// Client ids by subscription key (the first part of `ack` ids).
    by_key: HashMap<u64, ByteString>,
    /// Open transactions by id.
    transactions: HashMap<ByteString, Transaction>,
    /// Bytes staged in all open transactions (bounded by `max_staged_bytes`).
    staged_bytes: usize,
    /// Temporary queues by the name after `/temp-queue/`. Declared after the
    /// subscriptions so those are dropped first.
    temp_queues: HashMap<String, TempQueue>,
    /// Who is connected, and what they may do.
    principal: Principal,
    auth: Arc<AuthHandle>,
    /// This session's entry in the registry.
    connection: Arc<Connection>,
    /// The broker's memory alarm, which pauses publishers.
    memory: Arc<MemoryAlarm>,
}

impl Session {
    /// Sends a frame to its handler.
    async fn handle(&mut self, mut frame: Frame) -> Result<Flow, SessionError> {
        self.refresh_credentials(&mut frame)?;
        match frame.command {
            Command::Connect | Command::Stomp => Err(SessionError::AlreadyConnected(frame.command)),
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                Err(SessionError::ServerFrame(frame.command))
            }
            Command::Send => self.send(frame).await,
            Command::Subscribe => self.subscribe(&frame),
            Command::Unsubscribe => self.unsubscribe(&frame),
            Command::Ack | Command::Nack => self.acknowledge(&frame),
            Command::Begin => self.begin(&frame),
            // Boxed: a rare frame whose large future would otherwise be part of every
            // idle session's task.
            Command::Commit => Box::pin(self.commit(&frame)).await,
            Command::Abort => self.abort(&frame),
            Command::Disconnect => Ok(Flow::Disconnect),
        }
    }
}
