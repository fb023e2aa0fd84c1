//! The frame model: a command, its headers and a body.

use bytes::Bytes;
use bytestring::ByteString;

use crate::{Command, Headers};

/// One STOMP frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the frame asks for or reports.
    pub command: Command,
    /// Headers in wire order, already unescaped.
    pub headers: Headers,
    /// The body; empty for frames that may not carry one. Shares the receive buffer.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and no body.
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Builder: appends a header.
    pub fn header(mut self, name: impl Into<ByteString>, value: impl Into<ByteString>) -> Frame {
        self.headers.push(name, value);
        self
    }

    /// Builder: sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Frame {
        self.body = body.into();
        self
    }

    /// The same frame with its headers and body in allocations of its own, for a frame
    /// kept after its read buffer has moved on (see [`Headers::detached`]).
    pub fn detached(&self) -> Frame {
        Frame {
            command: self.command,
            headers: self.headers.detached(),
            body: Bytes::copy_from_slice(&self.body),
        }
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

/// What the decoder yields: a frame, or a bare end-of-line between frames.
///
/// Heart-beats are reported so that a session can count them as activity
/// (STOMP 1.2 "Heart-beating").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A complete frame.
    Frame(Frame),
    /// One EOL (LF or CRLF) received between frames.
    HeartBeat,
}
