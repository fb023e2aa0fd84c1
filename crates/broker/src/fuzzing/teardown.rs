//! The end of an input: every client leaves, the sessions must end, and the broker's
//! queues are inspected and emptied so the oracle can account for every message.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use postbox_stomp::{Command, Item, Limits, StompCodec, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;

use super::frames;
use super::input::Leave;
use super::oracle::Summary;
use super::world::{SLOTS, World, settle};

impl World {
    /// Every client leaves; then the sessions must end, no queue may hold deliveries
    /// or consumers, and every accepted message must be accounted for.
    pub(super) async fn finish(mut self) -> Summary {
        for slot in 0..SLOTS {
            self.leave(slot, Leave::Reset).await;
        }
        for _ in 0..40 {
            if self.closed.iter().all(JoinHandle::is_finished) {
                break;
            }
            settle().await;
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        for session in self.closed.drain(..) {
            assert!(
                session.is_finished(),
                "a session did not end after its client left"
            );
            if let Err(error) = session.await {
                std::panic::resume_unwind(error.into_panic());
            }
        }
        assert!(
            self.services().registry.is_empty(),
            "sessions still registered after they ended"
        );
        let router = self
            .services()
            .vhosts
            .select(Some("/"))
            .expect("the default host");
        let mut ready = 0;
        let mut queues = Vec::new();
        for queue in router.queues() {
            let (waiting, unacked) = queue.depth();
            let name = queue.destination().as_str().to_owned();
            assert_eq!(
                unacked, 0,
                "{name} holds deliveries after every client left"
            );
            assert_eq!(queue.consumer_count(), 0, "{name} has consumers left");
            if name.starts_with("/queue/") && waiting > 0 {
                ready += waiting;
                queues.push(name);
            }
        }
        let totals = router.queue_totals();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let lossy = load(&totals.dropped) + load(&totals.expired) > 0;
        let drained = self.drain(&queues, ready).await;
        let summary = self.oracle.summary(drained.len());
        // A queue that dropped or expired messages may have lost accepted ones.
        if !lossy {
            self.oracle.check_accounted(&drained);
        }
        summary
    }

    /// Consumes what the queues still hold (`ready` messages in all) on a fresh
    /// connection; returns the message numbers.
    async fn drain(&mut self, queues: &[String], ready: usize) -> HashSet<u64> {
        let mut drained = HashSet::new();
        if queues.is_empty() {
            return drained;
        }
        let (mut io, session) = self.open(1 << 16);
        io.write_all(frames::drain(queues).as_bytes())
            .await
            .expect("drain connect");
        let mut codec = StompCodec::new(Version::V1_2, Limits::default());
        let mut buf = BytesMut::new();
        let mut seen = 0;
        let mut chunk = [0u8; 8192];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while seen < ready {
            while let Some(item) = codec.decode(&mut buf).expect("valid frames") {
                if let Item::Frame(frame) = item {
                    assert!(
                        matches!(frame.command, Command::Connected | Command::Message),
                        "{frame:?}"
                    );
                    if frame.command == Command::Message {
                        seen += 1;
                        let Some(n) = frames::message_number(&frame) else {
                            continue;
                        };
                        drained.insert(n);
                        let destination = frame.get("destination").unwrap_or_default();
                        if frame.get("redelivered") != Some("true") {
                            self.oracle.fresh((destination.to_owned(), n));
                        }
                    }
                }
            }
            if seen >= ready {
                break;
            }
            let read = tokio::time::timeout_at(deadline, io.read(&mut chunk)).await;
            match read {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                other => panic!("draining {ready} messages stopped after {seen}: {other:?}"),
            }
        }
        drop(io);
        let _ = tokio::time::timeout(Duration::from_secs(60), session).await;
        drained
    }
}
