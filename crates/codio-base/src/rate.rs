//! One token bucket, pure state fed an [`Instant`]: up to `burst` events at once, then one per
//! `interval`. Every rate in codio (identify and mDNS answers per peer, gossip messages per
//! peer, refusal reports, log lines) is this bucket with its own [`Rate`].
//!
//! Tokens refill one per whole `interval` since the last refill; the part of an interval not
//! yet completed is kept, so a steady caller gets exactly the rate, never less. A zero
//! interval means no limit.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// How fast a [`Bucket`] refills and how many tokens it holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// One token per this (zero: unlimited).
    pub interval: Duration,
    /// Tokens at most (taken at once after a pause).
    pub burst: u32,
}

impl Rate {
    /// One token per `interval`, up to `burst` at once.
    pub const fn every(interval: Duration, burst: u32) -> Self {
        Self { interval, burst }
    }

    /// `per_second` tokens a second, up to `burst` at once; zero per second is unlimited.
    pub const fn per_second(per_second: u32, burst: u32) -> Self {
        let interval = if per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(1_000_000_000 / per_second as u64)
        };
        Self { interval, burst }
    }

    /// No limit: every take succeeds.
    pub const fn unlimited() -> Self {
        Self {
            interval: Duration::ZERO,
            burst: u32::MAX,
        }
    }

    /// Whether this rate admits everything.
    pub const fn is_unlimited(&self) -> bool {
        self.interval.is_zero()
    }
}

/// The tokens left and when they were last refilled. The [`Rate`] is passed to each call,
/// so that a map of buckets (one per peer) stores 16 bytes per key, not the rate again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    tokens: u32,
    since: Instant,
}

impl Bucket {
    /// A full bucket of `rate.burst` tokens at `now`.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            since: now,
        }
    }

    /// Takes a token at `now` if there is one, after refilling.
    pub fn take(&mut self, rate: Rate, now: Instant) -> bool {
        if rate.is_unlimited() {
            return true;
        }
        self.refill(rate, now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// The tokens left at `now`.
    pub fn tokens(&mut self, rate: Rate, now: Instant) -> u32 {
        if rate.is_unlimited() {
            return rate.burst;
        }
        self.refill(rate, now);
        self.tokens
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let intervals =
            now.saturating_duration_since(self.since).as_nanos() / rate.interval.as_nanos();
        if intervals == 0 {
            return;
        }
        let intervals = u32::try_from(intervals).unwrap_or(u32::MAX);
        self.tokens = self.tokens.saturating_add(intervals).min(rate.burst);
        if self.tokens == rate.burst {
            // Full: time spent full earns nothing.
            self.since = now;
        } else {
            // Keep the part of an interval not yet completed.
            self.since += rate.interval * intervals;
        }
    }
}

/// A bucket per key (a peer, a reason), all at one [`Rate`]: a key's first event finds a full
/// bucket. The owner bounds the map by forgetting keys (a peer's last connection closed).
#[derive(Debug, Clone)]
pub struct Buckets<K> {
    rate: Rate,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq> Buckets<K> {
    /// No buckets yet, each to hold `rate`.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: HashMap::new(),
        }
    }

    /// Whether `key` may have one more event at `now` (and takes its token if so). An
    /// unlimited rate admits everything and keeps no bucket.
    pub fn admit(&mut self, key: K, now: Instant) -> bool {
        if self.rate.is_unlimited() {
            return true;
        }
        let rate = self.rate;
        self.buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(rate, now))
            .take(rate, now)
    }

    /// Drops `key`'s bucket: it starts full when it comes back.
    pub fn forget(&mut self, key: &K) {
        self.buckets.remove(key);
    }

    /// The keys with a bucket.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Reports (log lines, events) of one kind at a [`Rate`], counting those left out: every
/// occurrence is still counted elsewhere (metrics), but a flood of them cannot flood the
/// output; the next report written says how many were suppressed before it.
#[derive(Debug, Clone)]
pub struct Throttle {
    rate: Rate,
    bucket: Bucket,
    suppressed: u64,
}

impl Throttle {
    /// Reports at `rate`, the burst available at `now`.
    pub fn new(rate: Rate, now: Instant) -> Self {
        Self {
            rate,
            bucket: Bucket::full(rate, now),
            suppressed: 0,
        }
    }

    /// An occurrence at `now`: `Some(n)` to report it, `n` being the occurrences suppressed
    /// since the last report; `None` to leave it out (counted for the next report).
    pub fn report(&mut self, now: Instant) -> Option<u64> {
        if self.bucket.take(self.rate, now) {
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval() {
        let start = Instant::now();
        let rate = Rate::every(Duration::from_secs(1), 2);
        let second = rate.interval;
        let mut bucket = Bucket::full(rate, start);
        assert!(bucket.take(rate, start));
        assert!(bucket.take(rate, start));
        assert!(!bucket.take(rate, start));
        assert!(!bucket.take(rate, start + second / 2));
        assert!(bucket.take(rate, start + second));
        assert!(!bucket.take(rate, start + second));
        // A long pause refills the burst, no more.
        let later = start + second * 100;
        assert!(bucket.take(rate, later));
        assert!(bucket.take(rate, later));
        assert!(!bucket.take(rate, later));
    }

    #[test]
    fn partial_intervals_are_kept_so_a_steady_caller_gets_the_whole_rate() {
        let start = Instant::now();
        let rate = Rate::per_second(10, 1);
        let mut bucket = Bucket::full(rate, start);
        assert!(bucket.take(rate, start));
        // Calls every 150 ms: 10 a second means 15 tokens in 2.25 s, not one per call.
        let taken = (1..=15)
            .filter(|i| bucket.take(rate, start + Duration::from_millis(150 * i)))
            .count();
        assert_eq!(taken, 15);
        assert_eq!(bucket.tokens(rate, start + Duration::from_millis(2250)), 0);
    }

    #[test]
    fn per_second_and_unlimited() {
        assert_eq!(Rate::per_second(100, 5).interval, Duration::from_millis(10));
        let now = Instant::now();
        for rate in [Rate::per_second(0, 0), Rate::unlimited()] {
            assert!(rate.is_unlimited());
            let mut bucket = Bucket::full(rate, now);
            assert!((0..1000).all(|_| bucket.take(rate, now)));
        }
    }

    #[test]
    fn a_bucket_per_key() {
        let start = Instant::now();
        let mut buckets = Buckets::new(Rate::per_second(10, 5));
        assert_eq!((0..20).filter(|_| buckets.admit("a", start)).count(), 5);
        assert!(buckets.admit("b", start), "another key has its own bucket");
        assert!(!buckets.admit("a", start + Duration::from_millis(50)));
        assert!(buckets.admit("a", start + Duration::from_millis(150)));
        buckets.forget(&"a");
        buckets.forget(&"b");
        assert!(buckets.is_empty());
        let mut unlimited = Buckets::new(Rate::per_second(0, 0));
        assert!((0..1000).all(|_| unlimited.admit("a", start)));
        assert_eq!(unlimited.len(), 0);
    }

    #[test]
    fn a_throttle_reports_a_burst_then_the_rate_and_counts_the_rest() {
        let now = Instant::now();
        let rate = Rate::every(Duration::from_millis(100), 3);
        let mut throttle = Throttle::new(rate, now);
        for _ in 0..3 {
            assert_eq!(throttle.report(now), Some(0));
        }
        for _ in 0..25 {
            assert_eq!(throttle.report(now), None);
        }
        assert_eq!(throttle.report(now + rate.interval), Some(25));
        assert_eq!(throttle.report(now + rate.interval), None);
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let start = Instant::now() + Duration::from_secs(10);
        let rate = Rate::every(Duration::from_millis(100), 1);
        let mut bucket = Bucket::full(rate, start);
        assert!(bucket.take(rate, start));
        assert!(!bucket.take(rate, start - Duration::from_secs(5)));
        assert!(bucket.take(rate, start + Duration::from_millis(100)));
    }
}
