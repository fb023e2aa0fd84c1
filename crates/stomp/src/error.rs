//! Everything that can be wrong with bytes received from a peer.

use std::io;

use crate::Command;

/// Why a byte stream could not be decoded into frames.
///
/// Each variant is a fatal protocol error: the receiving side should send one ERROR frame
/// whose `message` header is this error's `Display` text, then close the connection. The
/// texts name the rule that was broken but never echo the peer's bytes back, except for
/// a short, sanitised command name.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The command line is not one of the STOMP commands (they are case-sensitive).
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    /// A header line has no `:` separating name and value.
    #[error("malformed header line {line}: no ':' between name and value")]
    MissingColon {
        /// 1-based header line number (the command is line 0).
        line: usize,
    },
    /// A header line with an empty name, such as `:value`.
    #[error("malformed header line {line}: empty header name")]
    EmptyHeaderName {
        /// 1-based header line number.
        line: usize,
    },
    /// A backslash followed by something other than the escapes of this version.
    #[error("invalid escape sequence '\\{sequence}' in header line {line}")]
    InvalidEscape {
        /// The character after the backslash, or an empty string at the end of the value.
        sequence: String,
        /// 1-based header line number.
        line: usize,
    },
    /// A header name or value is not valid UTF-8.
    #[error("header line {line} is not valid UTF-8")]
    InvalidUtf8 {
        /// 1-based header line number.
        line: usize,
    },
    /// `content-length` is not a non-negative decimal integer.
    #[error("content-length is not a non-negative integer")]
    InvalidContentLength,
    /// The byte after a `content-length` body is not NUL.
    #[error("frame body is longer than its content-length of {content_length} bytes")]
    MissingNul {
        /// The declared length.
        content_length: usize,
    },
    /// A NUL byte in the command line or a header line (line 0 is the command line).
    ///
    /// NUL ends a frame and STOMP has no escape for it, so a header holding one could
    /// only be passed on by ending the frame early: a SEND could then smuggle a forged
    /// frame to every subscriber. It is refused whatever the version, CONNECT included.
    #[error("NUL byte in {}: NUL may only end a frame", line_name(*line))]
    NulInHeader {
        /// 0 for the command line, else the 1-based header line number.
        line: usize,
    },
    /// A CR not followed by LF where an end of line was expected.
    #[error("bare CR outside a CRLF line ending")]
    BareCarriageReturn,
    /// A frame other than SEND, MESSAGE or ERROR carries a body.
    #[error("{0} frames must not have a body")]
    BodyNotAllowed(Command),
    /// A header line exceeds the configured limit.
    #[error("header line longer than {limit} bytes")]
    HeaderLineTooLong {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// More header lines than the configured limit.
    #[error("more than {limit} headers")]
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// The body exceeds the configured limit.
    #[error("body larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The whole frame exceeds the configured limit.
    #[error("frame larger than {limit} bytes")]
    FrameTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The transport failed; required by `tokio_util::codec`.
    #[error("transport error: {0}")]
    Io(#[from] io::Error),
}

/// How error texts name line `line` of a frame head.
fn line_name(line: usize) -> String {
    match line {
        0 => "the command line".to_owned(),
        n => format!("header line {n}"),
    }
}

impl FrameError {
    /// Builds an [`FrameError::UnknownCommand`] from raw bytes, keeping at most 32
    /// printable characters so the reply cannot be used to reflect arbitrary data.
    pub(crate) fn unknown_command(raw: &[u8]) -> FrameError {
        let shown: String = String::from_utf8_lossy(&raw[..raw.len().min(32)])
            .chars()
            .map(|c| {
                if c == ' ' || c.is_ascii_graphic() {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        FrameError::UnknownCommand(shown)
    }

    /// Whether the error was caused by the peer's bytes (as opposed to the transport).
    pub fn is_protocol_error(&self) -> bool {
        !matches!(self, FrameError::Io(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_command_text_is_sanitised_and_short() {
        let error = FrameError::unknown_command(b"SE\x1bND\n\x00 and much more text after that");
        assert_eq!(
            error.to_string(),
            "unknown command 'SE?ND?? and much more text after'"
        );
    }

    #[test]
    fn nul_errors_name_the_line() {
        assert_eq!(
            FrameError::NulInHeader { line: 0 }.to_string(),
            "NUL byte in the command line: NUL may only end a frame"
        );
        assert_eq!(
            FrameError::NulInHeader { line: 3 }.to_string(),
            "NUL byte in header line 3: NUL may only end a frame"
        );
    }

    #[test]
    fn io_errors_are_not_protocol_errors() {
        let error = FrameError::from(io::Error::other("boom"));
        assert!(!error.is_protocol_error());
        assert!(FrameError::InvalidContentLength.is_protocol_error());
    }
}
