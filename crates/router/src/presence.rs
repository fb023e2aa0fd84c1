//! Presence: who is subscribed to a destination, counted by person rather than by
//! subscription, so that a room can be told when someone enters or leaves it.
//!
//! This module is the bookkeeping (which destinations have presence, who is in each
//! room and with how many subscriptions) and the names and JSON quoting of the event
//! format; [`crate::Router`] turns its transitions into ENTER and QUIT messages. Everything here is bounded by the subscriptions that made
//! it: a room entry exists only while a member holds a subscription to it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use postbox_stomp::ByteString;

use crate::topic::Pattern;
use crate::{Destination, DestinationKind};

/// Header on every event and on each MESSAGE of a presence destination: how many
/// members the room has.
pub const PRESENCE_COUNT: &str = "presence-count";
/// Header naming the event: `enter`, `quit` or `members`.
pub const PRESENCE: &str = "presence";
/// Header naming the member an ENTER or QUIT is about.
pub const PRESENCE_USER: &str = "presence-user";
/// SUBSCRIBE header asking for the room's member list as the subscription's first
/// MESSAGE.
pub const PRESENCE_MEMBERS: &str = "presence-members";
/// Header on a member list that was cut at [`MAX_LISTED`] names.
pub const PRESENCE_TRUNCATED: &str = "presence-truncated";
/// Most names a member list carries; a longer one is cut and says so with
/// `presence-truncated:true`, so a list stays a bounded frame in a huge room.
pub const MAX_LISTED: usize = 1_000;

/// Which destinations have presence, and where their events go.
#[derive(Debug, Clone, Default)]
pub struct PresenceConfig {
    /// Destinations (`/topic/...` or `/queue/...`, with `*` and `#` words) whose
    /// subscribers are counted as members.
    pub destinations: Vec<String>,
    /// Empty: events go into the destination itself. Otherwise they go to the topic
    /// named like it plus this suffix (`.presence` sends the events of
    /// `/topic/chat.room.1` to `/topic/chat.room.1.presence`, and those of `/queue/desk`
    /// to `/topic/desk.presence`: a topic, so every watcher gets every event).
    pub companion_suffix: String,
}

/// Who a subscription belongs to, for presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// What identifies the member: the user name for an authenticated user, so all
    /// their connections count once; something unique per connection otherwise.
    pub key: ByteString,
    /// The name events show.
    pub name: ByteString,
}

impl Member {
    /// An authenticated user: every connection of `name` is the same member.
    pub fn user(name: &str) -> Member {
        let name = ByteString::from(name);
        Member {
            key: name.clone(),
            name,
        }
    }

    /// A connection nobody vouched for: a member of its own, shown as `name`.
    pub fn connection(name: &str, connection: &str) -> Member {
        Member {
            key: ByteString::from(format!("{name}\u{0}{connection}")),
            name: ByteString::from(name),
        }
    }
}

/// What a join or a leave did to a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The member's first subscription: they entered.
    Entered,
    /// The member's last subscription went: they left.
    Left,
    /// They were already in (or are still in) through another subscription.
    Unchanged,
}

/// One destination rule of [`PresenceConfig::destinations`].
#[derive(Debug, Clone)]
enum Rule {
    Exact(String),
    Pattern(Pattern),
}

impl Rule {
    fn matches(&self, name: &str) -> bool {
        match self {
            Rule::Exact(exact) => exact == name,
            Rule::Pattern(pattern) => pattern.matches(name),
        }
    }
}

/// The parsed configuration: which destinations are rooms.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    topics: Vec<Rule>,
    queues: Vec<Rule>,
    companion_suffix: String,
}

impl Rules {
    /// The rules of `config`; `None` when presence is off, so the publish path pays
    /// nothing for it. Entries that are neither `/topic/` nor `/queue/` are ignored
    /// (the broker's configuration refuses them before this).
    pub(crate) fn new(config: &PresenceConfig) -> Option<Rules> {
        let mut rules = Rules {
            topics: Vec::new(),
            queues: Vec::new(),
            companion_suffix: config.companion_suffix.clone(),
        };
        for destination in &config.destinations {
            let Ok(parsed) = Destination::parse(&ByteString::from(destination.as_str())) else {
                continue;
            };
            let name = parsed.name();
            let rule = match Pattern::parse(name) {
                Some(pattern) => Rule::Pattern(pattern),
                None => Rule::Exact(name.to_owned()),
            };
            match parsed.kind() {
                DestinationKind::Topic => rules.topics.push(rule),
                DestinationKind::Queue => rules.queues.push(rule),
                DestinationKind::TempQueue | DestinationKind::ReplyQueue => {}
            }
        }
        (!rules.topics.is_empty() || !rules.queues.is_empty()).then_some(rules)
    }

    /// Whether subscribers of `destination` are members of a room. A pattern
    /// subscription is not membership of any one room, and a companion destination is
    /// where events go, not a room of its own.
    pub(crate) fn is_room(&self, destination: &Destination) -> bool {
        let name = destination.name();
        if name.split('.').any(|word| word == "*" || word == "#") {
            return false;
        }
        if !self.companion_suffix.is_empty() && name.ends_with(&self.companion_suffix) {
            return false;
        }
        let rules = match destination.kind() {
            DestinationKind::Topic => &self.topics,
            DestinationKind::Queue => &self.queues,
            DestinationKind::TempQueue | DestinationKind::ReplyQueue => return false,
        };
        rules.iter().any(|rule| rule.matches(name))
    }

    /// Whether `destination` is where some room's events go (and not a room itself).
    pub(crate) fn is_companion(&self, destination: &Destination) -> bool {
        !self.rooms_of_companion(destination).is_empty()
    }

    /// The rooms (a topic, a queue or both of one name) whose events go to
    /// `destination`.
    pub(crate) fn rooms_of_companion(&self, destination: &Destination) -> Vec<Destination> {
        if self.companion_suffix.is_empty() || destination.kind() != DestinationKind::Topic {
            return Vec::new();
        }
        let Some(name) = destination.name().strip_suffix(&self.companion_suffix) else {
            return Vec::new();
        };
        [DestinationKind::Topic, DestinationKind::Queue]
            .iter()
            .filter_map(|kind| {
                let room = format!("{}{name}", kind.prefix());
                Destination::parse(&ByteString::from(room))
                    .ok()
                    .filter(|room| self.is_room(room))
            })
            .collect()
    }

    /// Where the events of room `destination` go.
    pub(crate) fn events_to(&self, destination: &Destination) -> Destination {
        if self.companion_suffix.is_empty() {
            return destination.clone();
        }
        let companion = format!(
            "{}{}{}",
            DestinationKind::Topic.prefix(),
            destination.name(),
            self.companion_suffix
        );
        Destination::parse(&ByteString::from(companion)).unwrap_or_else(|_| destination.clone())
    }
}

/// A member in one room.
#[derive(Debug)]
struct Present {
    name: ByteString,
    subscriptions: usize,
}

/// Every room with at least one member, by destination.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    rooms: HashMap<ByteString, BTreeMap<ByteString, Present>>,
}

impl Rooms {
    /// One more subscription of `member` to `room`; returns what it did and the count.
    pub(crate) fn join(&mut self, room: &ByteString, member: &Member) -> (Transition, usize) {
        let members = self.rooms.entry(room.clone()).or_default();
        let present = members.entry(member.key.clone()).or_insert(Present {
            name: member.name.clone(),
            subscriptions: 0,
        });
        present.subscriptions += 1;
        let transition = if present.subscriptions == 1 {
            Transition::Entered
        } else {
            Transition::Unchanged
        };
        (transition, members.len())
    }

    /// One subscription fewer of the member keyed `key` in `room`; returns what it did,
    /// the count after, and the member's name.
    pub(crate) fn leave(
        &mut self,
        room: &ByteString,
        key: &ByteString,
    ) -> (Transition, usize, ByteString) {
        let Some(members) = self.rooms.get_mut(room) else {
            return (Transition::Unchanged, 0, ByteString::default());
        };
        let Some(present) = members.get_mut(key) else {
            return (Transition::Unchanged, members.len(), ByteString::default());
        };
        present.subscriptions -= 1;
        if present.subscriptions > 0 {
            let name = present.name.clone();
            return (Transition::Unchanged, members.len(), name);
        }
        let name = members.remove(key).map(|p| p.name).unwrap_or_default();
        let count = members.len();
        if count == 0 {
            self.rooms.remove(room);
        }
        (Transition::Left, count, name)
    }

    /// How many members `room` has.
    pub(crate) fn count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, BTreeMap::len)
    }

    /// The names of `room`'s members, in key order, at most `max`.
    pub(crate) fn names(&self, room: &str, max: usize) -> Vec<ByteString> {
        self.rooms.get(room).map_or_else(Vec::new, |members| {
            members.values().take(max).map(|p| p.name.clone()).collect()
        })
    }

    /// Every room, sorted, with its members' names and subscription counts.
    pub(crate) fn snapshot(&self) -> Vec<RoomSnapshot> {
        let mut all: Vec<RoomSnapshot> = self
            .rooms
            .iter()
            .map(|(room, members)| RoomSnapshot {
                destination: room.to_string(),
                members: members
                    .values()
                    .map(|p| (p.name.to_string(), p.subscriptions))
                    .collect(),
            })
            .collect();
        all.sort_by(|a, b| a.destination.cmp(&b.destination));
        all
    }

    /// Members over all rooms (a person in two rooms counts twice).
    pub(crate) fn total_members(&self) -> usize {
        self.rooms.values().map(BTreeMap::len).sum()
    }
}

/// A router's presence: which destinations are rooms, and who is in them.
#[derive(Debug)]
pub(crate) struct Presence {
    pub(crate) rules: Rules,
    rooms: Mutex<Rooms>,
}

impl Presence {
    pub(crate) fn new(rules: Rules) -> Presence {
        Presence {
            rules,
            rooms: Mutex::default(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A subscription's place in a room, kept so that its end can leave it.
#[derive(Debug)]
pub(crate) struct Seat {
    pub(crate) room: Destination,
    pub(crate) member: ByteString,
}

/// One room as the admin API and the metrics see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSnapshot {
    /// The destination.
    pub destination: String,
    /// Each member's name and how many subscriptions they hold to it.
    pub members: Vec<(String, usize)>,
}

/// `text` as a JSON string, quotes included.
pub(crate) fn json_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(text: &str) -> Destination {
        Destination::parse(&ByteString::from(text)).unwrap()
    }

    fn rules(destinations: &[&str], suffix: &str) -> Rules {
        Rules::new(&PresenceConfig {
            destinations: destinations.iter().map(|d| d.to_string()).collect(),
            companion_suffix: suffix.into(),
        })
        .expect("presence on")
    }

    #[test]
    fn no_destinations_means_presence_is_off() {
        assert!(Rules::new(&PresenceConfig::default()).is_none());
    }

    #[test]
    fn rooms_are_the_configured_names_and_patterns_of_their_kind() {
        let rules = rules(&["/topic/chat.room.*", "/queue/desk"], ".presence");
        assert!(rules.is_room(&destination("/topic/chat.room.1")));
        assert!(!rules.is_room(&destination("/topic/chat.room.1.x")));
        assert!(!rules.is_room(&destination("/queue/chat.room.1")));
        assert!(rules.is_room(&destination("/queue/desk")));
        assert!(!rules.is_room(&destination("/topic/desk")));
        // A pattern subscription is not in any one room.
        assert!(!rules.is_room(&destination("/topic/chat.room.*")));
        assert_eq!(
            rules.events_to(&destination("/topic/chat.room.1")).as_str(),
            "/topic/chat.room.1.presence"
        );
    }

    #[test]
    fn a_companion_destination_is_never_a_room() {
        let rules = rules(&["/topic/chat.#"], ".presence");
        assert!(rules.is_room(&destination("/topic/chat.room.1")));
        assert!(!rules.is_room(&destination("/topic/chat.room.1.presence")));
        let same = self::rules(&["/topic/chat.#"], "");
        assert_eq!(
            same.events_to(&destination("/topic/chat.room.1")).as_str(),
            "/topic/chat.room.1"
        );
    }

    #[test]
    fn a_member_enters_once_and_leaves_with_the_last_subscription() {
        let mut rooms = Rooms::default();
        let room = ByteString::from("/topic/r");
        let alice = Member::user("alice");
        let bob = Member::user("bob");
        assert_eq!(rooms.join(&room, &alice), (Transition::Entered, 1));
        assert_eq!(rooms.join(&room, &alice), (Transition::Unchanged, 1));
        assert_eq!(rooms.join(&room, &bob), (Transition::Entered, 2));
        assert_eq!(rooms.names(&room, 10), vec!["alice", "bob"]);
        assert_eq!(rooms.names(&room, 1), vec!["alice"]);
        let (t, n, name) = rooms.leave(&room, &alice.key);
        assert_eq!((t, n, name.as_ref()), (Transition::Unchanged, 2, "alice"));
        let (t, n, name) = rooms.leave(&room, &alice.key);
        assert_eq!((t, n, name.as_ref()), (Transition::Left, 1, "alice"));
        let (t, n, _) = rooms.leave(&room, &bob.key);
        assert_eq!((t, n), (Transition::Left, 0));
        assert_eq!(rooms.total_members(), 0);
        assert!(rooms.snapshot().is_empty(), "an empty room is forgotten");
    }

    #[test]
    fn anonymous_connections_are_members_each() {
        let mut rooms = Rooms::default();
        let room = ByteString::from("/topic/r");
        let one = Member::connection("anonymous", "n-1");
        let two = Member::connection("anonymous", "n-2");
        assert_eq!(rooms.join(&room, &one).0, Transition::Entered);
        assert_eq!(rooms.join(&room, &two), (Transition::Entered, 2));
    }

    #[test]
    fn names_are_escaped_for_json() {
        let mut out = String::new();
        json_string("a\"b\\c\nd\u{1}é", &mut out);
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }
}
