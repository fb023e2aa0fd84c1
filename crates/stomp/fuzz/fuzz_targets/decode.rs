//! Feeds arbitrary bytes to the decoder in arbitrary chunks, for every version.
//!
//! Checks that decoding never panics, that the chunking does not change the frames
//! decoded, and that every decoded frame survives an encode/decode round trip.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use postbox_stomp::{Frame, FrameError, Item, Limits, StompCodec, Version, encode};
use tokio_util::codec::Decoder;

const LIMITS: Limits = Limits {
    max_frame_size: 4096,
    max_headers: 16,
    max_header_line: 256,
    max_body: 2048,
};

/// Decodes `data` fed in chunks of the given sizes; frames until the first error.
fn run(data: &[u8], version: Version, chunk: usize) -> (Vec<Frame>, Option<String>) {
    let mut codec = StompCodec::new(version, LIMITS);
    let mut src = BytesMut::new();
    let mut frames = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        src.extend_from_slice(piece);
        loop {
            match codec.decode(&mut src) {
                Ok(Some(Item::Frame(frame))) => frames.push(frame),
                Ok(Some(Item::HeartBeat)) => {}
                Ok(None) => break,
                Err(error) => return (frames, Some(kind(&error))),
            }
        }
    }
    (frames, None)
}

/// The error's variant; limits may trip at different byte counts depending on chunking.
fn kind(error: &FrameError) -> String {
    let text = format!("{error:?}");
    text.split(['(', ' ', '{']).next().unwrap_or_default().to_owned()
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };
    let version = Version::ALL[usize::from(selector % 3)];
    let chunk = usize::from(selector / 3) + 1;
    let (whole, whole_error) = run(data, version, data.len());
    let (chunked, chunked_error) = run(data, version, chunk);
    assert_eq!(whole, chunked, "chunking changed the frames");
    assert_eq!(whole_error.is_some(), chunked_error.is_some());
    for frame in &whole {
        let mut wire = BytesMut::new();
        encode::encode_frame(frame, version, &mut wire);
        let (again, error) = run(&wire, version, wire.len());
        if error.is_none() {
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].command, frame.command);
            assert_eq!(again[0].body, frame.body);
        }
    }
});
