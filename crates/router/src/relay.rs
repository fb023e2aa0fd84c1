//! The seams between one node's router and the rest of a cluster.
//!
//! The router calls a [`Relay`] for every message a local client publishes on a topic
//! and whenever the number of local subscriptions to a destination changes. A cluster
//! implementation forwards those to the nodes that are interested and hands their
//! messages back through [`Router::publish_local`](crate::Router::publish_local), which
//! never calls the relay again, so a message crosses at most one hop.
//!
//! Queues are different: in a cluster a queue is one queue for all nodes, so its
//! messages live in a shared [`QueueStore`] and each node's local [`Queue`](crate::Queue)
//! only holds the messages it fetched for its own consumers. The store sees that local
//! queue through [`LocalQueue`], which is all it needs to fetch for it.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use crate::error::StoreError;
use crate::{Destination, Message};

/// A boxed future, for the store's asynchronous calls.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Identifies a queue message in the shared store (for Redis, a stream entry id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreReceipt(pub Arc<str>);

/// Where a cluster keeps its queues' messages.
pub trait QueueStore: Send + Sync + Debug + 'static {
    /// Stores a message at the end of `queue`; resolves once it is stored durably (or
    /// refused). `expires_at` is when it stops being deliverable.
    fn append(
        &self,
        vhost: &str,
        queue: &Destination,
        message: Arc<Message>,
        expires_at: Option<SystemTime>,
    ) -> BoxFuture<Result<(), StoreError>>;

    /// Starts fetching messages of `queue` for its local consumers; called when a
    /// queue gets a local consumer. Fetching stops by itself when the consumers are
    /// gone.
    fn attach(&self, vhost: &str, queue: Arc<dyn LocalQueue>);

    /// These messages were acknowledged (or moved to a dead-letter queue): forget them.
    fn settle(&self, vhost: &str, queue: &Destination, receipts: Vec<StoreReceipt>);

    /// These messages were fetched but will not be delivered here (the local consumers
    /// left): let another node have them.
    fn release(&self, vhost: &str, queue: &Destination, receipts: Vec<StoreReceipt>);
}

/// What a [`QueueStore`] sees of one node's local buffer of a shared queue: how much
/// its consumers could take, and where to put what was fetched for them.
pub trait LocalQueue: Send + Sync + Debug + 'static {
    /// The queue's destination.
    fn destination(&self) -> &Destination;

    /// How many local consumers the queue has; at zero, fetching stops.
    fn consumer_count(&self) -> usize;

    /// How many more messages the consumers could take now: their free prefetch credit
    /// minus what is already waiting. A fetcher asks the store for this many.
    fn demand(&self) -> usize;

    /// Resolves when [`LocalQueue::demand`] may have grown.
    fn demand_changed(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// Receipts of every store message held here (waiting or unacknowledged), which
    /// the store must keep claimed for this node.
    fn held_receipts(&self) -> Vec<StoreReceipt>;

    /// Takes a fetched message for the local consumers, whatever the queue's limits
    /// (the store applied them when the message was appended). `delivered_before` marks
    /// a message taken over from a node that died. Returns false when the queue was
    /// deleted meanwhile: the message is not taken and should go back to the store.
    fn fetched(
        &self,
        message: Arc<Message>,
        expires_at: Option<Instant>,
        delivered_before: bool,
        receipt: StoreReceipt,
    ) -> bool;

    /// Counts a fetched message that had expired before it could be taken.
    fn count_expired(&self);
}

/// Connects a router to other nodes. Implementations must not block: they queue work for
/// their own tasks.
pub trait Relay: Send + Sync + Debug + 'static {
    /// A local client published `message` on a topic of virtual host `vhost`.
    fn forward(&self, vhost: &str, message: &Arc<Message>);

    /// A local client sent `message` to a reply queue owned by connection on `node`.
    /// Returns false when that node cannot be reached through this relay.
    fn forward_reply(&self, _vhost: &str, _node: &str, _message: &Arc<Message>) -> bool {
        false
    }

    /// The number of local subscriptions to `destination` (a topic name or pattern with
    /// its `/topic/` prefix, or a queue) is now `count`.
    fn interest(&self, vhost: &str, destination: &str, count: usize);

    /// The shared queue store, when queues live outside this node.
    fn queue_store(&self) -> Option<Arc<dyn QueueStore>> {
        None
    }
}

/// The relay of a node that runs alone: does nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRelay;

impl Relay for NoRelay {
    fn forward(&self, _vhost: &str, _message: &Arc<Message>) {}

    fn interest(&self, _vhost: &str, _destination: &str, _count: usize) {}
}
