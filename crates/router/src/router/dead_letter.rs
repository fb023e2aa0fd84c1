//! Dead letters: where a queue's refused and undeliverable messages go.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::core::Router;
use crate::queue::{DeadLetter, Queued};
use crate::relay::QueueStore;
use crate::{Destination, Message};

impl Router {
    /// Moves dead letters to their dead-letter queues, marked with why and from where.
    pub(super) fn bury(&self, letters: Vec<DeadLetter>) {
        for letter in letters {
            let Some(to) = letter.to else {
                self.shared
                    .stats
                    .dead_letters_dropped
                    .fetch_add(1, Ordering::Relaxed);
                if let (Some(store), Some(receipt)) = (&self.shared.store, letter.queued.receipt) {
                    store.settle(self.vhost(), &letter.from, vec![receipt]);
                }
                continue;
            };
            let original = &letter.queued.message;
            let mut headers = original.headers().clone();
            headers.set("x-dead-letter-reason", letter.reason.as_str());
            headers.set("x-original-destination", letter.from.as_str());
            headers.set("x-delivery-count", letter.queued.deliveries.to_string());
            let message = Arc::new(Message::new(
                original.id().clone(),
                to.clone(),
                headers,
                original.body().clone(),
            ));
            if let Some(store) = &self.shared.store {
                self.bury_in_store(
                    store.clone(),
                    letter.from,
                    letter.queued.receipt,
                    to,
                    message,
                );
                continue;
            }
            let mut queued = Queued::new(message, None, None);
            // Dead letters are never refused: losing them would lose accepted messages.
            loop {
                match self.queue_for_accepted(&to).force(queued) {
                    Ok(()) => break,
                    Err(back) => queued = back,
                }
            }
        }
    }

    /// In a cluster: stores the dead letter, then forgets the original; if the store
    /// cannot take it, the original is released to be delivered again rather than lost.
    fn bury_in_store(
        &self,
        store: Arc<dyn QueueStore>,
        from: Destination,
        receipt: Option<crate::relay::StoreReceipt>,
        to: Destination,
        message: Arc<Message>,
    ) {
        let vhost = self.vhost().to_owned();
        tokio::spawn(async move {
            let stored = store.append(&vhost, &to, message, None).await;
            let Some(receipt) = receipt else { return };
            match stored {
                Ok(()) => store.settle(&vhost, &from, vec![receipt]),
                Err(error) => {
                    tracing::warn!(%from, %to, "dead letter not stored ({error}); it will be delivered again");
                    store.release(&vhost, &from, vec![receipt]);
                }
            }
        });
    }
}
