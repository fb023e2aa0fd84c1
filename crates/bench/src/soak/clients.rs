//! What every load task shares about connecting and waiting: CONNECT through the
//! framed client or over a bare socket, waiting for a close or a receipt, and sleeping
//! unless stopped.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use postbox_stomp::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::stats::Stats;
use crate::conn::{self, Target};

/// Connecting (TCP and CONNECT→CONNECTED) may take this long before it counts as failed.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time the broker has to close a connection it should close (after FIN, DISCONNECT or
/// an ERROR) before that counts as an anomaly.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects with the framed client under [`CONNECT_TIMEOUT`], counting the outcome.
pub(super) async fn connect(
    target: &Target,
    stats: &Stats,
) -> io::Result<(conn::Reader, conn::Writer)> {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, conn::connect(target))
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no CONNECTED")));
    match &connected {
        Ok(_) => stats.connects.fetch_add(1, Ordering::Relaxed),
        Err(_) => stats.connect_failures.fetch_add(1, Ordering::Relaxed),
    };
    connected
}

/// Reads and discards until end of stream; false if it has not come within `timeout`.
pub(super) async fn closes_within(reader: &mut conn::Reader, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, async {
        loop {
            while let Ok(Some(_)) = reader.buffered_message() {}
            match reader.fill().await {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
    })
    .await
    .is_ok()
}

/// Waits for the RECEIPT `id`, skipping messages; false on anything else.
pub(super) async fn receipt_within(reader: &mut conn::Reader, id: &str, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, async {
        loop {
            while let Ok(Some(received)) = reader.buffered_message() {
                if let conn::Received::Frame(frame) = received
                    && frame.command != Command::Message
                {
                    return frame.command == Command::Receipt
                        && frame.get("receipt-id") == Some(id);
                }
            }
            match reader.fill().await {
                Ok(true) => {}
                Ok(false) | Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Opens a plain TCP connection and completes CONNECT, leaving nothing unread.
/// `receive_buffer` sets `SO_RCVBUF` first.
pub(super) async fn raw_connect(
    target: &Target,
    receive_buffer: Option<u32>,
    stats: &Stats,
) -> io::Result<TcpStream> {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let socket = if target.addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let mut stream = socket.connect(target.addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&connect_frame(target)).await?;
        let mut head = Vec::new();
        let mut byte = [0u8; 256];
        while !head.contains(&0) {
            let n = stream.read(&mut byte).await?;
            if n == 0 || head.len() > 64 * 1024 {
                return Err(io::Error::other("no CONNECTED"));
            }
            head.extend_from_slice(&byte[..n]);
        }
        if !head.starts_with(b"CONNECTED") {
            return Err(io::Error::other(format!(
                "CONNECT refused: {}",
                String::from_utf8_lossy(&head[..head.len().min(200)])
            )));
        }
        Ok(stream)
    })
    .await
    .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no CONNECTED")));
    match &connected {
        Ok(_) => stats.connects.fetch_add(1, Ordering::Relaxed),
        Err(_) => stats.connect_failures.fetch_add(1, Ordering::Relaxed),
    };
    connected
}

/// The CONNECT frame `raw_connect` writes, encoded.
fn connect_frame(target: &Target) -> BytesMut {
    let frame = conn::connect_frame(target);
    let mut out = BytesMut::new();
    postbox_stomp::encode::encode_frame(&frame, postbox_stomp::Version::V1_2, &mut out);
    out
}

/// Sleeps unless stopped first.
pub(super) async fn pause(stop: &CancellationToken, period: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(period) => {}
    }
}
