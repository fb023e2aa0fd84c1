//! Why the router refused a request.

/// A refused subscribe or publish. Each maps to one STOMP ERROR frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The destination has none of the known prefixes.
    #[error(
        "unknown destination '{0}': use /topic/<name>, /queue/<name>, /temp-queue/<name> \
         or a /reply-queue/ name received in reply-to"
    )]
    UnknownDestination(String),
    /// The destination has a known prefix but is not usable.
    #[error("invalid destination '{destination}': {reason}")]
    InvalidDestination {
        /// The destination as given (possibly shortened).
        destination: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Creating the queue would pass the virtual host's queue count limit.
    #[error("too many queues: at most {0} per virtual host (max-queues)")]
    TooManyQueues(usize),
    /// The queue is full and its policy is to refuse.
    #[error("queue '{0}' is full")]
    QueueFull(String),
    /// In a cluster, the queue store could not take the message.
    #[error("{0}")]
    StoreUnavailable(StoreError),
    /// The `expiration` header is not a number of milliseconds.
    #[error("invalid expiration '{0}': expected a number of milliseconds")]
    InvalidExpiration(String),
    /// A SEND to a topic where the broker announces a room's presence.
    #[error("'{0}' carries the broker's presence events; clients may not send to it")]
    BrokerOnly(String),
    /// Someone else's temporary queue, or a temporary queue used by name.
    #[error("'{0}' is a temporary queue that only its own connection may subscribe to")]
    NotOwner(String),
}

/// Why the store did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached; the message was not accepted.
    #[error("the cluster's queue store is unreachable ({0}); the message was not accepted")]
    Unavailable(String),
    /// The queue is at its length limit and its policy is to refuse.
    #[error("queue '{0}' is full")]
    Full(String),
}
