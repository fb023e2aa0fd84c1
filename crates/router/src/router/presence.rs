//! Presence on the router: members join and leave rooms as their subscriptions come
//! and go, and each transition becomes one ENTER or QUIT message from the broker.
//!
//! Lock order: a router's `rooms` lock comes before everything else it takes (topics,
//! queues, a queue's state, outboxes), because a subscription to a room is added or
//! removed, and its event routed, under it: events leave in the order of the
//! transitions, with counts that only move one step at a time.

use std::sync::Arc;

use bytes::Bytes;
use postbox_stomp::{ByteString, Headers};

use super::core::Router;
use super::publish::Reach;
use super::subscription::{Subscriber, Subscription};
use crate::delivery::{Acknowledge, Delivery};
use crate::presence::{
    MAX_LISTED, Member, PRESENCE, PRESENCE_COUNT, PRESENCE_TRUNCATED, PRESENCE_USER, RoomSnapshot,
    Seat, Transition, json_string,
};
use crate::queue::Queued;
use crate::{Destination, DestinationKind, Message, RouteError};

/// The two transitions a room announces.
#[derive(Debug, Clone, Copy)]
enum Announcement {
    Enter,
    Quit,
}

impl Router {
    /// Who subscribing `subscriber` to `destination` makes present in a room: `None`
    /// unless presence is on for it and the subscriber says who they are.
    pub(super) fn member_of_room(
        &self,
        destination: &Destination,
        subscriber: &Subscriber,
    ) -> Option<Member> {
        let presence = self.shared.presence.as_ref()?;
        let member = subscriber.member.as_ref()?;
        presence.rules.is_room(destination).then(|| member.clone())
    }

    /// Adds `member` to room `room` while `subscribe` creates `subscriber`'s
    /// subscription, all under the rooms lock: the member list (if asked for) is the
    /// subscription's first MESSAGE, and the ENTER follows the subscription, so the
    /// member sees their own.
    pub(super) fn join_room(
        &self,
        room: &Destination,
        member: Member,
        subscriber: Subscriber,
        subscribe: impl FnOnce(Subscriber) -> Subscription,
    ) -> Subscription {
        let presence = self.shared.presence.as_ref().expect("presence is on");
        let mut rooms = presence.lock();
        let key = ByteString::from(room.as_str());
        let (transition, count) = rooms.join(&key, &member);
        if subscriber.list_members {
            let names = rooms.names(room.as_str(), MAX_LISTED);
            let list = self.member_list(room, &names, count);
            let _ = subscriber.outbox.deliver(Delivery {
                message: Arc::new(list),
                subscription: subscriber.id.clone(),
                ack: Acknowledge::None,
                redelivered: false,
            });
        }
        let mut subscription = subscribe(subscriber);
        if transition == Transition::Entered {
            self.announce(room, Announcement::Enter, &member.name, count);
        }
        subscription.seat = Some(Seat {
            room: room.clone(),
            member: member.key,
        });
        subscription
    }

    /// Leaves the room a subscription sat in, once `unsubscribe` has removed it; the
    /// QUIT, if this was the member's last subscription, goes to those who stay.
    pub(super) fn leave_room(&self, seat: &Seat, unsubscribe: impl FnOnce()) {
        let presence = self.shared.presence.as_ref().expect("presence is on");
        let mut rooms = presence.lock();
        unsubscribe();
        let key = ByteString::from(seat.room.as_str());
        let (transition, count, name) = rooms.leave(&key, &seat.member);
        if transition == Transition::Left {
            self.announce(&seat.room, Announcement::Quit, &name, count);
        }
    }

    /// For a SEND to a room: drops presence headers a client put there (only the
    /// broker announces) and stamps the room's current count. A SEND to where a room's
    /// events go is refused: only the broker speaks there.
    pub(super) fn stamp_presence(
        &self,
        destination: &Destination,
        headers: &mut Headers,
    ) -> Result<(), RouteError> {
        let Some(presence) = &self.shared.presence else {
            return Ok(());
        };
        if presence.rules.is_room(destination) {
            for name in [PRESENCE, PRESENCE_USER, PRESENCE_TRUNCATED] {
                headers.remove(name);
            }
            let count = presence.lock().count(destination.as_str());
            headers.set(PRESENCE_COUNT, count.to_string());
        } else if presence.rules.is_companion(destination) {
            return Err(RouteError::BrokerOnly(destination.to_string()));
        }
        Ok(())
    }

    /// The rooms whose events go to `destination`, if it is a companion destination:
    /// reading it tells who is in them, so a reader must be allowed to read those too.
    pub fn rooms_announced_on(&self, destination: &Destination) -> Vec<Destination> {
        self.shared
            .presence
            .as_ref()
            .map_or_else(Vec::new, |p| p.rules.rooms_of_companion(destination))
    }

    /// Whether any destination of this router has presence.
    pub fn has_presence(&self) -> bool {
        self.shared.presence.is_some()
    }

    /// Every room of this router with its members.
    pub fn presence(&self) -> Vec<RoomSnapshot> {
        self.shared
            .presence
            .as_ref()
            .map_or_else(Vec::new, |presence| presence.lock().snapshot())
    }

    /// Members over all rooms of this router (a person in two rooms counts twice).
    pub fn presence_members(&self) -> usize {
        self.shared
            .presence
            .as_ref()
            .map_or(0, |presence| presence.lock().total_members())
    }

    /// Publishes an ENTER or QUIT of `room`, shaped like the tutorial's ChatMessage so
    /// its page can show it unchanged.
    fn announce(&self, room: &Destination, event: Announcement, name: &str, count: usize) {
        let presence = self.shared.presence.as_ref().expect("presence is on");
        let (header, kind, counter) = match event {
            Announcement::Enter => ("enter", "ENTER", &self.shared.stats.presence_enters),
            Announcement::Quit => ("quit", "QUIT", &self.shared.stats.presence_quits),
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut body = String::with_capacity(64 + room.name().len() + name.len());
        body.push_str(r#"{"type":""#);
        body.push_str(kind);
        body.push_str(r#"","roomId":"#);
        json_string(room.name(), &mut body);
        body.push_str(r#","sender":"#);
        json_string(name, &mut body);
        body.push_str(&format!(r#","userCount":{count}}}"#));
        let mut headers = Headers::new();
        headers.set(PRESENCE, header);
        headers.set(PRESENCE_USER, name);
        headers.set(PRESENCE_COUNT, count.to_string());
        headers.set("content-type", "application/json");
        let to = presence.rules.events_to(room);
        let message = Message::new(self.next_message_id(), to, headers, Bytes::from(body));
        self.publish_event(Arc::new(message));
    }

    /// The member list a subscription asked for with `presence-members:true`.
    fn member_list(&self, room: &Destination, names: &[ByteString], count: usize) -> Message {
        let mut body = String::with_capacity(64 + names.iter().map(|n| n.len() + 3).sum::<usize>());
        body.push_str(r#"{"type":"MEMBERS","roomId":"#);
        json_string(room.name(), &mut body);
        body.push_str(r#","members":["#);
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            json_string(name, &mut body);
        }
        body.push_str(&format!(r#"],"userCount":{count}}}"#));
        let mut headers = Headers::new();
        headers.set(PRESENCE, "members");
        headers.set(PRESENCE_COUNT, count.to_string());
        headers.set("content-type", "application/json");
        if names.len() < count {
            headers.set(PRESENCE_TRUNCATED, "true");
        }
        Message::new(
            self.next_message_id(),
            room.clone(),
            headers,
            Bytes::from(body),
        )
    }

    /// Routes a broker-made event without waiting: a full queue drops it, as a topic
    /// drops it for a subscriber that fell behind.
    fn publish_event(&self, message: Arc<Message>) {
        self.shared
            .stats
            .published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match message.destination().kind() {
            DestinationKind::Topic => {
                self.route_topic_to(&message, None, Reach::Exact);
                self.shared.relay.forward(self.vhost(), &message);
            }
            DestinationKind::Queue => {
                if let Ok(queue) = self.queue_for(message.destination(), None) {
                    let _ = queue.offer(Queued::new(message, None, None));
                }
            }
            DestinationKind::TempQueue | DestinationKind::ReplyQueue => {}
        }
    }
}

#[cfg(test)]
mod tests {

    use bytes::Bytes;
    use postbox_stomp::{ByteString, Headers};

    use crate::delivery::AckMode;
    use crate::outbox::{Notification, OutboxReceiver, outbox};
    use crate::presence::{MAX_LISTED, Member, PresenceConfig};
    use crate::{Destination, QueueCache, Router, RouterConfig, Subscriber, Subscription};

    fn router(suffix: &str) -> Router {
        Router::new(RouterConfig {
            presence: PresenceConfig {
                destinations: vec!["/topic/room.*".into(), "/queue/desk".into()],
                companion_suffix: suffix.into(),
            },
            ..RouterConfig::default()
        })
    }

    fn destination(text: &str) -> Destination {
        Destination::parse(&ByteString::from(text)).unwrap()
    }

    struct Client {
        rx: OutboxReceiver,
        outbox: crate::Outbox,
    }

    fn client() -> Client {
        let (outbox, rx) = outbox(1 << 20);
        Client { rx, outbox }
    }

    impl Client {
        fn subscribe(
            &self,
            router: &Router,
            to: &str,
            who: Option<Member>,
            list: bool,
        ) -> Subscription {
            let subscriber = Subscriber {
                outbox: self.outbox.clone(),
                id: ByteString::from(format!("sub-{to}")),
                ack: AckMode::Auto,
                prefetch: None,
                queue_ttl: None,
                member: who,
                list_members: list,
            };
            router.subscribe(&destination(to), subscriber).unwrap()
        }

        /// (presence header, presence-user, presence-count, body) of each MESSAGE so far.
        fn events(&mut self) -> Vec<(String, String, String, String)> {
            let mut out = Vec::new();
            while let Some(Notification::Deliver(delivery)) = self.rx.try_recv() {
                let headers = delivery.message.headers();
                let get = |name| headers.get(name).unwrap_or_default().to_owned();
                out.push((
                    get("presence"),
                    get("presence-user"),
                    get("presence-count"),
                    String::from_utf8(delivery.message.body().to_vec()).unwrap(),
                ));
            }
            out
        }
    }

    fn kinds(events: &[(String, String, String, String)]) -> Vec<(&str, &str, &str)> {
        events
            .iter()
            .map(|(kind, user, count, _)| (kind.as_str(), user.as_str(), count.as_str()))
            .collect()
    }

    #[test]
    fn one_enter_and_one_quit_per_person_whatever_their_subscriptions() {
        let router = router("");
        let mut watcher = client();
        let _watching =
            watcher.subscribe(&router, "/topic/room.1", Some(Member::user("carol")), false);
        let tab_one = client();
        let tab_two = client();
        let one = tab_one.subscribe(&router, "/topic/room.1", Some(Member::user("alice")), false);
        let two = tab_two.subscribe(&router, "/topic/room.1", Some(Member::user("alice")), false);
        drop(one);
        assert_eq!(
            kinds(&watcher.events()),
            [("enter", "carol", "1"), ("enter", "alice", "2")],
            "a second tab and closing one of two say nothing"
        );
        drop(two);
        let events = watcher.events();
        assert_eq!(kinds(&events), [("quit", "alice", "1")]);
        assert_eq!(
            events[0].3,
            r#"{"type":"QUIT","roomId":"room.1","sender":"alice","userCount":1}"#
        );
        assert_eq!(router.presence_members(), 1);
        assert_eq!(
            router
                .stats()
                .presence_enters
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        assert_eq!(
            router
                .stats()
                .presence_quits
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn the_member_list_comes_first_then_the_members_own_enter() {
        let router = router("");
        let first = client();
        let _first = first.subscribe(&router, "/topic/room.1", Some(Member::user("bob")), false);
        let mut joining = client();
        let _joined = joining.subscribe(
            &router,
            "/topic/room.1",
            Some(Member::user("al\"ice")),
            true,
        );
        let events = joining.events();
        assert_eq!(
            kinds(&events),
            [("members", "", "2"), ("enter", "al\"ice", "2")]
        );
        assert_eq!(
            events[0].3,
            r#"{"type":"MEMBERS","roomId":"room.1","members":["al\"ice","bob"],"userCount":2}"#
        );
    }

    #[test]
    fn a_member_list_of_a_huge_room_is_cut_and_says_so() {
        let router = router("");
        let crowd = client();
        let _held: Vec<Subscription> = (0..MAX_LISTED + 5)
            .map(|i| {
                let who = Member::user(&format!("user{i:05}"));
                crowd.subscribe(&router, "/topic/room.big", Some(who), false)
            })
            .collect();
        let mut joining = client();
        let _joined = joining.subscribe(&router, "/topic/room.big", Some(Member::user("zz")), true);
        let Some(Notification::Deliver(list)) = joining.rx.try_recv() else {
            panic!("no member list")
        };
        let headers = list.message.headers();
        assert_eq!(headers.get("presence"), Some("members"));
        let total = (MAX_LISTED + 6).to_string();
        assert_eq!(headers.get("presence-count"), Some(total.as_str()));
        assert_eq!(headers.get("presence-truncated"), Some("true"));
        let body = String::from_utf8(list.message.body().to_vec()).unwrap();
        assert_eq!(
            body.matches("\"user0").count(),
            MAX_LISTED,
            "{}",
            &body[..200]
        );
        assert!(!body.contains("\"zz\""), "the list is cut in name order");
    }

    #[test]
    fn pattern_subscriptions_hear_no_events() {
        for suffix in ["", ".presence"] {
            let router = router(suffix);
            let mut patterns = client();
            let _rooms = patterns.subscribe(&router, "/topic/room.*", None, false);
            let _companions = patterns.subscribe(&router, "/topic/room.*.presence", None, false);
            let _everything = patterns.subscribe(&router, "/topic/#", None, false);
            let member = client();
            let _m = member.subscribe(&router, "/topic/room.1", Some(Member::user("a")), false);
            assert!(patterns.events().is_empty(), "suffix {suffix:?}");
        }
    }

    #[test]
    fn anonymous_connections_count_one_each_and_unnamed_subscriptions_not_at_all() {
        let router = router("");
        let mut watcher = client();
        let _w = watcher.subscribe(&router, "/topic/room.1", None, false);
        let a = client();
        let b = client();
        let _a = a.subscribe(
            &router,
            "/topic/room.1",
            Some(Member::connection("anonymous", "n-1")),
            false,
        );
        let _b = b.subscribe(
            &router,
            "/topic/room.1",
            Some(Member::connection("anonymous", "n-2")),
            false,
        );
        assert_eq!(
            kinds(&watcher.events()),
            [("enter", "anonymous", "1"), ("enter", "anonymous", "2")]
        );
    }

    #[test]
    fn events_go_to_the_companion_and_other_destinations_have_none() {
        let router = router(".presence");
        let mut room = client();
        let mut companion = client();
        let _c = companion.subscribe(
            &router,
            "/topic/room.1.presence",
            Some(Member::user("eve")),
            false,
        );
        let _r = room.subscribe(&router, "/topic/room.1", Some(Member::user("dan")), false);
        let _other = room.subscribe(&router, "/topic/lobby", Some(Member::user("dan")), false);
        let _pattern = room.subscribe(&router, "/topic/room.*", Some(Member::user("dan")), false);
        assert!(room.events().is_empty(), "the room itself hears nothing");
        assert_eq!(kinds(&companion.events()), [("enter", "dan", "1")]);
        assert_eq!(
            router.presence_members(),
            1,
            "the companion and the pattern are not rooms"
        );
    }

    #[test]
    fn a_send_to_a_room_carries_the_count_and_loses_forged_presence_headers() {
        let router = router(".presence");
        let mut member = client();
        let _m = member.subscribe(&router, "/topic/room.1", Some(Member::user("dan")), false);
        let mut companion = client();
        let _c = companion.subscribe(&router, "/topic/room.1.presence", None, false);
        let mut forged = Headers::new();
        forged.set("presence", "quit");
        forged.set("presence-user", "dan");
        forged.set("presence-count", "0");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut cache = QueueCache::default();
            router
                .publish(
                    &mut cache,
                    destination("/topic/room.1"),
                    forged.clone(),
                    Bytes::from("hi"),
                )
                .await
                .unwrap();
            let refused = router
                .publish(
                    &mut cache,
                    destination("/topic/room.1.presence"),
                    forged,
                    Bytes::new(),
                )
                .await;
            assert!(
                matches!(refused, Err(crate::RouteError::BrokerOnly(_))),
                "only the broker speaks where events go"
            );
        });
        assert_eq!(kinds(&member.events()), [("", "", "1")]);
        assert!(companion.events().is_empty());
    }

    #[test]
    fn queue_rooms_count_their_consumers_by_person() {
        let router = router(".presence");
        let mut companion = client();
        let _c = companion.subscribe(&router, "/topic/desk.presence", None, false);
        let worker = client();
        let consumer = worker.subscribe(&router, "/queue/desk", Some(Member::user("w")), false);
        drop(consumer);
        assert_eq!(
            kinds(&companion.events()),
            [("enter", "w", "1"), ("quit", "w", "0")]
        );
    }
}
