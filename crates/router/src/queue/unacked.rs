//! A consumer's deliveries awaiting acknowledgement, in delivery order.

use std::collections::VecDeque;

use super::queued::Queued;

/// Deliveries by tag. Tags given to one consumer only grow (they are drawn under its
/// queue's lock), so a deque kept in tag order serves every lookup by binary search,
/// and the common cases (auto-ack settles and in-order ACKs) pop from the front.
#[derive(Debug, Default)]
pub(crate) struct Unacked {
    entries: VecDeque<(u64, Queued)>,
}

impl Unacked {
    /// How many deliveries are outstanding.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Records a delivery; `tag` must be larger than every tag held.
    pub(crate) fn insert(&mut self, tag: u64, item: Queued) {
        debug_assert!(self.entries.back().is_none_or(|(last, _)| *last < tag));
        self.entries.push_back((tag, item));
    }

    fn position(&self, tag: u64) -> Option<usize> {
        // Nearly always the oldest: check it before searching.
        match self.entries.front() {
            Some((first, _)) if *first == tag => Some(0),
            _ => self.entries.binary_search_by_key(&tag, |(t, _)| *t).ok(),
        }
    }

    /// Takes one delivery out.
    pub(crate) fn remove(&mut self, tag: u64) -> Option<Queued> {
        let index = self.position(tag)?;
        self.entries.remove(index).map(|(_, item)| item)
    }

    /// Takes `tag` and every earlier delivery out, oldest first.
    pub(crate) fn remove_through(&mut self, tag: u64) -> Option<Vec<Queued>> {
        let index = self.position(tag)?;
        Some(self.entries.drain(..=index).map(|(_, item)| item).collect())
    }

    /// The outstanding deliveries with their tags, oldest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &Queued)> {
        self.entries.iter().map(|(tag, item)| (*tag, item))
    }

    /// Every outstanding delivery, oldest first.
    pub(crate) fn into_values(self) -> impl DoubleEndedIterator<Item = Queued> {
        self.entries.into_iter().map(|(_, item)| item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Destination, Message};
    use bytes::Bytes;
    use postbox_stomp::Headers;
    use std::sync::Arc;

    fn item(n: u64) -> Queued {
        let destination = Destination::parse(&"/queue/q".into()).unwrap();
        let message = Message::new(
            n.to_string().into(),
            destination,
            Headers::new(),
            Bytes::new(),
        );
        Queued::new(Arc::new(message), None, None)
    }

    fn ids(items: impl IntoIterator<Item = Queued>) -> Vec<String> {
        items
            .into_iter()
            .map(|q| q.message.id().to_string())
            .collect()
    }

    #[test]
    fn removes_anywhere_and_through_a_tag() {
        let mut unacked = Unacked::default();
        for tag in [3, 5, 8, 13, 21] {
            unacked.insert(tag, item(tag));
        }
        assert!(unacked.remove(7).is_none());
        assert_eq!(ids(unacked.remove(8)), ["8"]);
        assert!(unacked.remove(8).is_none());
        assert_eq!(ids(unacked.remove_through(13).unwrap()), ["3", "5", "13"]);
        assert!(unacked.remove_through(4).is_none());
        assert_eq!(unacked.len(), 1);
        assert_eq!(ids(unacked.into_values()), ["21"]);
    }
}
