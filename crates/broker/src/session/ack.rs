//! ACK and NACK: finding the delivery a frame names, in each STOMP version's way, and
//! settling it (or staging it in its transaction).

use postbox_router::AckTag;
use postbox_stomp::headers::names;
use postbox_stomp::{ByteString, Command, Frame, Version};

use super::headers::{missing, required};
use super::{Flow, Session, SessionError, error};

/// An ACK or NACK, resolved.
#[derive(Debug)]
pub(super) struct Acknowledgement {
    /// The subscription's client id.
    pub(super) subscription: ByteString,
    pub(super) tag: u64,
    /// `None` for ACK; for NACK, whether to requeue.
    pub(super) nack: Option<bool>,
    /// The header and value that named the message, for errors.
    pub(super) named_by: (&'static str, ByteString),
}

impl Session {
    pub(super) fn acknowledge(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        if frame.command == Command::Nack && self.version == Version::V1_0 {
            return Err(SessionError::NotInVersion {
                command: Command::Nack,
                version: self.version,
            });
        }
        let resolved = self.resolve_ack(frame)?;
        match frame.headers.get_shared(names::TRANSACTION) {
            Some(transaction) => {
                let transaction = transaction.clone();
                self.stage_ack(&transaction, resolved)?;
            }
            None => self.apply_ack(resolved)?,
        }
        Ok(Flow::Continue)
    }

    /// Finds the subscription and delivery an ACK or NACK names: by `id` in 1.2, by
    /// `message-id` (and `subscription` in 1.1) before.
    pub(super) fn resolve_ack(&self, frame: &Frame) -> Result<Acknowledgement, SessionError> {
        let nack = (frame.command == Command::Nack).then(|| frame.get("requeue") != Some("false"));
        let unknown = |what: &'static str, id: &str| SessionError::UnknownAck {
            what,
            id: error::shorten(id),
        };
        // The naming header is kept as received (no copy); it is only shortened into
        // text if the acknowledgement fails.
        let found = |subscription: &ByteString, tag: u64, what: &'static str| Acknowledgement {
            subscription: subscription.clone(),
            tag,
            nack,
            named_by: (
                what,
                frame.headers.get_shared(what).cloned().unwrap_or_default(),
            ),
        };
        if self.version == Version::V1_2 {
            let id = required(frame, names::ID)?;
            let AckTag { consumer: key, tag } =
                AckTag::parse(id).ok_or_else(|| unknown(names::ID, id))?;
            let subscription = self
                .by_key
                .get(&key)
                .ok_or_else(|| unknown(names::ID, id))?;
            return Ok(found(subscription, tag, names::ID));
        }
        let message_id = required(frame, names::MESSAGE_ID)?;
        let candidates: Vec<&ByteString> = match (self.version, frame.get(names::SUBSCRIPTION)) {
            (Version::V1_1, None) => return Err(missing(frame, names::SUBSCRIPTION)),
            (_, Some(id)) => {
                let (id, _) = self
                    .subscriptions
                    .get_key_value(id)
                    .ok_or_else(|| SessionError::UnknownSubscription(error::shorten(id)))?;
                vec![id]
            }
            (_, None) => self.subscriptions.keys().collect(),
        };
        candidates
            .into_iter()
            .find_map(|id| {
                let tag = self.subscriptions[id].tag_of(message_id)?;
                Some(found(id, tag, names::MESSAGE_ID))
            })
            .ok_or_else(|| unknown(names::MESSAGE_ID, message_id))
    }

    pub(super) fn apply_ack(&self, ack: Acknowledgement) -> Result<(), SessionError> {
        let unknown = || SessionError::UnknownAck {
            what: ack.named_by.0,
            id: error::shorten(&ack.named_by.1),
        };
        let subscription = self
            .subscriptions
            .get(&ack.subscription)
            .ok_or_else(unknown)?;
        match ack.nack {
            None => subscription.ack(ack.tag),
            Some(requeue) => subscription.nack(ack.tag, requeue),
        }
        .map_err(|_| unknown())
    }
}
