//! How often refusals are reported: every refusal is counted (metrics), but a flood of them
//! must not flood the event stream and the logs with it. Pure state fed an [`Instant`].

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::DenialReason;

/// Reports of one reason at once, before the rate applies.
const BURST: u32 = 10;
/// Then one report per this, per reason (10 a second).
const INTERVAL: Duration = Duration::from_millis(100);

/// Per refusal reason: a token bucket of reports and the refusals not reported since the
/// last report.
#[derive(Debug, Default)]
pub(crate) struct DenialThrottle {
    reasons: HashMap<DenialReason, Slot>,
}

#[derive(Debug)]
struct Slot {
    tokens: u32,
    since: Instant,
    suppressed: u64,
}

impl DenialThrottle {
    /// A refusal for `reason` at `now`: `Some(n)` to report it, `n` being the refusals of
    /// that reason left unreported before it; `None` to count it only.
    pub(crate) fn report(&mut self, reason: DenialReason, now: Instant) -> Option<u64> {
        let slot = self.reasons.entry(reason).or_insert(Slot {
            tokens: BURST,
            since: now,
            suppressed: 0,
        });
        let refill = now.saturating_duration_since(slot.since).as_nanos() / INTERVAL.as_nanos();
        if refill > 0 {
            let refill = u32::try_from(refill).unwrap_or(u32::MAX);
            slot.tokens = slot.tokens.saturating_add(refill).min(BURST);
            slot.since = now;
        }
        if slot.tokens == 0 {
            slot.suppressed += 1;
            return None;
        }
        slot.tokens -= 1;
        Some(std::mem::take(&mut slot.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_ten_a_second_per_reason_with_the_rest_counted() {
        let now = Instant::now();
        let mut throttle = DenialThrottle::default();
        for _ in 0..BURST {
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
            throttle.report(DenialReason::PerSource, now + INTERVAL),
            Some(25),
            "the next report carries what was left out"
        );
        assert_eq!(
            throttle.report(DenialReason::PerSource, now + INTERVAL),
            None
        );
    }
}
