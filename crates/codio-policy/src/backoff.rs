//! Exponential backoff with jitter, as pure state.

use std::time::Duration;

/// Backoff settings.
///
/// | setting | default |
/// |---|---|
/// | [`min`](Self::with_min) | 500 ms: the first retry's delay |
/// | [`max`](Self::with_max) | 5 min: the ceiling |
/// | [`multiplier`](Self::with_multiplier) | 2.0 |
/// | [`jitter`](Self::with_jitter) | 0.2: each delay is scaled by a random factor in [0.8, 1.2] |
/// | [`stable_after`](Self::with_stable_after) | 30 s: a connection that lasted this long resets the backoff |
/// | [`max_attempts`](Self::with_max_attempts) | `None`: never give up |
/// | [`max_attempts_unreserved`](Self::with_max_attempts_unreserved) | 10 for peers that are not reserved |
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffConfig {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
    pub(crate) multiplier: f64,
    pub(crate) jitter: f64,
    pub(crate) stable_after: Duration,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) max_attempts_unreserved: Option<u32>,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(500),
            max: Duration::from_secs(5 * 60),
            multiplier: 2.0,
            jitter: 0.2,
            stable_after: Duration::from_secs(30),
            max_attempts: None,
            max_attempts_unreserved: Some(10),
        }
    }
}

impl BackoffConfig {
    /// The first delay.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The largest delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Sets the first delay.
    pub fn with_min(mut self, min: Duration) -> Self {
        self.min = min;
        self
    }

    /// Sets the largest delay.
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets the growth factor between attempts (values below 1.0 are treated as 1.0).
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets the jitter fraction, clamped to `[0, 1]`.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets how long a connection must last to reset the backoff.
    pub fn with_stable_after(mut self, stable_after: Duration) -> Self {
        self.stable_after = stable_after;
        self
    }

    /// Sets the number of failed attempts after which reconnection gives up (`None`: never).
    pub fn with_max_attempts(mut self, max_attempts: Option<u32>) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets the failed attempts after which peers that are *not* reserved (see
    /// [`AccessConfig::with_reserved`](crate::AccessConfig::with_reserved); a composing node
    /// reserves its bootstrap and reserved peers) are given up: peers connected on request or
    /// remembered from an earlier run are not reconnected forever (`None`: as
    /// [`max_attempts`](Self::with_max_attempts)). Default 10: with the default delays,
    /// about 8.5 minutes of retries.
    pub fn with_max_attempts_unreserved(mut self, max_attempts: Option<u32>) -> Self {
        self.max_attempts_unreserved = max_attempts;
        self
    }

    /// The attempt limit of a peer.
    pub(crate) fn limit(&self, reserved: bool) -> Option<u32> {
        match (reserved, self.max_attempts, self.max_attempts_unreserved) {
            (true, all, _) | (false, all, None) => all,
            (false, None, some) => some,
            (false, Some(all), Some(unreserved)) => Some(all.min(unreserved)),
        }
    }

    /// The delay before attempt number `attempt` (1-based), without jitter:
    /// `min × multiplier^(attempt-1)`, capped at `max`.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let factor = self.multiplier.max(1.0).powi(exponent);
        let secs = self.min.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs).max(self.min.min(self.max))
        }
    }

    /// The delay before attempt `attempt` with jitter from `rng`, never above `max`.
    pub fn delay(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let base = self.base_delay(attempt).as_secs_f64();
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + jitter * (2.0 * rng.next_f64() - 1.0);
        Duration::from_secs_f64((base * factor).max(0.0)).min(self.max)
    }
}

/// A small deterministic pseudo-random generator (SplitMix64) for jitter: seeded explicitly
/// in tests, from the OS's hasher randomness otherwise. Not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed (deterministic sequences for tests).
    pub fn with_seed(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator seeded from the process's random hasher keys.
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x0063_6f64_696f);
        Self(hasher.finish())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_delay_grows_exponentially_and_caps() {
        let c = BackoffConfig::default()
            .with_min(Duration::from_millis(100))
            .with_max(Duration::from_secs(1))
            .with_multiplier(2.0);
        let delays: Vec<u128> = (1..=6).map(|a| c.base_delay(a).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(c.base_delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let c = BackoffConfig::default()
            .with_min(Duration::from_secs(1))
            .with_max(Duration::from_secs(100))
            .with_jitter(0.2);
        let mut rng = Rng::with_seed(7);
        let samples: Vec<Duration> = (0..1000).map(|_| c.delay(1, &mut rng)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= Duration::from_millis(800) && *d <= Duration::from_millis(1200))
        );
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 900, "jitter should spread delays");
    }

    #[test]
    fn jitter_never_exceeds_max() {
        let c = BackoffConfig::default()
            .with_min(Duration::from_secs(1))
            .with_max(Duration::from_secs(2))
            .with_jitter(1.0);
        let mut rng = Rng::with_seed(1);
        assert!((0..1000).all(|_| c.delay(10, &mut rng) <= Duration::from_secs(2)));
    }

    #[test]
    fn zero_jitter_is_exact_and_seeded_rng_is_deterministic() {
        let c = BackoffConfig::default().with_jitter(0.0);
        let mut rng = Rng::with_seed(3);
        assert_eq!(c.delay(2, &mut rng), Duration::from_secs(1));
        let a: Vec<u64> = {
            let mut r = Rng::with_seed(42);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::with_seed(42);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let f = Rng::with_seed(9).next_f64();
        assert!((0.0..1.0).contains(&f));
    }
}
