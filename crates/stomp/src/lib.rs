//! STOMP frames for Postbox: the model, a nom parser, an encoder and a
//! `tokio_util::codec` implementation, for STOMP 1.0, 1.1 and 1.2.
//!
//! This crate does no IO and needs no runtime, so the broker, the test client and the
//! load generator all share it. Layout:
//!
//! - [`frame`]: [`Frame`], [`Item`]; [`headers`]: [`Headers`]; [`command`], [`version`].
//! - [`parse`]: the grammar of a frame head, in nom.
//! - [`escape`]: header escaping rules per version.
//! - [`encode`]: writing frames into a buffer.
//! - [`codec`]: [`StompCodec`], which adds bodies, heart-beats and [`Limits`].
//! - [`error`]: [`FrameError`], one variant per way a peer's bytes can be wrong.
#![deny(missing_docs)]

pub mod codec;
pub mod command;
pub mod encode;
pub mod error;
pub mod escape;
pub mod frame;
pub mod headers;
pub mod parse;
pub mod version;

pub use bytes::Bytes;
pub use bytestring::ByteString;
pub use codec::{Limits, StompCodec};
pub use command::Command;
pub use error::FrameError;
pub use escape::Escaping;
pub use frame::{Frame, Item};
pub use headers::Headers;
pub use version::Version;
