//! One client connection: the STOMP session state machine.
//!
//! A session reads frames, checks them against the spec and the negotiated version, and
//! turns them into router calls; replies and messages go out through its outbox and
//! [`writer`]. The session does not know which transport carries it: it gets a byte
//! reader and a byte writer.

mod connect;
mod error;
mod reader;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use postbox_router::{
    AckMode, CloseReason, Destination, Outbox, Router, Subscriber, Subscription, outbox,
};
use postbox_stomp::headers::names;
use postbox_stomp::{ByteString, Command, Frame, Item, Limits, StompCodec, Version, encode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, field, info, info_span};

use crate::vhost::Vhosts;
pub use error::SessionError;
use reader::{FrameReader, ReadError};
use writer::{Writer, WriterEnd};

/// Most transactions open at once on one connection.
const MAX_TRANSACTIONS: usize = 64;
/// Most frames staged in one transaction.
const MAX_TRANSACTION_FRAMES: usize = 10_000;

/// Session settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Codec limits.
    pub limits: Limits,
    /// Most subscriptions per connection.
    pub max_subscriptions: usize,
    /// Time allowed before CONNECT arrives.
    pub connect_timeout: Duration,
    /// Outbound buffer bound in bytes (slow consumer limit).
    pub outbound_buffer: usize,
    /// The server's own heart-beat send interval, 0 for none.
    pub heartbeat_send_ms: u64,
    /// The interval the server asks clients to send at, 0 for none.
    pub heartbeat_receive_ms: u64,
    /// Silence tolerated, in negotiated intervals.
    pub heartbeat_grace: f64,
    /// The CONNECTED `server` header.
    pub server_name: String,
    /// This node's id, the prefix of session ids.
    pub node_id: String,
}

impl Settings {
    /// Settings from the effective configuration.
    pub fn from_config(config: &crate::Config, node_id: &str) -> Settings {
        Settings {
            limits: Limits {
                max_frame_size: config.max_frame_size,
                max_headers: config.max_headers,
                max_header_line: config.max_header_length,
                max_body: config.max_body_size,
            },
            max_subscriptions: config.max_subscriptions,
            connect_timeout: config.connect_timeout(),
            outbound_buffer: config.outbound_buffer,
            heartbeat_send_ms: config.heartbeat_send_ms,
            heartbeat_receive_ms: config.heartbeat_receive_ms,
            heartbeat_grace: config.heartbeat_grace,
            server_name: format!("postbox/{}", env!("CARGO_PKG_VERSION")),
            node_id: node_id.to_owned(),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> Settings {
        Settings::from_config(&crate::Config::defaults(), "test")
    }
}

/// What a session needs from the server around it.
#[derive(Debug, Clone)]
pub struct Context {
    /// Session settings.
    pub settings: Arc<Settings>,
    /// The virtual hosts.
    pub vhosts: Arc<Vhosts>,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
}

/// Serves one connection until it ends. `peer` and `transport` only label logs.
pub async fn serve<R, W>(read: R, write: W, context: Context, peer: String, transport: &'static str)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let span = info_span!("conn", %peer, transport, session = field::Empty);
    serve_inner(read, write, context).instrument(span).await
}

async fn serve_inner<R, W>(read: R, mut write: W, context: Context)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let settings = context.settings.clone();
    let mut reader = FrameReader::new(read, StompCodec::new(Version::V1_2, settings.limits));

    // ===== Before CONNECT =====
    let first = tokio::select! {
        _ = context.shutdown.cancelled() => return,
        first = tokio::time::timeout(settings.connect_timeout, first_frame(&mut reader)) => first,
    };
    let connect = match first {
        Err(_) => {
            let error = SessionError::ConnectTimeout(settings.connect_timeout.as_millis() as u64);
            return refuse(&mut write, error, None).await;
        }
        Ok(Err(ReadError::Frame(error))) => return refuse(&mut write, error.into(), None).await,
        Ok(Err(_)) | Ok(Ok(None)) => return debug!("closed before CONNECT"),
        Ok(Ok(Some(frame))) => frame,
    };
    if !matches!(connect.command, Command::Connect | Command::Stomp) {
        let receipt = connect.get(names::RECEIPT);
        let error = SessionError::ExpectedConnect(connect.command);
        return refuse(&mut write, error, receipt).await;
    }
    let negotiated = match connect::negotiate(&connect, &settings, &context.vhosts) {
        Ok(negotiated) => negotiated,
        Err(error) => return refuse(&mut write, error, None).await,
    };
    reader.codec_mut().set_version(negotiated.version);

    // ===== Connected =====
    let (outbox, rx) = outbox(settings.outbound_buffer);
    let session_id = format!("{}-{}", settings.node_id, outbox.id());
    tracing::Span::current().record("session", session_id.as_str());
    let _ = outbox.send_frame(connect::connected(&negotiated, &session_id, &settings));
    debug!(version = %negotiated.version, vhost = negotiated.router.vhost(), "connected");

    let silence = negotiated
        .receive_every
        .map(|every| every.mul_f64(settings.heartbeat_grace));
    let mut session = Session {
        settings: settings.clone(),
        version: negotiated.version,
        router: negotiated.router,
        outbox: outbox.clone(),
        subscriptions: HashMap::new(),
        transactions: HashMap::new(),
    };
    let writer = Writer::new(write, rx, outbox, negotiated.version, negotiated.send_every);
    let done = CancellationToken::new();
    let (reader_end, writer_end) = tokio::join!(
        session.read_loop(&mut reader, silence, &context.shutdown, &done),
        writer.run(&done),
    );
    // Dropping the session drops its subscriptions and open transactions.
    let outbox = session.outbox.clone();
    drop(session);
    match (&reader_end, &writer_end) {
        (ReaderEnd::Failed(error), _) => info!(reason = error.kind(), "closed: {error}"),
        (_, WriterEnd::Killed) => {
            let reason = outbox.close_reason().unwrap_or(CloseReason::Admin);
            let error = SessionError::Closed(reason);
            info!(reason = error.kind(), "closed: {error}");
        }
        (_, WriterEnd::Io(error)) => debug!("closed: write failed: {error}"),
        (ReaderEnd::Io(error), _) => debug!("closed: read failed: {error}"),
        _ => debug!(end = ?reader_end, "closed"),
    }
}

/// The first frame, skipping heart-beats.
async fn first_frame<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
) -> Result<Option<Frame>, ReadError> {
    loop {
        match reader.next(None).await? {
            Some(Item::Frame(frame)) => return Ok(Some(frame)),
            Some(Item::HeartBeat) => continue,
            None => return Ok(None),
        }
    }
}

/// Sends ERROR to a connection that never became a session, then closes it.
pub(crate) async fn refuse<W: AsyncWrite + Unpin>(
    write: &mut W,
    error: SessionError,
    receipt: Option<&str>,
) {
    info!(reason = error.kind(), "refused: {error}");
    let mut buf = bytes::BytesMut::new();
    encode::encode_frame(&error.to_frame(receipt), Version::V1_2, &mut buf);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        write.write_all(&buf).await?;
        write.shutdown().await
    })
    .await;
}

/// How the reading side ended.
#[derive(Debug)]
enum ReaderEnd {
    /// DISCONNECT was handled.
    Disconnect,
    /// An ERROR was queued.
    Failed(SessionError),
    /// The peer closed its side.
    Eof,
    /// Reading failed.
    Io(std::io::Error),
    /// The writer ended first.
    WriterGone,
    /// The outbox was closed from outside.
    Killed,
}

/// What to do after a frame.
enum Flow {
    Continue,
    Disconnect,
}

/// A live subscription of the session.
#[derive(Debug)]
struct Active {
    #[allow(dead_code)] // read by ACK handling for client modes
    ack: AckMode,
    _handle: Subscription,
}

/// The reading side's state: everything the client set up on this connection.
struct Session {
    settings: Arc<Settings>,
    version: Version,
    router: Router,
    outbox: Outbox,
    subscriptions: HashMap<ByteString, Active>,
    transactions: HashMap<ByteString, Vec<Frame>>,
}

impl Session {
    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut FrameReader<R>,
        silence: Option<Duration>,
        shutdown: &CancellationToken,
        done: &CancellationToken,
    ) -> ReaderEnd {
        let outbox = self.outbox.clone();
        loop {
            let item = tokio::select! {
                biased;
                _ = done.cancelled() => return ReaderEnd::WriterGone,
                _ = outbox.closed() => return ReaderEnd::Killed,
                _ = shutdown.cancelled() => return self.fail(SessionError::Closed(CloseReason::Shutdown), None),
                item = reader.next(silence) => item,
            };
            let frame = match item {
                Ok(Some(Item::Frame(frame))) => frame,
                Ok(Some(Item::HeartBeat)) => continue,
                Ok(None) => {
                    done.cancel();
                    return ReaderEnd::Eof;
                }
                Err(ReadError::Io(error)) => {
                    done.cancel();
                    return ReaderEnd::Io(error);
                }
                Err(ReadError::Frame(error)) => return self.fail(error.into(), None),
                Err(ReadError::Silent(limit)) => {
                    let interval = limit.div_f64(self.settings.heartbeat_grace);
                    let error = SessionError::HeartBeatTimeout {
                        silent_ms: limit.as_millis() as u64,
                        interval_ms: interval.as_millis() as u64,
                    };
                    return self.fail(error, None);
                }
            };
            let receipt = frame.headers.get_shared(names::RECEIPT).cloned();
            let result = tokio::select! {
                biased;
                _ = done.cancelled() => return ReaderEnd::WriterGone,
                _ = outbox.closed() => return ReaderEnd::Killed,
                _ = shutdown.cancelled() => return self.fail(SessionError::Closed(CloseReason::Shutdown), None),
                result = self.handle(frame) => result,
            };
            match result {
                Ok(flow) => {
                    if let Some(receipt) = receipt {
                        let reply = Frame::new(Command::Receipt).header(names::RECEIPT_ID, receipt);
                        let _ = self.outbox.send_frame(reply);
                    }
                    if let Flow::Disconnect = flow {
                        self.outbox.send_close();
                        return ReaderEnd::Disconnect;
                    }
                }
                Err(error) => return self.fail(error, receipt.as_deref()),
            }
        }
    }

    /// Queues ERROR and a close; the writer sends it after everything before it.
    fn fail(&self, error: SessionError, receipt: Option<&str>) -> ReaderEnd {
        let _ = self.outbox.send_frame(error.to_frame(receipt));
        self.outbox.send_close();
        ReaderEnd::Failed(error)
    }

    async fn handle(&mut self, frame: Frame) -> Result<Flow, SessionError> {
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
            Command::Commit => self.commit(&frame).await,
            Command::Abort => self.abort(&frame),
            Command::Disconnect => Ok(Flow::Disconnect),
        }
    }

    // ===== SEND =====

    async fn send(&mut self, frame: Frame) -> Result<Flow, SessionError> {
        let destination = Destination::parse(required(&frame, names::DESTINATION)?)?;
        if let Some(transaction) = frame.headers.get_shared(names::TRANSACTION).cloned() {
            let staged = self
                .transactions
                .get_mut(&transaction)
                .ok_or_else(|| SessionError::UnknownTransaction(error::shorten(&transaction)))?;
            if staged.len() >= MAX_TRANSACTION_FRAMES {
                return Err(SessionError::InvalidHeader {
                    command: Command::Send,
                    header: names::TRANSACTION,
                    value: error::shorten(&transaction),
                    expected: "a transaction of at most 10000 frames",
                });
            }
            staged.push(frame);
            return Ok(Flow::Continue);
        }
        self.router
            .publish(destination, &frame.headers, frame.body)
            .await?;
        Ok(Flow::Continue)
    }

    // ===== SUBSCRIBE / UNSUBSCRIBE =====

    fn subscribe(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let raw_destination = required(frame, names::DESTINATION)?;
        let id = match frame.headers.get_shared(names::ID) {
            Some(id) => id.clone(),
            // STOMP 1.0 subscriptions may go without id; the destination names them.
            None if self.version == Version::V1_0 => raw_destination.clone(),
            None => return Err(missing(frame, names::ID)),
        };
        let ack = match frame.get(names::ACK) {
            None => AckMode::Auto,
            Some(value) => AckMode::parse(value)
                .filter(|mode| self.version > Version::V1_0 || *mode != AckMode::ClientIndividual)
                .ok_or_else(|| SessionError::InvalidHeader {
                    command: Command::Subscribe,
                    header: names::ACK,
                    value: error::shorten(value),
                    expected: "auto, client or client-individual",
                })?,
        };
        if ack != AckMode::Auto {
            return Err(SessionError::InvalidHeader {
                command: Command::Subscribe,
                header: names::ACK,
                value: frame.get(names::ACK).unwrap_or_default().to_owned(),
                expected: "auto (client acknowledgements are not available yet)",
            });
        }
        if self.subscriptions.contains_key(&id) {
            return Err(SessionError::DuplicateSubscription(error::shorten(&id)));
        }
        if self.subscriptions.len() >= self.settings.max_subscriptions {
            return Err(SessionError::TooManySubscriptions(
                self.settings.max_subscriptions,
            ));
        }
        let destination = Destination::parse(raw_destination)?;
        let subscriber = Subscriber {
            outbox: self.outbox.clone(),
            id: id.clone(),
            ack,
        };
        let handle = self.router.subscribe(&destination, subscriber)?;
        self.subscriptions.insert(
            id,
            Active {
                ack,
                _handle: handle,
            },
        );
        Ok(Flow::Continue)
    }

    fn unsubscribe(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let id = match frame.headers.get_shared(names::ID) {
            Some(id) => id,
            None if self.version == Version::V1_0 => required(frame, names::DESTINATION)?,
            None => return Err(missing(frame, names::ID)),
        };
        self.subscriptions
            .remove(id)
            .ok_or_else(|| SessionError::UnknownSubscription(error::shorten(id)))?;
        Ok(Flow::Continue)
    }

    // ===== ACK / NACK =====

    fn acknowledge(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        if frame.command == Command::Nack && self.version == Version::V1_0 {
            return Err(SessionError::NotInVersion {
                command: Command::Nack,
                version: self.version,
            });
        }
        let (what, id) = match self.version {
            Version::V1_2 => (names::ID, required(frame, names::ID)?),
            Version::V1_1 => {
                required(frame, names::SUBSCRIPTION)?;
                (names::MESSAGE_ID, required(frame, names::MESSAGE_ID)?)
            }
            Version::V1_0 => (names::MESSAGE_ID, required(frame, names::MESSAGE_ID)?),
        };
        if let Some(transaction) = frame.get(names::TRANSACTION)
            && !self.transactions.contains_key(transaction)
        {
            return Err(SessionError::UnknownTransaction(error::shorten(
                transaction,
            )));
        }
        Err(SessionError::UnknownAck {
            what,
            id: error::shorten(id),
        })
    }

    // ===== Transactions =====

    fn begin(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let transaction = required(frame, names::TRANSACTION)?;
        if self.transactions.contains_key(transaction) {
            return Err(SessionError::DuplicateTransaction(error::shorten(
                transaction,
            )));
        }
        if self.transactions.len() >= MAX_TRANSACTIONS {
            return Err(SessionError::InvalidHeader {
                command: Command::Begin,
                header: names::TRANSACTION,
                value: error::shorten(transaction),
                expected: "at most 64 open transactions per connection",
            });
        }
        self.transactions.insert(transaction.clone(), Vec::new());
        Ok(Flow::Continue)
    }

    async fn commit(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let staged = self.take_transaction(frame)?;
        for send in staged {
            let destination = Destination::parse(required(&send, names::DESTINATION)?)?;
            self.router
                .publish(destination, &send.headers, send.body)
                .await?;
        }
        Ok(Flow::Continue)
    }

    fn abort(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        self.take_transaction(frame)?;
        Ok(Flow::Continue)
    }

    fn take_transaction(&mut self, frame: &Frame) -> Result<Vec<Frame>, SessionError> {
        let transaction = required(frame, names::TRANSACTION)?;
        self.transactions
            .remove(transaction)
            .ok_or_else(|| SessionError::UnknownTransaction(error::shorten(transaction)))
    }
}

/// The value of a header the frame must have.
fn required<'f>(frame: &'f Frame, header: &'static str) -> Result<&'f ByteString, SessionError> {
    frame
        .headers
        .get_shared(header)
        .ok_or_else(|| missing(frame, header))
}

fn missing(frame: &Frame, header: &'static str) -> SessionError {
    SessionError::MissingHeader {
        command: frame.command,
        header,
    }
}
