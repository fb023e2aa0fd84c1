//! SUBSCRIBE and UNSUBSCRIBE, and the temporary queues a connection owns.

use std::time::Duration;

use postbox_auth::{Method, Operation};
use postbox_router::presence::PRESENCE_MEMBERS;
use postbox_router::{AckMode, Destination, DestinationKind, Member, Subscriber, TempQueue};
use postbox_stomp::headers::names;
use postbox_stomp::{ByteString, Frame, Version};

use super::headers::{invalid, missing, number_header, owned, required};
use super::{Flow, Session, SessionError, error};
use crate::registry::SubscriptionInfo;

/// RabbitMQ's SUBSCRIBE header bounding unacknowledged messages.
const PREFETCH_COUNT: &str = "prefetch-count";
/// RabbitMQ's SUBSCRIBE header setting a new queue's message TTL.
const MESSAGE_TTL: &str = "x-message-ttl";

impl Session {
    /// Shows a new subscription in the registry (admin API, metrics).
    pub(super) fn remember(&self, id: &str, destination: &str, ack: AckMode) {
        let ack = match ack {
            AckMode::Auto => "auto",
            AckMode::Client => "client",
            AckMode::ClientIndividual => "client-individual",
        };
        self.connection
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(SubscriptionInfo {
                id: id.to_owned(),
                destination: destination.to_owned(),
                ack,
            });
    }

    /// Removes a subscription from the registry.
    pub(super) fn forget(&self, id: &str) {
        self.connection
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| s.id != id);
    }

    /// The temporary queue `name`, created on first use.
    pub(super) fn temp_queue(&mut self, name: &str) -> Result<&TempQueue, SessionError> {
        if !self.temp_queues.contains_key(name) {
            if self.temp_queues.len() >= self.settings.max_temp_queues {
                return Err(SessionError::TooManyTempQueues(
                    self.settings.max_temp_queues,
                ));
            }
            let temp = self.router.create_temp(name)?;
            self.temp_queues.insert(name.to_owned(), temp);
        }
        Ok(&self.temp_queues[name])
    }

    /// For `reply-to: /temp-queue/<name>`: makes sure the queue exists and that this
    /// connection receives from it (subscribing it as `/temp-queue/<name>` unless the
    /// client subscribed itself), and returns the routable name to put in `reply-to`.
    /// The subscription made here counts against `max-subscriptions` like any other.
    pub(super) fn reply_queue(&mut self, name: &str) -> Result<ByteString, SessionError> {
        let id = ByteString::from(format!("{}{name}", DestinationKind::TempQueue.prefix()));
        let subscribed = self.subscriptions.contains_key(&id);
        if !subscribed && self.subscriptions.len() >= self.settings.max_subscriptions {
            return Err(SessionError::TooManySubscriptions(
                self.settings.max_subscriptions,
            ));
        }
        let reply_to = self.temp_queue(name)?.reply_to().shared().clone();
        if !subscribed {
            let subscriber = Subscriber {
                outbox: self.outbox.clone(),
                id: id.clone(),
                ack: AckMode::Auto,
                prefetch: None,
                queue_ttl: None,
                member: None,
                list_members: false,
            };
            let subscription = self
                .router
                .subscribe_temp(&self.temp_queues[name], subscriber);
            self.remember(&id, &id, AckMode::Auto);
            self.by_key.insert(subscription.key(), id.clone());
            self.subscriptions.insert(id, subscription);
        }
        Ok(reply_to)
    }

    /// Who this connection is in presence rooms: a signed-in user is one member however
    /// many connections they have; anyone else is a member per connection.
    fn member(&self) -> Member {
        match self.principal.method {
            Method::Password | Method::Token => Member::user(&self.principal.name),
            Method::Open | Method::Anonymous => {
                Member::connection(&self.principal.name, &self.connection.opened.id)
            }
        }
    }

    pub(super) fn subscribe(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        // Header values are slices of the read buffer; a subscription lives long, so it
        // keeps copies rather than pinning the whole buffer for its lifetime.
        let raw_destination = &owned(required(frame, names::DESTINATION)?);
        let id = match frame.headers.get_shared(names::ID) {
            Some(id) => owned(id),
            // STOMP 1.0 subscriptions may go without id; the destination names them.
            None if self.version == Version::V1_0 => raw_destination.clone(),
            None => return Err(missing(frame, names::ID)),
        };
        let ack = match frame.get(names::ACK) {
            None => AckMode::Auto,
            Some(value) => AckMode::parse(value)
                .filter(|mode| self.version > Version::V1_0 || *mode != AckMode::ClientIndividual)
                .ok_or_else(|| {
                    invalid(
                        frame,
                        names::ACK,
                        value,
                        "auto, client or client-individual",
                    )
                })?,
        };
        let prefetch = number_header(frame, PREFETCH_COUNT, "a non-negative integer")?;
        let queue_ttl = number_header(frame, MESSAGE_TTL, "a number of milliseconds")?
            .map(|ms| Duration::from_millis(ms as u64));
        if self.subscriptions.contains_key(&id) {
            return Err(SessionError::DuplicateSubscription(error::shorten(&id)));
        }
        if self.subscriptions.len() >= self.settings.max_subscriptions {
            return Err(SessionError::TooManySubscriptions(
                self.settings.max_subscriptions,
            ));
        }
        let destination = Destination::parse(raw_destination)?;
        self.authorize(Operation::Read, &destination)?;
        // Presence events say who is in a room: only those who may read the room hear them.
        for room in self.router.rooms_announced_on(&destination) {
            self.authorize(Operation::Read, &room)?;
        }
        let subscriber = Subscriber {
            outbox: self.outbox.clone(),
            id: id.clone(),
            ack,
            prefetch,
            queue_ttl,
            member: self.router.has_presence().then(|| self.member()),
            list_members: frame.get(PRESENCE_MEMBERS) == Some("true"),
        };
        let subscription = match destination.kind() {
            DestinationKind::TempQueue => {
                self.temp_queue(destination.name())?;
                let temp = &self.temp_queues[destination.name()];
                self.router.subscribe_temp(temp, subscriber)
            }
            _ => self.router.subscribe(&destination, subscriber)?,
        };
        self.remember(&id, destination.as_str(), ack);
        self.by_key.insert(subscription.key(), id.clone());
        self.subscriptions.insert(id, subscription);
        Ok(Flow::Continue)
    }

    pub(super) fn unsubscribe(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let id = match frame.headers.get_shared(names::ID) {
            Some(id) => id,
            None if self.version == Version::V1_0 => required(frame, names::DESTINATION)?,
            None => return Err(missing(frame, names::ID)),
        };
        let subscription = self
            .subscriptions
            .remove(id)
            .ok_or_else(|| SessionError::UnknownSubscription(error::shorten(id)))?;
        self.by_key.remove(&subscription.key());
        // Gone from the router first (its unacknowledged messages back in their queue),
        // so nothing more arrives for it; then what still waits for it is dropped.
        drop(subscription);
        self.outbox.retract(id);
        self.forget(id);
        Ok(Flow::Continue)
    }
}
