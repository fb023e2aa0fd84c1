//! What a session is handed to write, and how it is acknowledged.
//!
//! A [`Delivery`] is one message for one subscription. Queue deliveries carry either an
//! [`AckTag`] (the client acknowledges them) or a [`Settle`] (they count as acknowledged
//! once written, `ack:auto`). A `Settle` reaches its queue through the narrow `Settler`
//! trait and holds it weakly, so this module does not know queues, and a delivery
//! sitting in an outbox does not keep its queue alive: the queue owns its consumers,
//! a consumer owns its outbox, and the outbox owns its pending deliveries.

use std::fmt::Debug;
use std::sync::{Arc, Weak};

use postbox_stomp::ByteString;

use crate::Message;

/// How a subscription acknowledges messages (the SUBSCRIBE `ack` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AckMode {
    /// Messages count as acknowledged once sent.
    Auto,
    /// ACK is cumulative: it acknowledges every earlier message of the subscription.
    Client,
    /// ACK acknowledges only the named message.
    ClientIndividual,
}

impl AckMode {
    /// Parses the `ack` header value.
    pub fn parse(value: &str) -> Option<AckMode> {
        match value {
            "auto" => Some(AckMode::Auto),
            "client" => Some(AckMode::Client),
            "client-individual" => Some(AckMode::ClientIndividual),
            _ => None,
        }
    }
}

/// One message for one subscription of the session.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message, shared with the other subscribers.
    pub message: Arc<Message>,
    /// The client's subscription `id`.
    pub subscription: ByteString,
    /// How the delivery is acknowledged, if at all.
    pub ack: Acknowledge,
    /// Whether the message was delivered before (sent as `redelivered:true`).
    pub redelivered: bool,
}

impl Delivery {
    /// Bytes this delivery counts against the outbox limit.
    pub fn cost(&self) -> usize {
        self.message.wire_size()
            + self.subscription.len()
            + self.ack_tag().map_or(0, |_| AckTag::MAX_LEN + 5)
    }

    /// The `ack` header to send, for subscriptions that acknowledge.
    pub fn ack_tag(&self) -> Option<AckTag> {
        match self.ack {
            Acknowledge::Client(tag) => Some(tag),
            _ => None,
        }
    }

    /// For an auto-acknowledged queue delivery, the handle to settle it with once it is
    /// written; taken, so it is settled once.
    pub fn take_settle(&mut self) -> Option<Settle> {
        match std::mem::replace(&mut self.ack, Acknowledge::None) {
            Acknowledge::OnWrite(settle) => Some(settle),
            other => {
                self.ack = other;
                None
            }
        }
    }
}

/// How a delivery is acknowledged. One field for both kinds keeps a delivery, of
/// which an outbox may hold thousands, as small as it was before settling became a
/// trait object.
#[derive(Debug, Clone)]
pub enum Acknowledge {
    /// A topic delivery: nothing to acknowledge.
    None,
    /// The client acknowledges it, naming this tag in its ACK or NACK.
    Client(AckTag),
    /// An auto-acknowledged queue delivery, settled once it is written.
    OnWrite(Settle),
}

/// What a client acknowledges a queue delivery by: the consumer it went to and its
/// delivery tag, sent as the `ack` header `<consumer>.<tag>`. Kept as numbers until the
/// writer puts them on the wire, so a delivery allocates no text for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckTag {
    /// The consumer's key in its session.
    pub consumer: u64,
    /// The delivery tag.
    pub tag: u64,
}

impl AckTag {
    /// The longest header value: two 20-digit numbers and the dot.
    pub const MAX_LEN: usize = 41;

    /// Reads an `ack`/`id` header value written by [`AckTag::write`].
    pub fn parse(id: &str) -> Option<AckTag> {
        let (consumer, tag) = id.split_once('.')?;
        Some(AckTag {
            consumer: consumer.parse().ok()?,
            tag: tag.parse().ok()?,
        })
    }

    /// Writes the header value into `buf` and returns it.
    pub fn write(self, buf: &mut [u8; AckTag::MAX_LEN]) -> &str {
        let mut numbers = (itoa::Buffer::new(), itoa::Buffer::new());
        let consumer = numbers.0.format(self.consumer).as_bytes();
        let tag = numbers.1.format(self.tag).as_bytes();
        let len = consumer.len() + 1 + tag.len();
        buf[..consumer.len()].copy_from_slice(consumer);
        buf[consumer.len()] = b'.';
        buf[consumer.len() + 1..len].copy_from_slice(tag);
        std::str::from_utf8(&buf[..len]).expect("digits and a dot")
    }
}

/// Whatever auto-acknowledged deliveries are settled with: a queue.
pub(crate) trait Settler: Send + Sync + Debug {
    /// The deliveries `tags` of consumer `consumer` were written. Tags the consumer no
    /// longer holds (it left, or the queue was deleted) are ignored.
    fn settle(&self, consumer: u64, tags: &[u64]);
}

/// A consumer's settlement handle for an auto-acknowledged delivery: the writer calls
/// [`Settle::written`] once the message is on the wire.
///
/// The queue is held weakly. That loses nothing: while its consumer is in the queue,
/// the consumer's subscription holds the queue, and once the consumer is gone there is
/// nothing left to settle.
#[derive(Debug, Clone)]
pub struct Settle {
    queue: Weak<dyn Settler>,
    consumer: u64,
    tag: u64,
}

impl Settle {
    /// A handle for delivery `tag` of `consumer` in `queue`.
    pub(crate) fn new(queue: Weak<dyn Settler>, consumer: u64, tag: u64) -> Settle {
        Settle {
            queue,
            consumer,
            tag,
        }
    }

    /// The delivery tag this handle settles.
    #[cfg(test)]
    pub(crate) fn tag(&self) -> u64 {
        self.tag
    }

    /// The delivery reached the socket: it counts as acknowledged.
    pub fn written(self) {
        if let Some(queue) = self.queue.upgrade() {
            queue.settle(self.consumer, &[self.tag]);
        }
    }

    /// Settles many deliveries and empties `settles`; consecutive ones of the same
    /// consumer share one call, and so one lock of their queue.
    pub fn written_all(settles: &mut Vec<Settle>) {
        let mut tags = Vec::new();
        let mut start = 0;
        while start < settles.len() {
            let first = &settles[start];
            let mut end = start;
            tags.clear();
            while end < settles.len()
                && Weak::ptr_eq(&settles[end].queue, &first.queue)
                && settles[end].consumer == first.consumer
            {
                tags.push(settles[end].tag);
                end += 1;
            }
            if let Some(queue) = first.queue.upgrade() {
                queue.settle(first.consumer, &tags);
            }
            start = end;
        }
        settles.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Outboxes hold deliveries by the thousand and fan-out moves them per subscriber, so
    /// their size shows in throughput: it was 96 bytes before settling went through a
    /// trait object, and one field for both kinds of acknowledgement brought it to 88.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_delivery_stays_small() {
        assert!(std::mem::size_of::<Delivery>() <= 88);
    }

    #[test]
    fn ack_tags_read_back_what_they_write() {
        for (consumer, tag) in [(0, 0), (7, 12345), (u64::MAX, u64::MAX)] {
            let ack = AckTag { consumer, tag };
            let mut text = [0; AckTag::MAX_LEN];
            let written = ack.write(&mut text);
            assert_eq!(written, format!("{consumer}.{tag}"));
            assert_eq!(AckTag::parse(written), Some(ack));
        }
        for bad in ["", "1", "1.", ".1", "1.x", "-1.2", "1.2.3"] {
            assert_eq!(AckTag::parse(bad), None, "{bad}");
        }
    }

    /// Records each call it gets.
    #[derive(Debug, Default)]
    struct Recorder {
        calls: Mutex<Vec<(u64, Vec<u64>)>>,
    }

    impl Settler for Recorder {
        fn settle(&self, consumer: u64, tags: &[u64]) {
            self.calls.lock().unwrap().push((consumer, tags.to_vec()));
        }
    }

    #[test]
    fn consecutive_settles_of_one_consumer_make_one_call() {
        let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        let (wa, wb): (Weak<dyn Settler>, Weak<dyn Settler>) =
            (Arc::downgrade(&a) as _, Arc::downgrade(&b) as _);
        let mut settles = vec![
            Settle::new(wa.clone(), 1, 10),
            Settle::new(wa.clone(), 1, 11),
            Settle::new(wa.clone(), 2, 12),
            Settle::new(wb.clone(), 2, 13),
            Settle::new(wa.clone(), 1, 14),
        ];
        Settle::written_all(&mut settles);
        assert!(settles.is_empty());
        assert_eq!(
            *a.calls.lock().unwrap(),
            [(1, vec![10, 11]), (2, vec![12]), (1, vec![14])]
        );
        assert_eq!(*b.calls.lock().unwrap(), [(2, vec![13])]);
    }

    #[test]
    fn a_settle_does_not_keep_its_queue_alive() {
        let queue = Arc::new(Recorder::default());
        let settle = Settle::new(Arc::downgrade(&queue) as Weak<dyn Settler>, 1, 1);
        drop(queue);
        settle.written();
    }
}
