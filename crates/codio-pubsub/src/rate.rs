//! The per-peer message rate: a token bucket per propagation source, pure state fed an
//! [`Instant`]. A peer may forward `burst` messages at once, then `per_second` a second; the
//! rest are ignored (not forwarded, not delivered) and counted. Buckets are forgotten when the
//! peer's last connection closes, so the map is bounded by the connected peers.

use std::{collections::HashMap, time::Instant};

use libp2p::PeerId;

/// One peer's tokens and when they were last refilled.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by peer.
#[derive(Debug)]
pub(crate) struct PeerRate {
    per_second: f64,
    burst: f64,
    buckets: HashMap<PeerId, Bucket>,
}

impl PeerRate {
    /// `per_second` messages a second after a burst of `burst`; a zero rate admits everything.
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Whether `peer` may forward one more message at `now` (and takes its token if so).
    pub(crate) fn admit(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        let burst = self.burst;
        let bucket = self.buckets.entry(peer).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at);
        bucket.tokens = (bucket.tokens + elapsed.as_secs_f64() * self.per_second).min(burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }

    /// Drops `peer`'s bucket (its last connection closed).
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        self.buckets.remove(peer);
    }

    /// Peers with a bucket.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_peer() {
        let start = Instant::now();
        let mut rate = PeerRate::new(10, 5);
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!((0..20).filter(|_| rate.admit(a, start)).count(), 5);
        // Another peer has its own bucket.
        assert!(rate.admit(b, start));
        // 10 a second: one more token after 100 ms, not before.
        assert!(!rate.admit(a, start + Duration::from_millis(50)));
        assert!(rate.admit(a, start + Duration::from_millis(150)));
        // A long pause refills the burst, no more.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| rate.admit(a, later)).count(), 5);
        rate.forget(&a);
        rate.forget(&b);
        assert_eq!(rate.len(), 0);
    }

    #[test]
    fn a_zero_rate_admits_everything() {
        let mut rate = PeerRate::new(0, 0);
        let peer = PeerId::random();
        let now = Instant::now();
        assert!((0..1000).all(|_| rate.admit(peer, now)));
        assert_eq!(rate.len(), 0);
    }
}
