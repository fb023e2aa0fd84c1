//! Every reason a session ends with an ERROR frame, and that frame.

use postbox_router::{CloseReason, RouteError};
use postbox_stomp::headers::names;
use postbox_stomp::{Command, Frame, FrameError, Version};

use crate::metrics::DisconnectReason;

/// Why a session sends ERROR and closes. Each variant is one ERROR frame whose
/// `message` header is the `Display` text.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The peer's bytes are not valid STOMP.
    #[error("malformed frame: {0}")]
    Frame(FrameError),
    /// A frame broke a configured size limit; the text names the limit, its value and
    /// the option that sets it, so the client's developer knows what to change or ask for.
    #[error("{what}: more than {limit}{unit} ({option})")]
    LimitExceeded {
        /// What was too large, such as `frame too large`.
        what: &'static str,
        /// The configured value.
        limit: usize,
        /// ` bytes`, or empty for a count.
        unit: &'static str,
        /// The configuration option.
        option: &'static str,
    },
    /// The first frame was not CONNECT or STOMP.
    #[error("expected CONNECT or STOMP as the first frame, got {0}")]
    ExpectedConnect(Command),
    /// CONNECT or STOMP on a connected session.
    #[error("already connected: {0} may only be sent once")]
    AlreadyConnected(Command),
    /// `accept-version` names no version the server speaks.
    #[error(
        "no common protocol version: the client accepts '{offered}', this server supports 1.0,1.1,1.2"
    )]
    NoCommonVersion {
        /// The client's `accept-version`.
        offered: String,
    },
    /// The `host` header names no configured virtual host.
    #[error("unknown virtual host '{0}'")]
    UnknownHost(String),
    /// A required header is absent.
    #[error("{command} frame is missing the required '{header}' header")]
    MissingHeader {
        /// The frame's command.
        command: Command,
        /// The header's name.
        header: &'static str,
    },
    /// A header has a value the server cannot use.
    #[error("invalid '{header}' header '{value}' on {command}: expected {expected}")]
    InvalidHeader {
        /// The frame's command.
        command: Command,
        /// The header's name.
        header: &'static str,
        /// The value received (shortened).
        value: String,
        /// What would have been valid.
        expected: &'static str,
    },
    /// A client sent a frame only servers send.
    #[error("{0} is a server frame; clients may not send it")]
    ServerFrame(Command),
    /// A command the negotiated version does not have.
    #[error("{command} is not part of STOMP {version}")]
    NotInVersion {
        /// The command.
        command: Command,
        /// The negotiated version.
        version: Version,
    },
    /// SUBSCRIBE with an `id` already in use.
    #[error("subscription id '{0}' is already in use on this connection")]
    DuplicateSubscription(String),
    /// UNSUBSCRIBE (or ACK in 1.1) for an id with no subscription.
    #[error("no subscription with id '{0}' on this connection")]
    UnknownSubscription(String),
    /// More subscriptions than allowed on one connection.
    #[error("too many subscriptions: at most {0} per connection")]
    TooManySubscriptions(usize),
    /// More temporary queues than allowed on one connection.
    #[error("too many temporary queues: at most {0} per connection (max-temp-queues)")]
    TooManyTempQueues(usize),
    /// ACK or NACK for nothing awaiting acknowledgement.
    #[error("no message awaiting acknowledgement with {what} '{id}'")]
    UnknownAck {
        /// Which header named it (`id` or `message-id`).
        what: &'static str,
        /// The value.
        id: String,
    },
    /// A `transaction` that was never begun (or already ended).
    #[error("unknown transaction '{0}'")]
    UnknownTransaction(String),
    /// BEGIN for a transaction id that is already open.
    #[error("transaction '{0}' is already open")]
    DuplicateTransaction(String),
    /// More open transactions than allowed on one connection.
    #[error("too many open transactions: at most {0} per connection (max-transactions)")]
    TooManyTransactions(usize),
    /// More frames in one transaction than allowed.
    #[error(
        "transaction '{transaction}' holds more than {limit} frames (max-transaction-frames); \
         it was dropped"
    )]
    TransactionTooLarge {
        /// The transaction id.
        transaction: String,
        /// The limit.
        limit: usize,
    },
    /// More bytes in one transaction than allowed.
    #[error(
        "transaction '{transaction}' holds more than {limit} bytes (max-transaction-bytes); \
         it was dropped"
    )]
    TransactionTooManyBytes {
        /// The transaction id.
        transaction: String,
        /// The limit.
        limit: usize,
    },
    /// More bytes in all open transactions of the connection than allowed.
    #[error(
        "open transactions hold more than {0} bytes on this connection (max-staged-bytes); \
         the transaction was dropped"
    )]
    StagedTooManyBytes(usize),
    /// The router refused a destination or a message.
    #[error("{0}")]
    Route(#[from] RouteError),
    /// The credentials were refused. The reason is logged, not sent: it would help an
    /// attacker more than a legitimate client.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// Password checks are backed up: too many wait, or no turn came in time.
    #[error("server busy: too many logins are being checked; try again shortly (auth-timeout-ms)")]
    LoginBusy,
    /// This login failed too often from this address lately.
    #[error(
        "too many failed logins for this login from this address; try again in {0} s \
         (max-login-failures)"
    )]
    LoginThrottled(u64),
    /// The session's token expired without a fresh one.
    #[error("access token expired")]
    TokenExpired,
    /// The principal may not do this to this destination.
    #[error("access refused: '{user}' may not {operation} '{destination}'")]
    AccessRefused {
        /// The authenticated user.
        user: String,
        /// `read from` or `write to`.
        operation: &'static str,
        /// The destination.
        destination: String,
    },
    /// No CONNECT arrived in time.
    #[error("no CONNECT frame within {0} ms")]
    ConnectTimeout(u64),
    /// The client stopped sending, heart-beats included.
    #[error(
        "heart-beat timeout: nothing received from the client for {silent_ms} ms (negotiated interval {interval_ms} ms)"
    )]
    HeartBeatTimeout {
        /// How long the client was silent.
        silent_ms: u64,
        /// The negotiated client-to-server interval.
        interval_ms: u64,
    },
    /// The server refuses new connections past its limit.
    #[error("too many connections: the server accepts at most {0}")]
    TooManyConnections(usize),
    /// Closed from outside the session (slow consumer, operator).
    #[error("{}", describe_close(.0))]
    Closed(CloseReason),
}

impl From<FrameError> for SessionError {
    fn from(error: FrameError) -> SessionError {
        let (what, limit, unit, option) = match error {
            FrameError::FrameTooLarge { limit } => {
                ("frame too large", limit, " bytes", "max-frame-size")
            }
            FrameError::BodyTooLarge { limit } => {
                ("body too large", limit, " bytes", "max-body-size")
            }
            FrameError::TooManyHeaders { limit } => ("too many headers", limit, "", "max-headers"),
            FrameError::HeaderLineTooLong { limit } => {
                ("header line too long", limit, " bytes", "max-header-length")
            }
            other => return SessionError::Frame(other),
        };
        SessionError::LimitExceeded {
            what,
            limit,
            unit,
            option,
        }
    }
}

fn describe_close(reason: &CloseReason) -> String {
    match reason {
        CloseReason::SlowConsumer { limit } => format!(
            "slow consumer: more than {limit} bytes were waiting to be written to this connection"
        ),
        CloseReason::Shutdown => "server is shutting down".into(),
        CloseReason::Admin => "connection closed by an operator".into(),
    }
}

impl SessionError {
    /// The ERROR frame for this error; `receipt` is the failed frame's `receipt` header.
    pub fn to_frame(&self, receipt: Option<&str>) -> Frame {
        let message = self.to_string();
        let mut frame = Frame::new(Command::Error).header(names::MESSAGE, message.clone());
        if let Some(receipt) = receipt {
            frame = frame.header(names::RECEIPT_ID, receipt);
        }
        if let SessionError::NoCommonVersion { .. } = self {
            frame = frame.header(names::VERSION, "1.0,1.1,1.2");
        }
        frame
            .header(names::CONTENT_TYPE, "text/plain")
            .body(format!("{message}\n"))
    }

    /// Why the connection ends, for logs and metrics.
    pub fn disconnect_reason(&self) -> DisconnectReason {
        match self {
            SessionError::HeartBeatTimeout { .. } => DisconnectReason::HeartBeatTimeout,
            SessionError::ConnectTimeout(_) => DisconnectReason::ConnectTimeout,
            SessionError::Closed(CloseReason::SlowConsumer { .. }) => {
                DisconnectReason::SlowConsumer
            }
            SessionError::Closed(CloseReason::Shutdown) => DisconnectReason::Shutdown,
            SessionError::Closed(CloseReason::Admin) => DisconnectReason::Admin,
            SessionError::TooManyConnections(_) => DisconnectReason::ConnectionLimit,
            SessionError::AuthenticationFailed | SessionError::TokenExpired => {
                DisconnectReason::AuthFailure
            }
            SessionError::LoginBusy => DisconnectReason::LoginBusy,
            SessionError::LoginThrottled(_) => DisconnectReason::LoginThrottled,
            SessionError::AccessRefused { .. } => DisconnectReason::AccessRefused,
            _ => DisconnectReason::ProtocolError,
        }
    }
}

/// Shortens a client-supplied value for an error message.
pub fn shorten(value: &str) -> String {
    let mut end = value.len().min(100);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_frames_carry_message_receipt_and_text_body() {
        let error = SessionError::MissingHeader {
            command: Command::Send,
            header: "destination",
        };
        let frame = error.to_frame(Some("r-9"));
        assert_eq!(frame.command, Command::Error);
        assert_eq!(
            frame.get("message"),
            Some("SEND frame is missing the required 'destination' header")
        );
        assert_eq!(frame.get("receipt-id"), Some("r-9"));
        assert_eq!(frame.get("content-type"), Some("text/plain"));
        assert!(!frame.body.is_empty());
    }

    #[test]
    fn limit_errors_name_the_limit_its_value_and_its_option() {
        let cases = [
            (
                FrameError::FrameTooLarge { limit: 1048576 },
                "frame too large: more than 1048576 bytes (max-frame-size)",
            ),
            (
                FrameError::BodyTooLarge { limit: 10 },
                "body too large: more than 10 bytes (max-body-size)",
            ),
            (
                FrameError::TooManyHeaders { limit: 1000 },
                "too many headers: more than 1000 (max-headers)",
            ),
            (
                FrameError::HeaderLineTooLong { limit: 16384 },
                "header line too long: more than 16384 bytes (max-header-length)",
            ),
        ];
        for (error, text) in cases {
            let frame = SessionError::from(error).to_frame(Some("r-1"));
            assert_eq!(frame.get("message"), Some(text));
            assert_eq!(frame.get("receipt-id"), Some("r-1"));
        }
        assert_eq!(
            SessionError::from(FrameError::InvalidContentLength).to_string(),
            "malformed frame: content-length is not a non-negative integer"
        );
    }

    #[test]
    fn version_mismatch_lists_supported_versions() {
        let frame = SessionError::NoCommonVersion {
            offered: "2.0".into(),
        }
        .to_frame(None);
        assert_eq!(frame.get("version"), Some("1.0,1.1,1.2"));
    }
}
