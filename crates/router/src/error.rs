//! Why the router refused a request.

/// A refused subscribe or publish. Each maps to one STOMP ERROR frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The destination has none of the known prefixes.
    #[error("unknown destination '{0}': use /topic/<name>, /queue/<name> or /temp-queue/<name>")]
    UnknownDestination(String),
    /// The destination has a known prefix but is not usable.
    #[error("invalid destination '{destination}': {reason}")]
    InvalidDestination {
        /// The destination as given (possibly shortened).
        destination: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The session was closed (for example as a slow consumer) while the request ran.
    #[error("the connection is closing")]
    Closed,
}
