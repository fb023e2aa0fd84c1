//! The router of one virtual host: where a destination is routed.
//!
//! Topics fan out through the topic index; queues live in a map by name. A topic
//! subscription that acknowledges (`client` or `client-individual`) gets a private queue
//! fed by the topic, so acknowledgements, NACK and prefetch work the same on topics as
//! on queues.
//!
//! Layout, each file an `impl Router` block for one job: `core` holds [`Router`], its
//! settings, counters and queue map, and depends on none of the others; `subscription`
//! subscribing and [`Subscription`]; `temp` temporary queues and reply-queue names;
//! `publish` publishing, locally and from the relay; `dead_letter` moving dead
//! letters.
//!
//! Lock order: `topics`, then `queues`, then a queue's own state (see [`crate::queue`]).

mod core;
mod dead_letter;
mod presence;
mod publish;
mod subscription;
mod temp;
#[cfg(test)]
mod tests;

pub use self::core::{Router, RouterConfig, RouterStats};
pub use self::publish::QueueCache;
pub use self::subscription::{MAX_PREFETCH, Subscriber, Subscription};
pub use self::temp::TempQueue;
