//! Decodes a STOMP frame given on the command line (or a sample one) and prints it.
//!
//! `cargo run -p postbox-stomp --example decode -- 'SEND\ndestination:/queue/a\n\nhi\0'`
//! (`\n`, `\r` and `\0` in the argument are read as LF, CR and NUL).
#![allow(clippy::print_stdout)]

use bytes::BytesMut;
use postbox_stomp::{Item, StompCodec};
use tokio_util::codec::Decoder;

fn main() {
    let text = std::env::args().nth(1).unwrap_or_else(|| {
        r"SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhello\0".into()
    });
    let wire = text
        .replace(r"\n", "\n")
        .replace(r"\r", "\r")
        .replace(r"\0", "\0");
    let mut codec = StompCodec::default();
    let mut src = BytesMut::from(wire.as_bytes());
    loop {
        match codec.decode(&mut src) {
            Ok(Some(Item::Frame(frame))) => println!("{frame:#?}"),
            Ok(Some(Item::HeartBeat)) => println!("heart-beat"),
            Ok(None) if src.is_empty() => break,
            Ok(None) => {
                println!("incomplete frame: {} bytes waiting for more", src.len());
                break;
            }
            Err(error) => {
                println!("ERROR: {error}");
                std::process::exit(1);
            }
        }
    }
}
