//! The byte budget shared by every queue of every virtual host.
//!
//! Each queued message holds a [`Charge`] for its size from the moment a queue accepts
//! it until it leaves the broker's keeping (acknowledged, dropped, expired, purged, its
//! queue deleted). The charge is released when it is dropped, so no release path can be
//! forgotten. A queue that cannot charge a message treats it as it treats a message
//! that its own limits refuse: the producer waits, is refused, or the head is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Bytes held in queues, against a limit.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
    /// Producers waiting for room; releases only notify when there are some.
    waiting: AtomicUsize,
    space: Notify,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::new(usize::MAX)
    }
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            limit,
            waiting: AtomicUsize::new(0),
            space: Notify::new(),
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether `bytes` more would fit. A single message larger than the whole budget
    /// still fits when nothing else is held, so it is not refused forever.
    pub fn fits(&self, bytes: usize) -> bool {
        self.admits(self.used(), bytes)
    }

    /// Whether `bytes` more fit on top of `used`.
    fn admits(&self, used: usize, bytes: usize) -> bool {
        used == 0 || used.saturating_add(bytes) <= self.limit
    }

    /// Charges `bytes` if they fit.
    pub fn try_charge(self: &Arc<Budget>, bytes: usize) -> Option<Charge> {
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            if !self.admits(used, bytes) {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Some(self.charged(bytes)),
                Err(now) => used = now,
            }
        }
    }

    /// Charges `bytes` whatever the limit (dead letters and messages put back).
    pub fn force_charge(self: &Arc<Budget>, bytes: usize) -> Charge {
        self.used.fetch_add(bytes, Ordering::SeqCst);
        self.charged(bytes)
    }

    fn charged(self: &Arc<Budget>, bytes: usize) -> Charge {
        Charge {
            budget: self.clone(),
            bytes,
        }
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.space.notify_waiters();
        }
    }

    /// Waits until `bytes` may fit.
    pub async fn room(&self, bytes: usize) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.fits(bytes) {
                return;
            }
            notified.await;
        }
    }
}

/// Counts a waiter out when its wait ends or is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bytes one queued message holds in a [`Budget`]; released when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Clone for Charge {
    /// A copy of a queued message holds its own bytes.
    fn clone(&self) -> Charge {
        self.budget.force_charge(self.bytes)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_refused_past_the_limit_and_released_on_drop() {
        let budget = Arc::new(Budget::new(10));
        let a = budget.try_charge(6).unwrap();
        assert!(budget.try_charge(6).is_none());
        let b = budget.try_charge(4).unwrap();
        let c = b.clone();
        assert_eq!(budget.used(), 14);
        drop((a, b, c));
        assert_eq!(budget.used(), 0);
        // Alone, a message larger than the budget still fits.
        assert!(budget.try_charge(100).is_some());
    }
}
