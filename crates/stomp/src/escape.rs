//! Header value escaping, which differs by protocol version and command.
//!
//! STOMP 1.2 escapes CR, LF, `:` and `\` as `\r \n \c \\` and makes any other escape a
//! fatal error; 1.1 has the same rules without `\r`; 1.0 has no escaping at all. The
//! headers of CONNECT, STOMP and CONNECTED frames are never escaped, whatever the version.

use bytes::{BufMut, BytesMut};

use crate::{Command, FrameError, Version};

/// The escaping rules that apply to one frame's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escaping {
    /// Bytes are taken literally (1.0, and CONNECT/STOMP/CONNECTED frames).
    None,
    /// `\n \c \\` (1.1).
    V11,
    /// `\r \n \c \\` (1.2).
    V12,
}

impl Escaping {
    /// The rules for `command` in a session that negotiated `version`.
    pub const fn for_frame(version: Version, command: Command) -> Escaping {
        if !command.escapes_headers() {
            return Escaping::None;
        }
        match version {
            Version::V1_0 => Escaping::None,
            Version::V1_1 => Escaping::V11,
            Version::V1_2 => Escaping::V12,
        }
    }

    /// Decodes one raw header name or value. Returns `Ok(None)` when the raw bytes can be
    /// used as they are, which is the common case and lets the caller avoid a copy.
    pub(crate) fn unescape(self, raw: &[u8], line: usize) -> Result<Option<Vec<u8>>, FrameError> {
        if self == Escaping::None || memchr::memchr(b'\\', raw).is_none() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut bytes = raw.iter().copied();
        while let Some(byte) = bytes.next() {
            if byte != b'\\' {
                out.push(byte);
                continue;
            }
            let decoded = match bytes.next() {
                Some(b'n') => b'\n',
                Some(b'c') => b':',
                Some(b'\\') => b'\\',
                Some(b'r') if self == Escaping::V12 => b'\r',
                other => {
                    let sequence = other
                        .map(|b| String::from_utf8_lossy(&[b]).into_owned())
                        .unwrap_or_default();
                    return Err(FrameError::InvalidEscape { sequence, line });
                }
            };
            out.push(decoded);
        }
        Ok(Some(out))
    }

    /// Writes `value` escaped for these rules.
    ///
    /// With no escaping available (1.0, CONNECT, CONNECTED) a CR or LF cannot be
    /// represented, so each is written as a space rather than corrupting the stream; a
    /// `:` in a name would likewise split the header early and is written as `_`.
    ///
    /// No version can represent a NUL (it would end the frame), so one is written as
    /// U+FFFD, the replacement character. The decoder refuses NUL from peers; this
    /// covers headers the broker builds from other sources.
    pub(crate) fn escape_into(self, value: &str, is_name: bool, dst: &mut BytesMut) {
        if !needs_escaping(value.as_bytes()) {
            dst.put_slice(value.as_bytes());
            return;
        }
        for byte in value.bytes() {
            match (self, byte) {
                (_, 0) => dst.put_slice(REPLACEMENT),
                (Escaping::None, b'\r' | b'\n') => dst.put_u8(b' '),
                (Escaping::None, b':') if is_name => dst.put_u8(b'_'),
                (Escaping::None, _) => dst.put_u8(byte),
                (_, b'\n') => dst.put_slice(b"\\n"),
                (_, b':') => dst.put_slice(b"\\c"),
                (_, b'\\') => dst.put_slice(b"\\\\"),
                (Escaping::V12, b'\r') => dst.put_slice(b"\\r"),
                // 1.1 has no escape for CR; a CR inside a value is legal as it is.
                (_, _) => dst.put_u8(byte),
            }
        }
    }
}

/// UTF-8 for U+FFFD, written in place of a NUL.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Whether `bytes` holds a CR, LF, colon, backslash or NUL. Header values are short, so
/// this looks at 8 bytes per step with word arithmetic rather than one byte at a time.
fn needs_escaping(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Non-zero exactly when some byte of `word` is zero.
    let has_zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let has = |word: u64, byte: u8| has_zero(word ^ (ONES * u64::from(byte)));
    let special = |word: u64| {
        has(word, b'\r') | has(word, b'\n') | has(word, b':') | has(word, b'\\') | has_zero(word)
            != 0
    };
    let word_at = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if bytes.len() < 8 {
        // Padding with a byte that is not special.
        let mut padded = [b'a'; 8];
        padded[..bytes.len()].copy_from_slice(bytes);
        return special(u64::from_ne_bytes(padded));
    }
    // Whole words, then one more ending at the last byte (overlapping is harmless).
    (0..bytes.len() / 8).any(|i| special(word_at(i * 8))) || special(word_at(bytes.len() - 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escape(rules: Escaping, value: &str) -> String {
        let mut dst = BytesMut::new();
        rules.escape_into(value, false, &mut dst);
        String::from_utf8(dst.to_vec()).unwrap()
    }

    fn unescape(rules: Escaping, raw: &str) -> Result<String, FrameError> {
        Ok(match rules.unescape(raw.as_bytes(), 1)? {
            Some(bytes) => String::from_utf8(bytes).unwrap(),
            None => raw.to_owned(),
        })
    }

    #[test]
    fn every_special_byte_is_found_at_any_position() {
        for len in [1, 5, 7, 8, 9, 16, 31, 32, 33, 100] {
            for at in 0..len {
                for special in [b'\r', b'\n', b':', b'\\', 0] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert!(needs_escaping(&bytes), "{len} {at} {special}");
                }
            }
            assert!(!needs_escaping(&vec![b'a'; len]));
        }
        for byte in (0..=255u8).filter(|b| !matches!(b, b'\r' | b'\n' | b':' | b'\\' | 0)) {
            assert!(!needs_escaping(&[byte; 17]), "{byte}");
        }
    }

    #[test]
    fn v12_decodes_its_four_escapes() {
        assert_eq!(
            unescape(Escaping::V12, r"a\rb\nc\cd\\e").unwrap(),
            "a\rb\nc:d\\e"
        );
    }

    #[test]
    fn v12_rejects_other_escapes() {
        for raw in [r"\t", r"a\", r"\0", r"\C"] {
            let error = unescape(Escaping::V12, raw).unwrap_err();
            assert!(matches!(error, FrameError::InvalidEscape { .. }), "{raw}");
        }
    }

    #[test]
    fn v11_has_no_cr_escape() {
        assert_eq!(unescape(Escaping::V11, r"a\nb\cc\\").unwrap(), "a\nb:c\\");
        assert!(matches!(
            unescape(Escaping::V11, r"a\rb"),
            Err(FrameError::InvalidEscape { sequence, .. }) if sequence == "r"
        ));
    }

    #[test]
    fn no_escaping_takes_backslashes_literally() {
        assert_eq!(unescape(Escaping::None, r"a\tb\c").unwrap(), r"a\tb\c");
    }

    #[test]
    fn plain_values_are_not_copied() {
        assert_eq!(Escaping::V12.unescape(b"plain value", 1).unwrap(), None);
    }

    #[test]
    fn encoding_mirrors_decoding() {
        assert_eq!(escape(Escaping::V12, "a\rb\nc:d\\e"), r"a\rb\nc\cd\\e");
        assert_eq!(escape(Escaping::V11, "a\rb\nc:d\\e"), "a\rb\\nc\\cd\\\\e");
        assert_eq!(escape(Escaping::None, "a\rb\nc:d\\e"), "a b c:d\\e");
    }

    #[test]
    fn a_nul_is_never_written() {
        for rules in [Escaping::None, Escaping::V11, Escaping::V12] {
            for is_name in [false, true] {
                let mut dst = BytesMut::new();
                rules.escape_into("a\0b\0", is_name, &mut dst);
                assert_eq!(&dst[..], "a\u{FFFD}b\u{FFFD}".as_bytes(), "{rules:?}");
            }
        }
    }

    #[test]
    fn rules_follow_version_and_command() {
        assert_eq!(
            Escaping::for_frame(Version::V1_2, Command::Send),
            Escaping::V12
        );
        assert_eq!(
            Escaping::for_frame(Version::V1_1, Command::Message),
            Escaping::V11
        );
        assert_eq!(
            Escaping::for_frame(Version::V1_0, Command::Send),
            Escaping::None
        );
        assert_eq!(
            Escaping::for_frame(Version::V1_2, Command::Connect),
            Escaping::None
        );
        assert_eq!(
            Escaping::for_frame(Version::V1_2, Command::Stomp),
            Escaping::None
        );
        assert_eq!(
            Escaping::for_frame(Version::V1_2, Command::Connected),
            Escaping::None
        );
    }
}
