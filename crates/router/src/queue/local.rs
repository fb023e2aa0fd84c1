//! What a cluster's queue store sees of a queue: [`LocalQueue`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::Queue;
use super::queued::Queued;
use crate::relay::{LocalQueue, StoreReceipt};
use crate::{Destination, Message};

impl LocalQueue for Queue {
    fn destination(&self) -> &Destination {
        &self.destination
    }

    fn consumer_count(&self) -> usize {
        Queue::consumer_count(self)
    }

    fn demand(&self) -> usize {
        let state = self.lock();
        let credit: usize = state
            .consumers
            .iter()
            .filter(|c| !c.gone && c.outbox.accepts())
            .map(|c| c.prefetch.saturating_sub(c.unacked.len()))
            .sum();
        credit.saturating_sub(state.ready.len())
    }

    fn demand_changed(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.demand.notified())
    }

    fn held_receipts(&self) -> Vec<StoreReceipt> {
        let state = self.lock();
        state
            .ready
            .iter()
            .chain(
                state
                    .consumers
                    .iter()
                    .flat_map(|c| c.unacked.iter().map(|(_, q)| q)),
            )
            .filter_map(|q| q.receipt.clone())
            .collect()
    }

    fn fetched(
        &self,
        message: Arc<Message>,
        expires_at: Option<Instant>,
        delivered_before: bool,
        receipt: StoreReceipt,
    ) -> bool {
        let mut queued = Queued::new(message, expires_at, None);
        queued.deliveries = u32::from(delivered_before);
        queued.receipt = Some(receipt);
        self.force(queued).is_ok()
    }

    fn count_expired(&self) {
        // This queue's counter only: unlike `Queue::count`, the router's totals are not
        // told. That is how the store has always counted these; kept as it was.
        self.stats.expired.fetch_add(1, Ordering::Relaxed);
    }
}
