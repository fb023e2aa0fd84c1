//! Test helpers shared by Postbox's test suites.
//!
//! - [`client`]: a raw STOMP client that shows the frames on the wire and fails loudly.
//! - [`broker`]: starts the `postbox` binary on a free loopback port.
//! - [`certs`]: a CA and certificates generated for the test, and TLS clients.
//! - [`redis`]: a real `redis-server` on a free port.
//! - [`wait`]: [`eventually`], polling for a condition in place of a fixed sleep.
//!
//! Everything here talks to 127.0.0.1 only and bounds every wait.
#![deny(missing_docs)]

pub mod broker;
pub mod certs;
pub mod client;
pub mod http;
pub mod redis;
pub mod wait;

pub use broker::Broker;
pub use certs::TestCa;
pub use client::{Client, DEFAULT_TIMEOUT};
pub use postbox_stomp::{Command, Frame, Version};
pub use redis::RedisServer;
pub use wait::{eventually, eventually_blocking};
