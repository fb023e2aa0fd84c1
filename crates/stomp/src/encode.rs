//! Writing frames as bytes.
//!
//! Frames are encoded into the caller's `BytesMut` so a connection writer can coalesce
//! many frames into one buffer and one write. Each encode reserves its whole size once,
//! so the body is copied exactly once, straight into place.

use bytes::{BufMut, Bytes, BytesMut};

use crate::headers::names;
use crate::{Command, Escaping, Frame, Headers, Version};

/// Appends `frame` as the wire bytes of `version`.
///
/// `content-length` always tells the truth: any such header in `frame` is written with
/// the body's real length at the position of its first occurrence (repeats are dropped),
/// and one is appended for a non-empty body that has none.
pub fn encode_frame(frame: &Frame, version: Version, dst: &mut BytesMut) {
    let escaping = Escaping::for_frame(version, frame.command);
    dst.reserve(encoded_len_hint(frame));
    dst.put_slice(frame.command.as_str().as_bytes());
    dst.put_u8(b'\n');
    let mut wrote_length = false;
    for (name, value) in frame.headers.iter() {
        if name == names::CONTENT_LENGTH {
            if !wrote_length {
                put_content_length(frame.body.len(), dst);
                wrote_length = true;
            }
            continue;
        }
        put_header(name, value, escaping, dst);
    }
    if !wrote_length && !frame.body.is_empty() {
        put_content_length(frame.body.len(), dst);
    }
    dst.put_u8(b'\n');
    dst.put_slice(&frame.body);
    dst.put_u8(0);
}

/// Appends one `name:value` header line, escaped by `escaping`.
pub fn put_header(name: &str, value: &str, escaping: Escaping, dst: &mut BytesMut) {
    escaping.escape_into(name, true, dst);
    dst.put_u8(b':');
    escaping.escape_into(value, false, dst);
    dst.put_u8(b'\n');
}

/// Appends a `content-length` header line.
pub fn put_content_length(length: usize, dst: &mut BytesMut) {
    dst.put_slice(b"content-length:");
    dst.put_slice(itoa::Buffer::new().format(length).as_bytes());
    dst.put_u8(b'\n');
}

/// Appends a heart-beat: a single LF.
pub fn put_heart_beat(dst: &mut BytesMut) {
    dst.put_u8(b'\n');
}

/// Encodes the part of a MESSAGE frame that every subscriber receives unchanged: the
/// `destination` and `message-id` headers, the other `headers` (any `content-length`
/// among them is replaced by the true one), the blank line, the body and the NUL.
///
/// A broker encodes this once per message and version, then writes it after each
/// subscriber's own [`put_message_head`].
pub fn message_tail(
    destination: &str,
    message_id: &str,
    headers: &Headers,
    body: &[u8],
    version: Version,
) -> Bytes {
    let mut dst = BytesMut::new();
    put_message_tail(destination, message_id, headers, body, version, &mut dst);
    dst.freeze()
}

/// Appends a [`message_tail`] to `dst`: for a message only one subscriber receives,
/// where encoding it separately would only add a copy.
pub fn put_message_tail(
    destination: &str,
    message_id: &str,
    headers: &Headers,
    body: &[u8],
    version: Version,
    dst: &mut BytesMut,
) {
    let escaping = Escaping::for_frame(version, Command::Message);
    let header_len: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    dst.reserve(destination.len() + message_id.len() + 26 + header_len + 36 + body.len() + 2);
    put_header(names::DESTINATION, destination, escaping, dst);
    put_header(names::MESSAGE_ID, message_id, escaping, dst);
    for (name, value) in headers.iter() {
        if name != names::CONTENT_LENGTH {
            put_header(name, value, escaping, dst);
        }
    }
    put_content_length(body.len(), dst);
    dst.put_u8(b'\n');
    dst.put_slice(body);
    dst.put_u8(0);
}

/// Writes the start of a MESSAGE frame for one subscriber: the command line and the
/// per-delivery headers (`subscription`, and `ack` or `redelivered` where they apply).
/// A [`message_tail`] must follow.
pub fn put_message_head(headers: &[(&str, &str)], version: Version, dst: &mut BytesMut) {
    let escaping = Escaping::for_frame(version, Command::Message);
    dst.put_slice(b"MESSAGE\n");
    for (name, value) in headers {
        put_header(name, value, escaping, dst);
    }
}

/// An upper bound on the encoded size of `frame` when no header needs escaping, used
/// to reserve the output buffer once.
pub fn encoded_len_hint(frame: &Frame) -> usize {
    let headers: usize = frame
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 2)
        .sum();
    // command + LF, headers, content-length line (at most 36 bytes), blank line, NUL.
    frame.command.as_str().len() + 1 + headers + 36 + 1 + frame.body.len() + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    fn encode(frame: &Frame, version: Version) -> Vec<u8> {
        let mut dst = BytesMut::new();
        encode_frame(frame, version, &mut dst);
        dst.to_vec()
    }

    #[test]
    fn writes_content_length_for_a_body() {
        let frame = Frame::new(Command::Send)
            .header("destination", "/queue/a")
            .body("hello");
        assert_eq!(
            encode(&frame, Version::V1_2),
            b"SEND\ndestination:/queue/a\ncontent-length:5\n\nhello\0"
        );
    }

    #[test]
    fn frames_without_body_have_no_content_length() {
        let frame = Frame::new(Command::Receipt).header("receipt-id", "77");
        assert_eq!(
            encode(&frame, Version::V1_2),
            b"RECEIPT\nreceipt-id:77\n\n\0"
        );
    }

    #[test]
    fn a_stale_content_length_is_corrected_in_place() {
        let frame = Frame::new(Command::Message)
            .header("content-length", "999")
            .header("a", "b")
            .header("content-length", "1")
            .body("xy");
        assert_eq!(
            encode(&frame, Version::V1_2),
            b"MESSAGE\ncontent-length:2\na:b\n\nxy\0"
        );
    }

    #[test]
    fn headers_are_escaped_for_the_version() {
        let frame = Frame::new(Command::Message).header("k:1", "a\nb");
        assert_eq!(encode(&frame, Version::V1_2), b"MESSAGE\nk\\c1:a\\nb\n\n\0");
        assert_eq!(encode(&frame, Version::V1_0), b"MESSAGE\nk_1:a b\n\n\0");
    }

    #[test]
    fn connected_headers_are_never_escaped() {
        let frame = Frame::new(Command::Connected).header("server", "postbox/1:2");
        assert_eq!(
            encode(&frame, Version::V1_2),
            b"CONNECTED\nserver:postbox/1:2\n\n\0"
        );
    }

    #[test]
    fn message_head_and_tail_make_one_frame() {
        let headers: Headers = [("content-type", "text/plain"), ("content-length", "1")]
            .into_iter()
            .collect();
        let tail = message_tail("/topic/a", "m-1", &headers, b"hi", Version::V1_2);
        let mut dst = BytesMut::new();
        put_message_head(
            &[("subscription", "s:1"), ("ack", "7")],
            Version::V1_2,
            &mut dst,
        );
        dst.put_slice(&tail);
        assert_eq!(
            &dst[..],
            &b"MESSAGE\nsubscription:s\\c1\nack:7\ndestination:/topic/a\nmessage-id:m-1\n\
               content-type:text/plain\ncontent-length:2\n\nhi\0"[..]
        );
    }

    #[test]
    fn the_size_hint_is_an_upper_bound() {
        let frame = Frame::new(Command::Send)
            .header("destination", "/topic/x")
            .body(vec![7u8; 1000]);
        let mut dst = BytesMut::new();
        encode_frame(&frame, Version::V1_2, &mut dst);
        assert!(dst.len() <= encoded_len_hint(&frame));
    }
}
