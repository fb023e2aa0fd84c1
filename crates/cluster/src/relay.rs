//! Topic and reply traffic between nodes, and the ordered control work (interest
//! announcements, queue acknowledgements) that goes to Redis in the background.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fred::prelude::*;
use postbox_router::{Message as RouterMessage, QueueStore, Relay};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tracing::warn;

use crate::wire::{self, EnvelopeKind};
use crate::{ClusterRelay, Control, Inner, Outgoing, interest_field};

/// Most envelopes waiting to be published before new ones are dropped (Redis is down or
/// far behind); topic messages are not durable, and memory must stay bounded.
pub(crate) const MAX_PENDING: usize = 200_000;
/// Longest time one batch of publishes may take.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

impl Inner {
    /// Queues an envelope for another node's inbox; drops it (counted) when the backlog
    /// is full.
    pub(crate) fn send_to(&self, node: &str, payload: bytes::Bytes) {
        let item = Outgoing {
            channel: self.inbox(node),
            payload,
        };
        if self.outgoing.try_send(item).is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Relay for ClusterRelay {
    fn forward(&self, vhost: &str, message: &Arc<RouterMessage>) {
        let name = message.destination().name();
        let nodes = self
            .inner
            .replica
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .nodes_for_topic(vhost, name);
        if nodes.is_empty() {
            return;
        }
        let payload = wire::encode_envelope(
            EnvelopeKind::Topic,
            vhost,
            &wire::encode_message(message, None),
        );
        for node in nodes {
            self.inner.send_to(&node, payload.clone());
        }
    }

    fn forward_reply(&self, vhost: &str, node: &str, message: &Arc<RouterMessage>) -> bool {
        let known = self
            .inner
            .replica
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .knows(node);
        if known {
            let payload = wire::encode_envelope(
                EnvelopeKind::Reply,
                vhost,
                &wire::encode_message(message, None),
            );
            self.inner.send_to(node, payload);
        }
        known
    }

    fn interest(&self, vhost: &str, destination: &str, count: usize) {
        {
            let mut local = self.inner.local.lock().unwrap_or_else(|p| p.into_inner());
            let key = (vhost.to_owned(), destination.to_owned());
            if count == 0 {
                local.remove(&key);
            } else {
                local.insert(key, count);
            }
        }
        self.inner.control(Control::Interest {
            vhost: vhost.to_owned(),
            destination: destination.to_owned(),
            count,
        });
    }

    fn queue_store(&self) -> Option<Arc<dyn QueueStore>> {
        Some(Arc::new(self.clone()))
    }
}

/// Receives this node's inbox and the cluster's interest events.
pub(crate) async fn inbound(
    inner: Arc<Inner>,
    mut messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
) {
    let inbox = inner.inbox(inner.node());
    let events = inner.events();
    loop {
        let message = tokio::select! {
            _ = inner.stop.cancelled() => return,
            message = messages.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(RecvError::Lagged(missed)) => {
                inner.stats.errors.fetch_add(missed, Ordering::Relaxed);
                warn!(
                    missed,
                    "cluster: inbound messages were dropped because this node fell behind"
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let Some(payload) = message.value.as_bytes().map(bytes::Bytes::copy_from_slice) else {
            continue;
        };
        if *message.channel == *inbox {
            inner.stats.received.fetch_add(1, Ordering::Relaxed);
            deliver(&inner, payload);
        } else if *message.channel == *events {
            apply_event(&inner, &payload);
        }
    }
}

fn deliver(inner: &Arc<Inner>, payload: bytes::Bytes) {
    let envelope = match wire::decode_envelope(payload) {
        Ok(envelope) => envelope,
        Err(error) => return warn!("cluster: {error}"),
    };
    if envelope.kind == EnvelopeKind::Doorbell {
        if let Ok(queue) = std::str::from_utf8(&envelope.payload) {
            crate::store::ring(inner, &envelope.vhost, queue);
        }
        return;
    }
    let Some(router) = inner.router(&envelope.vhost) else {
        return;
    };
    // `publish_local` delivers to this node's subscribers only and never hands the
    // message back to the relay: that is what keeps every message to one hop.
    match wire::decode_message(envelope.payload) {
        Ok((message, _)) => router.publish_local(message),
        Err(error) => warn!("cluster: {error}"),
    }
}

/// `node \0 vhost \0 destination \0 count`
fn apply_event(inner: &Inner, payload: &[u8]) {
    let Ok(text) = std::str::from_utf8(payload) else {
        return;
    };
    let mut parts = text.split('\u{0}');
    let (Some(node), Some(vhost), Some(destination), Some(count)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    if node == inner.node() {
        return;
    }
    let Ok(count) = count.parse::<usize>() else {
        return;
    };
    inner
        .replica
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .apply(node, vhost, destination, count);
}

/// Publishes queued envelopes in pipelined batches.
pub(crate) async fn publisher(inner: Arc<Inner>, mut outgoing: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(512);
    loop {
        let n = tokio::select! {
            _ = inner.stop.cancelled() => return,
            n = outgoing.recv_many(&mut batch, 512) => n,
        };
        if n == 0 {
            return;
        }
        let pipeline = inner.client.pipeline();
        for item in batch.drain(..) {
            let queued: Result<(), Error> = pipeline.publish(item.channel, item.payload).await;
            if let Err(error) = queued {
                inner.failed("queueing a publish", &error);
            }
        }
        match tokio::time::timeout(BATCH_TIMEOUT, pipeline.try_all::<Value>()).await {
            Ok(results) => {
                let sent = results.iter().filter(|r| r.is_ok()).count() as u64;
                inner.stats.forwarded.fetch_add(sent, Ordering::Relaxed);
                if let Some(Err(error)) = results.into_iter().find(|r| r.is_err()) {
                    inner.failed("publishing to other nodes", &error);
                }
            }
            Err(_) => {
                inner.stats.errors.fetch_add(n as u64, Ordering::Relaxed);
                warn!(dropped = n, "cluster: publishing to other nodes timed out");
            }
        }
    }
}

/// Does control work in order: interest announcements and queue bookkeeping.
pub(crate) async fn controller(inner: Arc<Inner>, mut control: mpsc::Receiver<Control>) {
    let mut batch = Vec::with_capacity(256);
    loop {
        let n = tokio::select! {
            _ = inner.stop.cancelled() => return,
            n = control.recv_many(&mut batch, 256) => n,
        };
        if n == 0 {
            return;
        }
        // Acknowledgements of one stream are merged into one XACK and one XDEL, done
        // after the batch's other items. That reordering is safe: an entry is either
        // settled or released, never both, and interest changes do not touch entries.
        let mut settles: HashMap<String, Vec<Arc<str>>> = HashMap::new();
        for item in batch.drain(..) {
            match item {
                Control::Settle { key, ids } => settles.entry(key).or_default().extend(ids),
                Control::Interest {
                    vhost,
                    destination,
                    count,
                } => announce_interest(&inner, &vhost, &destination, count).await,
                Control::Release {
                    vhost,
                    queue,
                    key,
                    ids,
                } => crate::store::release_now(&inner, &vhost, &queue, &key, ids).await,
            }
        }
        for (key, ids) in settles {
            crate::store::settle_now(&inner, &key, ids).await;
        }
    }
}

/// Records this node's count for a destination in its interest hash (which nodes joining
/// later read), then tells the running nodes through the events channel (which they
/// apply to their replica at once). If either step fails, the heartbeat's rewrite of the
/// whole hash repairs the hash, and other nodes' periodic re-read repairs their replica.
async fn announce_interest(inner: &Inner, vhost: &str, destination: &str, count: usize) {
    let key = inner.interest_key(inner.node());
    let field = interest_field(vhost, destination);
    let stored: Result<(), Error> = if count == 0 {
        inner.client.hdel(key, field).await
    } else {
        inner.client.hset(key, (field, count as i64)).await
    };
    if let Err(error) = stored {
        // The heartbeat rewrites the whole interest hash once Redis is back.
        return inner.failed("announcing interest", &error);
    }
    let event = format!("{}\u{0}{vhost}\u{0}{destination}\u{0}{count}", inner.node());
    let published: Result<(), Error> = inner.client.publish(inner.events(), event).await;
    if let Err(error) = published {
        inner.failed("announcing interest", &error);
    }
}
