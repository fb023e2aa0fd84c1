//! What a session is allowed and bound to: the limits and timings taken from the
//! configuration when the session starts.

use std::time::Duration;

use postbox_stomp::{ByteString, Limits};

/// Session settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Codec limits.
    pub limits: Limits,
    /// Most subscriptions per connection.
    pub max_subscriptions: usize,
    /// Most temporary queues per connection.
    pub max_temp_queues: usize,
    /// Most transactions open at once on one connection.
    pub max_transactions: usize,
    /// Most frames staged in one transaction.
    pub max_transaction_frames: usize,
    /// Most bytes staged in one transaction.
    pub max_transaction_bytes: usize,
    /// Most bytes staged in all open transactions of one connection.
    pub max_staged_bytes: usize,
    /// Time allowed before CONNECT arrives.
    pub connect_timeout: Duration,
    /// Time a password check may take, its wait for a turn included.
    pub auth_timeout: Duration,
    /// Failed password checks per login and address per minute; 0 for no limit.
    pub max_login_failures: u32,
    /// Outbound buffer bound in bytes (slow consumer limit).
    pub outbound_buffer: usize,
    /// How long a session past its outbound bound may go without the writer making
    /// progress before it is closed as a slow consumer.
    pub outbound_stall: Duration,
    /// Idle time before TCP keepalive probes start, `None` for no keepalive.
    pub tcp_keepalive: Option<Duration>,
    /// The server's own heart-beat send interval, 0 for none.
    pub heartbeat_send_ms: u64,
    /// The interval the server asks clients to send at, 0 for none.
    pub heartbeat_receive_ms: u64,
    /// Silence tolerated, in negotiated intervals.
    pub heartbeat_grace: f64,
    /// The CONNECTED `server` header.
    pub server_name: String,
    /// This node's id, the prefix of session ids.
    pub node_id: String,
    /// The header that carries the sender's name on MESSAGE.
    pub user_header: ByteString,
    /// Most connections at once (for the refusal message).
    pub max_connections: usize,
}

impl Settings {
    /// Settings from the effective configuration.
    pub fn from_config(config: &crate::Config, node_id: &str) -> Settings {
        Settings {
            limits: Limits {
                max_frame_size: config.max_frame_size,
                max_headers: config.max_headers,
                max_header_line: config.max_header_length,
                max_body: config.max_body_size,
            },
            max_subscriptions: config.max_subscriptions,
            max_temp_queues: config.max_temp_queues,
            max_transactions: config.max_transactions,
            max_transaction_frames: config.max_transaction_frames,
            max_transaction_bytes: config.max_transaction_bytes,
            max_staged_bytes: config.max_staged_bytes,
            connect_timeout: config.connect_timeout(),
            auth_timeout: Duration::from_millis(config.auth_timeout_ms),
            max_login_failures: config.max_login_failures,
            outbound_buffer: config.outbound_buffer,
            outbound_stall: Duration::from_millis(config.outbound_stall_ms),
            tcp_keepalive: (config.tcp_keepalive_s > 0)
                .then(|| Duration::from_secs(config.tcp_keepalive_s)),
            heartbeat_send_ms: config.heartbeat_send_ms,
            heartbeat_receive_ms: config.heartbeat_receive_ms,
            heartbeat_grace: config.heartbeat_grace,
            server_name: format!("postbox/{}", env!("CARGO_PKG_VERSION")),
            node_id: node_id.to_owned(),
            user_header: ByteString::from(config.user_header.clone()),
            max_connections: config.max_connections,
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> Settings {
        Settings::from_config(&crate::Config::defaults(), "test")
    }
}
