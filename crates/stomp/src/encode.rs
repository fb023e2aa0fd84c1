//! Writing frames as bytes.
//!
//! Frames are encoded into the caller's `BytesMut` so a connection writer can coalesce
//! many frames into one buffer and one write. Each encode reserves its whole size once,
//! so the body is copied exactly once, straight into place.

use bytes::{BufMut, BytesMut};

use crate::headers::names;
use crate::{Escaping, Frame, Version};

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
    fn the_size_hint_is_an_upper_bound() {
        let frame = Frame::new(Command::Send)
            .header("destination", "/topic/x")
            .body(vec![7u8; 1000]);
        let mut dst = BytesMut::new();
        encode_frame(&frame, Version::V1_2, &mut dst);
        assert!(dst.len() <= encoded_len_hint(&frame));
    }
}
