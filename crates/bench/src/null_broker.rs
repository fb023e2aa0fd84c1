//! A stand-in broker that parses nothing, to find what the machine itself allows.
//!
//! It answers a connection's first read with CONNECTED, a later read that mentions
//! `receipt` with a RECEIPT, and a read that starts with SEND by writing one canned
//! MESSAGE to every connection. Run the `connections` scenario against it and against
//! a real broker in turn: what the real broker adds is its own cost; the rest is the
//! kernel's TCP and the load generator, which share this machine's cores.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const CONNECTED: &[u8] = b"CONNECTED\nversion:1.2\n\n\0";
const RECEIPT: &[u8] = b"RECEIPT\nreceipt-id:s\n\n\0";
const MESSAGE: &[u8] =
    b"MESSAGE\nsubscription:0\nmessage-id:0\ndestination:/topic/null\ncontent-length:3\n\nnow\0";

type Peers = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<&'static [u8]>>>>;

/// Serves on `addr` until the process is stopped.
pub async fn run(addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("null broker on {}", listener.local_addr()?);
    let peers = Peers::default();
    for id in 0.. {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let (own, mut frames) = mpsc::unbounded_channel::<&'static [u8]>();
        peers.lock().expect("peers lock").insert(id, own.clone());
        tokio::spawn(async move {
            while let Some(frame) = frames.recv().await {
                if write.write_all(frame).await.is_err() {
                    return;
                }
            }
        });
        let peers = peers.clone();
        tokio::spawn(async move {
            read_loop(read, own, &peers).await;
            // The writer ends, and the socket closes, once no sender is left.
            peers.lock().expect("peers lock").remove(&id);
        });
    }
    Ok(())
}

async fn read_loop(
    mut read: tokio::net::tcp::OwnedReadHalf,
    own: mpsc::UnboundedSender<&'static [u8]>,
    peers: &Peers,
) {
    let mut buf = vec![0u8; 4096];
    let mut connected = false;
    loop {
        let chunk = match read.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => &buf[..n],
        };
        if !connected {
            connected = true;
            let _ = own.send(CONNECTED);
        } else if chunk.starts_with(b"SEND") {
            for peer in peers.lock().expect("peers lock").values() {
                let _ = peer.send(MESSAGE);
            }
        } else if chunk.windows(7).any(|w| w == b"receipt") {
            let _ = own.send(RECEIPT);
        }
    }
}
