//! The link from a cluster queue's local buffer to the store that holds the queue.

use std::sync::Arc;

use super::queued::Queued;
use crate::Destination;
use crate::relay::{QueueStore, StoreReceipt};

/// The cluster store a queue's messages come from, and the virtual host it is in.
#[derive(Debug)]
pub(super) struct StoreLink {
    store: Arc<dyn QueueStore>,
    vhost: String,
}

impl StoreLink {
    /// A link to `queue` of `vhost` in `store`.
    pub(super) fn new(store: Arc<dyn QueueStore>, vhost: &str) -> StoreLink {
        StoreLink {
            store,
            vhost: vhost.to_owned(),
        }
    }

    /// Tells the store these messages of `queue` are done with (acknowledged, expired
    /// or dead-lettered); those that did not come from the store are skipped.
    pub(super) fn settle(&self, queue: &Destination, items: impl IntoIterator<Item = Queued>) {
        let receipts: Vec<StoreReceipt> = items.into_iter().filter_map(|q| q.receipt).collect();
        if !receipts.is_empty() {
            self.store.settle(&self.vhost, queue, receipts);
        }
    }

    /// Hands fetched messages of `queue` back to the store, for other nodes.
    pub(super) fn release(&self, queue: &Destination, receipts: Vec<StoreReceipt>) {
        if !receipts.is_empty() {
            self.store.release(&self.vhost, queue, receipts);
        }
    }
}
