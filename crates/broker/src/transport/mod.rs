//! Transports: how a connection's bytes arrive. STOMP over TCP needs nothing; TLS wraps
//! the stream with rustls; WebSocket turns the message stream into bytes. The session
//! above them is the same for all.

use std::fmt;

pub mod tls;
pub mod ws;

/// How clients reach a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// STOMP over TCP.
    Stomp,
    /// STOMP over TLS.
    StompTls,
    /// STOMP over WebSocket.
    Ws,
    /// STOMP over WebSocket over TLS.
    Wss,
    /// Plain HTTP: health, metrics, admin.
    Http,
}

impl Transport {
    /// The name used in logs and in the `listening` lines.
    pub const fn name(self) -> &'static str {
        match self {
            Transport::Stomp => "stomp",
            Transport::StompTls => "stomp-tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
            Transport::Http => "http",
        }
    }

    pub(crate) fn uses_tls(self) -> bool {
        matches!(self, Transport::StompTls | Transport::Wss)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
