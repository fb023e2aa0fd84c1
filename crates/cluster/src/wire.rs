//! The binary forms of messages on Redis: no base64, no JSON, bodies as they are.
//!
//! A message: `u16` length-prefixed id and destination, a `u16` header count with
//! `u16`/`u32` length-prefixed names and values, a `u64` expiry in Unix milliseconds
//! (0: none), then the body to the end. An envelope on a node's inbox channel adds a
//! kind byte and the virtual host in front.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postbox_router::{Destination, Message};
use postbox_stomp::{ByteString, Headers};

/// Why bytes from Redis could not be read as a message or an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes end before the named field does.
    #[error("undecodable cluster message: truncated {0}")]
    Truncated(WireField),
    /// A name, value or text field is not UTF-8.
    #[error("undecodable cluster message: text is not UTF-8")]
    NotUtf8,
    /// The destination is not one a client could have sent to.
    #[error("undecodable cluster message: bad destination")]
    BadDestination,
    /// An envelope's first byte is no known [`EnvelopeKind`].
    #[error("undecodable cluster message: unknown envelope kind {0}")]
    UnknownKind(u8),
}

/// A field of the binary forms, as named in a [`WireError::Truncated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireField {
    /// A length-prefixed text or value.
    Text,
    /// The `u16` length in front of a text.
    Length,
    /// The header count.
    HeaderCount,
    /// The `u32` length in front of a header value.
    ValueLength,
    /// The expiry.
    Expiry,
    /// The kind byte of an envelope.
    Kind,
}

impl std::fmt::Display for WireField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WireField::Text => "text",
            WireField::Length => "length",
            WireField::HeaderCount => "header count",
            WireField::ValueLength => "value length",
            WireField::Expiry => "expiry",
            WireField::Kind => "envelope kind",
        })
    }
}

/// What an inbox envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeKind {
    /// A topic message for local subscribers.
    Topic = 1,
    /// A message for one of this node's reply queues.
    Reply = 2,
    /// A queue got messages: fetch now rather than at the next poll.
    Doorbell = 3,
}

/// A decoded inbox envelope.
#[derive(Debug)]
pub struct Envelope {
    /// What it is.
    pub kind: EnvelopeKind,
    /// The virtual host.
    pub vhost: String,
    /// The message (topic, reply) or the queue name (doorbell) as bytes.
    pub payload: Bytes,
}

fn put_str16(dst: &mut BytesMut, text: &str) {
    let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
    dst.put_u16(len);
    dst.put_slice(&text.as_bytes()[..usize::from(len)]);
}

fn get_bytes(src: &mut Bytes, len: usize) -> Result<Bytes, WireError> {
    if src.remaining() < len {
        return Err(WireError::Truncated(WireField::Text));
    }
    Ok(src.split_to(len))
}

fn get_str16(src: &mut Bytes) -> Result<ByteString, WireError> {
    if src.remaining() < 2 {
        return Err(WireError::Truncated(WireField::Length));
    }
    let len = usize::from(src.get_u16());
    ByteString::try_from(get_bytes(src, len)?).map_err(|_| WireError::NotUtf8)
}

/// Encodes a message with its expiry.
pub fn encode_message(message: &Message, expires_at: Option<SystemTime>) -> Bytes {
    let headers = message.headers();
    let size: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 6).sum();
    let mut dst = BytesMut::with_capacity(
        message.id().len()
            + message.destination().as_str().len()
            + size
            + message.body().len()
            + 16,
    );
    put_str16(&mut dst, message.id());
    put_str16(&mut dst, message.destination().as_str());
    dst.put_u16(u16::try_from(headers.len()).unwrap_or(u16::MAX));
    for (name, value) in headers.iter().take(usize::from(u16::MAX)) {
        put_str16(&mut dst, name);
        dst.put_u32(u32::try_from(value.len()).unwrap_or(u32::MAX));
        dst.put_slice(value.as_bytes());
    }
    let expiry_ms = expires_at
        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    dst.put_u64(expiry_ms);
    dst.put_slice(message.body());
    dst.freeze()
}

/// Decodes a message; the body shares `src`.
pub fn decode_message(mut src: Bytes) -> Result<(Arc<Message>, Option<SystemTime>), WireError> {
    let id = get_str16(&mut src)?;
    let destination =
        Destination::parse(&get_str16(&mut src)?).map_err(|_| WireError::BadDestination)?;
    if src.remaining() < 2 {
        return Err(WireError::Truncated(WireField::HeaderCount));
    }
    let count = usize::from(src.get_u16());
    let mut headers = Headers::with_capacity(count);
    for _ in 0..count {
        let name = get_str16(&mut src)?;
        if src.remaining() < 4 {
            return Err(WireError::Truncated(WireField::ValueLength));
        }
        let len = src.get_u32() as usize;
        let value =
            ByteString::try_from(get_bytes(&mut src, len)?).map_err(|_| WireError::NotUtf8)?;
        headers.push(name, value);
    }
    if src.remaining() < 8 {
        return Err(WireError::Truncated(WireField::Expiry));
    }
    let expiry_ms = src.get_u64();
    let expires_at = (expiry_ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(expiry_ms));
    Ok((
        Arc::new(Message::new(id, destination, headers, src)),
        expires_at,
    ))
}

/// Wraps a payload for a node's inbox.
pub fn encode_envelope(kind: EnvelopeKind, vhost: &str, payload: &[u8]) -> Bytes {
    let mut dst = BytesMut::with_capacity(payload.len() + vhost.len() + 3);
    dst.put_u8(kind as u8);
    put_str16(&mut dst, vhost);
    dst.put_slice(payload);
    dst.freeze()
}

/// Unwraps an inbox payload.
pub fn decode_envelope(mut src: Bytes) -> Result<Envelope, WireError> {
    if src.remaining() < 1 {
        return Err(WireError::Truncated(WireField::Kind));
    }
    let kind = match src.get_u8() {
        1 => EnvelopeKind::Topic,
        2 => EnvelopeKind::Reply,
        3 => EnvelopeKind::Doorbell,
        other => return Err(WireError::UnknownKind(other)),
    };
    let vhost = get_str16(&mut src)?.to_string();
    Ok(Envelope {
        kind,
        vhost,
        payload: src,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        let headers: Headers = [
            ("content-type", "application/octet-stream"),
            ("x-é", "ü:\n"),
        ]
        .into_iter()
        .collect();
        Message::new(
            "node-7".into(),
            Destination::parse(&"/queue/jobs".into()).unwrap(),
            headers,
            Bytes::from_static(b"\x00binary\xffbody"),
        )
    }

    #[test]
    fn messages_survive_the_trip_byte_for_byte() {
        let expiry = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        let wire = encode_message(&message(), Some(expiry));
        let (decoded, expires_at) = decode_message(wire).unwrap();
        assert_eq!(decoded.id(), "node-7");
        assert_eq!(decoded.destination().as_str(), "/queue/jobs");
        assert_eq!(decoded.headers(), message().headers());
        assert_eq!(decoded.body(), message().body());
        assert_eq!(expires_at, Some(expiry));
    }

    #[test]
    fn the_encoding_carries_the_body_as_is() {
        let message = message();
        let wire = encode_message(&message, None);
        assert!(wire.ends_with(b"\x00binary\xffbody"));
        let text: usize = message.id().len()
            + message.destination().as_str().len()
            + message
                .headers()
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>();
        // Length prefixes, the header count and the expiry: nothing else is added.
        let framing = 2 + 2 + 2 + message.headers().len() * 6 + 8;
        assert_eq!(wire.len(), message.body().len() + text + framing);
    }

    #[test]
    fn envelopes_wrap_kind_and_vhost() {
        let wire = encode_envelope(EnvelopeKind::Doorbell, "/", b"/queue/jobs");
        let envelope = decode_envelope(wire).unwrap();
        assert_eq!(envelope.kind, EnvelopeKind::Doorbell);
        assert_eq!(envelope.vhost, "/");
        assert_eq!(&envelope.payload[..], b"/queue/jobs");
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let wire = encode_message(&message(), None);
        for len in 0..wire.len() - message().body().len() {
            assert!(decode_message(wire.slice(..len)).is_err(), "length {len}");
        }
        assert_eq!(
            decode_envelope(Bytes::from_static(&[9, 0, 0])).unwrap_err(),
            WireError::UnknownKind(9)
        );
        assert_eq!(
            decode_envelope(Bytes::new()).unwrap_err(),
            WireError::Truncated(WireField::Kind)
        );
    }

    #[test]
    fn a_truncation_names_the_field_it_cut() {
        let wire = encode_message(&message(), None);
        assert_eq!(
            decode_message(wire.slice(..1)).unwrap_err(),
            WireError::Truncated(WireField::Length)
        );
        assert_eq!(
            decode_message(wire.slice(..3)).unwrap_err(),
            WireError::Truncated(WireField::Text)
        );
        let without_body = wire.len() - message().body().len();
        assert_eq!(
            decode_message(wire.slice(..without_body - 1)).unwrap_err(),
            WireError::Truncated(WireField::Expiry)
        );
    }
}
