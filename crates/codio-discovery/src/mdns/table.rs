//! The peers mDNS found, pure state fed an [`Instant`]: bounded in total and per sender
//! address, each entry expiring after the sender's TTL capped by ours. When a bound is
//! reached the oldest entry of the sender (or of the busiest sender) goes, so a flood from
//! one host cannot keep a newcomer out for longer than the flood lasts.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId};

/// The bounds of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) max_peers: usize,
    pub(crate) max_per_source: usize,
    pub(crate) max_ttl: Duration,
}

/// A discovered peer.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) source: IpAddr,
    pub(crate) addresses: Vec<Multiaddr>,
    pub(crate) expires: Instant,
    /// When it was first found (what "oldest" means when shedding).
    found: Instant,
    /// Whether it is still to be dialed (new, new addresses, or a failed dial to retry).
    pub(crate) dial_due: bool,
    /// Not dialed before this (a retry waits).
    not_before: Instant,
    /// Dials that failed since it was found or moved.
    failures: u8,
}

/// Dials retried after a failure at most (two nodes that find each other at once dial each
/// other at once; with the listen port reused for dialing, both dials can fail).
pub(crate) const MAX_DIAL_FAILURES: u8 = 3;

/// What an announcement did to the table.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A peer not in the table (`shed`: the entry that made room for it).
    Added { shed: Option<PeerId> },
    /// Known, with other addresses now.
    Moved,
    /// Known, same addresses: only its expiry moved.
    Refreshed,
    /// A TTL of zero: the peer said goodbye and was removed.
    Removed,
    /// A TTL of zero for a peer not in the table.
    Ignored,
}

/// The discovered peers.
#[derive(Debug)]
pub(crate) struct Table {
    bounds: Bounds,
    entries: HashMap<PeerId, Entry>,
}

impl Table {
    pub(crate) fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            entries: HashMap::new(),
        }
    }

    /// `peer` announced itself from `source` at `addresses` for `ttl`, at `now`.
    pub(crate) fn announce(
        &mut self,
        peer: PeerId,
        source: IpAddr,
        addresses: Vec<Multiaddr>,
        ttl: Duration,
        now: Instant,
    ) -> Change {
        if ttl.is_zero() {
            return match self.entries.remove(&peer) {
                Some(_) => Change::Removed,
                None => Change::Ignored,
            };
        }
        let expires = now + ttl.min(self.bounds.max_ttl);
        if let Some(entry) = self.entries.get_mut(&peer) {
            // The entry stays counted against the sender that first announced it: a flood
            // from another address cannot pull a peer into its own share to shed it.
            entry.expires = expires;
            if entry.addresses == addresses {
                return Change::Refreshed;
            }
            entry.addresses = addresses;
            entry.dial_due = true;
            entry.not_before = now;
            entry.failures = 0;
            return Change::Moved;
        }
        let shed = self.make_room(source);
        let entry = Entry {
            source,
            addresses,
            expires,
            found: now,
            dial_due: true,
            not_before: now,
            failures: 0,
        };
        self.entries.insert(peer, entry);
        Change::Added { shed }
    }

    /// Removes the oldest entry of `source` if it is at its bound, else the oldest of the
    /// busiest source if the table is full.
    fn make_room(&mut self, source: IpAddr) -> Option<PeerId> {
        let victim_source = if self.count(source) >= self.bounds.max_per_source.max(1) {
            source
        } else if self.entries.len() >= self.bounds.max_peers.max(1) {
            self.busiest()?.0
        } else {
            return None;
        };
        let oldest = self
            .entries
            .iter()
            .filter(|(_, e)| e.source == victim_source)
            .min_by_key(|(_, e)| e.found)
            .map(|(peer, _)| *peer)?;
        self.entries.remove(&oldest);
        Some(oldest)
    }

    fn count(&self, source: IpAddr) -> usize {
        self.entries.values().filter(|e| e.source == source).count()
    }

    /// The source holding the most entries, and how many.
    fn busiest(&self) -> Option<(IpAddr, usize)> {
        let mut counts: HashMap<IpAddr, usize> = HashMap::new();
        for entry in self.entries.values() {
            *counts.entry(entry.source).or_default() += 1;
        }
        counts.into_iter().max_by_key(|(_, n)| *n)
    }

    /// Removes and returns the peers whose entries expired by `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let expired: Vec<PeerId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &expired {
            self.entries.remove(peer);
        }
        expired
    }

    /// When the next entry expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.expires).min()
    }

    /// The longest-known peer whose dial is due at `now` (marked done), with its addresses:
    /// a flood of fresh announcements, shed as it goes, cannot keep a steady peer's dial
    /// waiting.
    pub(crate) fn take_dial(&mut self, now: Instant) -> Option<(PeerId, Vec<Multiaddr>)> {
        let (peer, entry) = self
            .entries
            .iter_mut()
            .filter(|(_, e)| e.dial_due && e.not_before <= now)
            .min_by_key(|(_, e)| e.found)?;
        entry.dial_due = false;
        Some((*peer, entry.addresses.clone()))
    }

    /// Marks `peer`'s dial due again (the dial rate held it back).
    pub(crate) fn redial(&mut self, peer: PeerId) {
        if let Some(entry) = self.entries.get_mut(&peer) {
            entry.dial_due = true;
        }
    }

    /// A dial of `peer` failed at `now`: retried after `delay`, up to
    /// [`MAX_DIAL_FAILURES`] times.
    pub(crate) fn dial_failed(&mut self, peer: &PeerId, now: Instant, delay: Duration) {
        if let Some(entry) = self.entries.get_mut(peer)
            && entry.failures < MAX_DIAL_FAILURES
        {
            entry.failures += 1;
            entry.dial_due = true;
            entry.not_before = now + delay;
        }
    }

    /// When the next due dial may go.
    pub(crate) fn next_dial(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.dial_due)
            .map(|e| e.not_before)
            .min()
    }

    /// The addresses of `peer`, if it is in the table.
    pub(crate) fn addresses(&self, peer: &PeerId) -> Option<&[Multiaddr]> {
        self.entries.get(peer).map(|e| e.addresses.as_slice())
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The most entries one source holds.
    pub(crate) fn busiest_count(&self) -> usize {
        self.busiest().map_or(0, |(_, n)| n)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn table(max_peers: usize, max_per_source: usize) -> Table {
        Table::new(Bounds {
            max_peers,
            max_per_source,
            max_ttl: 6 * MINUTE,
        })
    }

    fn address(port: u16) -> Vec<Multiaddr> {
        vec![format!("/ip4/10.0.0.1/tcp/{port}").parse().unwrap()]
    }

    #[test]
    fn a_flood_from_one_source_sheds_its_own_oldest_and_keeps_the_rest() {
        let now = Instant::now();
        let mut table = table(10, 3);
        let good = PeerId::random();
        table.announce(good, ip(1), address(1), MINUTE, now);
        let mut fakes = Vec::new();
        for n in 0..50u64 {
            let fake = PeerId::random();
            let at = now + Duration::from_millis(n);
            let change = table.announce(fake, ip(9), address(2), MINUTE, at);
            let shed = (n >= 3).then(|| fakes[usize::try_from(n).unwrap() - 3]);
            assert_eq!(change, Change::Added { shed });
            fakes.push(fake);
        }
        assert_eq!(table.len(), 4, "the good peer and the flood's 3");
        assert!(table.addresses(&good).is_some());
        assert_eq!(table.busiest_count(), 3);
    }

    #[test]
    fn a_full_table_sheds_the_busiest_sources_oldest() {
        let now = Instant::now();
        let mut table = table(4, 3);
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        table.announce(peers[0], ip(1), address(1), MINUTE, now);
        for (n, peer) in peers[1..].iter().enumerate() {
            let at = now + Duration::from_millis(n as u64 + 1);
            table.announce(*peer, ip(2), address(1), MINUTE, at);
        }
        let newcomer = PeerId::random();
        let change = table.announce(newcomer, ip(3), address(1), MINUTE, now + MINUTE / 2);
        assert_eq!(
            change,
            Change::Added {
                shed: Some(peers[1])
            }
        );
        assert_eq!(table.len(), 4);
    }

    #[test]
    fn the_senders_ttl_is_capped_and_zero_says_goodbye() {
        let now = Instant::now();
        let mut table = table(10, 10);
        let peer = PeerId::random();
        let forever = Duration::from_secs(u64::from(u32::MAX));
        table.announce(peer, ip(1), address(1), forever, now);
        assert_eq!(table.next_expiry(), Some(now + 6 * MINUTE));
        assert!(
            table
                .expire(now + 6 * MINUTE - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(table.expire(now + 6 * MINUTE), vec![peer]);
        assert_eq!(table.len(), 0);
        table.announce(peer, ip(1), address(1), MINUTE, now);
        assert_eq!(
            table.announce(peer, ip(1), address(1), Duration::ZERO, now),
            Change::Removed
        );
        assert_eq!(
            table.announce(peer, ip(1), address(1), Duration::ZERO, now),
            Change::Ignored
        );
    }

    #[test]
    fn a_dial_is_due_once_per_new_peer_or_new_addresses() {
        let now = Instant::now();
        let mut table = table(10, 10);
        let peer = PeerId::random();
        table.announce(peer, ip(1), address(1), MINUTE, now);
        assert_eq!(table.take_dial(now), Some((peer, address(1))));
        assert_eq!(table.take_dial(now), None);
        assert_eq!(
            table.announce(peer, ip(1), address(1), MINUTE, now),
            Change::Refreshed
        );
        assert_eq!(table.take_dial(now), None);
        assert_eq!(
            table.announce(peer, ip(1), address(2), MINUTE, now),
            Change::Moved
        );
        assert_eq!(table.take_dial(now), Some((peer, address(2))));
    }

    #[test]
    fn the_longest_known_peer_is_dialed_first() {
        let now = Instant::now();
        let mut table = table(10, 10);
        let steady = PeerId::random();
        for n in 0..5u64 {
            let at = now + Duration::from_millis(n + 1);
            table.announce(PeerId::random(), ip(9), address(1), MINUTE, at);
        }
        table.announce(steady, ip(1), address(1), MINUTE, now);
        assert_eq!(table.take_dial(now).map(|(peer, _)| peer), Some(steady));
    }

    #[test]
    fn a_failed_dial_is_retried_later_a_few_times() {
        let now = Instant::now();
        let mut table = table(10, 10);
        let peer = PeerId::random();
        table.announce(peer, ip(1), address(1), MINUTE, now);
        let second = Duration::from_secs(1);
        let mut at = now;
        for _ in 0..MAX_DIAL_FAILURES {
            assert_eq!(table.take_dial(at), Some((peer, address(1))));
            table.dial_failed(&peer, at, second);
            assert_eq!(table.next_dial(), Some(at + second));
            assert_eq!(table.take_dial(at), None, "not before the delay");
            at += second;
        }
        assert_eq!(table.take_dial(at), Some((peer, address(1))));
        table.dial_failed(&peer, at, second);
        assert_eq!(table.next_dial(), None, "given up");
    }
}
