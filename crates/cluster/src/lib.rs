//! The cluster relay: any number of `postbox` processes sharing one Redis act as one
//! broker.
//!
//! - **Topics**: every node keeps a copy of every other node's subscriptions
//!   ([`interest`]). A message published on a node goes, once, to the inbox channel of
//!   each node with a matching subscription, and that node delivers it locally only. A
//!   node never gets its own messages back, and no message travels more than one hop.
//! - **Queues**: a queue is a Redis stream with one consumer group for the cluster
//!   ([`store`]). A SEND is accepted once the entry is in the stream; each node fetches
//!   as many entries as its local consumers have credit for. Entries held too long by a
//!   node that stopped refreshing them (because it died) are claimed by the others and
//!   redelivered with `redelivered:true`.
//! - **Presence**: subscription counts per destination and node live in Redis next to a
//!   liveness key that expires, so a crashed node's subscribers stop counting within a
//!   few seconds (`membership.rs`).
//!
//! When Redis goes away, local delivery goes on; the clients reconnect with backoff and
//! the relay re-announces what it needs. Messages are encoded in a compact binary form
//! ([`wire`]).
#![deny(missing_docs)]

pub mod interest;
mod membership;
mod relay;
pub mod store;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use postbox_router::{Overflow, Router};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use interest::Replica;

/// How to join a cluster. Its `Debug` shows neither password.
#[derive(Clone)]
pub struct ClusterConfig {
    /// `redis://host:port` or `rediss://host:port` (TLS); a password may be in the URL.
    pub url: String,
    /// A password, if not in the URL.
    pub password: Option<String>,
    /// PEM CA certificates to trust for `rediss://` (default: the system's).
    pub tls_ca: Option<PathBuf>,
    /// This node's id: unique in the cluster.
    pub node_id: String,
    /// Prefix of every Redis key and channel, so clusters can share a Redis.
    pub prefix: String,
    /// Wait for Redis at start instead of failing.
    pub wait: bool,
    /// Queue entries held this long by a node that stopped refreshing them are claimed
    /// by the others.
    pub claim_idle: Duration,
    /// A node whose liveness key is older than this is considered gone.
    pub node_ttl: Duration,
    /// Most entries in one cluster queue.
    pub queue_max_length: usize,
    /// What a full cluster queue does.
    pub queue_overflow: Overflow,
    /// Longest wait for Redis when storing a queue message before the SEND is refused.
    pub store_timeout: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("url", &display_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls_ca", &self.tls_ca)
            .field("node_id", &self.node_id)
            .field("prefix", &self.prefix)
            .field("wait", &self.wait)
            .field("claim_idle", &self.claim_idle)
            .field("node_ttl", &self.node_ttl)
            .field("queue_max_length", &self.queue_max_length)
            .field("queue_overflow", &self.queue_overflow)
            .field("store_timeout", &self.store_timeout)
            .finish()
    }
}

/// Why joining the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL or TLS settings are unusable.
    #[error("invalid cluster settings: {0}")]
    Config(String),
    /// Redis could not be reached at start.
    #[error(
        "cannot reach Redis at {url}: {reason} (start Redis, fix --cluster, or set cluster-wait to wait for it)"
    )]
    Unreachable {
        /// The URL, without password.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Counters of the relay, for logs and metrics.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Messages sent to other nodes (topic, reply and doorbell envelopes).
    pub forwarded: AtomicU64,
    /// Messages received from other nodes.
    pub received: AtomicU64,
    /// Commands or publishes that failed (Redis down or refusing).
    pub errors: AtomicU64,
    /// Times the connection to Redis was re-established.
    pub reconnects: AtomicU64,
    /// Control work (interest announcements, acknowledgements and releases of queue
    /// entries) dropped because the control queue was full; see [`CONTROL_CAPACITY`].
    pub control_dropped: AtomicU64,
    /// Whether Redis is reachable now.
    pub connected: AtomicBool,
}

/// Most control items waiting for the control task. Beyond it new items are dropped and
/// counted instead of growing memory without bound while Redis is slow or away: a lost
/// interest change is repaired by the next heartbeat (within a second), a lost
/// acknowledgement or release leaves the entry pending in Redis, so it is claimed and
/// redelivered (with `redelivered:true`) after the claim time.
pub const CONTROL_CAPACITY: usize = 65_536;

/// Work for the publishing task.
#[derive(Debug)]
struct Outgoing {
    channel: String,
    payload: Bytes,
}

/// Work for the control task, done in order (except that acknowledgements are merged per
/// stream and sent after the rest of their batch).
#[derive(Debug)]
enum Control {
    /// The local subscription count of a destination changed.
    Interest {
        vhost: String,
        destination: String,
        count: usize,
    },
    /// Queue entries were acknowledged: remove them.
    Settle { key: String, ids: Vec<Arc<str>> },
    /// Queue entries fetched here go back to the cluster.
    Release {
        vhost: String,
        queue: String,
        key: String,
        ids: Vec<Arc<str>>,
    },
}

/// The relay's shared state. Of its five locks only `fetchers` is ever held while
/// another lock is taken (a local queue's state, through `consumer_count`); the other
/// four are leaves, held for a lookup or an update and never across an `.await` or a
/// call into a router. Work that needs Redis goes to the tasks through `outgoing` and
/// `control`, so the router's callers never wait on the network.
struct Inner {
    config: ClusterConfig,
    /// Commands and publishes.
    client: Client,
    /// The subscription to this node's inbox and the interest events.
    subscriber: fred::clients::SubscriberClient,
    /// Where arriving messages are delivered, by virtual host.
    routers: RwLock<HashMap<String, Router>>,
    /// What the other nodes want (their interest), for choosing where to forward.
    replica: RwLock<Replica>,
    /// This node's subscription counts, by (vhost, destination).
    local: Mutex<HashMap<(String, String), usize>>,
    /// Envelopes for other nodes' inboxes, published in pipelined batches.
    outgoing: mpsc::Sender<Outgoing>,
    /// Interest announcements and queue bookkeeping, bounded by [`CONTROL_CAPACITY`].
    control: mpsc::Sender<Control>,
    /// The fetch task of each local queue with consumers, by (vhost, queue).
    fetchers: Mutex<HashMap<(String, String), store::Fetcher>>,
    /// Stream keys whose consumer group is known to exist.
    groups: Mutex<HashSet<String>>,
    stats: ClusterStats,
    stop: CancellationToken,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRelay")
            .field("node", &self.config.node_id)
            .finish_non_exhaustive()
    }
}

/// This node's membership in a cluster; implements the router's `Relay` and
/// `QueueStore`.
#[derive(Debug, Clone)]
pub struct ClusterRelay {
    inner: Arc<Inner>,
}

/// The consumer group every node reads cluster queues through.
const GROUP: &str = "postbox";

impl Inner {
    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.config.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    fn inbox(&self, node: &str) -> String {
        self.key(&["inbox", node])
    }

    fn events(&self) -> String {
        self.key(&["events"])
    }

    fn nodes_key(&self) -> String {
        self.key(&["nodes"])
    }

    fn alive_key(&self, node: &str) -> String {
        self.key(&["alive", node])
    }

    fn interest_key(&self, node: &str) -> String {
        self.key(&["interest", node])
    }

    fn stream_key(&self, vhost: &str, queue: &str) -> String {
        self.key(&["queue", vhost, queue])
    }

    fn node(&self) -> &str {
        &self.config.node_id
    }

    fn router(&self, vhost: &str) -> Option<Router> {
        self.routers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(vhost)
            .cloned()
    }

    /// Hands `item` to the control task, or drops and counts it when the control queue
    /// is full (see [`CONTROL_CAPACITY`]).
    fn control(&self, item: Control) {
        if !offer(&self.control, item, &self.stats.control_dropped) {
            let n = self.stats.control_dropped.load(Ordering::Relaxed);
            if n % 1000 == 1 {
                warn!(
                    dropped = n,
                    "cluster: control work dropped because Redis is far behind"
                );
            }
        }
    }

    /// Counts and logs a failed Redis operation.
    fn failed(&self, what: &str, error: &Error) {
        let n = self.stats.errors.fetch_add(1, Ordering::Relaxed);
        // Outages produce one failure per operation; log the first and then every 1000th.
        if n % 1000 == 0 {
            warn!(errors = n + 1, "cluster: {what} failed: {error}");
        }
    }
}

/// Queues `item` without waiting; false (and `dropped` counted) when the queue is full.
/// A closed queue (the relay stopped) is not counted: nothing is waiting for the work.
fn offer(queue: &mpsc::Sender<Control>, item: Control, dropped: &AtomicU64) -> bool {
    match queue.try_send(item) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// Hash field for a (vhost, destination) pair; NUL cannot appear in either.
fn interest_field(vhost: &str, destination: &str) -> String {
    format!("{vhost}\u{0}{destination}")
}

fn split_field(field: &str) -> Option<(&str, &str)> {
    field.split_once('\u{0}')
}

impl ClusterRelay {
    /// Connects to Redis and joins the cluster. Fails when Redis cannot be reached,
    /// unless `config.wait`, in which case it retries until it can.
    pub async fn connect(config: ClusterConfig) -> Result<ClusterRelay, ClusterError> {
        let mut redis =
            Config::from_url(&config.url).map_err(|e| ClusterError::Config(e.to_string()))?;
        if config.password.is_some() {
            redis.password = config.password.clone();
        }
        redis.fail_fast = !config.wait;
        if let Some(ca) = &config.tls_ca {
            redis.tls = Some(tls_with_ca(ca)?.into());
        }
        let shown = display_url(&config.url);
        let mut builder = Builder::from_config(redis);
        builder
            .with_performance_config(|c| {
                // Inbound messages wait here for the inbound task; a small buffer would
                // drop them under load.
                c.broadcast_channel_capacity = 1 << 16;
            })
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(5);
                c.internal_command_timeout = Duration::from_secs(5);
                c.max_command_attempts = 3;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
        let client = builder
            .build()
            .map_err(|e| ClusterError::Config(e.to_string()))?;
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| ClusterError::Config(e.to_string()))?;
        let unreachable = |error: Error| ClusterError::Unreachable {
            url: shown.clone(),
            reason: error.to_string(),
        };
        if config.wait {
            info!(url = %shown, "cluster: waiting for Redis");
        }
        client.init().await.map_err(unreachable)?;
        subscriber.init().await.map_err(unreachable)?;

        let (outgoing, outgoing_rx) = mpsc::channel(relay::MAX_PENDING);
        let (control, control_rx) = mpsc::channel(CONTROL_CAPACITY);
        let inner = Arc::new(Inner {
            config,
            client,
            subscriber,
            routers: RwLock::default(),
            replica: RwLock::default(),
            local: Mutex::default(),
            outgoing,
            control,
            fetchers: Mutex::default(),
            groups: Mutex::default(),
            stats: ClusterStats::default(),
            stop: CancellationToken::new(),
        });
        inner.stats.connected.store(true, Ordering::Relaxed);

        // Hear about other nodes before announcing ourselves, so nothing is missed.
        let _resubscribe = inner.subscriber.manage_subscriptions();
        let messages = inner.subscriber.message_rx();
        inner
            .subscriber
            .subscribe(vec![inner.inbox(inner.node()), inner.events()])
            .await
            .map_err(unreachable)?;
        membership::announce(&inner).await.map_err(unreachable)?;
        membership::sync(&inner).await;

        tokio::spawn(relay::inbound(inner.clone(), messages));
        tokio::spawn(relay::publisher(inner.clone(), outgoing_rx));
        tokio::spawn(relay::controller(inner.clone(), control_rx));
        tokio::spawn(membership::heartbeat(inner.clone()));
        tokio::spawn(membership::watch_connection(inner.clone()));
        info!(node = inner.node(), url = %shown, "joined the cluster");
        Ok(ClusterRelay { inner })
    }

    /// Delivers messages that arrive for virtual host `router.vhost()` to `router`.
    pub fn register(&self, router: Router) {
        self.inner
            .routers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(router.vhost().to_owned(), router);
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.inner.node()
    }

    /// Subscriptions to exactly `destination` across the cluster (this node's count is
    /// exact; other nodes' are at most a heartbeat old).
    pub fn presence(&self, vhost: &str, destination: &str) -> usize {
        let local = self
            .inner
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(vhost.to_owned(), destination.to_owned()))
            .copied()
            .unwrap_or(0);
        local
            + self
                .inner
                .replica
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .count(vhost, destination)
    }

    /// The other nodes this node currently sees alive.
    pub fn peers(&self) -> Vec<String> {
        let replica = self.inner.replica.read().unwrap_or_else(|p| p.into_inner());
        let mut nodes: Vec<String> = replica.nodes().map(str::to_owned).collect();
        nodes.sort();
        nodes
    }

    /// The relay's counters.
    pub fn stats(&self) -> &ClusterStats {
        &self.inner.stats
    }

    /// Stops every task without a word to the others, as a crash would: the others
    /// notice when this node's liveness key expires.
    pub fn halt(&self) {
        self.inner.stop.cancel();
    }

    /// Leaves the cluster: stops the tasks and removes this node's presence, so others
    /// need not wait for its liveness key to expire. Its unacknowledged queue entries are
    /// released first by the sessions closing.
    pub async fn leave(&self) {
        membership::leave(&self.inner).await;
        self.inner.stop.cancel();
    }
}

/// The URL without a password, for logs and errors.
fn display_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn tls_with_ca(path: &PathBuf) -> Result<fred::types::config::TlsConnector, ClusterError> {
    use fred::rustls::pki_types::CertificateDer;
    use fred::rustls::pki_types::pem::PemObject;
    use fred::rustls::{ClientConfig, RootCertStore};
    let pem = std::fs::read(path)
        .map_err(|e| ClusterError::Config(format!("cannot read {}: {e}", path.display())))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?;
        roots
            .add(cert)
            .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?;
    }
    let provider = Arc::new(fred::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClusterError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            display_url("redis://:secret@10.0.0.1:6379"),
            "redis://***@10.0.0.1:6379"
        );
        assert_eq!(
            display_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn interest_fields_split_back() {
        let field = interest_field("/", "/topic/chat.*");
        assert_eq!(split_field(&field), Some(("/", "/topic/chat.*")));
    }

    #[test]
    fn a_full_control_queue_drops_and_counts_instead_of_growing() {
        let (queue, mut receiver) = mpsc::channel(2);
        let dropped = AtomicU64::new(0);
        let settle = || Control::Settle {
            key: "k".into(),
            ids: vec![Arc::from("1-0")],
        };
        assert!(offer(&queue, settle(), &dropped));
        assert!(offer(&queue, settle(), &dropped));
        assert!(!offer(&queue, settle(), &dropped));
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
        // Room again once the control task has taken an item.
        assert!(receiver.try_recv().is_ok());
        assert!(offer(&queue, settle(), &dropped));
        // A stopped relay is not a drop.
        drop(receiver);
        assert!(offer(&queue, settle(), &dropped));
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
    }
}
