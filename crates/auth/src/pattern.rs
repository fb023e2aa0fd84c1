//! Destination patterns in permissions: `/topic/chat.*`, `/queue/orders.#`, or `#` for
//! every destination.
//!
//! After the kind prefix, a pattern is dot-separated words where `*` stands for exactly
//! one word and `#` for any number, as in topic subscriptions. Checking a subscription
//! that itself has wildcards asks whether the permission covers *every* destination
//! the subscription could match, so a wildcard subscription cannot reach a destination
//! its owner may not read.

use std::fmt;

/// The destination prefixes a pattern may start with.
const PREFIXES: [&str; 4] = ["/topic/", "/queue/", "/temp-queue/", "/reply-queue/"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    Literal(String),
    One,
    Any,
}

fn words(name: &str) -> Vec<Word> {
    name.split('.')
        .map(|word| match word {
            "*" => Word::One,
            "#" => Word::Any,
            other => Word::Literal(other.to_owned()),
        })
        .collect()
}

/// A permission pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationPattern {
    raw: String,
    /// `None` matches every destination.
    prefix: Option<&'static str>,
    words: Vec<Word>,
}

/// A pattern that is not `#` and does not start with a known prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid destination pattern '{0}': use # or /topic/, /queue/, /temp-queue/, /reply-queue/ followed by a name"
)]
pub struct PatternError(pub String);

impl DestinationPattern {
    /// Parses a pattern.
    pub fn parse(raw: &str) -> Result<DestinationPattern, PatternError> {
        if raw == "#" {
            return Ok(DestinationPattern {
                raw: raw.to_owned(),
                prefix: None,
                words: Vec::new(),
            });
        }
        let prefix = PREFIXES
            .into_iter()
            .find(|p| raw.starts_with(p) && raw.len() > p.len())
            .ok_or_else(|| PatternError(raw.to_owned()))?;
        Ok(DestinationPattern {
            raw: raw.to_owned(),
            prefix: Some(prefix),
            words: words(&raw[prefix.len()..]),
        })
    }

    /// Whether every destination matched by `destination` (which may contain wildcard
    /// words) is matched by this pattern. For a plain destination this is simply
    /// whether the pattern matches it.
    pub fn covers(&self, destination: &str) -> bool {
        let Some(prefix) = self.prefix else {
            return true;
        };
        match destination.strip_prefix(prefix) {
            Some(name) if !name.is_empty() => covers(&self.words, &words(name)),
            _ => false,
        }
    }
}

impl fmt::Display for DestinationPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Whether `pattern` matches every word sequence `subject` can stand for. A literal in
/// the subject is one known word, `*` one unknown word, `#` any unknown sequence. The
/// answer errs on the side of "no" for exotic combinations, never on the side of "yes".
fn covers(pattern: &[Word], subject: &[Word]) -> bool {
    // reach[i][j]: pattern[j..] covers subject[i..]; filled from the ends.
    let (p, s) = (pattern.len(), subject.len());
    let mut reach = vec![vec![false; p + 1]; s + 1];
    reach[s][p] = true;
    for j in (0..p).rev() {
        reach[s][j] = pattern[j] == Word::Any && reach[s][j + 1];
    }
    for i in (0..s).rev() {
        for j in (0..p).rev() {
            reach[i][j] = match (&pattern[j], &subject[i]) {
                // `#` in the pattern either ends here or absorbs the subject's word.
                (Word::Any, _) => reach[i][j + 1] || reach[i + 1][j],
                // Only a pattern `#` can absorb a subject `#`.
                (_, Word::Any) => false,
                (Word::One, _) => reach[i + 1][j + 1],
                (Word::Literal(a), Word::Literal(b)) => a == b && reach[i + 1][j + 1],
                (Word::Literal(_), Word::One) => false,
            };
        }
    }
    reach[0][0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(pattern: &str, destination: &str) -> bool {
        DestinationPattern::parse(pattern)
            .unwrap()
            .covers(destination)
    }

    #[test]
    fn plain_destinations_match_like_topics() {
        assert!(covers("/topic/chat.*", "/topic/chat.room1"));
        assert!(!covers("/topic/chat.*", "/topic/chat.room1.private"));
        assert!(covers("/topic/chat.#", "/topic/chat.room1.private"));
        assert!(covers("/topic/chat.#", "/topic/chat"));
        assert!(!covers("/topic/chat.#", "/queue/chat.room1"));
        assert!(covers("/queue/orders", "/queue/orders"));
        assert!(!covers("/queue/orders", "/queue/orders2"));
        assert!(covers("#", "/anything/at.all"));
    }

    #[test]
    fn wildcard_subscriptions_must_be_covered_entirely() {
        assert!(covers("/topic/chat.#", "/topic/chat.*"));
        assert!(covers("/topic/chat.#", "/topic/chat.#"));
        assert!(covers("/topic/chat.*", "/topic/chat.*"));
        assert!(!covers("/topic/chat.*", "/topic/chat.#"));
        assert!(!covers("/topic/chat.room1", "/topic/chat.*"));
        assert!(!covers("/topic/chat.*", "/topic/#"));
        assert!(covers("/topic/#", "/topic/#"));
        assert!(covers("/topic/*.#", "/topic/*.#"));
        assert!(!covers("/topic/*.#", "/topic/#"));
        assert!(!covers("/topic/#.x.#", "/topic/#"));
        assert!(covers("/topic/#.x.#", "/topic/a.x.*"));
    }

    #[test]
    fn patterns_need_a_known_prefix() {
        assert!(DestinationPattern::parse("/exchange/x").is_err());
        assert!(DestinationPattern::parse("/topic/").is_err());
        assert!(DestinationPattern::parse("topic.x").is_err());
    }
}
