//! What the other nodes want: a local copy of every node's subscriptions, so that a
//! publishing node sends a message only to the nodes that have a matching subscription
//! (interest is shared, traffic is not) and presence can be counted cluster-wide.

use std::collections::{HashMap, HashSet};

use postbox_router::DestinationKind;
use postbox_router::topic::Pattern;

/// Subscriptions of one node in one virtual host.
#[derive(Debug, Default)]
struct VhostInterest {
    /// Local subscriptions per destination (topic name or pattern, or queue).
    counts: HashMap<String, usize>,
    exact_topics: HashSet<String>,
    topic_patterns: Vec<(String, Pattern)>,
}

impl VhostInterest {
    fn set(&mut self, destination: &str, count: usize) {
        if count == 0 {
            self.counts.remove(destination);
        } else {
            self.counts.insert(destination.to_owned(), count);
        }
        let Some(name) = destination.strip_prefix(DestinationKind::Topic.prefix()) else {
            return;
        };
        match Pattern::parse(name) {
            None if count == 0 => {
                self.exact_topics.remove(name);
            }
            None => {
                self.exact_topics.insert(name.to_owned());
            }
            Some(pattern) => {
                self.topic_patterns.retain(|(raw, _)| raw != name);
                if count > 0 {
                    self.topic_patterns.push((name.to_owned(), pattern));
                }
            }
        }
    }

    fn wants_topic(&self, name: &str) -> bool {
        self.exact_topics.contains(name) || self.topic_patterns.iter().any(|(_, p)| p.matches(name))
    }
}

/// Every other node's subscriptions, as last read from Redis or announced by events.
#[derive(Debug, Default)]
pub struct Replica {
    nodes: HashMap<String, HashMap<String, VhostInterest>>,
}

impl Replica {
    /// Records that `node` has `count` local subscriptions to `destination`.
    pub fn apply(&mut self, node: &str, vhost: &str, destination: &str, count: usize) {
        self.nodes
            .entry(node.to_owned())
            .or_default()
            .entry(vhost.to_owned())
            .or_default()
            .set(destination, count);
    }

    /// Replaces everything known about `node`.
    pub fn replace_node(
        &mut self,
        node: &str,
        entries: impl IntoIterator<Item = (String, String, usize)>,
    ) {
        let mut fresh: HashMap<String, VhostInterest> = HashMap::new();
        for (vhost, destination, count) in entries {
            fresh.entry(vhost).or_default().set(&destination, count);
        }
        self.nodes.insert(node.to_owned(), fresh);
    }

    /// Forgets a node that left or died.
    pub fn remove_node(&mut self, node: &str) -> bool {
        self.nodes.remove(node).is_some()
    }

    /// The nodes known.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// Whether `node` is known.
    pub fn knows(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// Nodes with a subscription matching topic `name` in `vhost`.
    pub fn nodes_for_topic(&self, vhost: &str, name: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, vhosts)| vhosts.get(vhost).is_some_and(|v| v.wants_topic(name)))
            .map(|(node, _)| node.clone())
            .collect()
    }

    /// Nodes with a consumer of `queue` (a full destination) in `vhost`.
    pub fn nodes_for_queue(&self, vhost: &str, queue: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, vhosts)| {
                vhosts
                    .get(vhost)
                    .is_some_and(|v| v.counts.contains_key(queue))
            })
            .map(|(node, _)| node.clone())
            .collect()
    }

    /// Subscriptions to exactly `destination` on all known nodes.
    pub fn count(&self, vhost: &str, destination: &str) -> usize {
        self.nodes
            .values()
            .filter_map(|vhosts| vhosts.get(vhost))
            .filter_map(|v| v.counts.get(destination))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_route_to_nodes_with_matching_subscriptions_only() {
        let mut replica = Replica::default();
        replica.apply("a", "/", "/topic/chat.room1", 2);
        replica.apply("b", "/", "/topic/chat.*", 1);
        replica.apply("c", "/", "/topic/news", 1);
        replica.apply("d", "other", "/topic/chat.room1", 1);
        let mut nodes = replica.nodes_for_topic("/", "chat.room1");
        nodes.sort();
        assert_eq!(nodes, ["a", "b"]);
        assert_eq!(replica.nodes_for_topic("/", "chat.room2"), ["b"]);
        assert!(replica.nodes_for_topic("/", "weather").is_empty());
        replica.apply("b", "/", "/topic/chat.*", 0);
        assert!(replica.nodes_for_topic("/", "chat.room2").is_empty());
    }

    #[test]
    fn counts_add_up_across_nodes_and_vanish_with_them() {
        let mut replica = Replica::default();
        replica.apply("a", "/", "/queue/jobs", 2);
        replica.apply("b", "/", "/queue/jobs", 3);
        assert_eq!(replica.count("/", "/queue/jobs"), 5);
        assert_eq!(replica.nodes_for_queue("/", "/queue/jobs").len(), 2);
        assert!(replica.remove_node("a"));
        assert_eq!(replica.count("/", "/queue/jobs"), 3);
        replica.replace_node("b", [("/".to_owned(), "/queue/other".to_owned(), 1)]);
        assert_eq!(replica.count("/", "/queue/jobs"), 0);
    }
}
