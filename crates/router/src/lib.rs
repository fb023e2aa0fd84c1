//! Routing for Postbox: destinations, subscriptions, topic fan-out, queues and the
//! outbound queues of sessions.
//!
//! The router knows nothing of sockets, transports or Redis. Sessions subscribe with an
//! [`Outbox`] and publish through [`Router::publish`]; a cluster plugs in through the
//! [`Relay`] trait. Layout:
//!
//! - [`destination`]: what `/topic/...`, `/queue/...` and `/temp-queue/...` mean.
//! - [`message`]: a published [`Message`], encoded once and shared.
//! - [`delivery`]: a [`Delivery`] of a message to one subscription, and how it is
//!   acknowledged ([`AckMode`], [`AckTag`], [`Settle`]).
//! - [`topic`]: the subscription index with `*` and `#` wildcards.
//! - [`outbox`](mod@outbox): a session's byte-bounded outbound queue and slow-consumer
//!   detection.
//! - [`queue`]: queues with competing consumers, acknowledgements, redelivery, expiry
//!   and dead-lettering.
//! - [`router`]: [`Router`], which ties them together.
//! - [`relay`]: the seam to other nodes.
//! - [`budget`]: the byte budget that all queues share.
//!
//! Modules depend on each other in one direction only, from the bottom up: `error`,
//! `budget` and `topic` on nothing here; `destination` on `error`; `message` on
//! `destination`; `delivery` on `message`; `outbox` on `delivery`; `relay` on
//! `destination` and `message`; `queue` on all of those but `topic`; `router` on
//! everything. A queue is reached from below only through traits defined below it:
//! deliveries settle through `delivery`'s settler, and a cluster's store sees a
//! [`LocalQueue`].
#![deny(missing_docs)]

pub mod budget;
pub mod delivery;
pub mod destination;
pub mod error;
pub mod message;
pub mod outbox;
pub mod presence;
pub mod queue;
pub mod relay;
pub mod router;
pub mod topic;

pub use budget::{Budget, Charge};
pub use delivery::{AckMode, AckTag, Acknowledge, Delivery, Settle};
pub use destination::{Destination, DestinationKind};
pub use error::{RouteError, StoreError};
pub use message::{DETACH_BELOW, Message};
pub use outbox::{CloseReason, Notification, Outbox, OutboxReceiver, PushError, outbox};
pub use presence::{Member, PresenceConfig, RoomSnapshot};
pub use queue::{Overflow, Queue, QueueSettings, QueueStats, Queued, UnknownAck};
pub use relay::{BoxFuture, LocalQueue, NoRelay, QueueStore, Relay, StoreReceipt};
pub use router::{
    MAX_PREFETCH, QueueCache, Router, RouterConfig, RouterStats, Subscriber, Subscription,
    TempQueue,
};
