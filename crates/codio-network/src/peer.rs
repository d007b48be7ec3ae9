//! [`PeerInfo`]: what the node knows about a connected peer.

use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

/// A connected peer as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer's identity.
    pub peer_id: PeerId,
    /// Known addresses: remote addresses of outbound connections and the listen addresses the
    /// peer reported through identify, without duplicates.
    pub addresses: Vec<Multiaddr>,
    /// When the first of the current connections was established.
    pub connection_time: Instant,
    /// When the peer was last heard from (connection, ping reply, identify).
    pub last_seen: Instant,
    /// Number of open connections to the peer.
    pub connections: usize,
    /// Agent version reported by identify, once identified.
    pub agent_version: Option<String>,
    /// Last measured ping round-trip time.
    pub rtt: Option<Duration>,
    /// Whether every connection to the peer runs through a relay (no direct connection).
    pub relayed: bool,
}

impl PeerInfo {
    pub(crate) fn new(peer_id: PeerId, now: Instant) -> Self {
        Self {
            peer_id,
            addresses: Vec::new(),
            connection_time: now,
            last_seen: now,
            connections: 0,
            agent_version: None,
            rtt: None,
            relayed: false,
        }
    }

    /// Adds an address (without its `/p2p/` suffix) unless already known; keeps at most
    /// `limit` addresses.
    pub(crate) fn add_address(&mut self, address: Multiaddr, limit: usize) {
        let address = crate::without_p2p(address);
        if !self.addresses.contains(&address) && self.addresses.len() < limit {
            self.addresses.push(address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::multiaddr::Protocol;

    #[test]
    fn addresses_are_deduplicated_and_bounded() {
        let mut info = PeerInfo::new(PeerId::random(), Instant::now());
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let b: Multiaddr = "/ip4/127.0.0.1/tcp/2".parse().unwrap();
        let c: Multiaddr = "/ip4/127.0.0.1/tcp/3".parse().unwrap();
        info.add_address(a.clone(), 2);
        info.add_address(a.clone(), 2);
        info.add_address(b.clone(), 2);
        info.add_address(c, 2);
        assert_eq!(info.addresses, vec![a.clone(), b.clone()]);
        let mut info = PeerInfo::new(PeerId::random(), Instant::now());
        let peer = PeerId::random();
        info.add_address(a.clone().with(Protocol::P2p(peer)), 2);
        info.add_address(a.clone(), 2);
        assert_eq!(info.addresses, vec![a]);
    }
}
