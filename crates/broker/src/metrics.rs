//! Prometheus counters, bumped where things happen. The gauges (connections, queues, the
//! cluster, the TLS certificate) are read from the broker at each scrape by
//! [`crate::http::scrape`], which also renders these counters.

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Label pairs of a metric series.
pub(crate) type Labels = Vec<(String, String)>;

/// Why a connection ended, as counted by `postbox_disconnects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// DISCONNECT, or the client closed the socket.
    Client,
    /// Heart-beats stopped.
    HeartBeatTimeout,
    /// No CONNECT in time.
    ConnectTimeout,
    /// Fell past the outbound buffer.
    SlowConsumer,
    /// Sent something invalid.
    ProtocolError,
    /// Credentials refused or token expired.
    AuthFailure,
    /// A frame for a destination it may not use.
    AccessRefused,
    /// Its password check got no turn in time.
    LoginBusy,
    /// Its login failed too often from its address lately.
    LoginThrottled,
    /// The broker shut down.
    Shutdown,
    /// An operator closed it.
    Admin,
    /// Over the connection limit.
    ConnectionLimit,
    /// The socket failed.
    IoError,
}

impl DisconnectReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::Client => "client",
            DisconnectReason::HeartBeatTimeout => "heartbeat_timeout",
            DisconnectReason::ConnectTimeout => "connect_timeout",
            DisconnectReason::SlowConsumer => "slow_consumer",
            DisconnectReason::ProtocolError => "protocol_error",
            DisconnectReason::AuthFailure => "auth_failure",
            DisconnectReason::AccessRefused => "access_refused",
            DisconnectReason::LoginBusy => "login_busy",
            DisconnectReason::LoginThrottled => "login_throttled",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::Admin => "admin",
            DisconnectReason::ConnectionLimit => "connection_limit",
            DisconnectReason::IoError => "io_error",
        }
    }
}

/// Counters updated by the broker as it works; traffic counters live with each
/// connection (so the publish path touches no shared counter) and are summed at scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connects: Family<Labels, Counter>,
    disconnects: Family<Labels, Counter>,
}

impl Metrics {
    /// Registers the counters.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("postbox");
        let connects = Family::<Labels, Counter>::default();
        registry.register(
            "connects",
            "Connections accepted, by transport",
            connects.clone(),
        );
        let disconnects = Family::<Labels, Counter>::default();
        registry.register(
            "disconnects",
            "Connections closed, by reason",
            disconnects.clone(),
        );
        Metrics {
            connects,
            disconnects,
            registry,
        }
    }

    /// Counts an accepted connection.
    pub fn connected(&self, transport: &str) {
        self.connects
            .get_or_create(&vec![("transport".into(), transport.into())])
            .inc();
    }

    /// Counts a closed connection.
    pub fn disconnected(&self, reason: DisconnectReason) {
        self.disconnects
            .get_or_create(&vec![("reason".into(), reason.as_str().into())])
            .inc();
    }

    /// Appends the counters in the text exposition format.
    pub fn encode(&self, out: &mut String) {
        let _ = encode_registry(out, &self.registry);
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
