//! A token bucket, pure state fed an [`Instant`]: up to `burst` events at once, then one per
//! `interval`. Identify keeps one per peer; mDNS one for its dials and one for its answers.

use std::time::{Duration, Instant};

/// The tokens left and when the last one was refilled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: u32,
    since: Instant,
}

impl Bucket {
    /// A full bucket of `burst` tokens at `now`.
    pub(crate) fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: burst,
            since: now,
        }
    }

    /// Takes a token at `now` if there is one, after refilling one per `interval` (a zero
    /// interval refills at once) up to `burst`.
    pub(crate) fn take(&mut self, interval: Duration, burst: u32, now: Instant) -> bool {
        self.refill(interval, burst, now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    fn refill(&mut self, interval: Duration, burst: u32, now: Instant) {
        if interval.is_zero() {
            self.tokens = burst;
            return;
        }
        let refill = now.saturating_duration_since(self.since).as_nanos() / interval.as_nanos();
        if refill == 0 {
            return;
        }
        let refill = u32::try_from(refill).unwrap_or(u32::MAX);
        self.tokens = self.tokens.saturating_add(refill).min(burst);
        self.since += interval * refill.min(burst);
        if self.tokens == burst {
            self.since = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut bucket = Bucket::full(2, start);
        assert!(bucket.take(second, 2, start));
        assert!(bucket.take(second, 2, start));
        assert!(!bucket.take(second, 2, start));
        assert!(!bucket.take(second, 2, start + second / 2));
        assert!(bucket.take(second, 2, start + second));
        assert!(!bucket.take(second, 2, start + second));
        // A long pause refills the burst, no more.
        let later = start + second * 100;
        assert!(bucket.take(second, 2, later));
        assert!(bucket.take(second, 2, later));
        assert!(!bucket.take(second, 2, later));
    }
}
