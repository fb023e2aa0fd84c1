//! Protocol versions and `accept-version` negotiation.

use std::fmt;

/// A STOMP protocol version. Ordered, so the highest common one is a `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escaping, no NACK, no heart-beats.
    V1_0,
    /// STOMP 1.1: escapes `\n \c \\`, adds NACK and heart-beats.
    V1_1,
    /// STOMP 1.2: also escapes `\r`, accepts CRLF, ACK by `id`.
    V1_2,
}

impl Version {
    /// Every version, oldest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The version as it appears in `accept-version` and `version` headers.
    pub const fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses one version token such as `1.2`.
    pub fn parse(token: &str) -> Option<Version> {
        match token.trim() {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }

    /// Picks the highest version named in an `accept-version` value that is also in
    /// `supported`. A missing header means the client speaks 1.0 (STOMP 1.2 "Protocol
    /// Negotiation"). Unknown tokens (a future 1.3, say) are ignored.
    pub fn negotiate(accept_version: Option<&str>, supported: &[Version]) -> Option<Version> {
        match accept_version {
            None => supported.contains(&Version::V1_0).then_some(Version::V1_0),
            Some(list) => list
                .split(',')
                .filter_map(Version::parse)
                .filter(|v| supported.contains(v))
                .max(),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        let all = Version::ALL;
        assert_eq!(
            Version::negotiate(Some("1.0,1.1,1.2"), &all),
            Some(Version::V1_2)
        );
        assert_eq!(
            Version::negotiate(Some("1.2,1.0"), &all),
            Some(Version::V1_2)
        );
        assert_eq!(Version::negotiate(Some("1.1"), &all), Some(Version::V1_1));
        assert_eq!(
            Version::negotiate(Some("1.1,2.0"), &all),
            Some(Version::V1_1)
        );
        assert_eq!(
            Version::negotiate(Some("1.2"), &[Version::V1_0, Version::V1_1]),
            None
        );
        assert_eq!(Version::negotiate(Some("3.0"), &all), None);
        assert_eq!(Version::negotiate(Some(""), &all), None);
    }

    #[test]
    fn no_accept_version_means_1_0() {
        assert_eq!(Version::negotiate(None, &Version::ALL), Some(Version::V1_0));
        assert_eq!(Version::negotiate(None, &[Version::V1_2]), None);
    }
}
