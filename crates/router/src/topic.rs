//! The topic subscription index: exact names and RabbitMQ-style wildcard patterns.
//!
//! Topic names are words separated by `.`. In a subscription, a word that is exactly `*`
//! matches one word and a word that is exactly `#` matches zero or more words, as in
//! RabbitMQ's topic exchange. Publishing looks up the set of matching subscriptions; the
//! result for each topic name is cached until a subscription that could change it comes
//! or goes.

use std::collections::HashMap;
use std::sync::Arc;

use postbox_stomp::ByteString;

/// The most distinct topic names whose match sets are cached at once.
const CACHE_CAPACITY: usize = 16 * 1024;

/// One word of a wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    Literal(String),
    /// `*`: exactly one word.
    One,
    /// `#`: zero or more words.
    Any,
}

/// A topic pattern that contains at least one wildcard word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    words: Vec<Word>,
}

impl Pattern {
    /// Parses `name`; `None` when it has no wildcard word and so only matches itself.
    pub fn parse(name: &str) -> Option<Pattern> {
        let mut words: Vec<Word> = Vec::new();
        let mut wild = false;
        for word in name.split('.') {
            let word = match word {
                "*" => Word::One,
                "#" => Word::Any,
                other => Word::Literal(other.to_owned()),
            };
            wild |= !matches!(word, Word::Literal(_));
            // `#.#` means the same as `#`.
            if word == Word::Any && words.last() == Some(&Word::Any) {
                continue;
            }
            words.push(word);
        }
        wild.then_some(Pattern { words })
    }

    /// Whether the topic name matches. Allocates nothing: this runs for every pattern
    /// on every publish to a name not in the match cache.
    ///
    /// Glob matching over words, `#` as the star and `*` as the single-character
    /// wildcard: on a mismatch, the most recent `#` takes one more word and matching
    /// resumes after it. One resume point is enough, because a later `#` can absorb
    /// anything an earlier one would have; worst case O(pattern words × topic words).
    pub fn matches(&self, topic: &str) -> bool {
        // Topic positions are byte offsets of word starts; `end` means no words are left.
        let end = topic.len() + 1;
        let word_end = |at: usize| topic[at..].find('.').map_or(topic.len(), |dot| at + dot);
        let (mut i, mut at) = (0, 0);
        // After the latest `#`: the pattern index following it and where its words end.
        let mut resume: Option<(usize, usize)> = None;
        loop {
            if let Some(word) = self.words.get(i) {
                let advanced = match word {
                    Word::Any => {
                        resume = Some((i + 1, at));
                        i += 1;
                        continue;
                    }
                    Word::One => at < end,
                    Word::Literal(literal) => at < end && topic[at..word_end(at)] == **literal,
                };
                if advanced {
                    at = word_end(at) + 1;
                    i += 1;
                    continue;
                }
            } else if at == end {
                return true;
            }
            match resume {
                Some((after, absorbed)) if absorbed < end => {
                    let absorbed = word_end(absorbed) + 1;
                    resume = Some((after, absorbed));
                    (i, at) = (after, absorbed);
                }
                _ => return false,
            }
        }
    }
}

/// An entry of the index: something that wants the messages of a name or pattern.
#[derive(Debug)]
pub(crate) struct Entry<S> {
    pub key: u64,
    pub name: ByteString,
    pub pattern: Option<Pattern>,
    pub sink: S,
}

/// The match set of one topic name.
pub(crate) type Matches<S> = Arc<[Arc<Entry<S>>]>;

/// Subscriptions by topic name or pattern.
#[derive(Debug)]
pub(crate) struct TopicIndex<S> {
    exact: HashMap<ByteString, Vec<Arc<Entry<S>>>>,
    wildcard: Vec<Arc<Entry<S>>>,
    cache: HashMap<ByteString, Matches<S>>,
    /// Subscriptions per name or pattern, to tell a relay when interest starts or ends.
    interest: HashMap<ByteString, usize>,
}

impl<S> Default for TopicIndex<S> {
    fn default() -> Self {
        TopicIndex {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            cache: HashMap::new(),
            interest: HashMap::new(),
        }
    }
}

impl<S> TopicIndex<S> {
    /// Adds an entry; returns how many entries its name or pattern now has.
    pub fn insert(&mut self, entry: Arc<Entry<S>>) -> usize {
        if entry.pattern.is_some() {
            self.wildcard.push(entry.clone());
            self.cache.clear();
        } else {
            self.cache.remove(&entry.name);
            self.exact
                .entry(entry.name.clone())
                .or_default()
                .push(entry.clone());
        }
        let count = self.interest.entry(entry.name.clone()).or_default();
        *count += 1;
        *count
    }

    /// Removes the entry with `key` under `name`; returns how many entries remain for it.
    pub fn remove(&mut self, key: u64, name: &ByteString, wildcard: bool) -> usize {
        if wildcard {
            self.wildcard.retain(|e| e.key != key);
            self.cache.clear();
        } else {
            self.cache.remove(name);
            if let Some(list) = self.exact.get_mut(name) {
                list.retain(|e| e.key != key);
                if list.is_empty() {
                    self.exact.remove(name);
                }
            }
        }
        match self.interest.get_mut(name) {
            Some(count) if *count > 1 => {
                *count -= 1;
                *count
            }
            Some(_) => {
                self.interest.remove(name);
                0
            }
            None => 0,
        }
    }

    /// Subscriptions per name or pattern.
    pub fn interest(&self) -> impl Iterator<Item = (&ByteString, usize)> {
        self.interest.iter().map(|(name, count)| (name, *count))
    }

    /// Every entry matching `topic`.
    pub fn lookup(&mut self, topic: &ByteString) -> Matches<S> {
        if let Some(hit) = self.cache.get(topic) {
            return hit.clone();
        }
        let mut found: Vec<Arc<Entry<S>>> = self.exact.get(topic).cloned().unwrap_or_default();
        found.extend(
            self.wildcard
                .iter()
                .filter(|e| e.pattern.as_ref().is_some_and(|p| p.matches(topic)))
                .cloned(),
        );
        let found: Matches<S> = found.into();
        if self.cache.len() >= CACHE_CAPACITY {
            self.cache.clear();
        }
        self.cache.insert(topic.clone(), found.clone());
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, topic: &str) -> bool {
        Pattern::parse(pattern)
            .expect("a wildcard pattern")
            .matches(topic)
    }

    #[test]
    fn star_matches_exactly_one_word() {
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("*.b.*", "a.b.c"));
        assert!(matches("*", "anything"));
        assert!(!matches("*", "two.words"));
    }

    #[test]
    fn hash_matches_zero_or_more_words() {
        assert!(matches("a.#", "a"));
        assert!(matches("a.#", "a.b"));
        assert!(matches("a.#", "a.b.c"));
        assert!(!matches("a.#", "b.a"));
        assert!(matches("#", "x.y.z"));
        assert!(matches("#.z", "z"));
        assert!(matches("a.#.z", "a.b.c.z"));
        assert!(matches("a.#.z", "a.z"));
        assert!(!matches("a.#.z", "a.z.b"));
        assert!(matches("#.#.b", "b"));
        assert!(matches("*.#", "a.b.c"));
    }

    #[test]
    fn partial_wildcards_are_literal() {
        assert!(Pattern::parse("a*.b").is_none());
        assert!(Pattern::parse("price.#x").is_none());
        assert!(Pattern::parse("plain.topic").is_none());
    }

    /// The obvious dynamic programme over (pattern words, topic words), as a reference.
    fn reference(pattern: &Pattern, topic: &str) -> bool {
        let words: Vec<&str> = topic.split('.').collect();
        // reach[j]: the pattern words so far can match exactly the first j topic words.
        let mut reach = vec![false; words.len() + 1];
        reach[0] = true;
        for word in &pattern.words {
            if *word == Word::Any {
                for j in 1..reach.len() {
                    reach[j] |= reach[j - 1];
                }
                continue;
            }
            for j in (1..reach.len()).rev() {
                let fits = match word {
                    Word::Literal(literal) => words[j - 1] == literal,
                    _ => true,
                };
                reach[j] = reach[j - 1] && fits;
            }
            reach[0] = false;
        }
        reach[words.len()]
    }

    proptest::proptest! {
        #[test]
        fn matching_agrees_with_the_reference(
            pattern in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "", "*", "#"]), 1..7),
            topic in proptest::collection::vec(proptest::sample::select(vec!["a", "b", ""]), 1..8),
        ) {
            let (pattern, topic) = (pattern.join("."), topic.join("."));
            if let Some(parsed) = Pattern::parse(&pattern) {
                proptest::prop_assert_eq!(parsed.matches(&topic), reference(&parsed, &topic), "{} vs {}", pattern, topic);
            }
        }
    }

    #[test]
    fn many_hashes_stay_fast() {
        let pattern = "#.a.#.a.#.a.#.a.#.a.#.b";
        let topic = vec!["a"; 200].join(".");
        assert!(!matches(pattern, &topic));
    }

    fn entry(key: u64, name: &str) -> Arc<Entry<u64>> {
        Arc::new(Entry {
            key,
            name: name.into(),
            pattern: Pattern::parse(name),
            sink: key,
        })
    }

    fn keys(index: &mut TopicIndex<u64>, topic: &str) -> Vec<u64> {
        let mut keys: Vec<u64> = index.lookup(&topic.into()).iter().map(|e| e.sink).collect();
        keys.sort();
        keys
    }

    #[test]
    fn lookup_combines_exact_and_wildcard_and_follows_changes() {
        let mut index = TopicIndex::default();
        assert_eq!(index.insert(entry(1, "a.b")), 1);
        assert_eq!(index.insert(entry(2, "a.b")), 2);
        assert_eq!(index.insert(entry(3, "a.*")), 1);
        assert_eq!(index.insert(entry(4, "x.#")), 1);
        assert_eq!(keys(&mut index, "a.b"), [1, 2, 3]);
        assert_eq!(keys(&mut index, "a.c"), [3]);
        assert_eq!(index.remove(1, &"a.b".into(), false), 1);
        assert_eq!(keys(&mut index, "a.b"), [2, 3]);
        assert_eq!(index.remove(3, &"a.*".into(), true), 0);
        assert_eq!(keys(&mut index, "a.b"), [2]);
        assert_eq!(keys(&mut index, "a.c"), Vec::<u64>::new());
        assert_eq!(index.remove(2, &"a.b".into(), false), 0);
        assert_eq!(index.interest.len(), 1);
    }
}
