//! The nom grammar of a frame's head (command line and header lines).
//!
//! Parsers here are streaming: given the bytes received so far they either produce a
//! value or report `Incomplete`. They never copy; header names and values come out as
//! byte ranges of the input, still escaped. Limits and bodies are the codec's business.

use std::ops::Range;

use nom::bytes::streaming::{tag, take_till};
use nom::{IResult, Parser};

/// What the grammar can reject, beyond `Incomplete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A header line has no `:`.
    MissingColon {
        /// 1-based header line number.
        line: usize,
    },
    /// A header line starts with `:`.
    EmptyHeaderName {
        /// 1-based header line number.
        line: usize,
    },
    /// A CR that is not part of a CRLF where an EOL is expected.
    BareCarriageReturn,
    /// Any other grammar failure reported by a nom combinator.
    Nom(nom::error::ErrorKind),
}

impl<I> nom::error::ParseError<I> for ParseError {
    fn from_error_kind(_input: I, kind: nom::error::ErrorKind) -> ParseError {
        ParseError::Nom(kind)
    }

    fn append(_input: I, _kind: nom::error::ErrorKind, other: ParseError) -> ParseError {
        other
    }
}

/// Result type of the grammar's parsers.
pub type ParseResult<'a, O> = IResult<&'a [u8], O, ParseError>;

/// Where one header's name and value sit in the parsed input (escaped, no EOL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSpan {
    /// Byte range of the name.
    pub name: Range<usize>,
    /// Byte range of the value (everything after the first `:`).
    pub value: Range<usize>,
    /// 1-based header line number, for error messages.
    pub line: usize,
}

/// One end of line: LF or CRLF (STOMP 1.2 accepts both).
pub fn eol(input: &[u8]) -> ParseResult<'_, ()> {
    match input.first() {
        Some(b'\r') => tag::<_, _, ParseError>(&b"\r\n"[..])
            .parse(input)
            .map(|(rest, _)| (rest, ()))
            .map_err(|e| e.map(|_| ParseError::BareCarriageReturn)),
        _ => tag(&b"\n"[..]).parse(input).map(|(rest, _)| (rest, ())),
    }
}

/// One line's content without its EOL; a CR just before the LF belongs to the EOL.
pub fn line(input: &[u8]) -> ParseResult<'_, &[u8]> {
    let (rest, content) = take_till(|b| b == b'\n').parse(input)?;
    let (rest, _) = tag(&b"\n"[..]).parse(rest)?;
    Ok((rest, content.strip_suffix(b"\r").unwrap_or(content)))
}

/// A header line split at its first `:`. Colons after the first belong to the value,
/// which 1.0 clients rely on and later clients sometimes do too.
pub fn header(input: &[u8], number: usize) -> ParseResult<'_, (&[u8], &[u8])> {
    let (rest, content) = line(input)?;
    let Some(colon) = memchr::memchr(b':', content) else {
        return Err(nom::Err::Failure(ParseError::MissingColon { line: number }));
    };
    if colon == 0 {
        return Err(nom::Err::Failure(ParseError::EmptyHeaderName {
            line: number,
        }));
    }
    Ok((rest, (&content[..colon], &content[colon + 1..])))
}

/// A frame head: the command line, header lines, and the blank line that ends them.
///
/// Returns the raw command and fills `spans` with each header's position in `input`;
/// the rest of the input starts at the body.
pub fn head<'a>(input: &'a [u8], spans: &mut Vec<HeaderSpan>) -> ParseResult<'a, &'a [u8]> {
    spans.clear();
    let base = input.as_ptr() as usize;
    let range_of = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        start..start + part.len()
    };
    let (mut rest, command) = line(input)?;
    for number in 1.. {
        if let Ok((after, ())) = eol(rest) {
            return Ok((after, command));
        }
        let (after, (name, value)) = header(rest, number)?;
        spans.push(HeaderSpan {
            name: range_of(name),
            value: range_of(value),
            line: number,
        });
        rest = after;
    }
    unreachable!("the header loop only ends by returning")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> ParseResult<'_, (Vec<(String, String)>, String)> {
        let mut spans = Vec::new();
        let (rest, command) = head(input, &mut spans)?;
        let text = |r: &Range<usize>| String::from_utf8(input[r.clone()].to_vec()).unwrap();
        let headers = spans
            .iter()
            .map(|s| (text(&s.name), text(&s.value)))
            .collect();
        Ok((
            rest,
            (headers, String::from_utf8(command.to_vec()).unwrap()),
        ))
    }

    #[test]
    fn head_with_lf_and_crlf() {
        let (rest, (headers, command)) = parse(b"SEND\r\na:1\nb:x:y\r\n\r\nbody").unwrap();
        assert_eq!(command, "SEND");
        assert_eq!(
            headers,
            [("a".into(), "1".into()), ("b".into(), "x:y".into())]
        );
        assert_eq!(rest, b"body");
    }

    #[test]
    fn head_needs_its_blank_line() {
        for partial in [&b"SEND"[..], b"SEND\n", b"SEND\na:1\n", b"SEND\na:1\r"] {
            assert!(
                matches!(parse(partial), Err(nom::Err::Incomplete(_))),
                "{partial:?}"
            );
        }
    }

    #[test]
    fn header_lines_need_a_colon_and_a_name() {
        assert_eq!(
            parse(b"SEND\na:1\nnocolon\n\n").unwrap_err(),
            nom::Err::Failure(ParseError::MissingColon { line: 2 })
        );
        assert_eq!(
            parse(b"SEND\n:v\n\n").unwrap_err(),
            nom::Err::Failure(ParseError::EmptyHeaderName { line: 1 })
        );
    }

    #[test]
    fn values_are_not_trimmed() {
        let (_, (headers, _)) = parse(b"SEND\n a : b \n\n").unwrap();
        assert_eq!(headers, [(" a ".into(), " b ".into())]);
    }

    #[test]
    fn eol_rejects_a_bare_cr() {
        assert!(eol(b"\n").is_ok());
        assert!(eol(b"\r\n").is_ok());
        assert!(matches!(eol(b"\r"), Err(nom::Err::Incomplete(_))));
        assert_eq!(
            eol(b"\rx").unwrap_err(),
            nom::Err::Error(ParseError::BareCarriageReturn)
        );
    }
}
