//! A connection from its first byte to its last: the CONNECT handshake, registration,
//! running the reader and writer side by side, and the closing log line and counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use postbox_router::{CloseReason, QueueCache, outbox};
use postbox_stomp::headers::names;
use postbox_stomp::{Command, Frame, Item, StompCodec, Version, encode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::read_loop::ReaderEnd;
use super::reader::{FrameReader, ReadError};
use super::writer::{Writer, WriterEnd};
use super::{Context, Peer, Session, SessionError, access, connect};
use crate::metrics::DisconnectReason;
use crate::registry::{Opening, Traffic};

pub(super) async fn run<R, W>(read: R, mut write: W, context: Context, peer: Peer)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let settings = context.services.settings();
    let metrics = &context.services.metrics;
    let traffic = Arc::new(Traffic::default());
    let mut reader = FrameReader::new(
        read,
        StompCodec::new(Version::V1_2, settings.limits),
        traffic.clone(),
    )
    .with_memory_alarm(context.services.memory.clone());
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
    let negotiated = match connect::negotiate(&connect, &settings, &context.services.vhosts) {
        Ok(negotiated) => negotiated,
        Err(error) => refuse!(error, None),
    };
    let principal = match access::authenticate(&context, &connect, &peer).await {
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
    let registered = context.services.registry.open(Opening {
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
        auth: context.services.auth.clone(),
        connection: registered.connection.clone(),
        memory: context.services.memory.clone(),
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
