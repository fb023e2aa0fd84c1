//! Decode and encode throughput of the frame codec.
//!
//! `cargo bench -p postbox-stomp --bench codec`. Decoding runs over a buffer holding many
//! frames back to back, as a busy connection's read buffer does.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use postbox_stomp::{Command, Frame, Item, StompCodec, Version, encode};
use tokio_util::codec::Decoder;

const BATCH: usize = 1000;

fn small_send() -> Frame {
    Frame::new(Command::Send)
        .header("destination", "/topic/bench.prices")
        .header("content-type", "application/octet-stream")
        .body(vec![b'x'; 128])
}

fn large_message() -> Frame {
    Frame::new(Command::Message)
        .header("destination", "/topic/bench.prices")
        .header("message-id", "m-123456")
        .header("subscription", "sub-0")
        .header("content-type", "application/octet-stream")
        .body(vec![b'y'; 16 * 1024])
}

fn bench_frame(c: &mut Criterion, name: &str, frame: &Frame) {
    let mut stream = BytesMut::new();
    for _ in 0..BATCH {
        encode::encode_frame(frame, Version::V1_2, &mut stream);
    }
    let stream = stream.freeze();
    let mut group = c.benchmark_group(name);

    // The read buffer is filled outside the timed part, as a socket read would fill it.
    let filled = || BytesMut::from(&stream[..]);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("decode", |b| {
        let mut codec = StompCodec::default();
        b.iter_batched(
            filled,
            |mut src| {
                let mut frames = 0;
                while let Some(item) = codec.decode(&mut src).unwrap() {
                    if let Item::Frame(frame) = item {
                        black_box(&frame);
                        frames += 1;
                    }
                }
                assert_eq!(frames, BATCH);
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("encode", |b| {
        let mut dst = BytesMut::with_capacity(stream.len());
        b.iter(|| {
            dst.clear();
            for _ in 0..BATCH {
                encode::encode_frame(black_box(frame), Version::V1_2, &mut dst);
            }
            black_box(&dst);
        })
    });
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("memcpy-baseline", |b| {
        let mut dst = BytesMut::with_capacity(stream.len());
        b.iter(|| {
            dst.clear();
            dst.extend_from_slice(black_box(&stream[..]));
            black_box(&dst);
        })
    });
    group.bench_function("decode-bytes", |b| {
        let mut codec = StompCodec::default();
        b.iter_batched(
            filled,
            |mut src| {
                while let Some(item) = codec.decode(&mut src).unwrap() {
                    black_box(item);
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    bench_frame(c, "send-128B", &small_send());
    bench_frame(c, "message-16KiB", &large_message());
}

criterion_group!(benches, codec);
criterion_main!(benches);
