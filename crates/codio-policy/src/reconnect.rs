//! Which peers to reconnect to and when, as pure state fed an [`Instant`].

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId};

use crate::backoff::{BackoffConfig, Rng};

/// Most addresses remembered per watched peer.
const MAX_ADDRESSES: usize = 8;

/// A reconnection decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Dial the peer again after `delay`; this will be attempt number `attempt` (1-based).
    Redial {
        /// The peer.
        peer_id: PeerId,
        /// Which attempt the next dial is.
        attempt: u32,
        /// How long until it.
        delay: Duration,
    },
    /// `attempts` dials failed and the configured maximum is reached: no more dials.
    GaveUp {
        /// The peer.
        peer_id: PeerId,
        /// Failed attempts.
        attempts: u32,
    },
}

/// A dial that is due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDial {
    /// The peer.
    pub peer_id: PeerId,
    /// Its known addresses.
    pub addresses: Vec<Multiaddr>,
    /// Which attempt this is (1-based).
    pub attempt: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected and nothing scheduled: waiting for a first dial made elsewhere.
    Idle,
    Connected {
        since: Instant,
    },
    Waiting {
        due: Instant,
    },
    Dialing,
    GaveUp,
}

#[derive(Debug, Clone)]
struct Watched {
    addresses: Vec<Multiaddr>,
    state: State,
    /// Failed or pending reconnection attempts since the last stable connection.
    attempt: u32,
    /// Reserved peers follow `max_attempts`, others `max_attempts_unreserved` too.
    reserved: bool,
}

/// The reconnection state machine.
///
/// ```text
///  watch ──► Idle ──dial failed──► Waiting{due} ──due──► Dialing ──failed──► Waiting (attempt+1)
///              │                      ▲                    │                   │
///          connected                  │ disconnected    connected      attempts > max
///              ▼                      │ (attempt reset if  ▼                   ▼
///          Connected{since} ──────────┘  up ≥ stable_after) Connected        GaveUp
///  unwatch (explicit disconnect): forgotten in any state, never dialed again
/// ```
#[derive(Debug)]
pub struct Reconnector {
    config: BackoffConfig,
    rng: Rng,
    peers: HashMap<PeerId, Watched>,
}

impl Reconnector {
    /// Creates an empty state machine.
    pub fn new(config: BackoffConfig, rng: Rng) -> Self {
        Self {
            config,
            rng,
            peers: HashMap::new(),
        }
    }

    /// Marks `peer_id` as a peer that matters: it is reconnected after unexpected
    /// disconnects and failed dials. Adds `addresses` to those known.
    pub fn watch(
        &mut self,
        peer_id: PeerId,
        addresses: impl IntoIterator<Item = Multiaddr>,
        now: Instant,
        connected: bool,
    ) {
        let entry = self.peers.entry(peer_id).or_insert(Watched {
            addresses: Vec::new(),
            state: State::Idle,
            attempt: 0,
            reserved: false,
        });
        for address in addresses {
            if !entry.addresses.contains(&address) && entry.addresses.len() < MAX_ADDRESSES {
                entry.addresses.push(address);
            }
        }
        if connected && !matches!(entry.state, State::Connected { .. }) {
            entry.state = State::Connected { since: now };
        }
    }

    /// Marks a watched peer as reserved (retried by `max_attempts` alone) or not.
    pub fn set_reserved(&mut self, peer_id: &PeerId, reserved: bool) {
        if let Some(watched) = self.peers.get_mut(peer_id) {
            watched.reserved = reserved;
        }
    }

    /// Forgets `peer_id` (explicit disconnect): it is never dialed again by this machine.
    /// Returns whether it was watched.
    pub fn unwatch(&mut self, peer_id: &PeerId) -> bool {
        self.peers.remove(peer_id).is_some()
    }

    /// Whether `peer_id` is watched.
    pub fn is_watched(&self, peer_id: &PeerId) -> bool {
        self.peers.contains_key(peer_id)
    }

    /// Peers that are watched but not connected and not scheduled (to dial at start).
    pub fn idle_peers(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.peers
            .iter()
            .filter(|(_, w)| w.state == State::Idle)
            .map(|(p, w)| (*p, w.addresses.clone()))
            .collect()
    }

    /// A connection to `peer_id` was established. Returns the number of reconnection
    /// attempts it took when this ends a reconnection (`Some(n)`, n ≥ 1), `None` otherwise.
    pub fn on_connected(&mut self, peer_id: &PeerId, now: Instant) -> Option<u32> {
        let watched = self.peers.get_mut(peer_id)?;
        let was_reconnecting = matches!(
            watched.state,
            State::Waiting { .. } | State::Dialing | State::GaveUp
        ) && watched.attempt > 0;
        if !matches!(watched.state, State::Connected { .. }) {
            watched.state = State::Connected { since: now };
        }
        was_reconnecting.then_some(watched.attempt)
    }

    /// The last connection to `peer_id` closed.
    pub fn on_disconnected(&mut self, peer_id: &PeerId, now: Instant) -> Option<Decision> {
        let watched = self.peers.get_mut(peer_id)?;
        let State::Connected { since } = watched.state else {
            return None;
        };
        if now.saturating_duration_since(since) >= self.config.stable_after {
            watched.attempt = 0;
        }
        Some(self.schedule(*peer_id, now))
    }

    /// A dial to `peer_id` failed.
    pub fn on_dial_failed(&mut self, peer_id: &PeerId, now: Instant) -> Option<Decision> {
        let watched = self.peers.get_mut(peer_id)?;
        match watched.state {
            State::Idle | State::Dialing => Some(self.schedule(*peer_id, now)),
            State::Connected { .. } | State::Waiting { .. } | State::GaveUp => None,
        }
    }

    fn schedule(&mut self, peer_id: PeerId, now: Instant) -> Decision {
        let (attempt, reserved) = match self.peers.get(&peer_id) {
            Some(w) => (w.attempt.saturating_add(1), w.reserved),
            None => (1, false),
        };
        if let Some(max) = self.config.limit(reserved)
            && attempt > max
        {
            if let Some(w) = self.peers.get_mut(&peer_id) {
                w.state = State::GaveUp;
            }
            return Decision::GaveUp {
                peer_id,
                attempts: attempt - 1,
            };
        }
        let delay = self.config.delay(attempt, &mut self.rng);
        if let Some(w) = self.peers.get_mut(&peer_id) {
            w.attempt = attempt;
            w.state = State::Waiting { due: now + delay };
        }
        Decision::Redial {
            peer_id,
            attempt,
            delay,
        }
    }

    /// The dials due at `now`; each moves to the dialing state.
    pub fn poll_due(&mut self, now: Instant) -> Vec<DueDial> {
        let mut due = Vec::new();
        for (peer_id, watched) in &mut self.peers {
            if let State::Waiting { due: at } = watched.state
                && at <= now
            {
                watched.state = State::Dialing;
                due.push(DueDial {
                    peer_id: *peer_id,
                    addresses: watched.addresses.clone(),
                    attempt: watched.attempt,
                });
            }
        }
        due
    }

    /// When the next dial is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|w| match w.state {
                State::Waiting { due } => Some(due),
                _ => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(max_attempts: Option<u32>) -> Reconnector {
        let config = BackoffConfig::default()
            .with_min(Duration::from_millis(100))
            .with_max(Duration::from_secs(1))
            .with_multiplier(2.0)
            .with_jitter(0.0)
            .with_stable_after(Duration::from_secs(10))
            .with_max_attempts(max_attempts);
        Reconnector::new(config, Rng::with_seed(1))
    }

    fn addr() -> Multiaddr {
        "/ip4/10.0.0.1/tcp/4001".parse().unwrap()
    }

    #[test]
    fn unexpected_disconnect_schedules_exponential_redials() {
        let mut r = machine(None);
        let peer = PeerId::random();
        let t0 = Instant::now();
        r.watch(peer, [addr()], t0, true);
        assert_eq!(
            r.on_disconnected(&peer, t0 + Duration::from_secs(1)),
            Some(Decision::Redial {
                peer_id: peer,
                attempt: 1,
                delay: Duration::from_millis(100)
            })
        );
        // Not due yet.
        assert!(r.poll_due(t0 + Duration::from_millis(1050)).is_empty());
        assert_eq!(r.next_due(), Some(t0 + Duration::from_millis(1100)));
        let due = r.poll_due(t0 + Duration::from_millis(1100));
        assert_eq!(
            due,
            vec![DueDial {
                peer_id: peer,
                addresses: vec![addr()],
                attempt: 1
            }]
        );
        assert_eq!(r.next_due(), None);
        // Each failure doubles the delay up to the 1 s cap.
        let mut now = t0 + Duration::from_millis(1100);
        let mut delays = Vec::new();
        for _ in 0..5 {
            match r.on_dial_failed(&peer, now) {
                Some(Decision::Redial { delay, .. }) => delays.push(delay.as_millis()),
                other => panic!("{other:?}"),
            }
            now += Duration::from_secs(1);
            assert_eq!(r.poll_due(now).len(), 1);
        }
        assert_eq!(delays, vec![200, 400, 800, 1000, 1000]);
        // Reconnected after 6 attempts.
        assert_eq!(r.on_connected(&peer, now), Some(6));
    }

    #[test]
    fn short_connection_keeps_backoff_and_stable_connection_resets_it() {
        let mut r = machine(None);
        let peer = PeerId::random();
        let t0 = Instant::now();
        r.watch(peer, [addr()], t0, true);
        r.on_disconnected(&peer, t0);
        r.poll_due(t0 + Duration::from_secs(1));
        r.on_dial_failed(&peer, t0 + Duration::from_secs(1)); // attempt 2 scheduled
        r.poll_due(t0 + Duration::from_secs(2));
        assert_eq!(r.on_connected(&peer, t0 + Duration::from_secs(2)), Some(2));
        // Drops after 1 s (< stable_after): backoff continues at attempt 3.
        assert!(matches!(
            r.on_disconnected(&peer, t0 + Duration::from_secs(3)),
            Some(Decision::Redial { attempt: 3, .. })
        ));
        r.poll_due(t0 + Duration::from_secs(4));
        r.on_connected(&peer, t0 + Duration::from_secs(4));
        // Up for 10 s: reset.
        assert_eq!(
            r.on_disconnected(&peer, t0 + Duration::from_secs(14)),
            Some(Decision::Redial {
                peer_id: peer,
                attempt: 1,
                delay: Duration::from_millis(100)
            })
        );
    }

    #[test]
    fn failed_first_dial_is_retried() {
        let mut r = machine(None);
        let peer = PeerId::random();
        let t0 = Instant::now();
        r.watch(peer, [addr()], t0, false);
        assert_eq!(r.idle_peers(), vec![(peer, vec![addr()])]);
        assert!(matches!(
            r.on_dial_failed(&peer, t0),
            Some(Decision::Redial { attempt: 1, .. })
        ));
        assert!(r.idle_peers().is_empty());
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let mut r = machine(Some(2));
        let peer = PeerId::random();
        let t0 = Instant::now();
        r.watch(peer, [addr()], t0, true);
        assert!(matches!(
            r.on_disconnected(&peer, t0),
            Some(Decision::Redial { attempt: 1, .. })
        ));
        r.poll_due(t0 + Duration::from_secs(5));
        assert!(matches!(
            r.on_dial_failed(&peer, t0 + Duration::from_secs(5)),
            Some(Decision::Redial { attempt: 2, .. })
        ));
        r.poll_due(t0 + Duration::from_secs(10));
        assert_eq!(
            r.on_dial_failed(&peer, t0 + Duration::from_secs(10)),
            Some(Decision::GaveUp {
                peer_id: peer,
                attempts: 2
            })
        );
        assert!(r.poll_due(t0 + Duration::from_secs(100)).is_empty());
        assert_eq!(r.next_due(), None);
        // Further failures say nothing more.
        assert_eq!(r.on_dial_failed(&peer, t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn unreserved_peers_are_given_up_and_reserved_ones_are_not() {
        let config = BackoffConfig::default()
            .with_min(Duration::from_millis(100))
            .with_max(Duration::from_secs(1))
            .with_jitter(0.0)
            .with_max_attempts_unreserved(Some(3));
        let mut r = Reconnector::new(config, Rng::with_seed(1));
        let (reserved, other) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        r.watch(reserved, [addr()], t0, false);
        r.set_reserved(&reserved, true);
        r.watch(other, [addr()], t0, false);
        let mut gave_up = Vec::new();
        for i in 0..20u64 {
            let now = t0 + Duration::from_secs(i);
            for peer in [reserved, other] {
                if let Some(Decision::GaveUp { peer_id, attempts }) = r.on_dial_failed(&peer, now) {
                    gave_up.push((peer_id, attempts));
                }
            }
            r.poll_due(now + Duration::from_millis(1_500));
        }
        assert_eq!(gave_up, vec![(other, 3)]);
        let later = t0 + Duration::from_secs(20);
        assert!(
            matches!(
                r.on_dial_failed(&reserved, later),
                Some(Decision::Redial { attempt: 21, .. })
            ),
            "the reserved peer is still retried"
        );
    }

    #[test]
    fn unwatched_peers_are_never_redialed() {
        let mut r = machine(None);
        let peer = PeerId::random();
        let t0 = Instant::now();
        r.watch(peer, [addr()], t0, true);
        assert!(r.unwatch(&peer));
        assert_eq!(r.on_disconnected(&peer, t0), None);
        assert_eq!(r.on_dial_failed(&peer, t0), None);
        assert!(r.poll_due(t0 + Duration::from_secs(3600)).is_empty());
        // Unwatching while a redial is pending cancels it.
        r.watch(peer, [addr()], t0, true);
        r.on_disconnected(&peer, t0);
        r.unwatch(&peer);
        assert!(r.poll_due(t0 + Duration::from_secs(3600)).is_empty());
        // Peers never watched are ignored.
        assert_eq!(r.on_disconnected(&PeerId::random(), t0), None);
    }

    #[test]
    fn failures_while_waiting_or_connected_change_nothing() {
        let mut r = machine(None);
        let peer = PeerId::random();
        let t0 = Instant::now();
        r.watch(peer, [addr()], t0, true);
        assert_eq!(
            r.on_dial_failed(&peer, t0),
            None,
            "a parallel dial failed while connected"
        );
        r.on_disconnected(&peer, t0);
        assert_eq!(r.on_dial_failed(&peer, t0), None, "already waiting");
        assert_eq!(r.next_due(), Some(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn addresses_are_bounded_and_deduplicated() {
        let mut r = machine(None);
        let peer = PeerId::random();
        let t0 = Instant::now();
        let addrs: Vec<Multiaddr> = (0..20)
            .map(|p| format!("/ip4/10.0.0.1/tcp/{p}").parse().unwrap())
            .collect();
        r.watch(peer, addrs.clone(), t0, false);
        r.watch(peer, addrs, t0, false);
        assert_eq!(r.idle_peers()[0].1.len(), MAX_ADDRESSES);
    }
}
