//! Temporary queues: a connection's own queue, reachable under a reply-queue name.

use std::sync::Arc;

use super::core::Router;
use crate::queue::{Queue, QueueSettings};
use crate::{Destination, DestinationKind, RouteError};

impl Router {
    /// Creates a temporary queue for one connection, reachable by others under the
    /// returned `/reply-queue/...` name until the handle is dropped.
    pub fn create_temp(&self, name: &str) -> Result<TempQueue, RouteError> {
        let id = format!(
            "{}-{}.{}",
            self.shared.config.node_id,
            self.next_key(),
            name
        );
        let reply_to = Destination::new(DestinationKind::ReplyQueue, &id)?;
        let settings = QueueSettings {
            dead_letter: None,
            max_deliveries: 0,
            ..self.shared.config.queue.clone()
        };
        let queue = Queue::counted(
            reply_to.clone(),
            settings,
            self.shared.queue_totals.clone(),
            self.shared.config.budget.clone(),
        );
        {
            let mut queues = self.lock_queues();
            self.check_queue_count(&queues)?;
            queues.insert(reply_to.shared().clone(), queue.clone());
        }
        Ok(TempQueue {
            router: self.clone(),
            reply_to,
            queue,
        })
    }
}

/// The node that owns a reply queue: its names start with `<node>-`.
pub(super) fn reply_queue_node(destination: &Destination) -> Option<&str> {
    destination.name().split_once('-').map(|(node, _)| node)
}

/// A connection's temporary queue; dropping it deletes the queue and its messages
/// (RabbitMQ's semantics for `/temp-queue/`).
#[derive(Debug)]
pub struct TempQueue {
    router: Router,
    reply_to: Destination,
    pub(super) queue: Arc<Queue>,
}

impl TempQueue {
    /// The routable name to put in `reply-to`.
    pub fn reply_to(&self) -> &Destination {
        &self.reply_to
    }
}

impl Drop for TempQueue {
    fn drop(&mut self) {
        self.router.lock_queues().remove(self.reply_to.shared());
        self.queue.delete();
    }
}
