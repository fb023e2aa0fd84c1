//! Every example frame of the STOMP 1.2 specification, and every command, decodes to
//! what the specification says it means.

use bytes::BytesMut;
use postbox_stomp::{Command, Frame, Item, StompCodec, Version, encode};
use tokio_util::codec::Decoder;

/// Decodes `wire` completely; panics on errors or leftovers.
fn decode_all(wire: &[u8]) -> Vec<Item> {
    let mut codec = StompCodec::default();
    let mut src = BytesMut::from(wire);
    let mut items = Vec::new();
    while let Some(item) = codec.decode(&mut src).expect("valid frame") {
        items.push(item);
    }
    assert!(src.is_empty(), "undecoded bytes left: {src:?}");
    items
}

fn decode_one(wire: &[u8]) -> Frame {
    match decode_all(wire).as_slice() {
        [Item::Frame(frame)] => frame.clone(),
        other => panic!("expected one frame, got {other:?}"),
    }
}

fn headers(frame: &Frame) -> Vec<(&str, &str)> {
    frame.headers.iter().collect()
}

#[test]
fn connect() {
    let frame = decode_one(b"CONNECT\naccept-version:1.2\nhost:stomp.github.org\n\n\0");
    assert_eq!(frame.command, Command::Connect);
    assert_eq!(
        headers(&frame),
        [("accept-version", "1.2"), ("host", "stomp.github.org")]
    );
}

#[test]
fn stomp() {
    let frame = decode_one(b"STOMP\naccept-version:1.2\nhost:stomp.github.org\n\n\0");
    assert_eq!(frame.command, Command::Stomp);
    assert_eq!(frame.get("host"), Some("stomp.github.org"));
}

#[test]
fn connect_with_heart_beat() {
    let frame = decode_one(
        b"CONNECT\naccept-version:1.1\nhost:stomp.github.org\nheart-beat:4000,6000\n\n\0",
    );
    assert_eq!(frame.get("heart-beat"), Some("4000,6000"));
}

#[test]
fn connected() {
    let frame = decode_one(b"CONNECTED\nversion:1.2\n\n\0");
    assert_eq!(frame.command, Command::Connected);
    assert_eq!(frame.get("version"), Some("1.2"));
}

#[test]
fn send_with_text_body() {
    let frame =
        decode_one(b"SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\n\0");
    assert_eq!(frame.command, Command::Send);
    assert_eq!(frame.get("destination"), Some("/queue/a"));
    assert_eq!(frame.get("content-type"), Some("text/plain"));
    assert_eq!(&frame.body[..], b"hello queue a\n");
}

#[test]
fn send_in_a_transaction() {
    let frame = decode_one(
        b"SEND\ndestination:/queue/a\ntransaction:tx1\ncontent-type:text/plain\n\nhello queue a\0",
    );
    assert_eq!(frame.get("transaction"), Some("tx1"));
    assert_eq!(&frame.body[..], b"hello queue a");
}

#[test]
fn subscribe() {
    let frame = decode_one(b"SUBSCRIBE\nid:0\ndestination:/queue/foo\nack:client\n\n\0");
    assert_eq!(frame.command, Command::Subscribe);
    assert_eq!(
        headers(&frame),
        [
            ("id", "0"),
            ("destination", "/queue/foo"),
            ("ack", "client")
        ]
    );
}

#[test]
fn unsubscribe() {
    let frame = decode_one(b"UNSUBSCRIBE\nid:0\n\n\0");
    assert_eq!(frame.command, Command::Unsubscribe);
    assert_eq!(frame.get("id"), Some("0"));
}

#[test]
fn ack_and_nack() {
    for (wire, command) in [
        (&b"ACK\nid:12345\ntransaction:tx1\n\n\0"[..], Command::Ack),
        (b"NACK\nid:12345\ntransaction:tx1\n\n\0", Command::Nack),
    ] {
        let frame = decode_one(wire);
        assert_eq!(frame.command, command);
        assert_eq!(headers(&frame), [("id", "12345"), ("transaction", "tx1")]);
    }
}

#[test]
fn begin_commit_abort() {
    for (wire, command) in [
        (&b"BEGIN\ntransaction:tx1\n\n\0"[..], Command::Begin),
        (b"COMMIT\ntransaction:tx1\n\n\0", Command::Commit),
        (b"ABORT\ntransaction:tx1\n\n\0", Command::Abort),
    ] {
        let frame = decode_one(wire);
        assert_eq!(frame.command, command);
        assert_eq!(frame.get("transaction"), Some("tx1"));
    }
}

#[test]
fn disconnect_and_receipt() {
    let frame = decode_one(b"DISCONNECT\nreceipt:77\n\n\0");
    assert_eq!(frame.command, Command::Disconnect);
    assert_eq!(frame.get("receipt"), Some("77"));
    let frame = decode_one(b"RECEIPT\nreceipt-id:77\n\n\0");
    assert_eq!(frame.command, Command::Receipt);
    assert_eq!(frame.get("receipt-id"), Some("77"));
}

#[test]
fn message() {
    let frame = decode_one(
        b"MESSAGE\nsubscription:0\nmessage-id:007\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\0",
    );
    assert_eq!(frame.command, Command::Message);
    assert_eq!(frame.get("subscription"), Some("0"));
    assert_eq!(frame.get("message-id"), Some("007"));
    assert_eq!(&frame.body[..], b"hello queue a");
}

#[test]
fn error_with_content_length() {
    let body = "The message:\n-----\nMESSAGE\ndestined:/queue/a\nreceipt:message-12345\n\n\
                Hello queue a!\n-----\nDid not contain a destination header, which is REQUIRED\n\
                for message propagation.\n";
    let wire = format!(
        "ERROR\nreceipt-id:message-12345\ncontent-type:text/plain\ncontent-length:{}\n\
         message:malformed frame received\n\n{body}\0",
        body.len()
    );
    let frame = decode_one(wire.as_bytes());
    assert_eq!(frame.command, Command::Error);
    assert_eq!(frame.get("message"), Some("malformed frame received"));
    assert_eq!(frame.get("receipt-id"), Some("message-12345"));
    assert_eq!(&frame.body[..], body.as_bytes());
}

#[test]
fn error_listing_supported_versions() {
    let frame = decode_one(
        b"ERROR\nversion:1.2,2.1\ncontent-type:text/plain\n\nSupported protocol versions are 1.2 2.1\0",
    );
    assert_eq!(frame.get("version"), Some("1.2,2.1"));
}

#[test]
fn every_command_encodes_and_decodes() {
    for command in Command::ALL {
        let mut frame = Frame::new(command).header("receipt", "r-1");
        if command.allows_body() {
            frame = frame.body("payload");
        }
        let mut wire = BytesMut::new();
        encode::encode_frame(&frame, Version::V1_2, &mut wire);
        let decoded = decode_one(&wire);
        assert_eq!(decoded.command, command);
        assert_eq!(decoded.get("receipt"), Some("r-1"));
        assert_eq!(decoded.body, frame.body);
    }
}

#[test]
fn repeated_header_first_value_wins() {
    let frame = decode_one(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0");
    assert_eq!(frame.get("foo"), Some("World"));
    assert_eq!(
        frame.headers.get_all("foo").collect::<Vec<_>>(),
        ["World", "Hello"]
    );
}

#[test]
fn crlf_line_endings_everywhere() {
    let frame = decode_one(b"SEND\r\ndestination:/queue/a\r\n\r\nhi\0\r\n");
    assert_eq!(frame.get("destination"), Some("/queue/a"));
    assert_eq!(&frame.body[..], b"hi");
}

#[test]
fn body_with_nul_needs_content_length() {
    let frame = decode_one(b"SEND\ndestination:/q\ncontent-length:5\n\na\0b\0c\0");
    assert_eq!(&frame.body[..], b"a\0b\0c");
}

#[test]
fn heart_beats_between_frames_are_reported() {
    let items = decode_all(b"\n\r\nSEND\ndestination:/q\n\n\0\n");
    assert_eq!(items.len(), 3);
    assert_eq!(items[0], Item::HeartBeat);
    assert_eq!(items[1], Item::HeartBeat);
    assert!(matches!(&items[2], Item::Frame(f) if f.command == Command::Send));
}

#[test]
fn utf8_headers_and_escapes_in_1_2() {
    let frame = decode_one("MESSAGE\nnäme:välue\\c\\n😀\n\n\0".as_bytes());
    assert_eq!(frame.get("näme"), Some("välue:\n😀"));
}
