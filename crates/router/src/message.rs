//! A published message, shared by every subscriber that receives it.

use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use postbox_stomp::headers::names;
use postbox_stomp::{ByteString, Headers, Version, encode};

use crate::{Destination, DestinationKind};

/// Headers a client may not carry from SEND into MESSAGE: the broker sets them per
/// message or per delivery, or they only concern the SEND frame itself.
const RESERVED: [&str; 8] = [
    names::DESTINATION,
    names::CONTENT_LENGTH,
    names::RECEIPT,
    names::TRANSACTION,
    names::MESSAGE_ID,
    names::SUBSCRIPTION,
    names::ACK,
    "redelivered",
];

/// Messages whose headers and body together are smaller than this are copied out of
/// the read buffer they were decoded from when they are kept (see [`Message::detached`]).
/// Larger ones arrive in a buffer mostly their own, so sharing it costs little.
pub const DETACH_BELOW: usize = 16 * 1024;

/// One published message. Immutable once built and shared behind an `Arc`; the body is
/// never copied, and the part of the MESSAGE frame common to all subscribers is encoded
/// at most once per protocol version.
#[derive(Debug)]
pub struct Message {
    id: ByteString,
    destination: Destination,
    headers: Headers,
    body: Bytes,
    tails: [OnceLock<Bytes>; 3],
    /// See [`Message::wire_size`]; asked twice per delivery, so computed once.
    wire_size: usize,
    /// The copy [`Message::detached`] made, shared by everyone who asks for it.
    copy: OnceLock<Arc<Message>>,
    /// Whether this is such a copy, holding buffers of its own.
    is_copy: bool,
}

impl Message {
    /// A message with exactly these headers (the caller filtered them).
    pub fn new(id: ByteString, destination: Destination, headers: Headers, body: Bytes) -> Message {
        let header_bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
        let wire_size = destination.as_str().len() + id.len() + header_bytes + body.len() + 64;
        Message {
            id,
            destination,
            headers,
            body,
            tails: Default::default(),
            wire_size,
            copy: OnceLock::new(),
            is_copy: false,
        }
    }

    /// A message built from a SEND frame's headers: user headers pass through, headers
    /// that the broker owns are dropped.
    pub fn from_send(
        id: ByteString,
        destination: Destination,
        mut headers: Headers,
        body: Bytes,
    ) -> Message {
        headers.retain(|name, _| !RESERVED.contains(&name));
        Message::new(id, destination, headers, body)
    }

    /// The message in buffers of its own, or `None` where it already is or a copy would
    /// save little (a large message).
    ///
    /// A decoded SEND's headers and body are views into the publisher's read buffer, up
    /// to 64 KiB; a message that waits (in a queue, in a topic subscription's backlog)
    /// would keep all of it, many times the bytes the limits count. The copy is made
    /// once and shared: every backlog a topic message waits in holds the same one.
    pub fn detached(&self) -> Option<Arc<Message>> {
        let header_bytes: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        if self.is_copy || header_bytes + self.body.len() >= DETACH_BELOW {
            return None;
        }
        let copy = self.copy.get_or_init(|| {
            Arc::new(Message {
                id: self.id.clone(),
                destination: self.destination.detached(),
                headers: self.headers.detached(),
                body: Bytes::copy_from_slice(&self.body),
                tails: Default::default(),
                wire_size: self.wire_size,
                copy: OnceLock::new(),
                is_copy: true,
            })
        });
        Some(copy.clone())
    }

    /// The broker-assigned `message-id`.
    pub fn id(&self) -> &ByteString {
        &self.id
    }

    /// Where the message was published.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// The headers delivered with the message (content-type and user headers).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The bytes a subscriber's connection will roughly need for this message; used to
    /// bound outbound buffers.
    pub fn wire_size(&self) -> usize {
        self.wire_size
    }

    /// Appends the end of the MESSAGE frame (see [`Message::wire_tail`]) to `dst`. A
    /// topic message is encoded once and copied per subscriber; a queue message usually
    /// goes to a single consumer, so it is encoded straight into `dst`.
    pub fn put_wire_tail(&self, version: Version, dst: &mut BytesMut) {
        let cached = self.tails[version_slot(version)].get();
        match cached {
            None if self.destination.kind() != DestinationKind::Topic => encode::put_message_tail(
                self.destination.as_str(),
                &self.id,
                &self.headers,
                &self.body,
                version,
                dst,
            ),
            _ => dst.extend_from_slice(self.wire_tail(version)),
        }
    }

    /// The end of the MESSAGE frame, identical for every subscriber speaking `version`:
    /// see [`encode::message_tail`]. Encoded on first use, then shared.
    pub fn wire_tail(&self, version: Version) -> &Bytes {
        self.tails[version_slot(version)].get_or_init(|| {
            encode::message_tail(
                self.destination.as_str(),
                &self.id,
                &self.headers,
                &self.body,
                version,
            )
        })
    }
}

/// Where a version's encoded tail is kept.
fn version_slot(version: Version) -> usize {
    match version {
        Version::V1_0 => 0,
        Version::V1_1 => 1,
        Version::V1_2 => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_headers_that_the_broker_owns_are_dropped() {
        let send: Headers = [
            ("destination", "/topic/a"),
            ("receipt", "r"),
            ("content-type", "text/plain"),
            ("message-id", "spoofed"),
            ("x-custom", "1"),
            ("content-length", "3"),
            ("transaction", "t"),
        ]
        .into_iter()
        .collect();
        let destination = Destination::parse(&"/topic/a".into()).unwrap();
        let message = Message::from_send("m-1".into(), destination, send, Bytes::from("abc"));
        let kept: Vec<_> = message.headers().iter().collect();
        assert_eq!(kept, [("content-type", "text/plain"), ("x-custom", "1")]);
    }

    #[test]
    fn a_message_is_detached_once_and_its_copy_shared() {
        let destination = Destination::parse(&"/topic/a".into()).unwrap();
        let small = Message::new(
            "m-1".into(),
            destination.clone(),
            Headers::new(),
            "x".into(),
        );
        let copy = small.detached().expect("a small message is copied");
        assert!(
            Arc::ptr_eq(&copy, &small.detached().unwrap()),
            "copied once"
        );
        assert!(copy.detached().is_none(), "a copy is not copied again");
        assert_eq!(copy.body(), "x");
        let body = Bytes::from(vec![b'x'; DETACH_BELOW]);
        let large = Message::new("m-2".into(), destination, Headers::new(), body);
        assert!(
            large.detached().is_none(),
            "a large message keeps its buffer"
        );
    }

    #[test]
    fn the_wire_tail_is_encoded_once_per_version() {
        let destination = Destination::parse(&"/topic/a".into()).unwrap();
        let message = Message::new("m-1".into(), destination, Headers::new(), Bytes::from("x"));
        let first = message.wire_tail(Version::V1_2).as_ptr();
        assert_eq!(message.wire_tail(Version::V1_2).as_ptr(), first);
        assert!(
            message
                .wire_tail(Version::V1_2)
                .ends_with(b"content-length:1\n\nx\0")
        );
    }
}
