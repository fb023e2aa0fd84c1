//! Transports: how a connection's bytes arrive. STOMP over TCP needs nothing; TLS wraps
//! the stream with rustls; WebSocket turns the message stream into bytes. The session
//! above them is the same for all.

pub mod tls;
pub mod ws;
