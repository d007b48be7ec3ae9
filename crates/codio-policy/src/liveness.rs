//! Dead peer detection from ping results, as pure state fed an [`Instant`].

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::{PeerId, swarm::ConnectionId};

/// What a ping on a connection reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingOutcome {
    /// The remote answered.
    Success,
    /// The ping failed or timed out.
    Failure,
    /// The remote does not speak the ping protocol: its liveness cannot be judged.
    Unsupported,
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    peer_id: PeerId,
    last_success: Instant,
    failures: u32,
}

/// Declares connections dead when their peer stops answering pings.
///
/// libp2p's ping reports failures but closes nothing, and it keeps the first failure of a run
/// silent; a connection whose peer vanished (power loss, partition) stays open until TCP gives
/// up, minutes later. A connection is dead when either
///
/// - `threshold` consecutive failures were reported, or
/// - no ping succeeded for `threshold × (interval + timeout)` — the time `threshold` pings
///   take to fail, whatever libp2p reports (it also covers pings that cannot even open a
///   stream on a stalled connection).
#[derive(Debug)]
pub struct Liveness {
    threshold: u32,
    window: Duration,
    tracked: HashMap<ConnectionId, Tracked>,
}

impl Liveness {
    /// A detector for pings sent every `interval` and timing out after `timeout`, declaring a
    /// connection dead after `threshold` (at least 1) failures.
    pub fn new(threshold: u32, interval: Duration, timeout: Duration) -> Self {
        let threshold = threshold.max(1);
        Self {
            threshold,
            window: (interval + timeout) * threshold,
            tracked: HashMap::new(),
        }
    }

    /// How long a connection may go without a successful ping.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Starts tracking a new connection.
    pub fn on_established(&mut self, connection: ConnectionId, peer_id: PeerId, now: Instant) {
        self.tracked.insert(
            connection,
            Tracked {
                peer_id,
                last_success: now,
                failures: 0,
            },
        );
    }

    /// Records a ping outcome; returns the failure count when the connection is now dead.
    pub fn on_ping(
        &mut self,
        connection: &ConnectionId,
        outcome: PingOutcome,
        now: Instant,
    ) -> Option<u32> {
        match outcome {
            PingOutcome::Unsupported => {
                self.tracked.remove(connection);
                None
            }
            PingOutcome::Success => {
                if let Some(t) = self.tracked.get_mut(connection) {
                    t.last_success = now;
                    t.failures = 0;
                }
                None
            }
            PingOutcome::Failure => {
                let t = self.tracked.get_mut(connection)?;
                t.failures += 1;
                if t.failures >= self.threshold {
                    let failures = t.failures;
                    self.tracked.remove(connection);
                    Some(failures)
                } else {
                    None
                }
            }
        }
    }

    /// Connections without a successful ping for the whole window at `now`; they are no
    /// longer tracked once returned.
    pub fn expired(&mut self, now: Instant) -> Vec<(ConnectionId, PeerId)> {
        let window = self.window;
        let dead: Vec<(ConnectionId, PeerId)> = self
            .tracked
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(t.last_success) >= window)
            .map(|(id, t)| (*id, t.peer_id))
            .collect();
        for (id, _) in &dead {
            self.tracked.remove(id);
        }
        dead
    }

    /// When the next connection expires if no ping succeeds before.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.tracked
            .values()
            .map(|t| t.last_success + self.window)
            .min()
    }

    /// Stops tracking a closed connection.
    pub fn on_closed(&mut self, connection: &ConnectionId) {
        self.tracked.remove(connection);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn consecutive_reported_failures_reach_the_threshold_and_success_resets() {
        let c = ConnectionId::new_unchecked(1);
        let p = PeerId::random();
        let t0 = Instant::now();
        let mut l = Liveness::new(3, SEC, SEC);
        l.on_established(c, p, t0);
        assert_eq!(l.on_ping(&c, PingOutcome::Failure, t0), None);
        assert_eq!(l.on_ping(&c, PingOutcome::Failure, t0), None);
        l.on_ping(&c, PingOutcome::Success, t0);
        assert_eq!(l.on_ping(&c, PingOutcome::Failure, t0), None);
        assert_eq!(l.on_ping(&c, PingOutcome::Failure, t0), None);
        assert_eq!(l.on_ping(&c, PingOutcome::Failure, t0), Some(3));
        // Once declared dead it is no longer tracked.
        assert_eq!(l.on_ping(&c, PingOutcome::Failure, t0), None);
        assert_eq!(l.next_expiry(), None);
    }

    #[test]
    fn silence_for_the_window_expires_the_connection() {
        let c = ConnectionId::new_unchecked(1);
        let d = ConnectionId::new_unchecked(2);
        let p = PeerId::random();
        let t0 = Instant::now();
        let mut l = Liveness::new(2, SEC, SEC);
        assert_eq!(l.window(), 4 * SEC);
        l.on_established(c, p, t0);
        l.on_established(d, p, t0);
        l.on_ping(&d, PingOutcome::Success, t0 + 3 * SEC);
        assert_eq!(l.next_expiry(), Some(t0 + 4 * SEC));
        assert!(l.expired(t0 + 3 * SEC).is_empty());
        assert_eq!(l.expired(t0 + 4 * SEC), vec![(c, p)]);
        assert_eq!(l.next_expiry(), Some(t0 + 7 * SEC));
        assert!(l.expired(t0 + 6 * SEC).is_empty());
        l.on_closed(&d);
        assert_eq!(l.next_expiry(), None);
    }

    #[test]
    fn peers_without_ping_are_not_judged() {
        let c = ConnectionId::new_unchecked(1);
        let t0 = Instant::now();
        let mut l = Liveness::new(1, SEC, SEC);
        l.on_established(c, PeerId::random(), t0);
        l.on_ping(&c, PingOutcome::Unsupported, t0);
        assert!(l.expired(t0 + 3600 * SEC).is_empty());
        assert_eq!(
            Liveness::new(0, SEC, SEC).window(),
            2 * SEC,
            "threshold is at least 1"
        );
    }
}
