//! The login gate in front of password checks. Password hashes are slow on purpose, so
//! a wave of CONNECT frames with passcodes, honest or not, must not take every thread
//! or starve the clients that are already in:
//!
//! - at most one check per core runs at a time, and a bounded number wait for a turn;
//!   past that, or past the deadline, the client is told the server is busy;
//! - after `max-login-failures` failed checks for one login from one address within a
//!   minute, that pair is refused without a check until the minute is over; after
//!   [`ADDRESS_FACTOR`] times as many for any logins, so is the whole address (a client
//!   trying many logins). Addresses, not only pairs, so one client cannot keep the
//!   checks busy; a multiple, so clients behind one NAT do not lock each other out.
//!
//! Both tables are bounded: waiters by count, failures by [`MAX_TRACKED`] entries.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long failures are counted for, and how long a refused pair stays refused.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Most (address, login) pairs whose failures are remembered; the one whose window
/// started first is forgotten to make room.
pub const MAX_TRACKED: usize = 65_536;
/// An address is throttled after this many times `max-login-failures`, for any logins.
pub const ADDRESS_FACTOR: u32 = 10;
/// Checks that may wait for a turn, per check that may run.
const WAITERS_PER_PERMIT: usize = 16;

/// Why a login was not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many checks running and waiting, or no turn came before the deadline.
    Busy,
    /// Too many recent failures for this login from this address; seconds to wait.
    Throttled(u64),
}

/// Admits password checks: a few at a time, and not for pairs that keep failing.
#[derive(Debug)]
pub struct LoginGate {
    permits: Arc<Semaphore>,
    max_waiting: usize,
    waiting: AtomicUsize,
    failures: Mutex<Failures>,
}

/// A turn to run one password check; the next waiter goes when it is dropped.
#[derive(Debug)]
pub struct Turn(#[allow(dead_code)] OwnedSemaphorePermit);

impl LoginGate {
    /// A gate running `parallel` checks at once (at least one).
    pub fn new(parallel: usize) -> LoginGate {
        let parallel = parallel.max(1);
        LoginGate {
            permits: Arc::new(Semaphore::new(parallel)),
            max_waiting: parallel * WAITERS_PER_PERMIT,
            waiting: AtomicUsize::new(0),
            failures: Mutex::new(Failures::default()),
        }
    }

    /// A gate with one check per core of this machine.
    pub fn per_core() -> LoginGate {
        LoginGate::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Waits for a turn until `deadline`. Refuses at once when `who` is throttled
    /// (`max_failures` of 0 turns throttling off) or too many already wait.
    pub async fn enter(
        &self,
        who: &Who<'_>,
        max_failures: u32,
        deadline: Instant,
    ) -> Result<Turn, Refusal> {
        if max_failures > 0
            && let Some(left) = self.throttled(who, max_failures)
        {
            return Err(Refusal::Throttled(left.as_secs().max(1)));
        }
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(Turn(permit));
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Busy);
        }
        let turn = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match turn {
            Ok(Ok(permit)) => Ok(Turn(permit)),
            Ok(Err(_)) | Err(_) => Err(Refusal::Busy),
        }
    }

    /// Records a check's outcome for `who`: a failure counts toward throttling, a
    /// success forgets earlier failures.
    pub fn record(&self, who: &Who<'_>, succeeded: bool) {
        let mut failures = self.failures.lock().expect("login failures");
        let key = failures.key(who);
        if succeeded {
            failures.pairs.remove(&key);
        } else {
            let now = Instant::now();
            failures.add(key, now);
            failures.add(Key::address(who.ip), now);
        }
    }

    /// How many pairs have failures remembered.
    pub fn tracked(&self) -> usize {
        self.failures.lock().expect("login failures").pairs.len()
    }

    fn throttled(&self, who: &Who<'_>, max_failures: u32) -> Option<Duration> {
        let failures = self.failures.lock().expect("login failures");
        let over = |key: Key, limit: u32| {
            let entry = failures.pairs.get(&key)?;
            let left = FAILURE_WINDOW.saturating_sub(entry.since.elapsed());
            (entry.count >= limit && !left.is_zero()).then_some(left)
        };
        over(failures.key(who), max_failures).or_else(|| {
            over(
                Key::address(who.ip),
                max_failures.saturating_mul(ADDRESS_FACTOR),
            )
        })
    }
}

/// Who is logging in: the peer's address (when it has one) and the login given.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// The peer's address; `None` for in-process transports.
    pub ip: Option<IpAddr>,
    /// The `login` header.
    pub login: &'a str,
}

/// Failed checks per (address, login) and per address.
#[derive(Debug, Default)]
struct Failures {
    hasher: RandomState,
    pairs: HashMap<Key, Window>,
}

/// What failures are counted by: an address and a login, or an address alone. The
/// login is kept as a keyed hash so a long login header costs no more than a short one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    ip: Option<IpAddr>,
    login: Option<u64>,
}

impl Key {
    fn address(ip: Option<IpAddr>) -> Key {
        Key { ip, login: None }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    since: Instant,
    count: u32,
}

impl Failures {
    fn key(&self, who: &Who<'_>) -> Key {
        Key {
            ip: who.ip,
            login: Some(self.hasher.hash_one(who.login)),
        }
    }

    fn add(&mut self, key: Key, now: Instant) {
        if let Some(window) = self.pairs.get_mut(&key) {
            if now.duration_since(window.since) < FAILURE_WINDOW {
                window.count = window.count.saturating_add(1);
            } else {
                *window = Window {
                    since: now,
                    count: 1,
                };
            }
            return;
        }
        if self.pairs.len() >= MAX_TRACKED {
            self.pairs
                .retain(|_, window| now.duration_since(window.since) < FAILURE_WINDOW);
        }
        if self.pairs.len() >= MAX_TRACKED
            && let Some(oldest) = self
                .pairs
                .iter()
                .min_by_key(|(_, window)| window.since)
                .map(|(key, _)| *key)
        {
            self.pairs.remove(&oldest);
        }
        self.pairs.insert(
            key,
            Window {
                since: now,
                count: 1,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(login: &str) -> Who<'_> {
        Who {
            ip: Some(IpAddr::from([127, 0, 0, 1])),
            login,
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_that_keeps_failing_is_refused_until_its_minute_is_over() {
        let gate = LoginGate::new(1);
        for _ in 0..3 {
            drop(gate.enter(&who("alice"), 3, soon()).await.unwrap());
            gate.record(&who("alice"), false);
        }
        assert_eq!(
            gate.enter(&who("alice"), 3, soon()).await.unwrap_err(),
            Refusal::Throttled(60)
        );
        // Another login from the same address, and throttling turned off, are not.
        assert!(gate.enter(&who("bob"), 3, soon()).await.is_ok());
        assert!(gate.enter(&who("alice"), 0, soon()).await.is_ok());
        // Until the address itself has failed too often.
        for i in 3..3 * ADDRESS_FACTOR {
            gate.record(&who(&format!("user{i}")), false);
        }
        assert_eq!(
            gate.enter(&who("bob"), 3, soon()).await.unwrap_err(),
            Refusal::Throttled(60)
        );
        let elsewhere = Who {
            ip: Some(IpAddr::from([127, 0, 0, 2])),
            login: "alice",
        };
        assert!(gate.enter(&elsewhere, 3, soon()).await.is_ok());
        tokio::time::advance(FAILURE_WINDOW).await;
        assert!(gate.enter(&who("alice"), 3, soon()).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_forgets_the_failures() {
        let gate = LoginGate::new(1);
        gate.record(&who("alice"), false);
        gate.record(&who("alice"), false);
        gate.record(&who("alice"), true);
        gate.record(&who("alice"), false);
        assert!(gate.enter(&who("alice"), 2, soon()).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_bounded_and_wait_no_longer_than_the_deadline() {
        let gate = Arc::new(LoginGate::new(1));
        let running = gate.enter(&who("a"), 0, soon()).await.unwrap();
        let mut waiters = Vec::new();
        for _ in 0..WAITERS_PER_PERMIT {
            let gate = gate.clone();
            waiters.push(tokio::spawn(async move {
                gate.enter(&who("a"), 0, soon()).await.map(drop)
            }));
        }
        tokio::task::yield_now().await;
        while gate.waiting.load(Ordering::Acquire) < WAITERS_PER_PERMIT {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            gate.enter(&who("a"), 0, soon()).await.unwrap_err(),
            Refusal::Busy
        );
        // The check running takes longer than every waiter's deadline.
        tokio::time::advance(Duration::from_secs(6)).await;
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), Err(Refusal::Busy));
        }
        drop(running);
        assert!(gate.enter(&who("a"), 0, soon()).await.is_ok());
    }

    #[test]
    fn remembered_pairs_are_bounded() {
        let mut failures = Failures::default();
        let start = Instant::now();
        for i in 0..MAX_TRACKED as u64 + 10 {
            let key = Key {
                ip: None,
                login: Some(i),
            };
            failures.add(key, start + Duration::from_micros(i));
        }
        assert_eq!(failures.pairs.len(), MAX_TRACKED);
        // The first pairs made room for the last ones.
        let key = |i| Key {
            ip: None,
            login: Some(i),
        };
        assert!(!failures.pairs.contains_key(&key(0)));
        assert!(failures.pairs.contains_key(&key(MAX_TRACKED as u64 + 9)));
    }
}
