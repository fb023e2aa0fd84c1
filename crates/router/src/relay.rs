//! The seam between one node's router and the rest of a cluster.
//!
//! The router calls a [`Relay`] for every message a local client publishes and whenever
//! local interest in a topic appears or disappears. A cluster implementation forwards
//! those to other nodes and hands their messages back through
//! [`Router::publish_local`](crate::Router::publish_local), which never calls the relay
//! again, so a message crosses at most one hop.

use std::sync::Arc;

use crate::Message;

/// Local interest in a topic pattern changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interest {
    /// The first local subscription to `pattern` appeared.
    Added(String),
    /// The last local subscription to `pattern` went away.
    Removed(String),
}

/// Connects a router to other nodes. Implementations must not block: they queue work for
/// their own tasks.
pub trait Relay: Send + Sync + std::fmt::Debug + 'static {
    /// A local client published `message` on a topic of virtual host `vhost`.
    fn forward(&self, vhost: &str, message: &Arc<Message>);

    /// Local interest in a topic pattern (a topic name, possibly with wildcards) changed.
    fn interest(&self, vhost: &str, change: Interest);
}

/// The relay of a node that runs alone: does nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRelay;

impl Relay for NoRelay {
    fn forward(&self, _vhost: &str, _message: &Arc<Message>) {}

    fn interest(&self, _vhost: &str, _change: Interest) {}
}
