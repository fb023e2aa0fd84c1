//! The Postbox broker: configuration, listeners, the per-connection session state
//! machine, heart-beats and graceful shutdown. The `postbox` binary is a thin `main`
//! around [`start`].
//!
//! Where things are:
//! - a frame is parsed by `postbox_stomp` inside [`session`]'s reader;
//! - a frame is handled in `session::Session::handle`;
//! - a destination is routed by `postbox_router::Router`;
//! - a message leaves the socket in `session::writer`.
#![deny(missing_docs)]

pub mod auth;
pub mod config;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod login;
pub mod memory;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod session;
pub mod state;
pub mod transport;
pub mod vhost;

pub use config::Config;
pub use server::{Listening, ReloadError, Running, StartError, start};
pub use transport::Transport;
