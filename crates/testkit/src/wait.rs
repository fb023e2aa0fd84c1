//! Waiting for something to become true, instead of sleeping and hoping it has.
//!
//! A fixed sleep is too short on a loaded CI machine and too long everywhere else.
//! [`eventually`] and [`eventually_blocking`] poll a check with a short, growing pause
//! and return as soon as it holds, so the limit can be generous (seconds) at no cost
//! to a passing run. When the limit passes they panic, naming what was awaited, how
//! long and how often it was checked, and what the check last saw.

use std::fmt::Debug;
use std::time::Duration;

/// The first pause between two checks; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(2);
/// The longest pause between two checks, so a success is seen at most this late.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// What a check returns: whether it holds and, if so, with what value.
///
/// - `bool`: `true` holds (the value is `()`).
/// - `Option<T>`: `Some(value)` holds.
/// - `Result<T, E>`: `Ok(value)` holds; `Err(seen)` does not, and the last `seen` is
///   shown (with `{:?}`) if the wait times out.
pub trait Outcome {
    /// What a successful wait returns.
    type Value;
    /// `Ok` when the check holds; otherwise what to report about it, if anything.
    fn settle(self) -> Result<Self::Value, Option<String>>;
}

impl Outcome for bool {
    type Value = ();
    fn settle(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn settle(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Debug> Outcome for Result<T, E> {
    type Value = T;
    fn settle(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(format!("{seen:?}")))
    }
}

/// Counts the checks and the pause before the next one.
struct Backoff {
    tries: u32,
    pause: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            tries: 0,
            pause: FIRST_PAUSE,
        }
    }

    /// The pause to take now (never past `left`), and a longer one next time.
    fn next(&mut self, left: Duration) -> Duration {
        let pause = self.pause.min(left);
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        pause
    }

    fn give_up(&self, what: &str, waited: Duration, last: Option<String>) -> ! {
        let last = last
            .map(|seen| format!("; last seen: {seen}"))
            .unwrap_or_default();
        panic!(
            "timed out after {waited:?} ({} checks) waiting for {what}{last}",
            self.tries
        )
    }
}

/// Polls the async `check` until it holds and returns its value; panics once `within`
/// has passed without it holding.
///
/// `check` runs at least once, and once more at the deadline, so a condition that
/// became true during the last pause is not missed. A check that itself waits (a read
/// with a timeout) may carry the whole wait past `within` by that much.
/// The returned future is not known to be `Send`, so await it in the test's own task
/// rather than in a `tokio::spawn`ed one.
pub async fn eventually<O: Outcome>(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> O,
) -> O::Value {
    let start = tokio::time::Instant::now();
    let deadline = start + within;
    let mut backoff = Backoff::new();
    loop {
        backoff.tries += 1;
        let last = match check().await.settle() {
            Ok(value) => return value,
            Err(last) => last,
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            backoff.give_up(what, now - start, last);
        }
        tokio::time::sleep(backoff.next(deadline - now)).await;
    }
}

/// [`eventually`] for code without a runtime: the pauses block the thread.
pub fn eventually_blocking<O: Outcome>(
    within: Duration,
    what: &str,
    check: impl FnMut() -> O,
) -> O::Value {
    match poll_blocking(within, check) {
        Ok(value) => value,
        Err(timeout) => timeout.backoff.give_up(what, timeout.waited, timeout.last),
    }
}

/// Why [`poll_blocking`] gave up.
pub(crate) struct TimedOut {
    backoff: Backoff,
    waited: Duration,
    last: Option<String>,
}

/// [`eventually_blocking`] that returns instead of panicking, for waits whose caller
/// decides what a timeout means.
pub(crate) fn poll_blocking<O: Outcome>(
    within: Duration,
    mut check: impl FnMut() -> O,
) -> Result<O::Value, TimedOut> {
    let start = std::time::Instant::now();
    let deadline = start + within;
    let mut backoff = Backoff::new();
    loop {
        backoff.tries += 1;
        let last = match check().settle() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        let now = std::time::Instant::now();
        if now >= deadline {
            return Err(TimedOut {
                backoff,
                waited: now - start,
                last,
            });
        }
        std::thread::sleep(backoff.next(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of the panic `f` raises; fails the test if it does not panic.
    fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let payload = std::panic::catch_unwind(f).expect_err("expected a panic");
        match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => payload
                .downcast_ref::<&str>()
                .expect("a text panic")
                .to_string(),
        }
    }

    #[test]
    fn returns_the_value_of_the_first_check_that_holds() {
        let mut tries = 0;
        let value = eventually_blocking(Duration::from_secs(10), "the third try", || {
            tries += 1;
            (tries == 3).then_some(tries * 10)
        });
        assert_eq!(value, 30);
        assert_eq!(tries, 3, "no check after the one that held");
    }

    #[test]
    fn a_check_that_never_holds_panics_naming_it_and_the_wait() {
        let message = panic_message(|| {
            eventually_blocking(Duration::from_millis(100), "the moon to turn blue", || {
                Err::<(), _>("grey")
            })
        });
        assert!(message.starts_with("timed out after "), "{message}");
        assert!(
            message.ends_with("waiting for the moon to turn blue; last seen: \"grey\""),
            "{message}"
        );
        let checks: u32 = message
            .split(" (")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no check count in {message}"));
        // 2 + 4 + 8 + 16 + 32 + 50 ms pauses fill 100 ms: a handful of checks, not a spin.
        assert!((2..=20).contains(&checks), "{message}");
    }

    #[test]
    fn waits_at_least_as_long_as_asked() {
        let start = std::time::Instant::now();
        let _ =
            panic_message(|| eventually_blocking(Duration::from_millis(150), "never", || false));
        assert!(start.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn the_async_variant_returns_on_the_third_try() {
        let mut tries = 0;
        let value = eventually(Duration::from_secs(10), "the third try", async || {
            tries += 1;
            tokio::task::yield_now().await;
            if tries == 3 { Ok(tries) } else { Err(tries) }
        })
        .await;
        assert_eq!((value, tries), (3, 3));
    }

    #[tokio::test]
    async fn the_async_variant_panics_with_the_last_value_seen() {
        use futures_util::FutureExt;
        let mut seen = 0;
        let waiting = eventually(Duration::from_millis(100), "a count of 1000", async || {
            seen += 1;
            seen >= 1000
        });
        let payload = std::panic::AssertUnwindSafe(waiting)
            .catch_unwind()
            .await
            .expect_err("the wait must fail");
        let message = payload.downcast::<String>().expect("a formatted panic");
        assert!(message.contains("waiting for a count of 1000"), "{message}");
        assert!(
            !message.contains("last seen"),
            "a bool has nothing to show: {message}"
        );
    }
}
