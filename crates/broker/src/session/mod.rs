//! One client connection: the STOMP session state machine.
//!
//! A session reads frames, checks them against the spec and the negotiated version, and
//! turns them into router calls; replies and messages go out through its outbox and
//! [`writer`]. The session does not know which transport carries it: it gets a byte
//! reader and a byte writer.

mod connect;
mod error;
mod reader;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use postbox_router::{
    AckMode, AckTag, CloseReason, DETACH_BELOW, Destination, DestinationKind, Outbox, QueueCache,
    Router, Subscriber, Subscription, TempQueue, outbox,
};
use postbox_stomp::headers::names;
use postbox_stomp::{ByteString, Command, Frame, Item, Limits, StompCodec, Version, encode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, field, info, info_span};

use crate::auth::{self, AuthHandle};
use crate::login::{Refusal, Who};
use crate::memory::MemoryAlarm;
use crate::metrics::DisconnectReason;
use crate::registry::{Connection, Opening, SubscriptionInfo, Traffic};
use crate::state::BrokerState;
pub use error::SessionError;
use postbox_auth::{Credentials, Method, Operation, Principal};
use reader::{FrameReader, PeerEvent, ReadError};
use writer::{Writer, WriterEnd};

/// RabbitMQ's SUBSCRIBE header bounding unacknowledged messages.
const PREFETCH_COUNT: &str = "prefetch-count";
/// RabbitMQ's SUBSCRIBE header setting a new queue's message TTL.
const MESSAGE_TTL: &str = "x-message-ttl";
/// Where a requester wants replies.
const REPLY_TO: &str = "reply-to";
/// Carries a bearer token on CONNECT, or a fresh one on any later frame.
const AUTHORIZATION: &str = "Authorization";

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Session settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Codec limits.
    pub limits: Limits,
    /// Most subscriptions per connection.
    pub max_subscriptions: usize,
    /// Most temporary queues per connection.
    pub max_temp_queues: usize,
    /// Most transactions open at once on one connection.
    pub max_transactions: usize,
    /// Most frames staged in one transaction.
    pub max_transaction_frames: usize,
    /// Most bytes staged in one transaction.
    pub max_transaction_bytes: usize,
    /// Most bytes staged in all open transactions of one connection.
    pub max_staged_bytes: usize,
    /// Time allowed before CONNECT arrives.
    pub connect_timeout: Duration,
    /// Time a password check may take, its wait for a turn included.
    pub auth_timeout: Duration,
    /// Failed password checks per login and address per minute; 0 for no limit.
    pub max_login_failures: u32,
    /// Outbound buffer bound in bytes (slow consumer limit).
    pub outbound_buffer: usize,
    /// How long a session past its outbound bound may go without the writer making
    /// progress before it is closed as a slow consumer.
    pub outbound_stall: Duration,
    /// Idle time before TCP keepalive probes start, `None` for no keepalive.
    pub tcp_keepalive: Option<Duration>,
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
    /// The header that carries the sender's name on MESSAGE.
    pub user_header: ByteString,
    /// Most connections at once (for the refusal message).
    pub max_connections: usize,
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
            max_temp_queues: config.max_temp_queues,
            max_transactions: config.max_transactions,
            max_transaction_frames: config.max_transaction_frames,
            max_transaction_bytes: config.max_transaction_bytes,
            max_staged_bytes: config.max_staged_bytes,
            connect_timeout: config.connect_timeout(),
            auth_timeout: Duration::from_millis(config.auth_timeout_ms),
            max_login_failures: config.max_login_failures,
            outbound_buffer: config.outbound_buffer,
            outbound_stall: Duration::from_millis(config.outbound_stall_ms),
            tcp_keepalive: (config.tcp_keepalive_s > 0)
                .then(|| Duration::from_secs(config.tcp_keepalive_s)),
            heartbeat_send_ms: config.heartbeat_send_ms,
            heartbeat_receive_ms: config.heartbeat_receive_ms,
            heartbeat_grace: config.heartbeat_grace,
            server_name: format!("postbox/{}", env!("CARGO_PKG_VERSION")),
            node_id: node_id.to_owned(),
            user_header: ByteString::from(config.user_header.clone()),
            max_connections: config.max_connections,
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
    /// The broker's shared state.
    pub state: Arc<BrokerState>,
    /// Cancelled when the broker shuts down; each session watches a child of it, which
    /// lame-duck shutdown cancels one by one.
    pub shutdown: CancellationToken,
}

/// Where a connection comes from.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The remote address, for logs.
    pub addr: String,
    /// The remote IP address, which failed logins are counted by; `None` in process.
    pub ip: Option<std::net::IpAddr>,
    /// The transport's name, for logs.
    pub transport: &'static str,
    /// A token from the WebSocket URL's query string.
    pub query_token: Option<String>,
}

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
    serve_inner(read, write, context, peer)
        .instrument(span)
        .await
}

/// Checks CONNECT's credentials. Password hashes are slow on purpose, so those are
/// checked off the async threads, through the login gate and under `auth-timeout-ms`;
/// everything else (no auth, tokens, anonymous) is checked in place, saving a thread hop
/// per connection.
async fn authenticate(
    context: &Context,
    connect: &Frame,
    peer: &Peer,
) -> Result<Principal, SessionError> {
    let authenticator = context.state.auth.current();
    let credentials = Credentials {
        login: connect.get(names::LOGIN),
        passcode: connect.get(names::PASSCODE),
        bearer: authorization(connect).and_then(bearer_token),
        query_token: peer.query_token.as_deref(),
    };
    if !authenticator.may_hash(&credentials) {
        return authenticator
            .authenticate(&credentials, auth::now())
            .map_err(|error| {
                info!(reason = %error, "authentication failed");
                SessionError::AuthenticationFailed
            });
    }
    let settings = context.state.settings();
    let gate = &context.state.logins;
    let who = Who {
        ip: peer.ip,
        login: credentials.login.unwrap_or_default(),
    };
    // One deadline for the wait for a turn and the check itself.
    let deadline = tokio::time::Instant::now() + settings.auth_timeout;
    let turn = match gate
        .enter(&who, settings.max_login_failures, deadline)
        .await
    {
        Ok(turn) => turn,
        Err(Refusal::Busy) => {
            info!("login refused: password checks are backed up");
            return Err(SessionError::LoginBusy);
        }
        Err(Refusal::Throttled(seconds)) => {
            info!("login refused: too many recent failures for this login and address");
            return Err(SessionError::LoginThrottled(seconds));
        }
    };
    let owned = |name| connect.get(name).map(str::to_owned);
    let login = owned(names::LOGIN);
    let passcode = owned(names::PASSCODE);
    let bearer = authorization(connect)
        .and_then(bearer_token)
        .map(str::to_owned);
    let query_token = peer.query_token.clone();
    let check = move || {
        let outcome = authenticator.authenticate(
            &Credentials {
                login: login.as_deref(),
                passcode: passcode.as_deref(),
                bearer: bearer.as_deref(),
                query_token: query_token.as_deref(),
            },
            auth::now(),
        );
        // The turn ends when the hash does, not when the client stops waiting for it,
        // so no more checks than turns ever run at once.
        drop(turn);
        outcome
    };
    let outcome = tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(check)).await;
    let outcome = match outcome {
        Ok(Ok(Ok(principal))) => Ok(principal),
        Ok(Ok(Err(error))) => {
            info!(reason = %error, "authentication failed");
            Err(SessionError::AuthenticationFailed)
        }
        Ok(Err(_)) | Err(_) => {
            info!("authentication failed: the check did not finish in time");
            return Err(SessionError::LoginBusy);
        }
    };
    gate.record(&who, outcome.is_ok());
    outcome
}

/// A copy of `value` in an allocation of its own, not sharing the read buffer.
fn owned(value: &ByteString) -> ByteString {
    ByteString::from(&**value)
}

/// The `Authorization` header, in either spelling HTTP-minded clients use.
fn authorization(frame: &Frame) -> Option<&str> {
    frame
        .get(AUTHORIZATION)
        .or_else(|| frame.get("authorization"))
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn serve_inner<R, W>(read: R, mut write: W, context: Context, peer: Peer)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let settings = context.state.settings();
    let metrics = &context.state.metrics;
    let traffic = Arc::new(Traffic::default());
    let mut reader = FrameReader::new(
        read,
        StompCodec::new(Version::V1_2, settings.limits),
        traffic.clone(),
    )
    .with_memory_alarm(context.state.memory.clone());
    // Refuses a connection that never became a session, and counts why.
    macro_rules! refuse {
        ($error:expr, $receipt:expr) => {{
            let error = $error;
            metrics.disconnected(error.disconnect_reason());
            return refuse(&mut write, error, $receipt).await;
        }};
    }

    // ===== Before CONNECT =====
    let first = tokio::select! {
        _ = context.shutdown.cancelled() => return,
        first = tokio::time::timeout(settings.connect_timeout, first_frame(&mut reader)) => first,
    };
    let connect = match first {
        Err(_) => refuse!(
            SessionError::ConnectTimeout(settings.connect_timeout.as_millis() as u64),
            None
        ),
        Ok(Err(ReadError::Frame(error))) => refuse!(
            SessionError::from(error),
            reader.codec_mut().failed_receipt()
        ),
        Ok(Err(_)) | Ok(Ok(None)) => {
            metrics.disconnected(DisconnectReason::Client);
            return debug!("closed before CONNECT");
        }
        Ok(Ok(Some(frame))) => frame,
    };
    if !matches!(connect.command, Command::Connect | Command::Stomp) {
        let receipt = connect.get(names::RECEIPT);
        refuse!(SessionError::ExpectedConnect(connect.command), receipt);
    }
    let negotiated = match connect::negotiate(&connect, &settings, &context.state.vhosts) {
        Ok(negotiated) => negotiated,
        Err(error) => refuse!(error, None),
    };
    let principal = match authenticate(&context, &connect, &peer).await {
        Ok(principal) => principal,
        Err(error) => refuse!(error, None),
    };
    tracing::Span::current().record("user", principal.name.as_str());
    reader.codec_mut().set_version(negotiated.version);
    // Its header values share the read buffer, which must not outlive the handshake.
    drop(connect);

    // ===== Connected =====
    let (outbox, rx) = outbox(settings.outbound_buffer);
    let session_id = format!("{}-{}", settings.node_id, outbox.id());
    tracing::Span::current().record("session", session_id.as_str());
    let _ = outbox.send_frame(connect::connected(&negotiated, &session_id, &settings));
    let goodbye = context.shutdown.child_token();
    let registered = context.state.registry.open(Opening {
        id: session_id.clone(),
        peer: peer.addr.clone(),
        transport: peer.transport,
        user: principal.name.clone(),
        version: negotiated.version.as_str(),
        vhost: negotiated.router.vhost().to_owned(),
        outbox: outbox.clone(),
        traffic: traffic.clone(),
        goodbye: goodbye.clone(),
    });
    info!(version = %negotiated.version, vhost = negotiated.router.vhost(), "connection opened");

    let silence = negotiated
        .receive_every
        .map(|every| every.mul_f64(settings.heartbeat_grace));
    let mut session = Session {
        settings: settings.clone(),
        version: negotiated.version,
        router: negotiated.router,
        queue_cache: QueueCache::default(),
        outbox: outbox.clone(),
        subscriptions: HashMap::new(),
        by_key: HashMap::new(),
        transactions: HashMap::new(),
        staged_bytes: 0,
        temp_queues: HashMap::new(),
        principal,
        auth: context.state.auth.clone(),
        connection: registered.connection.clone(),
        memory: context.state.memory.clone(),
    };
    let writer = Writer::new(
        write,
        rx,
        outbox,
        negotiated.version,
        negotiated.send_every,
        traffic.clone(),
    );
    let done = CancellationToken::new();
    let (reader_end, writer_end) = tokio::join!(
        session.read_loop(&mut reader, silence, &goodbye, &done),
        writer.run(&done),
    );
    // Dropping the session drops its subscriptions and open transactions.
    let outbox = session.outbox.clone();
    drop(session);
    let (reason, detail) = match (&reader_end, &writer_end) {
        (ReaderEnd::Failed(error), _) => (error.disconnect_reason(), error.to_string()),
        (_, WriterEnd::Killed) => {
            let error = SessionError::Closed(outbox.close_reason().unwrap_or(CloseReason::Admin));
            (error.disconnect_reason(), error.to_string())
        }
        (_, WriterEnd::Io(error)) => (DisconnectReason::IoError, format!("write failed: {error}")),
        (ReaderEnd::Io(error), _) => (DisconnectReason::IoError, format!("read failed: {error}")),
        (ReaderEnd::Disconnect, _) => (DisconnectReason::Client, "DISCONNECT".to_owned()),
        _ => (
            DisconnectReason::Client,
            "the client closed the connection".to_owned(),
        ),
    };
    metrics.disconnected(reason);
    let count =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    info!(
        reason = reason.as_str(),
        seconds = registered.connection.age().as_secs_f64(),
        frames_in = count(&traffic.frames_in),
        bytes_in = count(&traffic.bytes_in),
        messages_in = count(&traffic.messages_in),
        messages_out = count(&traffic.messages_out),
        bytes_out = count(&traffic.bytes_out),
        "connection closed: {detail}"
    );
    drop(registered);
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
    info!(
        reason = error.disconnect_reason().as_str(),
        "refused: {error}"
    );
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

/// What stopped a frame's handling while it waited.
enum Interrupted {
    WriterGone,
    Killed,
    Shutdown,
    /// The client closed or its transport failed: the session ends as at any end of
    /// the stream, and the waiting frame is not taken.
    PeerGone(PeerEvent),
}

/// Polls `future` once in the current task: its output if that settles it, else `None`
/// (the future keeps its place and may be polled on).
async fn poll_once<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> Option<F::Output> {
    let mut future = Some(future);
    std::future::poll_fn(|cx| {
        let polled = future.take().expect("polled once").poll(cx);
        std::task::Poll::Ready(match polled {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// What to do after a frame.
enum Flow {
    Continue,
    Disconnect,
}

/// A frame held back until its transaction commits.
#[derive(Debug)]
enum Staged {
    /// A SEND, already checked and rewritten.
    Send(Destination, Frame),
    /// An ACK or NACK resolved to its subscription and delivery tag.
    Ack(Acknowledgement),
}

/// An open transaction: its frames in order and what they weigh.
#[derive(Debug, Default)]
struct Transaction {
    frames: Vec<Staged>,
    bytes: usize,
}

impl Staged {
    /// What the staged frame counts against the transaction byte limits: a SEND's body
    /// and headers, an ACK's naming header (plus a little for the rest).
    fn cost(&self) -> usize {
        const OVERHEAD: usize = 64;
        match self {
            Staged::Send(destination, frame) => {
                let headers: usize = frame.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
                OVERHEAD + destination.as_str().len() + headers + frame.body.len()
            }
            Staged::Ack(ack) => OVERHEAD + ack.subscription.len() + ack.named_by.1.len(),
        }
    }
}

/// An ACK or NACK, resolved.
#[derive(Debug)]
struct Acknowledgement {
    /// The subscription's client id.
    subscription: ByteString,
    tag: u64,
    /// `None` for ACK; for NACK, whether to requeue.
    nack: Option<bool>,
    /// The header and value that named the message, for errors.
    named_by: (&'static str, ByteString),
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
    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut FrameReader<R>,
        silence: Option<Duration>,
        shutdown: &CancellationToken,
        done: &CancellationToken,
    ) -> ReaderEnd {
        let outbox = self.outbox.clone();
        // Frames already buffered are taken without the select below, whose futures
        // cost a lock and a waiter each per poll; every FAST_FRAMES-th frame still goes
        // through it, so shutdown, kills and token expiry are seen during a flood too.
        const FAST_FRAMES: u32 = 32;
        let mut fast = 0;
        loop {
            if outbox.is_backlogged()
                && let Err(end) = self.hold_back(shutdown, done).await
            {
                return end;
            }
            let buffered = if fast < FAST_FRAMES && !outbox.is_closed() {
                reader.buffered()
            } else {
                Ok(None)
            };
            let item = match buffered {
                Ok(None) => {
                    fast = 0;
                    let expiry = self.token_deadline();
                    tokio::select! {
                        biased;
                        _ = done.cancelled() => return ReaderEnd::WriterGone,
                        _ = outbox.closed() => return ReaderEnd::Killed,
                        _ = shutdown.cancelled() => return self.fail(SessionError::Closed(CloseReason::Shutdown), None),
                        _ = tokio::time::sleep_until(expiry.unwrap_or_else(far_future)), if expiry.is_some() => {
                            info!("closing: the access token expired and no fresh one arrived");
                            return self.fail(SessionError::TokenExpired, None);
                        }
                        item = reader.next(silence) => item,
                    }
                }
                other => {
                    fast += 1;
                    other
                }
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
                Err(ReadError::Frame(error)) => {
                    return self.fail(error.into(), reader.codec_mut().failed_receipt());
                }
                Err(ReadError::Silent(limit)) => {
                    let interval = limit.div_f64(self.settings.heartbeat_grace);
                    let error = SessionError::HeartBeatTimeout {
                        silent_ms: limit.as_millis() as u64,
                        interval_ms: interval.as_millis() as u64,
                    };
                    return self.fail(error, None);
                }
            };
            if frame.command == Command::Send
                && self.memory.is_raised()
                && let Err(end) = self.wait_for_memory(shutdown, done).await
            {
                return end;
            }
            let receipt = frame.headers.get_shared(names::RECEIPT).cloned();
            // Most frames are handled without waiting: one poll settles them, and only
            // one that has to wait (a full queue, the cluster) races the stop signals.
            let handled = self.handle_or_stop(frame, reader, shutdown, done).await;
            let result = match handled {
                Ok(result) => result,
                Err(Interrupted::WriterGone) => return ReaderEnd::WriterGone,
                Err(Interrupted::Killed) => return ReaderEnd::Killed,
                Err(Interrupted::PeerGone(event)) => {
                    done.cancel();
                    return match event {
                        PeerEvent::Failed(error) => ReaderEnd::Io(error),
                        PeerEvent::Closed => ReaderEnd::Eof,
                    };
                }
                Err(Interrupted::Shutdown) => {
                    return self.fail(SessionError::Closed(CloseReason::Shutdown), None);
                }
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

    /// Stops reading the client while its outbound backlog is past the bound, so a client
    /// that sends frames asking for replies (RECEIPTs, ERRORs) and never reads them is
    /// held back by TCP instead of growing the broker. A client that reads slowly is only
    /// paused; one whose writer makes no progress for the stall time is closed as a slow
    /// consumer (the writer drops the backlog and sends one ERROR).
    async fn hold_back(
        &self,
        shutdown: &CancellationToken,
        done: &CancellationToken,
    ) -> Result<(), ReaderEnd> {
        let traffic = &self.connection.opened.traffic;
        let written = || traffic.bytes_out.load(std::sync::atomic::Ordering::Relaxed);
        let mut progress = written();
        while self.outbox.is_backlogged() {
            tokio::select! {
                biased;
                _ = done.cancelled() => return Err(ReaderEnd::WriterGone),
                _ = self.outbox.closed() => return Err(ReaderEnd::Killed),
                _ = shutdown.cancelled() => {
                    return Err(self.fail(SessionError::Closed(CloseReason::Shutdown), None));
                }
                _ = self.outbox.drained() => {}
                _ = tokio::time::sleep(self.settings.outbound_stall) => {
                    let now = written();
                    if now == progress {
                        info!(
                            pending = self.outbox.pending_bytes(),
                            "closing: the client reads nothing while its outbound buffer is full"
                        );
                        self.outbox.close(CloseReason::SlowConsumer {
                            limit: self.outbox.limit(),
                        });
                        return Err(ReaderEnd::Killed);
                    }
                    progress = now;
                }
            }
        }
        Ok(())
    }

    /// Holds a SEND back while the broker's memory alarm is raised: this publisher's
    /// socket is not read meanwhile, and its other frames wait behind the SEND.
    async fn wait_for_memory(
        &self,
        shutdown: &CancellationToken,
        done: &CancellationToken,
    ) -> Result<(), ReaderEnd> {
        debug!("publisher paused by the memory alarm");
        tokio::select! {
            biased;
            _ = done.cancelled() => Err(ReaderEnd::WriterGone),
            _ = self.outbox.closed() => Err(ReaderEnd::Killed),
            _ = shutdown.cancelled() => {
                Err(self.fail(SessionError::Closed(CloseReason::Shutdown), None))
            }
            _ = self.memory.cleared() => Ok(()),
        }
    }

    /// Handles `frame` unless a stop signal comes while it waits.
    /// The transport is watched meanwhile, so a client that vanishes while its frame
    /// waits (a SEND to a full queue) ends the session instead of holding it.
    async fn handle_or_stop<R: AsyncRead + Unpin>(
        &mut self,
        frame: Frame,
        reader: &mut FrameReader<R>,
        shutdown: &CancellationToken,
        done: &CancellationToken,
    ) -> Result<Result<Flow, SessionError>, Interrupted> {
        let outbox = self.outbox.clone();
        let handling = self.handle(frame);
        let mut handling = std::pin::pin!(handling);
        if let Some(result) = poll_once(handling.as_mut()).await {
            return Ok(result);
        }
        tokio::select! {
            biased;
            _ = done.cancelled() => Err(Interrupted::WriterGone),
            _ = outbox.closed() => Err(Interrupted::Killed),
            _ = shutdown.cancelled() => Err(Interrupted::Shutdown),
            event = reader.watch() => Err(Interrupted::PeerGone(event)),
            result = &mut handling => Ok(result),
        }
    }

    /// Queues ERROR and a close; the writer sends it after everything before it.
    fn fail(&self, error: SessionError, receipt: Option<&str>) -> ReaderEnd {
        let _ = self.outbox.send_frame(error.to_frame(receipt));
        self.outbox.send_close();
        ReaderEnd::Failed(error)
    }

    /// When the session's token expires, as a timer deadline. Tokens' dates are bounded
    /// (`postbox_auth::jwt::MAX_NUMERIC_DATE`), but an expiry past what the clock can
    /// represent still means "not in this process's lifetime", never a panic.
    fn token_deadline(&self) -> Option<tokio::time::Instant> {
        let expires_at = self.principal.expires_at?;
        let left = expires_at.saturating_sub(auth::now());
        let now = tokio::time::Instant::now();
        Some(
            now.checked_add(Duration::from_secs(left))
                .unwrap_or_else(far_future),
        )
    }

    /// A fresh token in an `Authorization` header replaces the session's, if it names
    /// the same user. The header is removed so it never travels further.
    fn refresh_credentials(&mut self, frame: &mut Frame) -> Result<(), SessionError> {
        let Some(value) = authorization(frame).map(str::to_owned) else {
            return Ok(());
        };
        frame.headers.remove(AUTHORIZATION);
        frame.headers.remove("authorization");
        let Some(token) = bearer_token(&value) else {
            info!("refused an Authorization header that is not a bearer token");
            return Err(SessionError::AuthenticationFailed);
        };
        match self
            .auth
            .current()
            .refresh(&self.principal, token, auth::now())
        {
            Ok(fresh) => {
                debug!(expires_at = ?fresh.expires_at, "access token refreshed");
                self.principal = fresh;
                Ok(())
            }
            Err(error) => {
                info!(reason = %error, "token refresh refused");
                Err(SessionError::AuthenticationFailed)
            }
        }
    }

    /// Refuses unless the principal may `operation` `destination`. A connection's own
    /// temporary queues are always its own; a reply queue's unguessable name is the
    /// permission to answer into it (and only its owner can read it, which the router
    /// enforces).
    fn authorize(
        &self,
        operation: Operation,
        destination: &Destination,
    ) -> Result<(), SessionError> {
        let allowed = match destination.kind() {
            DestinationKind::TempQueue | DestinationKind::ReplyQueue => true,
            _ => self.principal.may(operation, destination.as_str()),
        };
        if allowed {
            return Ok(());
        }
        Err(SessionError::AccessRefused {
            user: self.principal.name.clone(),
            operation: match operation {
                Operation::Read => "read from",
                Operation::Write => "write to",
            },
            destination: error::shorten(destination.as_str()),
        })
    }

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

    // ===== SEND =====

    async fn send(&mut self, mut frame: Frame) -> Result<Flow, SessionError> {
        let mut destination = Destination::parse(required(&frame, names::DESTINATION)?)?;
        self.authorize(Operation::Write, &destination)?;
        // Answers to reply-to will be written there on this client's behalf, so it must
        // be a destination this client could write to itself.
        if let Some(reply_to) = frame.headers.get_shared(REPLY_TO)
            && let Ok(target) = Destination::parse(reply_to)
        {
            self.authorize(Operation::Write, &target)?;
        }
        let user_header = self.settings.user_header.clone();
        match self.principal.method {
            Method::Open => {
                frame.headers.remove(&user_header);
            }
            _ => frame.headers.set(user_header, self.principal.name.clone()),
        }
        if destination.kind() == DestinationKind::TempQueue {
            // The owner sending to its own temporary queue.
            destination = self.temp_queue(destination.name())?.reply_to().clone();
        }
        if let Some(reply_to) = frame.get(REPLY_TO)
            && let Some(name) = reply_to.strip_prefix(DestinationKind::TempQueue.prefix())
        {
            let name = name.to_owned();
            let routable = self.reply_queue(&name)?;
            frame.headers.set(REPLY_TO, routable);
        }
        self.connection
            .opened
            .traffic
            .messages_in
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(transaction) = frame.headers.get_shared(names::TRANSACTION).cloned() {
            // Kept until COMMIT: a small frame leaves the read buffer it shares.
            let headers: usize = frame.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
            let frame = if headers + frame.body.len() < DETACH_BELOW {
                frame.detached()
            } else {
                frame
            };
            self.stage(&transaction, Staged::Send(destination.detached(), frame))?;
            return Ok(Flow::Continue);
        }
        self.router
            .publish(
                &mut self.queue_cache,
                destination,
                frame.headers,
                frame.body,
            )
            .await?;
        Ok(Flow::Continue)
    }

    /// Shows a new subscription in the registry (admin API, metrics).
    fn remember(&self, id: &str, destination: &str, ack: AckMode) {
        let ack = match ack {
            AckMode::Auto => "auto",
            AckMode::Client => "client",
            AckMode::ClientIndividual => "client-individual",
        };
        self.connection
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(SubscriptionInfo {
                id: id.to_owned(),
                destination: destination.to_owned(),
                ack,
            });
    }

    /// Removes a subscription from the registry.
    fn forget(&self, id: &str) {
        self.connection
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| s.id != id);
    }

    /// The temporary queue `name`, created on first use.
    fn temp_queue(&mut self, name: &str) -> Result<&TempQueue, SessionError> {
        if !self.temp_queues.contains_key(name) {
            if self.temp_queues.len() >= self.settings.max_temp_queues {
                return Err(SessionError::TooManyTempQueues(
                    self.settings.max_temp_queues,
                ));
            }
            let temp = self.router.create_temp(name)?;
            self.temp_queues.insert(name.to_owned(), temp);
        }
        Ok(&self.temp_queues[name])
    }

    /// For `reply-to: /temp-queue/<name>`: makes sure the queue exists and that this
    /// connection receives from it (subscribing it as `/temp-queue/<name>` unless the
    /// client subscribed itself), and returns the routable name to put in `reply-to`.
    /// The subscription made here counts against `max-subscriptions` like any other.
    fn reply_queue(&mut self, name: &str) -> Result<ByteString, SessionError> {
        let id = ByteString::from(format!("{}{name}", DestinationKind::TempQueue.prefix()));
        let subscribed = self.subscriptions.contains_key(&id);
        if !subscribed && self.subscriptions.len() >= self.settings.max_subscriptions {
            return Err(SessionError::TooManySubscriptions(
                self.settings.max_subscriptions,
            ));
        }
        let reply_to = self.temp_queue(name)?.reply_to().shared().clone();
        if !subscribed {
            let subscriber = Subscriber {
                outbox: self.outbox.clone(),
                id: id.clone(),
                ack: AckMode::Auto,
                prefetch: None,
                queue_ttl: None,
            };
            let subscription = self
                .router
                .subscribe_temp(&self.temp_queues[name], subscriber);
            self.remember(&id, &id, AckMode::Auto);
            self.by_key.insert(subscription.key(), id.clone());
            self.subscriptions.insert(id, subscription);
        }
        Ok(reply_to)
    }

    // ===== SUBSCRIBE / UNSUBSCRIBE =====

    fn subscribe(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        // Header values are slices of the read buffer; a subscription lives long, so it
        // keeps copies rather than pinning the whole buffer for its lifetime.
        let raw_destination = &owned(required(frame, names::DESTINATION)?);
        let id = match frame.headers.get_shared(names::ID) {
            Some(id) => owned(id),
            // STOMP 1.0 subscriptions may go without id; the destination names them.
            None if self.version == Version::V1_0 => raw_destination.clone(),
            None => return Err(missing(frame, names::ID)),
        };
        let ack = match frame.get(names::ACK) {
            None => AckMode::Auto,
            Some(value) => AckMode::parse(value)
                .filter(|mode| self.version > Version::V1_0 || *mode != AckMode::ClientIndividual)
                .ok_or_else(|| {
                    invalid(
                        frame,
                        names::ACK,
                        value,
                        "auto, client or client-individual",
                    )
                })?,
        };
        let prefetch = number_header(frame, PREFETCH_COUNT, "a non-negative integer")?;
        let queue_ttl = number_header(frame, MESSAGE_TTL, "a number of milliseconds")?
            .map(|ms| Duration::from_millis(ms as u64));
        if self.subscriptions.contains_key(&id) {
            return Err(SessionError::DuplicateSubscription(error::shorten(&id)));
        }
        if self.subscriptions.len() >= self.settings.max_subscriptions {
            return Err(SessionError::TooManySubscriptions(
                self.settings.max_subscriptions,
            ));
        }
        let destination = Destination::parse(raw_destination)?;
        self.authorize(Operation::Read, &destination)?;
        let subscriber = Subscriber {
            outbox: self.outbox.clone(),
            id: id.clone(),
            ack,
            prefetch,
            queue_ttl,
        };
        let subscription = match destination.kind() {
            DestinationKind::TempQueue => {
                self.temp_queue(destination.name())?;
                let temp = &self.temp_queues[destination.name()];
                self.router.subscribe_temp(temp, subscriber)
            }
            _ => self.router.subscribe(&destination, subscriber)?,
        };
        self.remember(&id, destination.as_str(), ack);
        self.by_key.insert(subscription.key(), id.clone());
        self.subscriptions.insert(id, subscription);
        Ok(Flow::Continue)
    }

    fn unsubscribe(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let id = match frame.headers.get_shared(names::ID) {
            Some(id) => id,
            None if self.version == Version::V1_0 => required(frame, names::DESTINATION)?,
            None => return Err(missing(frame, names::ID)),
        };
        let subscription = self
            .subscriptions
            .remove(id)
            .ok_or_else(|| SessionError::UnknownSubscription(error::shorten(id)))?;
        self.by_key.remove(&subscription.key());
        // Gone from the router first (its unacknowledged messages back in their queue),
        // so nothing more arrives for it; then what still waits for it is dropped.
        drop(subscription);
        self.outbox.retract(id);
        self.forget(id);
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
        let resolved = self.resolve_ack(frame)?;
        match frame.headers.get_shared(names::TRANSACTION) {
            Some(transaction) => {
                let transaction = transaction.clone();
                self.stage(&transaction, Staged::Ack(resolved))?;
            }
            None => self.apply_ack(resolved)?,
        }
        Ok(Flow::Continue)
    }

    /// Finds the subscription and delivery an ACK or NACK names: by `id` in 1.2, by
    /// `message-id` (and `subscription` in 1.1) before.
    fn resolve_ack(&self, frame: &Frame) -> Result<Acknowledgement, SessionError> {
        let nack = (frame.command == Command::Nack).then(|| frame.get("requeue") != Some("false"));
        let unknown = |what: &'static str, id: &str| SessionError::UnknownAck {
            what,
            id: error::shorten(id),
        };
        // The naming header is kept as received (no copy); it is only shortened into
        // text if the acknowledgement fails.
        let found = |subscription: &ByteString, tag: u64, what: &'static str| Acknowledgement {
            subscription: subscription.clone(),
            tag,
            nack,
            named_by: (
                what,
                frame.headers.get_shared(what).cloned().unwrap_or_default(),
            ),
        };
        if self.version == Version::V1_2 {
            let id = required(frame, names::ID)?;
            let AckTag { consumer: key, tag } =
                AckTag::parse(id).ok_or_else(|| unknown(names::ID, id))?;
            let subscription = self
                .by_key
                .get(&key)
                .ok_or_else(|| unknown(names::ID, id))?;
            return Ok(found(subscription, tag, names::ID));
        }
        let message_id = required(frame, names::MESSAGE_ID)?;
        let candidates: Vec<&ByteString> = match (self.version, frame.get(names::SUBSCRIPTION)) {
            (Version::V1_1, None) => return Err(missing(frame, names::SUBSCRIPTION)),
            (_, Some(id)) => {
                let (id, _) = self
                    .subscriptions
                    .get_key_value(id)
                    .ok_or_else(|| SessionError::UnknownSubscription(error::shorten(id)))?;
                vec![id]
            }
            (_, None) => self.subscriptions.keys().collect(),
        };
        candidates
            .into_iter()
            .find_map(|id| {
                let tag = self.subscriptions[id].tag_of(message_id)?;
                Some(found(id, tag, names::MESSAGE_ID))
            })
            .ok_or_else(|| unknown(names::MESSAGE_ID, message_id))
    }

    fn apply_ack(&self, ack: Acknowledgement) -> Result<(), SessionError> {
        let unknown = || SessionError::UnknownAck {
            what: ack.named_by.0,
            id: error::shorten(&ack.named_by.1),
        };
        let subscription = self
            .subscriptions
            .get(&ack.subscription)
            .ok_or_else(unknown)?;
        match ack.nack {
            None => subscription.ack(ack.tag),
            Some(requeue) => subscription.nack(ack.tag, requeue),
        }
        .map_err(|_| unknown())
    }

    // ===== Transactions =====

    fn begin(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let transaction = required(frame, names::TRANSACTION)?;
        if self.transactions.contains_key(transaction) {
            return Err(SessionError::DuplicateTransaction(error::shorten(
                transaction,
            )));
        }
        if self.transactions.len() >= self.settings.max_transactions {
            return Err(SessionError::TooManyTransactions(
                self.settings.max_transactions,
            ));
        }
        // The id is kept until COMMIT or ABORT: a copy, not a slice of the read buffer.
        self.transactions
            .insert(owned(transaction), Transaction::default());
        Ok(Flow::Continue)
    }

    /// Holds a SEND, ACK or NACK back until its transaction commits. Past a limit the
    /// transaction is dropped at once (its memory freed) and the client gets an ERROR.
    fn stage(&mut self, transaction: &ByteString, staged: Staged) -> Result<(), SessionError> {
        let settings = &self.settings;
        let open = self
            .transactions
            .get_mut(transaction)
            .ok_or_else(|| SessionError::UnknownTransaction(error::shorten(transaction)))?;
        let cost = staged.cost();
        let refusal = if open.frames.len() >= settings.max_transaction_frames {
            Some(SessionError::TransactionTooLarge {
                transaction: error::shorten(transaction),
                limit: settings.max_transaction_frames,
            })
        } else if open.bytes + cost > settings.max_transaction_bytes {
            Some(SessionError::TransactionTooManyBytes {
                transaction: error::shorten(transaction),
                limit: settings.max_transaction_bytes,
            })
        } else if self.staged_bytes + cost > settings.max_staged_bytes {
            Some(SessionError::StagedTooManyBytes(settings.max_staged_bytes))
        } else {
            None
        };
        if let Some(error) = refusal {
            let dropped = self.transactions.remove(transaction).unwrap_or_default();
            self.staged_bytes -= dropped.bytes;
            return Err(error);
        }
        open.frames.push(staged);
        open.bytes += cost;
        self.staged_bytes += cost;
        Ok(())
    }

    /// Applies a transaction's frames in order, with no frame of this connection in
    /// between.
    async fn commit(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let staged = self.take_transaction(frame)?;
        for item in staged {
            match item {
                Staged::Send(destination, send) => {
                    self.router
                        .publish(&mut self.queue_cache, destination, send.headers, send.body)
                        .await?;
                }
                Staged::Ack(ack) => self.apply_ack(ack)?,
            }
        }
        Ok(Flow::Continue)
    }

    fn abort(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        self.take_transaction(frame)?;
        Ok(Flow::Continue)
    }

    fn take_transaction(&mut self, frame: &Frame) -> Result<Vec<Staged>, SessionError> {
        let transaction = required(frame, names::TRANSACTION)?;
        let taken = self
            .transactions
            .remove(transaction)
            .ok_or_else(|| SessionError::UnknownTransaction(error::shorten(transaction)))?;
        self.staged_bytes -= taken.bytes;
        Ok(taken.frames)
    }
}

/// The value of a header the frame must have.
fn required<'f>(frame: &'f Frame, header: &'static str) -> Result<&'f ByteString, SessionError> {
    frame
        .headers
        .get_shared(header)
        .ok_or_else(|| missing(frame, header))
}

/// A numeric header, if present.
fn number_header(
    frame: &Frame,
    header: &'static str,
    expected: &'static str,
) -> Result<Option<usize>, SessionError> {
    frame
        .get(header)
        .map(|value| {
            value
                .trim()
                .parse()
                .map_err(|_| invalid(frame, header, value, expected))
        })
        .transpose()
}

fn invalid(
    frame: &Frame,
    header: &'static str,
    value: &str,
    expected: &'static str,
) -> SessionError {
    SessionError::InvalidHeader {
        command: frame.command,
        header,
        value: error::shorten(value),
        expected,
    }
}

fn missing(frame: &Frame, header: &'static str) -> SessionError {
    SessionError::MissingHeader {
        command: frame.command,
        header,
    }
}
