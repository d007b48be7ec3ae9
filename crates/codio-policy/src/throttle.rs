//! How often refusals are reported: every refusal is counted (metrics), but a flood of them
//! must not flood the event stream and the logs with it. Pure state fed an [`Instant`].

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use codio_base::{Rate, Throttle};

use crate::DenialReason;

/// Reports of one reason: a burst of 10 at once, then one per 100 ms (10 a second).
const RATE: Rate = Rate::every(Duration::from_millis(100), 10);

/// A report throttle per refusal reason.
#[derive(Debug, Default)]
pub(crate) struct DenialThrottle {
    reasons: HashMap<DenialReason, Throttle>,
}

impl DenialThrottle {
    /// A refusal for `reason` at `now`: `Some(n)` to report it, `n` being the refusals of
    /// that reason left unreported before it; `None` to count it only.
    pub(crate) fn report(&mut self, reason: DenialReason, now: Instant) -> Option<u64> {
        self.reasons
            .entry(reason)
            .or_insert_with(|| Throttle::new(RATE, now))
            .report(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_ten_a_second_per_reason_with_the_rest_counted() {
        let now = Instant::now();
        let mut throttle = DenialThrottle::default();
        for _ in 0..RATE.burst {
            assert_eq!(throttle.report(DenialReason::PerSource, now), Some(0));
        }
        for _ in 0..25 {
            assert_eq!(throttle.report(DenialReason::PerSource, now), None);
        }
        assert_eq!(
            throttle.report(DenialReason::PerSubnet, now),
            Some(0),
            "another reason has its own budget"
        );
        assert_eq!(
            throttle.report(DenialReason::PerSource, now + RATE.interval),
            Some(25),
            "the next report carries what was left out"
        );
        assert_eq!(
            throttle.report(DenialReason::PerSource, now + RATE.interval),
            None
        );
    }
}
