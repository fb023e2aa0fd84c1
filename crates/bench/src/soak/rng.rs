//! A small pseudo-random generator for sizes and timings.

use std::sync::atomic::{AtomicU64, Ordering};

/// xorshift64*: enough randomness to vary sizes and timings, no dependency.
#[derive(Debug)]
pub(super) struct Rng(u64);

impl Rng {
    /// A generator seeded differently for every call, from a counter and the clock.
    pub(super) fn new() -> Rng {
        static SEED: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
        let seed = SEED.fetch_add(0x6a09_e667_f3bc_c909, Ordering::Relaxed) ^ crate::clock_us();
        Rng(seed | 1)
    }

    /// The next number.
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `low..=high`.
    pub(super) fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}
