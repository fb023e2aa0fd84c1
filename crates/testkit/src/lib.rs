//! Test helpers shared by Postbox's test suites.
//!
//! - [`client`]: a raw STOMP client that shows the frames on the wire and fails loudly.
//! - [`broker`]: starts the `postbox` binary on a free loopback port.
//!
//! Everything here talks to 127.0.0.1 only and bounds every wait.
#![deny(missing_docs)]

pub mod broker;
pub mod client;

pub use broker::Broker;
pub use client::{Client, DEFAULT_TIMEOUT};
pub use postbox_stomp::{Command, Frame, Version};
