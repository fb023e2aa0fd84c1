//! Frame headers: ordered, repeatable, first occurrence wins.

use std::fmt;

use bytestring::ByteString;

/// Well-known header names, so callers do not spell them twice.
pub mod names {
    #![allow(missing_docs)]
    pub const ACCEPT_VERSION: &str = "accept-version";
    pub const ACK: &str = "ack";
    pub const CONTENT_LENGTH: &str = "content-length";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const DESTINATION: &str = "destination";
    pub const HEART_BEAT: &str = "heart-beat";
    pub const HOST: &str = "host";
    pub const ID: &str = "id";
    pub const LOGIN: &str = "login";
    pub const MESSAGE: &str = "message";
    pub const MESSAGE_ID: &str = "message-id";
    pub const PASSCODE: &str = "passcode";
    pub const RECEIPT: &str = "receipt";
    pub const RECEIPT_ID: &str = "receipt-id";
    pub const SERVER: &str = "server";
    pub const SESSION: &str = "session";
    pub const SUBSCRIPTION: &str = "subscription";
    pub const TRANSACTION: &str = "transaction";
    pub const VERSION: &str = "version";
}

/// The headers of one frame, in wire order, repeats kept.
///
/// STOMP 1.2 says that when a header is repeated only the first value counts, but the
/// others are still part of the frame, so they are kept and re-encoded as received.
/// Names and values are UTF-8 strings that share the received frame's buffer when no
/// unescaping was needed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(ByteString, ByteString)>,
}

impl Headers {
    /// An empty header list.
    pub const fn new() -> Headers {
        Headers {
            entries: Vec::new(),
        }
    }

    /// An empty header list with room for `n` headers.
    pub fn with_capacity(n: usize) -> Headers {
        Headers {
            entries: Vec::with_capacity(n),
        }
    }

    /// The value of the first header called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| &**v)
    }

    /// The shared value of the first header called `name`, cheap to clone.
    pub fn get_shared(&self, name: &str) -> Option<&ByteString> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| &**v)
    }

    /// Whether a header called `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|(n, _)| n == name)
    }

    /// Appends a header; an earlier header of the same name keeps precedence.
    pub fn push(&mut self, name: impl Into<ByteString>, value: impl Into<ByteString>) {
        self.entries.push((name.into(), value.into()));
    }

    /// Makes `value` the effective value of `name`: replaces the first occurrence in
    /// place and drops the others, or appends when absent.
    pub fn set(&mut self, name: impl Into<ByteString>, value: impl Into<ByteString>) {
        let name = name.into();
        match self.entries.iter().position(|(n, _)| *n == name) {
            Some(first) => {
                self.entries[first].1 = value.into();
                let mut index = 0;
                self.entries.retain(|(n, _)| {
                    index += 1;
                    index - 1 <= first || *n != name
                });
            }
            None => self.entries.push((name, value.into())),
        }
    }

    /// Removes every header called `name`; returns whether any was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| n != name);
        before != self.entries.len()
    }

    /// Keeps only the headers for which `keep(name, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.entries.retain(|(n, v)| keep(n, v));
    }

    /// All headers in wire order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (&**n, &**v))
    }

    /// All headers in wire order, as shared strings.
    pub fn iter_shared(&self) -> std::slice::Iter<'_, (ByteString, ByteString)> {
        self.entries.iter()
    }

    /// The same headers in one allocation of their own. Decoded headers are views into
    /// the connection's read buffer, so a frame kept for long (a queued message, a staged
    /// SEND) would otherwise keep that whole buffer alive for a few bytes of its own.
    pub fn detached(&self) -> Headers {
        let total = self.entries.iter().map(|(n, v)| n.len() + v.len()).sum();
        let mut joined = String::with_capacity(total);
        for (name, value) in &self.entries {
            joined.push_str(name);
            joined.push_str(value);
        }
        let joined = ByteString::from(joined);
        let mut at = 0;
        let mut take = |len: usize| {
            let piece = joined.slice_ref(&joined[at..at + len]);
            at += len;
            piece
        };
        let entries = self
            .entries
            .iter()
            .map(|(name, value)| (take(name.len()), take(value.len())))
            .collect();
        Headers { entries }
    }

    /// The number of header lines, repeats included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<N: Into<ByteString>, V: Into<ByteString>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Headers {
        Headers {
            entries: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Headers {
        [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect()
    }

    #[test]
    fn first_occurrence_wins_and_repeats_are_kept() {
        let headers = sample();
        assert_eq!(headers.get("a"), Some("1"));
        assert_eq!(headers.get_all("a").collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(headers.len(), 3);
        assert_eq!(headers.get("c"), None);
    }

    #[test]
    fn set_replaces_in_place_and_drops_repeats() {
        let mut headers = sample();
        headers.set("a", "9");
        assert_eq!(headers.iter().collect::<Vec<_>>(), [("a", "9"), ("b", "2")]);
        headers.set("c", "4");
        assert_eq!(headers.get("c"), Some("4"));
    }

    #[test]
    fn detached_headers_are_equal_and_share_nothing_with_the_buffer() {
        let buffer = ByteString::from("destinationq1x-keyvalue");
        let headers: Headers = [
            (
                buffer.slice_ref(&buffer[..11]),
                buffer.slice_ref(&buffer[11..13]),
            ),
            (
                buffer.slice_ref(&buffer[13..18]),
                buffer.slice_ref(&buffer[18..]),
            ),
        ]
        .into_iter()
        .collect();
        let detached = headers.detached();
        assert_eq!(detached, headers);
        let inside = buffer.as_bytes().as_ptr_range();
        for (name, value) in detached.iter() {
            assert!(!inside.contains(&name.as_ptr()) && !inside.contains(&value.as_ptr()));
        }
    }

    #[test]
    fn remove_drops_every_occurrence() {
        let mut headers = sample();
        assert!(headers.remove("a"));
        assert!(!headers.remove("a"));
        assert_eq!(headers.iter().collect::<Vec<_>>(), [("b", "2")]);
    }
}
