//! `tokio_util::codec` Decoder and Encoder for STOMP, with size limits.
//!
//! The decoder works on whatever bytes have arrived. It remembers how far it has scanned
//! so bytes trickling in are looked at once, and it checks every limit while scanning, so
//! a peer announcing or sending an oversize frame is refused before memory is reserved
//! for it.

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;
use tokio_util::codec::{Decoder, Encoder};

use crate::headers::names;
use crate::parse::{self, HeaderSpan, ParseError};
use crate::{Command, Escaping, Frame, FrameError, Headers, Item, Version, encode};

/// Size limits enforced while decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame (head and body) in bytes.
    pub max_frame_size: usize,
    /// The most header lines in one frame.
    pub max_headers: usize,
    /// The longest header line (or command line) in bytes, EOL excluded.
    pub max_header_line: usize,
    /// The largest body in bytes.
    pub max_body: usize,
}

impl Default for Limits {
    /// 8 MiB bodies; 1000 header lines (what RabbitMQ and ActiveMQ accept) of up to
    /// 16 KiB each (room for a JWT in `passcode`), all within the frame size.
    fn default() -> Limits {
        Limits {
            max_frame_size: 8 * 1024 * 1024 + 256 * 1024,
            max_headers: 1000,
            max_header_line: 16 * 1024,
            max_body: 8 * 1024 * 1024,
        }
    }
}

/// A STOMP codec for one connection.
///
/// Header escaping depends on the negotiated version, so a server creates the codec
/// with any version, decodes CONNECT (never escaped), then calls [`StompCodec::set_version`].
#[derive(Debug)]
pub struct StompCodec {
    version: Version,
    limits: Limits,
    state: State,
    spans: Vec<HeaderSpan>,
    /// Where the raw value of the first `receipt` header of the frame being decoded
    /// sits in the buffer, once its line was read within the limits.
    receipt_at: Option<(usize, usize)>,
    /// That value, kept when the frame failed to decode (see [`StompCodec::failed_receipt`]).
    failed_receipt: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Scanning for the blank line that ends the head.
    Head {
        /// Bytes already scanned for LF.
        scanned: usize,
        /// Where the line being scanned starts.
        line_start: usize,
        /// Complete lines seen so far, the command line included.
        lines: usize,
    },
    /// Head parsed; waiting for the body and its NUL.
    Body {
        command: Command,
        head_len: usize,
        body: BodyEnd,
    },
}

#[derive(Debug, Clone, Copy)]
enum BodyEnd {
    /// `content-length` gave the size.
    Length(usize),
    /// No `content-length`: the body ends at the first NUL; bytes before `scanned` have none.
    Nul { scanned: usize },
}

/// Header spans kept allocated between frames. A frame with more gets its own, freed
/// after it, so one large frame does not pin its size per idle connection.
const KEEP_SPANS: usize = 64;

const FRESH: State = State::Head {
    scanned: 0,
    line_start: 0,
    lines: 0,
};

impl StompCodec {
    /// A codec for `version` with the given limits.
    pub fn new(version: Version, limits: Limits) -> StompCodec {
        StompCodec {
            version,
            limits,
            state: FRESH,
            spans: Vec::new(),
            receipt_at: None,
            failed_receipt: None,
        }
    }

    /// The `receipt` header of a frame that failed to decode, if its line had been read
    /// before the failure, so the ERROR can carry `receipt-id` (STOMP 1.2 "ERROR").
    /// Costs nothing until a decode fails: until then only the value's position is kept.
    pub fn failed_receipt(&self) -> Option<&str> {
        self.failed_receipt.as_deref()
    }

    /// The version whose escaping rules apply.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Switches escaping rules, normally once after CONNECT/CONNECTED.
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Scans for the end of the head. Returns its length once the blank line is there.
    fn scan_head(&mut self, src: &BytesMut) -> Result<Option<usize>, FrameError> {
        let State::Head {
            scanned,
            line_start,
            lines,
        } = &mut self.state
        else {
            unreachable!("scan_head runs only in the Head state")
        };
        let limits = &self.limits;
        // A NUL is looked for in the same pass as the LFs: the head cannot hold one.
        while let Some(offset) = memchr::memchr2(b'\n', 0, &src[*scanned..]) {
            let newline = *scanned + offset;
            if src[newline] == 0 {
                return Err(FrameError::NulInHeader { line: *lines });
            }
            let content = &src[*line_start..newline];
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            if content.len() > limits.max_header_line {
                return Err(FrameError::HeaderLineTooLong {
                    limit: limits.max_header_line,
                });
            }
            if newline + 1 > limits.max_frame_size {
                return Err(FrameError::FrameTooLarge {
                    limit: limits.max_frame_size,
                });
            }
            if content.is_empty() && *lines > 0 {
                return Ok(Some(newline + 1));
            }
            // A wrong command is refused as soon as its line ends, not when (if ever)
            // the head's blank line comes.
            if *lines == 0 && Command::from_bytes(content).is_none() {
                return Err(FrameError::unknown_command(content));
            }
            *lines += 1;
            if *lines - 1 > limits.max_headers {
                return Err(FrameError::TooManyHeaders {
                    limit: limits.max_headers,
                });
            }
            // The first occurrence counts (STOMP 1.2 "Repeated Header Entries").
            if *lines > 1 && self.receipt_at.is_none() && content.starts_with(b"receipt:") {
                let start = *line_start + b"receipt:".len();
                self.receipt_at = Some((start, *line_start + content.len()));
            }
            *line_start = newline + 1;
            *scanned = newline + 1;
        }
        // Likewise a command line that can no longer become a command, before its end.
        if *lines == 0 && !Command::could_start(&src[..]) {
            return Err(FrameError::unknown_command(&src[..]));
        }
        // The trailing CR of a CRLF may be counted here, hence the +1 slack.
        if src.len() - *line_start > limits.max_header_line + 1 {
            return Err(FrameError::HeaderLineTooLong {
                limit: limits.max_header_line,
            });
        }
        if src.len() > limits.max_frame_size {
            return Err(FrameError::FrameTooLarge {
                limit: limits.max_frame_size,
            });
        }
        *scanned = src.len();
        Ok(None)
    }

    /// Parses a complete head of `head_len` bytes and decides how the body ends.
    fn parse_head(&mut self, src: &[u8], head_len: usize) -> Result<State, FrameError> {
        let head = &src[..head_len];
        let command = match parse::head(head, &mut self.spans) {
            Ok((_, command)) => command,
            Err(nom::Err::Failure(e) | nom::Err::Error(e)) => return Err(e.into()),
            Err(nom::Err::Incomplete(_)) => unreachable!("scan_head found the blank line"),
        };
        let command =
            Command::from_bytes(command).ok_or_else(|| FrameError::unknown_command(command))?;
        let content_length = self
            .spans
            .iter()
            .find(|span| &head[span.name.clone()] == b"content-length")
            .map(|span| parse_content_length(&head[span.value.clone()]))
            .transpose()?;
        let body = match content_length {
            Some(length) => {
                if length > self.limits.max_body {
                    return Err(FrameError::BodyTooLarge {
                        limit: self.limits.max_body,
                    });
                }
                if head_len + length + 1 > self.limits.max_frame_size {
                    return Err(FrameError::FrameTooLarge {
                        limit: self.limits.max_frame_size,
                    });
                }
                if length > 0 && !command.allows_body() {
                    return Err(FrameError::BodyNotAllowed(command));
                }
                BodyEnd::Length(length)
            }
            None => BodyEnd::Nul { scanned: head_len },
        };
        Ok(State::Body {
            command,
            head_len,
            body,
        })
    }

    /// Finds where the body ends; `Some((body_len, frame_len))` once the NUL is there.
    fn find_body_end(&mut self, src: &mut BytesMut) -> Result<Option<(usize, usize)>, FrameError> {
        let State::Body {
            command,
            head_len,
            body,
        } = &mut self.state
        else {
            unreachable!("find_body_end runs only in the Body state")
        };
        match body {
            BodyEnd::Length(length) => {
                let needed = *head_len + *length + 1;
                if src.len() < needed {
                    // Within limits (checked in parse_head): reserve the rest at once.
                    src.reserve(needed - src.len());
                    return Ok(None);
                }
                if src[needed - 1] != 0 {
                    return Err(FrameError::MissingNul {
                        content_length: *length,
                    });
                }
                Ok(Some((*length, needed)))
            }
            BodyEnd::Nul { scanned } => {
                if !command.allows_body() && src.len() > *head_len && src[*head_len] != 0 {
                    return Err(FrameError::BodyNotAllowed(*command));
                }
                if let Some(offset) = memchr::memchr(0, &src[*scanned..]) {
                    let nul = *scanned + offset;
                    return Ok(Some((nul - *head_len, nul + 1)));
                }
                if src.len() - *head_len > self.limits.max_body {
                    return Err(FrameError::BodyTooLarge {
                        limit: self.limits.max_body,
                    });
                }
                if src.len() > self.limits.max_frame_size {
                    return Err(FrameError::FrameTooLarge {
                        limit: self.limits.max_frame_size,
                    });
                }
                *scanned = src.len();
                Ok(None)
            }
        }
    }

    /// Cuts the finished frame out of `src` and builds it without copying the body.
    fn take_frame(
        &mut self,
        src: &mut BytesMut,
        command: Command,
        head_len: usize,
        body_len: usize,
        frame_len: usize,
    ) -> Result<Frame, FrameError> {
        // The EOLs that follow a frame's NUL belong to it (STOMP 1.2 grammar). Only whole
        // EOLs already received are taken; later ones arrive as heart-beats.
        let mut end = frame_len;
        loop {
            match src.get(end..end + 2) {
                Some([b'\r', b'\n']) => end += 2,
                _ if src.get(end) == Some(&b'\n') => end += 1,
                _ => break,
            }
        }
        let bytes = src.split_to(end).freeze();
        let receipt_at = self.receipt_at.take();
        let escaping = Escaping::for_frame(self.version, command);
        let headers = match headers_of(&bytes, &self.spans, escaping) {
            Ok(headers) => headers,
            Err(error) => {
                // The frame has left `src`: its receipt is read from `bytes`.
                self.failed_receipt =
                    receipt_at.and_then(|at| receipt_text(&bytes, at, self.version));
                return Err(error);
            }
        };
        if self.spans.capacity() > KEEP_SPANS {
            self.spans = Vec::new();
        }
        Ok(Frame {
            command,
            headers,
            body: bytes.slice(head_len..head_len + body_len),
        })
    }
}

impl Default for StompCodec {
    /// A 1.2 codec with default limits.
    fn default() -> StompCodec {
        StompCodec::new(Version::V1_2, Limits::default())
    }
}

/// The static spelling of a header name most frames carry: such names then cost no
/// reference to the read buffer (whose count is an atomic shared with the reader).
fn well_known_name(raw: &[u8]) -> Option<&'static str> {
    Some(match raw {
        b"destination" => names::DESTINATION,
        b"content-length" => names::CONTENT_LENGTH,
        b"content-type" => names::CONTENT_TYPE,
        b"receipt" => names::RECEIPT,
        b"id" => names::ID,
        b"ack" => names::ACK,
        b"subscription" => names::SUBSCRIPTION,
        b"message-id" => names::MESSAGE_ID,
        b"transaction" => names::TRANSACTION,
        b"reply-to" => "reply-to",
        b"persistent" => "persistent",
        b"expiration" => "expiration",
        b"priority" => "priority",
        _ => return None,
    })
}

/// Builds a frame's headers from their spans in `bytes`.
fn headers_of(
    bytes: &Bytes,
    spans: &[HeaderSpan],
    escaping: Escaping,
) -> Result<Headers, FrameError> {
    let mut headers = Headers::with_capacity(spans.len());
    for span in spans {
        let name = match well_known_name(&bytes[span.name.clone()]) {
            Some(name) => ByteString::from_static(name),
            None => header_text(bytes, span.name.clone(), escaping, span.line)?,
        };
        let value = header_text(bytes, span.value.clone(), escaping, span.line)?;
        headers.push(name, value);
    }
    Ok(headers)
}

/// The unescaped `receipt` value at `at` in `head`, a frame head that failed to decode;
/// `None` if the value itself is not valid.
fn receipt_text(head: &[u8], (start, end): (usize, usize), version: Version) -> Option<String> {
    let command_line = head.split(|&b| b == b'\n').next()?;
    let command_line = command_line.strip_suffix(b"\r").unwrap_or(command_line);
    // An unknown command gets the rules of an ordinary frame.
    let command = Command::from_bytes(command_line).unwrap_or(Command::Send);
    let raw = head.get(start..end)?;
    let value = match Escaping::for_frame(version, command)
        .unescape(raw, 0)
        .ok()?
    {
        Some(decoded) => decoded,
        None => raw.to_vec(),
    };
    String::from_utf8(value).ok()
}

/// Unescapes one header name or value and checks it is UTF-8, sharing `bytes` if possible.
fn header_text(
    bytes: &Bytes,
    range: std::ops::Range<usize>,
    escaping: Escaping,
    line: usize,
) -> Result<ByteString, FrameError> {
    let raw = match escaping.unescape(&bytes[range.clone()], line)? {
        Some(decoded) => Bytes::from(decoded),
        None => bytes.slice(range),
    };
    ByteString::try_from(raw).map_err(|_| FrameError::InvalidUtf8 { line })
}

/// Parses a `content-length` value: ASCII digits only, no sign, no spaces.
fn parse_content_length(raw: &[u8]) -> Result<usize, FrameError> {
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) {
        return Err(FrameError::InvalidContentLength);
    }
    raw.iter().try_fold(0usize, |acc, digit| {
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(usize::from(digit - b'0')))
            .ok_or(FrameError::InvalidContentLength)
    })
}

impl From<ParseError> for FrameError {
    fn from(error: ParseError) -> FrameError {
        match error {
            ParseError::MissingColon { line } => FrameError::MissingColon { line },
            ParseError::EmptyHeaderName { line } => FrameError::EmptyHeaderName { line },
            ParseError::BareCarriageReturn => FrameError::BareCarriageReturn,
            // The head grammar only fails through the variants above; keep a precise
            // message anyway should a combinator start failing differently.
            ParseError::Nom(_) => FrameError::BareCarriageReturn,
        }
    }
}

// ===== impl Decoder =====

impl Decoder for StompCodec {
    type Item = Item;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Item>, FrameError> {
        let decoded = self.decode_item(src);
        if decoded.is_err()
            && let Some(at) = self.receipt_at.take()
        {
            self.failed_receipt = receipt_text(src, at, self.version);
        }
        decoded
    }
}

impl StompCodec {
    /// [`Decoder::decode`] without the bookkeeping of a failure.
    fn decode_item(&mut self, src: &mut BytesMut) -> Result<Option<Item>, FrameError> {
        if let State::Head {
            scanned: 0,
            line_start: 0,
            ..
        } = self.state
        {
            // Between frames: a lone EOL is a heart-beat.
            match src.first() {
                None => return Ok(None),
                Some(b'\n') => {
                    src.advance(1);
                    return Ok(Some(Item::HeartBeat));
                }
                Some(b'\r') => match src.get(1) {
                    None => return Ok(None),
                    Some(b'\n') => {
                        src.advance(2);
                        return Ok(Some(Item::HeartBeat));
                    }
                    Some(_) => return Err(FrameError::BareCarriageReturn),
                },
                Some(_) => {}
            }
        }
        if let State::Head { .. } = self.state {
            let Some(head_len) = self.scan_head(src)? else {
                return Ok(None);
            };
            self.state = self.parse_head(src, head_len)?;
        }
        let Some((body_len, frame_len)) = self.find_body_end(src)? else {
            return Ok(None);
        };
        let State::Body {
            command, head_len, ..
        } = self.state
        else {
            unreachable!("the body was just found")
        };
        self.state = FRESH;
        self.take_frame(src, command, head_len, body_len, frame_len)
            .map(|frame| Some(Item::Frame(frame)))
    }
}

// ===== impl Encoder =====

impl Encoder<&Frame> for StompCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode::encode_frame(frame, self.version, dst);
        Ok(())
    }
}

impl Encoder<Frame> for StompCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&frame, dst)
    }
}

impl Encoder<Item> for StompCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Item, dst: &mut BytesMut) -> Result<(), FrameError> {
        match item {
            Item::Frame(frame) => self.encode(&frame, dst),
            Item::HeartBeat => {
                encode::put_heart_beat(dst);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_limits() -> Limits {
        Limits {
            max_frame_size: 256,
            max_headers: 3,
            max_header_line: 32,
            max_body: 64,
        }
    }

    fn decode(codec: &mut StompCodec, wire: &[u8]) -> Result<Vec<Item>, FrameError> {
        let mut src = BytesMut::from(wire);
        let mut items = Vec::new();
        while let Some(item) = codec.decode(&mut src)? {
            items.push(item);
        }
        Ok(items)
    }

    fn error_of(wire: &[u8]) -> FrameError {
        decode(&mut StompCodec::new(Version::V1_2, small_limits()), wire).unwrap_err()
    }

    #[test]
    fn needs_more_until_the_nul() {
        let mut codec = StompCodec::default();
        let mut src = BytesMut::from(&b"SEND\ndestination:/q\n\nbody"[..]);
        assert!(codec.decode(&mut src).unwrap().is_none());
        src.extend_from_slice(b"\0");
        assert!(matches!(
            codec.decode(&mut src).unwrap(),
            Some(Item::Frame(_))
        ));
    }

    #[test]
    fn malformed_frames_are_named_precisely() {
        assert!(matches!(error_of(b"send\n\n\0"), FrameError::UnknownCommand(c) if c == "send"));
        assert!(matches!(
            error_of(b"SEND\nnocolon\n\n\0"),
            FrameError::MissingColon { line: 1 }
        ));
        assert!(matches!(
            error_of(b"SEND\n:x\n\n\0"),
            FrameError::EmptyHeaderName { line: 1 }
        ));
        assert!(matches!(
            error_of(b"SEND\na:1\nb:\\t\n\n\0"),
            FrameError::InvalidEscape { line: 2, .. }
        ));
        assert!(matches!(
            error_of(b"SEND\na:\xff\n\n\0"),
            FrameError::InvalidUtf8 { line: 1 }
        ));
        assert!(matches!(
            error_of(b"\rSEND\n\n\0"),
            FrameError::BareCarriageReturn
        ));
    }

    #[test]
    fn a_wrong_command_is_refused_before_the_head_ends() {
        // Its line ended, and no blank line may ever come.
        let mut codec = StompCodec::default();
        let mut src = BytesMut::from(&b"FROB\nx:y\n"[..]);
        assert!(
            matches!(codec.decode(&mut src), Err(FrameError::UnknownCommand(c)) if c == "FROB")
        );
        // No line end yet, and already no command starts this way.
        let mut codec = StompCodec::default();
        let mut src = BytesMut::from(&b"\xffgarbage"[..]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::UnknownCommand(_))
        ));
        let mut codec = StompCodec::default();
        let mut src = BytesMut::from(&b"SENDX"[..]);
        assert!(
            matches!(codec.decode(&mut src), Err(FrameError::UnknownCommand(c)) if c == "SENDX")
        );
        // Prefixes of commands, with or without the CR of a CRLF, wait for more.
        for partial in [&b"S"[..], b"SUBSCR", b"CONNECTED", b"SEND\r", b"DISCONNECT"] {
            let mut codec = StompCodec::default();
            let mut src = BytesMut::from(partial);
            assert!(codec.decode(&mut src).unwrap().is_none(), "{partial:?}");
        }
        // Arriving one byte at a time changes nothing.
        let mut codec = StompCodec::default();
        let mut src = BytesMut::new();
        for &byte in b"SUBSCRIBE\r\nid:1\ndestination:/q\n\n" {
            src.extend_from_slice(&[byte]);
            assert!(codec.decode(&mut src).unwrap().is_none());
        }
        src.extend_from_slice(b"\0");
        assert!(matches!(
            codec.decode(&mut src).unwrap(),
            Some(Item::Frame(_))
        ));
    }

    #[test]
    fn a_nul_in_the_head_is_refused_in_every_version() {
        let cases: [(&[u8], usize); 6] = [
            (b"SEND\nx:a\0ERROR\nmessage:forged\n\n\0", 1),
            (b"SEND\ndestination:/q\nx\0y:1\n\n\0", 2),
            (b"CONNECT\naccept-version:1.2\nlogin:a\0b\n\n\0", 2),
            (b"STOMP\nhost:\0\n\n\0", 1),
            (b"DISCONNECT\0", 0),
            (b"\0", 0),
        ];
        for version in Version::ALL {
            for (wire, line) in cases {
                let mut codec = StompCodec::new(version, Limits::default());
                assert!(
                    matches!(
                        decode(&mut codec, wire),
                        Err(FrameError::NulInHeader { line: l }) if l == line
                    ),
                    "{version} {wire:?}"
                );
            }
        }
    }

    #[test]
    fn a_nul_is_refused_before_its_line_ends() {
        let mut codec = StompCodec::default();
        let mut src = BytesMut::from(&b"SEND\nx:a"[..]);
        assert!(codec.decode(&mut src).unwrap().is_none());
        src.extend_from_slice(b"b\0");
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::NulInHeader { line: 1 })
        ));
    }

    #[test]
    fn nul_still_ends_frames_and_may_sit_in_counted_bodies() {
        let mut codec = StompCodec::default();
        let items = decode(
            &mut codec,
            b"SEND\ncontent-length:3\n\na\0b\0SUBSCRIBE\nid:1\n\n\0",
        )
        .unwrap();
        assert!(matches!(&items[0], Item::Frame(f) if &f.body[..] == b"a\0b"));
        assert!(matches!(&items[1], Item::Frame(f) if f.command == Command::Subscribe));
    }

    #[test]
    fn content_length_must_be_digits_and_exact() {
        for bad in ["abc", "-1", " 5", "5 ", "", "99999999999999999999999"] {
            let wire = format!("SEND\ncontent-length:{bad}\n\n\0");
            let result = decode(&mut StompCodec::default(), wire.as_bytes());
            assert!(
                matches!(result, Err(FrameError::InvalidContentLength)),
                "{bad:?}"
            );
        }
        assert!(matches!(
            error_of(b"SEND\ncontent-length:2\n\nabc\0"),
            FrameError::MissingNul { content_length: 2 }
        ));
    }

    #[test]
    fn only_send_message_error_may_have_a_body() {
        assert!(matches!(
            error_of(b"SUBSCRIBE\nid:1\n\nbody\0"),
            FrameError::BodyNotAllowed(Command::Subscribe)
        ));
        assert!(matches!(
            error_of(b"ACK\nid:1\ncontent-length:1\n\nx\0"),
            FrameError::BodyNotAllowed(Command::Ack)
        ));
        let mut codec = StompCodec::default();
        let items = decode(&mut codec, b"ACK\nid:1\ncontent-length:0\n\n\0").unwrap();
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn a_non_body_frame_is_refused_at_its_first_body_byte() {
        let mut codec = StompCodec::default();
        let mut src = BytesMut::from(&b"BEGIN\ntransaction:t\n\nx"[..]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::BodyNotAllowed(Command::Begin))
        ));
    }

    #[test]
    fn connect_headers_are_not_unescaped() {
        let mut codec = StompCodec::default();
        let items = decode(&mut codec, b"CONNECT\npasscode:a\\tb\n\n\0").unwrap();
        let [Item::Frame(frame)] = &items[..] else {
            panic!("{items:?}")
        };
        assert_eq!(frame.get("passcode"), Some("a\\tb"));
    }

    #[test]
    fn escapes_follow_the_codec_version() {
        let wire = b"MESSAGE\nk:a\\rb\n\n\0";
        let mut codec = StompCodec::new(Version::V1_1, Limits::default());
        assert!(matches!(
            decode(&mut codec, wire),
            Err(FrameError::InvalidEscape { .. })
        ));
        codec = StompCodec::new(Version::V1_0, Limits::default());
        let items = decode(&mut codec, wire).unwrap();
        assert!(matches!(&items[0], Item::Frame(f) if f.get("k") == Some("a\\rb")));
    }

    #[test]
    fn header_limits_apply_before_the_frame_is_complete() {
        let mut codec = StompCodec::new(Version::V1_2, small_limits());
        let mut src = BytesMut::from(&b"SEND\nx:"[..]);
        src.extend_from_slice(&[b'y'; 40]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::HeaderLineTooLong { limit: 32 })
        ));
        assert!(matches!(
            error_of(b"SEND\na:1\nb:2\nc:3\nd:4\n"),
            FrameError::TooManyHeaders { limit: 3 }
        ));
        let mut exactly = Vec::from(&b"SEND\n"[..]);
        exactly.extend_from_slice(&[b'k'; 32]);
        exactly.extend_from_slice(b"\r\n\n\0");
        assert!(matches!(
            error_of(&exactly),
            FrameError::MissingColon { .. }
        ));
    }

    #[test]
    fn many_headers_pass_by_default_and_leave_no_large_buffer_behind() {
        let mut wire = b"SEND\n".to_vec();
        for i in 0..1000 {
            wire.extend_from_slice(format!("x-h{i}:{i}\n").as_bytes());
        }
        wire.extend_from_slice(b"\n\0");
        let mut codec = StompCodec::default();
        let items = decode(&mut codec, &wire).unwrap();
        assert!(matches!(&items[0], Item::Frame(f) if f.headers.len() == 1000));
        assert!(codec.spans.capacity() <= KEEP_SPANS);
        let mut one_more = wire[..wire.len() - 2].to_vec();
        one_more.extend_from_slice(b"x-last:1\n\n\0");
        assert!(matches!(
            decode(&mut StompCodec::default(), &one_more),
            Err(FrameError::TooManyHeaders { limit: 1000 })
        ));
    }

    /// The receipt the codec kept after `wire` failed to decode.
    fn receipt_after_failure(version: Version, wire: &[u8]) -> Option<String> {
        let mut codec = StompCodec::new(version, small_limits());
        decode(&mut codec, wire).unwrap_err();
        codec.failed_receipt().map(str::to_owned)
    }

    #[test]
    fn a_failed_frame_keeps_a_receipt_read_before_the_failure() {
        let long = "y".repeat(40);
        let cases: [(Vec<u8>, Option<&str>); 8] = [
            // Limits met after the receipt line.
            (b"SEND\nreceipt:r-1\na:1\nb:2\nc:3\n".to_vec(), Some("r-1")),
            (
                format!("SEND\nreceipt:r-2\nx:{long}").into_bytes(),
                Some("r-2"),
            ),
            (
                b"SEND\nreceipt:r-3\ncontent-length:65\n\n".to_vec(),
                Some("r-3"),
            ),
            // Any failure once the whole head was read: the receipt may come last.
            (
                b"SEND\ncontent-length:x\nreceipt:r-4\n\n".to_vec(),
                Some("r-4"),
            ),
            // First occurrence wins; 1.2 escapes are decoded.
            (
                b"SEND\nreceipt:a\\cb\nreceipt:c\nnocolon\n\n\0".to_vec(),
                Some("a:b"),
            ),
            // Not read yet, or itself the broken line.
            (format!("SEND\nx:{long}\nreceipt:r-5\n").into_bytes(), None),
            (format!("SEND\nreceipt:{long}\n").into_bytes(), None),
            (b"SEND\nreceipt:a\\t\n\n\0".to_vec(), None),
        ];
        for (wire, receipt) in cases {
            assert_eq!(
                receipt_after_failure(Version::V1_2, &wire).as_deref(),
                receipt,
                "{:?}",
                wire.escape_ascii().to_string()
            );
        }
        // CONNECT headers are never unescaped.
        assert_eq!(
            receipt_after_failure(Version::V1_2, b"CONNECT\nreceipt:a\\cb\na:1\nb:2\nc:3\n")
                .as_deref(),
            Some("a\\cb")
        );
    }

    #[test]
    fn a_receipt_from_an_invalid_header_elsewhere_is_kept() {
        // The failure comes while the headers are built, after the frame left the buffer.
        let mut codec = StompCodec::default();
        let wire = b"SEND\nreceipt:r-9\nbad:\\t\n\n\0";
        assert!(matches!(
            decode(&mut codec, wire),
            Err(FrameError::InvalidEscape { line: 2, .. })
        ));
        assert_eq!(codec.failed_receipt(), Some("r-9"));
    }

    #[test]
    fn a_receipt_does_not_leak_into_the_next_frame() {
        let mut codec = StompCodec::new(Version::V1_2, small_limits());
        let wire = b"SEND\nreceipt:old\n\n\0SEND\na:1\nb:2\nc:3\nd:4\n";
        assert!(decode(&mut codec, wire).is_err());
        assert_eq!(codec.failed_receipt(), None);
    }

    #[test]
    fn an_announced_oversize_body_is_refused_without_reserving_it() {
        let mut codec = StompCodec::new(Version::V1_2, small_limits());
        let mut src = BytesMut::from(&b"SEND\ncontent-length:1000000000\n\n"[..]);
        let capacity = src.capacity();
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::BodyTooLarge { limit: 64 })
        ));
        assert_eq!(src.capacity(), capacity);
    }

    #[test]
    fn an_unterminated_body_is_refused_past_the_limit() {
        let mut codec = StompCodec::new(Version::V1_2, small_limits());
        let mut src = BytesMut::from(&b"SEND\n\n"[..]);
        src.extend_from_slice(&[b'z'; 64]);
        assert!(codec.decode(&mut src).unwrap().is_none());
        src.extend_from_slice(b"z");
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::BodyTooLarge { limit: 64 })
        ));
    }

    #[test]
    fn frame_size_counts_head_and_body() {
        let limits = Limits {
            max_frame_size: 40,
            ..Limits::default()
        };
        let mut codec = StompCodec::new(Version::V1_2, limits);
        let wire = b"SEND\ndestination:/topic/abc\ncontent-length:20\n\n";
        assert!(matches!(
            decode(&mut codec, wire),
            Err(FrameError::FrameTooLarge { limit: 40 })
        ));
    }

    #[test]
    fn eols_after_the_nul_belong_to_the_frame_later_ones_are_heart_beats() {
        let mut codec = StompCodec::default();
        let mut src = BytesMut::from(&b"SEND\n\nx\0\n\r\n"[..]);
        assert!(matches!(
            codec.decode(&mut src).unwrap(),
            Some(Item::Frame(_))
        ));
        assert!(src.is_empty());
        src.extend_from_slice(b"\n");
        assert_eq!(codec.decode(&mut src).unwrap(), Some(Item::HeartBeat));
    }

    #[test]
    fn bodies_share_the_receive_buffer() {
        let mut codec = StompCodec::default();
        let mut src = BytesMut::from(&b"SEND\ncontent-length:3\n\nabc\0"[..]);
        let start = src.as_ptr() as usize;
        let Some(Item::Frame(frame)) = codec.decode(&mut src).unwrap() else {
            panic!("no frame")
        };
        assert_eq!(frame.body.as_ptr() as usize, start + 23);
    }

    #[test]
    fn heart_beat_item_encodes_as_one_lf() {
        let mut codec = StompCodec::default();
        let mut dst = BytesMut::new();
        codec.encode(Item::HeartBeat, &mut dst).unwrap();
        assert_eq!(&dst[..], b"\n");
    }
}
