//! Properties of the codec over generated frames: encoding then decoding is the identity
//! for every version, how the bytes are split into reads does not change the result, and
//! whatever text the headers hold, an encoded frame ends at its own NUL and nowhere else.

use bytes::{Bytes, BytesMut};
use postbox_stomp::{Command, Escaping, Frame, Headers, Item, StompCodec, Version, encode};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn version() -> impl Strategy<Value = Version> {
    prop::sample::select(Version::ALL.to_vec())
}

fn command() -> impl Strategy<Value = Command> {
    prop::sample::select(Command::ALL.to_vec())
}

/// Header text that survives a round trip under `escaping`: without escapes CR, LF and
/// (in names) `:` cannot be written; in 1.1 a CR has no escape and could merge with LF.
fn text(escaping: Escaping, is_name: bool) -> BoxedStrategy<String> {
    let pattern = match (escaping, is_name) {
        (Escaping::V12, _) => "[a-z0-9:\\\\\r\n é😀-]",
        (Escaping::V11, _) => "[a-z0-9:\\\\\n é😀-]",
        (Escaping::None, true) => "[a-z0-9\\\\ é😀-]",
        (Escaping::None, false) => "[a-z0-9:\\\\ é😀-]",
    };
    let min = usize::from(is_name);
    prop::collection::vec(prop::string::string_regex(pattern).unwrap(), min..12)
        .prop_map(|chars| chars.concat())
        .prop_filter("content-length is rewritten by design", |t| {
            t != "content-length"
        })
        .boxed()
}

fn frame_for(version: Version) -> impl Strategy<Value = Frame> {
    command().prop_flat_map(move |command| {
        let escaping = Escaping::for_frame(version, command);
        let headers = prop::collection::vec((text(escaping, true), text(escaping, false)), 0..6);
        let body = if command.allows_body() {
            prop::collection::vec(any::<u8>(), 0..300).boxed()
        } else {
            Just(Vec::new()).boxed()
        };
        (headers, body).prop_map(move |(headers, body)| Frame {
            command,
            headers: headers.into_iter().collect(),
            body: Bytes::from(body),
        })
    })
}

/// Any header text, NULs and every byte STOMP treats specially included.
fn hostile_text(min: usize) -> BoxedStrategy<String> {
    prop_oneof![
        prop::string::string_regex(&format!("[a\\x00\r\n:\\\\é]{{{min},8}}")).unwrap(),
        any::<String>().prop_filter("non-empty", move |t| t.len() >= min),
    ]
    .boxed()
}

fn hostile_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((hostile_text(1), hostile_text(0)), 0..6)
}

/// Bytes without a NUL, so the only NUL of an encoded frame must be its last byte.
fn nul_free_body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1..=255u8, 0..64)
}

/// Decodes `wire` as a whole and returns its items; any error fails the property.
fn decode_whole(wire: &[u8], version: Version) -> Result<Vec<Item>, TestCaseError> {
    let mut codec = StompCodec::new(version, Default::default());
    let mut src = BytesMut::from(wire);
    let mut items = Vec::new();
    loop {
        match codec.decode(&mut src) {
            Ok(Some(item)) => items.push(item),
            Ok(None) => break,
            Err(error) => return Err(TestCaseError::fail(format!("{error}: {wire:?}"))),
        }
    }
    prop_assert!(src.is_empty(), "leftover bytes {:?}", src);
    Ok(items)
}

fn encode_all(frames: &[Frame], version: Version, heart_beats: bool) -> BytesMut {
    let mut wire = BytesMut::new();
    for frame in frames {
        if heart_beats {
            wire.extend_from_slice(b"\r\n");
        }
        encode::encode_frame(frame, version, &mut wire);
    }
    wire
}

/// Feeds `wire` in the given chunk sizes and returns the frames decoded.
fn decode_chunked(wire: &[u8], version: Version, cuts: &[usize]) -> Vec<Frame> {
    let mut codec = StompCodec::new(version, Default::default());
    let mut src = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
        let cut = cut.clamp(fed, wire.len());
        src.extend_from_slice(&wire[fed..cut]);
        fed = cut;
        while let Some(item) = codec.decode(&mut src).expect("valid stream") {
            if let Item::Frame(frame) = item {
                frames.push(frame);
            }
        }
    }
    assert!(src.is_empty(), "leftover bytes {src:?}");
    frames
}

/// What a frame looks like after the trip: `content-length` added for non-empty bodies.
fn expected(frame: &Frame) -> Frame {
    let mut headers: Headers = frame.headers.clone();
    if !frame.body.is_empty() {
        headers.push("content-length", frame.body.len().to_string());
    }
    Frame {
        headers,
        ..frame.clone()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_decode_is_identity(
        (version, frames) in version().prop_flat_map(|v| (Just(v), prop::collection::vec(frame_for(v), 1..5)))
    ) {
        let wire = encode_all(&frames, version, false);
        let decoded = decode_chunked(&wire, version, &[]);
        let wanted: Vec<Frame> = frames.iter().map(expected).collect();
        prop_assert_eq!(decoded, wanted);
    }

    #[test]
    fn split_position_does_not_matter(
        (version, frames) in version().prop_flat_map(|v| (Just(v), prop::collection::vec(frame_for(v), 1..4)))
    ) {
        let wire = encode_all(&frames, version, true);
        let whole = decode_chunked(&wire, version, &[]);
        for cut in 0..=wire.len() {
            prop_assert_eq!(&decode_chunked(&wire, version, &[cut]), &whole, "cut at {}", cut);
        }
        let every_byte: Vec<usize> = (1..wire.len()).collect();
        prop_assert_eq!(&decode_chunked(&wire, version, &every_byte), &whole);
    }

    #[test]
    fn no_header_text_puts_a_nul_before_the_end_of_a_frame(
        version in version(),
        command in command(),
        headers in hostile_headers(),
        body in nul_free_body(),
    ) {
        let frame = Frame {
            command,
            headers: headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect(),
            body: if command.allows_body() { Bytes::from(body) } else { Bytes::new() },
        };
        let mut wire = BytesMut::new();
        encode::encode_frame(&frame, version, &mut wire);
        prop_assert_eq!(memchr_nul(&wire), Some(wire.len() - 1), "{:?}", wire);
        // A NUL-splitting peer and this decoder both see exactly that one frame.
        let items = decode_whole(&wire, version)?;
        prop_assert_eq!(items.len(), 1);
        let Item::Frame(decoded) = &items[0] else { panic!("{items:?}") };
        prop_assert_eq!(decoded.command, command);
        prop_assert_eq!(&decoded.body, &frame.body);
    }

    #[test]
    fn a_message_head_and_tail_put_no_nul_before_the_end(
        version in version(),
        subscription in hostile_text(0),
        destination in hostile_text(0),
        message_id in hostile_text(0),
        headers in hostile_headers(),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let headers: Headers = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let mut wire = BytesMut::new();
        encode::put_message_head(&[("subscription", &subscription)], version, &mut wire);
        wire.extend_from_slice(&encode::message_tail(&destination, &message_id, &headers, &body, version));
        // The body may hold NULs (it is counted by content-length); the head may not.
        let head_len = wire.len() - body.len() - 1;
        prop_assert_eq!(memchr_nul(&wire[..head_len]), None, "{:?}", wire);
        prop_assert_eq!(wire.last(), Some(&0));
        let items = decode_whole(&wire, version)?;
        prop_assert_eq!(items.len(), 1);
        let Item::Frame(decoded) = &items[0] else { panic!("{items:?}") };
        prop_assert_eq!(&decoded.body[..], &body[..]);
    }
}

fn memchr_nul(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == 0)
}
