//! Cluster queues on Redis streams.
//!
//! Each queue is a stream with one consumer group, `postbox`, in which every node is a
//! consumer. A SEND is accepted once `XADD` succeeds. A node fetches (`XREADGROUP`) only
//! as many entries as its local consumers have prefetch credit for, so no node hoards
//! messages; acknowledged entries are removed (`XACK`, `XDEL`). A node keeps the entries
//! it holds fresh (`XCLAIM ... JUSTID` resets their idle time); entries idle longer than
//! `claim_idle` belong to a node that died and are taken over (`XAUTOCLAIM`) by whoever
//! fetches next, and delivered with `redelivered:true`. A node whose last local consumer
//! leaves marks its entries as long idle, so others take them over at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use postbox_router::{
    BoxFuture, Destination, LocalQueue, Message as RouterMessage, Overflow, QueueStore, StoreError,
    StoreReceipt,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::wire::{self, EnvelopeKind};
use crate::{ClusterRelay, Control, GROUP, Inner};

/// A running fetch loop for one local queue.
#[derive(Debug)]
pub(crate) struct Fetcher {
    queue: Arc<dyn LocalQueue>,
    doorbell: Arc<Notify>,
}

fn command(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::FirstKey, false)
}

async fn run(inner: &Inner, name: &'static str, args: Vec<Value>) -> Result<Value, Error> {
    inner.client.custom(command(name), args).await
}

fn text(value: &str) -> Value {
    Value::String(value.into())
}

impl QueueStore for ClusterRelay {
    fn append(
        &self,
        vhost: &str,
        queue: &Destination,
        message: Arc<RouterMessage>,
        expires_at: Option<SystemTime>,
    ) -> BoxFuture<Result<(), StoreError>> {
        let inner = self.inner.clone();
        let vhost = vhost.to_owned();
        let queue = queue.as_str().to_owned();
        Box::pin(async move { append(&inner, &vhost, &queue, &message, expires_at).await })
    }

    fn attach(&self, vhost: &str, queue: Arc<dyn LocalQueue>) {
        let key = (vhost.to_owned(), queue.destination().as_str().to_owned());
        let mut fetchers = self
            .inner
            .fetchers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if fetchers
            .get(&key)
            .is_some_and(|f| Arc::ptr_eq(&f.queue, &queue))
        {
            return;
        }
        let doorbell = Arc::new(Notify::new());
        fetchers.insert(
            key,
            Fetcher {
                queue: queue.clone(),
                doorbell: doorbell.clone(),
            },
        );
        tokio::spawn(fetch(self.inner.clone(), vhost.to_owned(), queue, doorbell));
    }

    fn settle(&self, vhost: &str, queue: &Destination, receipts: Vec<StoreReceipt>) {
        self.inner.control(Control::Settle {
            key: self.inner.stream_key(vhost, queue.as_str()),
            ids: receipts.into_iter().map(|r| r.0).collect(),
        });
    }

    fn release(&self, vhost: &str, queue: &Destination, receipts: Vec<StoreReceipt>) {
        self.inner.control(Control::Release {
            vhost: vhost.to_owned(),
            queue: queue.as_str().to_owned(),
            key: self.inner.stream_key(vhost, queue.as_str()),
            ids: receipts.into_iter().map(|r| r.0).collect(),
        });
    }
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Creates the stream and its consumer group if needed (once per key and process).
async fn ensure_group(inner: &Inner, key: &str) -> Result<(), Error> {
    if inner
        .groups
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(key)
    {
        return Ok(());
    }
    let created = run(
        inner,
        "XGROUP",
        vec![
            text("CREATE"),
            text(key),
            text(GROUP),
            text("0"),
            text("MKSTREAM"),
        ],
    )
    .await;
    match created {
        Ok(_) => {}
        Err(error) if error.details().contains("BUSYGROUP") => {}
        Err(error) => return Err(error),
    }
    inner
        .groups
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.to_owned());
    Ok(())
}

/// Forgets that a group exists (Redis lost it, e.g. restarted without persistence).
fn forget_group(inner: &Inner, key: &str) {
    inner
        .groups
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(key);
}

async fn append(
    inner: &Arc<Inner>,
    vhost: &str,
    queue: &str,
    message: &RouterMessage,
    expires_at: Option<SystemTime>,
) -> Result<(), StoreError> {
    let key = inner.stream_key(vhost, queue);
    let blob = wire::encode_message(message, expires_at);
    let deadline = Instant::now() + inner.config.store_timeout;
    tokio::time::timeout_at(deadline, ensure_group(inner, &key))
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
    let max = inner.config.queue_max_length;
    let mut args = vec![text(&key)];
    match inner.config.queue_overflow {
        Overflow::DropHead => {
            args.extend([text("MAXLEN"), text("="), Value::Integer(max as i64)]);
        }
        Overflow::Reject => {
            if length(inner, &key, deadline).await? >= max {
                return Err(StoreError::Full(queue.to_owned()));
            }
        }
        Overflow::Block | Overflow::CloseConsumers => loop {
            // Room is checked while Redis answers; a full queue holds the producer back
            // for as long as it stays full.
            let deadline = Instant::now() + inner.config.store_timeout;
            if length(inner, &key, deadline).await? < max {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        },
    }
    args.extend([text("*"), text("m"), Value::Bytes(blob)]);
    let deadline = Instant::now() + inner.config.store_timeout;
    tokio::time::timeout_at(deadline, run(inner, "XADD", args))
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
    doorbells(inner, vhost, queue);
    Ok(())
}

/// The number of entries in a stream (waiting and unacknowledged).
async fn length(inner: &Inner, key: &str, deadline: Instant) -> Result<usize, StoreError> {
    let length: i64 = tokio::time::timeout_at(deadline, inner.client.xlen(key))
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
    Ok(length.max(0) as usize)
}

/// Wakes the fetchers of `queue` on this node and on every node with consumers of it.
fn doorbells(inner: &Arc<Inner>, vhost: &str, queue: &str) {
    ring(inner, vhost, queue);
    let nodes = inner
        .replica
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .nodes_for_queue(vhost, queue);
    if nodes.is_empty() {
        return;
    }
    let payload = wire::encode_envelope(EnvelopeKind::Doorbell, vhost, queue.as_bytes());
    for node in nodes {
        inner.send_to(&node, payload.clone());
    }
}

/// Wakes this node's fetcher of `queue`, if it has one.
pub(crate) fn ring(inner: &Inner, vhost: &str, queue: &str) {
    let fetchers = inner.fetchers.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(fetcher) = fetchers.get(&(vhost.to_owned(), queue.to_owned())) {
        fetcher.doorbell.notify_one();
    }
}

/// Fetches entries for a local queue while it has consumers.
///
/// Invariants:
/// - At most one fetcher runs per local queue: `attach` registers it in `fetchers` and
///   this loop removes itself under the same lock, after seeing no consumer. A consumer
///   added meanwhile either finds this fetcher still registered (and the loop, checking
///   under the lock, sees the consumer and goes on) or, once it is gone, starts a new one.
/// - A live node keeps what it holds: `touch_every` (a third of `claim_idle`) refreshes
///   every held entry's idle time about three times per claim period, so only a node
///   that stopped for longer than about two thirds of `claim_idle` loses entries to a
///   claim.
/// - Fetching never exceeds the local consumers' credit (`demand`), so a node holds no
///   more than it can hand out; claims come first, so a dead node's entries, the oldest,
///   go out before new ones.
async fn fetch(
    inner: Arc<Inner>,
    vhost: String,
    queue: Arc<dyn LocalQueue>,
    doorbell: Arc<Notify>,
) {
    let name = queue.destination().as_str().to_owned();
    let key = inner.stream_key(&vhost, &name);
    let claim_idle = inner.config.claim_idle;
    let claim_every = (claim_idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let touch_every = (claim_idle / 3).max(Duration::from_millis(100));
    let mut next_claim = Instant::now();
    let mut next_touch = Instant::now() + touch_every;
    loop {
        {
            // Lock order: `fetchers`, then the queue's own state (`consumer_count`).
            let mut fetchers = inner.fetchers.lock().unwrap_or_else(|p| p.into_inner());
            if queue.consumer_count() == 0 || inner.stop.is_cancelled() {
                let map_key = (vhost.clone(), name.clone());
                if fetchers
                    .get(&map_key)
                    .is_some_and(|f| Arc::ptr_eq(&f.queue, &queue))
                {
                    fetchers.remove(&map_key);
                }
                return;
            }
        }
        let mut fetched = 0;
        if queue.demand() > 0 {
            if Instant::now() >= next_claim {
                fetched += claim(&inner, &key, &*queue).await;
                next_claim = Instant::now() + claim_every;
            }
            let demand = queue.demand();
            if demand > 0 {
                fetched += read_new(&inner, &key, &*queue, demand).await;
            }
        }
        if Instant::now() >= next_touch {
            touch(&inner, &key, queue.held_receipts()).await;
            next_touch = Instant::now() + touch_every;
        }
        // Something came: there may be more right away, so ask again before sleeping.
        if fetched > 0 {
            continue;
        }
        // Woken by a SEND to this queue anywhere in the cluster (the doorbell), by freed
        // credit, or by the timer that also drives claims and touches.
        tokio::select! {
            _ = inner.stop.cancelled() => {}
            _ = doorbell.notified() => {}
            _ = queue.demand_changed() => {}
            _ = tokio::time::sleep(claim_every.min(Duration::from_millis(250))) => {}
        }
    }
}

/// Reads new entries for this node.
async fn read_new(inner: &Inner, key: &str, queue: &dyn LocalQueue, count: usize) -> usize {
    if let Err(error) = ensure_group(inner, key).await {
        inner.failed("creating a queue's consumer group", &error);
        return 0;
    }
    let args = vec![
        text("GROUP"),
        text(GROUP),
        text(inner.node()),
        text("COUNT"),
        Value::Integer(count as i64),
        text("STREAMS"),
        text(key),
        text(">"),
    ];
    match run(inner, "XREADGROUP", args).await {
        Ok(reply) => take(inner, key, queue, reply, false),
        Err(error) => {
            if error.details().contains("NOGROUP") {
                forget_group(inner, key);
            } else {
                inner.failed("reading a queue", &error);
            }
            0
        }
    }
}

/// Takes over entries another node held too long (it died), oldest first.
async fn claim(inner: &Inner, key: &str, queue: &dyn LocalQueue) -> usize {
    let args = vec![
        text(key),
        text(GROUP),
        text(inner.node()),
        Value::Integer(inner.config.claim_idle.as_millis() as i64),
        text("0-0"),
        text("COUNT"),
        Value::Integer(queue.demand().max(1) as i64),
    ];
    match run(inner, "XAUTOCLAIM", args).await {
        Ok(reply) => take(inner, key, queue, reply, true),
        Err(error) => {
            if error.details().contains("NOGROUP") {
                forget_group(inner, key);
            } else {
                inner.failed("claiming queue entries", &error);
            }
            0
        }
    }
}

/// Hands fetched entries to the local queue; returns how many.
///
/// Every entry ends one of three ways, so none is left pending without an owner that
/// keeps it fresh: handed to the local queue (held here until acknowledged); expired or
/// undecodable, settled at once (removed, never delivered); refused by the local queue
/// (deleted or full meanwhile), released for another node to fetch.
fn take(inner: &Inner, key: &str, queue: &dyn LocalQueue, reply: Value, claimed: bool) -> usize {
    let mut entries = Vec::new();
    collect_entries(&reply, &mut entries);
    let count = entries.len();
    let mut expired = Vec::new();
    let mut refused = Vec::new();
    for (id, blob) in entries {
        let (message, expires_at) = match wire::decode_message(blob) {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::warn!(key, %id, "dropping an undecodable queue entry: {error}");
                expired.push(id);
                continue;
            }
        };
        let expires_at = match expires_at {
            None => None,
            Some(at) => match at.duration_since(SystemTime::now()) {
                Ok(left) => Instant::now().checked_add(left),
                Err(_) => {
                    queue.count_expired();
                    expired.push(id);
                    continue;
                }
            },
        };
        // A claimed entry was delivered before, on the node that died.
        if !queue.fetched(message, expires_at, claimed, StoreReceipt(id.clone())) {
            refused.push(id);
        }
    }
    if !expired.is_empty() {
        inner.control(Control::Settle {
            key: key.to_owned(),
            ids: expired,
        });
    }
    if !refused.is_empty() {
        inner.control(Control::Release {
            vhost: String::new(),
            queue: String::new(),
            key: key.to_owned(),
            ids: refused,
        });
    }
    count
}

/// Finds `[id, ["m", blob]]` pairs anywhere in an XREADGROUP or XAUTOCLAIM reply.
fn collect_entries(value: &Value, out: &mut Vec<(Arc<str>, Bytes)>) {
    let Value::Array(items) = value else {
        if let Value::Map(map) = value {
            for (_, value) in map.clone().inner() {
                collect_entries(&value, out);
            }
        }
        return;
    };
    if let [id, Value::Array(fields)] = items.as_slice()
        && let Some(id) = id.as_str().filter(|id| is_entry_id(id))
    {
        let mut fields = fields.iter();
        while let (Some(name), Some(blob)) = (fields.next(), fields.next()) {
            if name.as_str().as_deref() == Some("m")
                && let Some(bytes) = blob.as_bytes()
            {
                out.push((Arc::from(&*id), Bytes::copy_from_slice(bytes)));
            }
        }
        return;
    }
    for item in items {
        collect_entries(item, out);
    }
}

fn is_entry_id(text: &str) -> bool {
    text.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.bytes().all(|b| b.is_ascii_digit())
            && seq.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Resets the idle time of entries this node holds, so nobody claims them from it.
async fn touch(inner: &Inner, key: &str, receipts: Vec<StoreReceipt>) {
    for chunk in receipts.chunks(500) {
        let mut args = vec![
            text(key),
            text(GROUP),
            text(inner.node()),
            Value::Integer(0),
        ];
        args.extend(chunk.iter().map(|r| text(&r.0)));
        args.push(text("JUSTID"));
        if let Err(error) = run(inner, "XCLAIM", args).await {
            inner.failed("refreshing held queue entries", &error);
        }
    }
}

/// Acknowledges and deletes entries.
pub(crate) async fn settle_now(inner: &Inner, key: &str, ids: Vec<Arc<str>>) {
    for chunk in ids.chunks(500) {
        let mut ack = vec![text(key), text(GROUP)];
        ack.extend(chunk.iter().map(|id| text(id)));
        let mut delete = vec![text(key)];
        delete.extend(chunk.iter().map(|id| text(id)));
        let pipeline = inner.client.pipeline();
        let _: Result<(), Error> = pipeline.custom(command("XACK"), ack).await;
        let _: Result<(), Error> = pipeline.custom(command("XDEL"), delete).await;
        if let Some(Err(error)) = pipeline
            .try_all::<Value>()
            .await
            .into_iter()
            .find(|r| r.is_err())
        {
            inner.failed("acknowledging queue entries", &error);
        }
    }
}

/// Marks entries as long idle so the next fetch anywhere takes them over, and wakes the
/// nodes that have consumers.
pub(crate) async fn release_now(
    inner: &Arc<Inner>,
    vhost: &str,
    queue: &str,
    key: &str,
    ids: Vec<Arc<str>>,
) {
    let idle = (inner.config.claim_idle.as_millis() as i64)
        .saturating_mul(1000)
        .max(1);
    for chunk in ids.chunks(500) {
        let mut args = vec![
            text(key),
            text(GROUP),
            text(inner.node()),
            Value::Integer(0),
        ];
        args.extend(chunk.iter().map(|id| text(id)));
        args.extend([text("IDLE"), Value::Integer(idle), text("JUSTID")]);
        if let Err(error) = run(inner, "XCLAIM", args).await {
            inner.failed("releasing queue entries", &error);
        }
    }
    if !queue.is_empty() {
        doorbells(inner, vhost, queue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_in_both_reply_shapes() {
        let entry = |id: &str, body: &'static [u8]| {
            Value::Array(vec![
                text(id),
                Value::Array(vec![text("m"), Value::Bytes(Bytes::from_static(body))]),
            ])
        };
        let xreadgroup = Value::Array(vec![Value::Array(vec![
            text("postbox:queue:/:/queue/jobs"),
            Value::Array(vec![entry("1-0", b"a"), entry("2-5", b"b")]),
        ])]);
        let xautoclaim = Value::Array(vec![
            text("0-0"),
            Value::Array(vec![entry("3-0", b"c")]),
            Value::Array(vec![text("4-0")]),
        ]);
        let mut found = Vec::new();
        collect_entries(&xreadgroup, &mut found);
        collect_entries(&xautoclaim, &mut found);
        collect_entries(&Value::Null, &mut found);
        let ids: Vec<&str> = found.iter().map(|(id, _)| &**id).collect();
        assert_eq!(ids, ["1-0", "2-5", "3-0"]);
        assert_eq!(&found[2].1[..], b"c");
    }
}
