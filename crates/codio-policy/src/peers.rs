//! [`Peers`]: the table of connected peers the policy keeps as connections come and go,
//! pings are answered and peers identify themselves, and the connection counts; a cheap
//! handle any task can read.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use crate::ConnectionCounts;
use libp2p::{Multiaddr, PeerId, core::ConnectedPoint, swarm::ConnectionId};

/// Most addresses kept per peer in [`PeerInfo::addresses`].
pub const MAX_ADDRESSES_PER_PEER: usize = 32;

/// A connected peer as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer's identity.
    pub peer_id: PeerId,
    /// Known addresses (at most [`MAX_ADDRESSES_PER_PEER`]): remote addresses of outbound
    /// connections and the listen addresses the peer reported through identify, without
    /// duplicates.
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
    /// Whether the peer has been identified (identify reported its agent, protocols and
    /// listen addresses).
    pub fn identified(&self) -> bool {
        self.agent_version.is_some()
    }

    fn new(peer_id: PeerId, now: Instant) -> Self {
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

    /// Adds an address (without its `/p2p/` suffix) unless known or the list is full.
    fn add_address(&mut self, address: Multiaddr) {
        let address = codio_base::addr::without_p2p(address);
        if !self.addresses.contains(&address) && self.addresses.len() < MAX_ADDRESSES_PER_PEER {
            self.addresses.push(address);
        }
    }
}

/// A peer's row: what is shown, and its open connections (relayed or not).
#[derive(Debug)]
struct Row {
    info: PeerInfo,
    connections: HashMap<ConnectionId, bool>,
}

impl Row {
    fn refresh(&mut self) {
        self.info.connections = self.connections.len();
        self.info.relayed = self.connections.values().all(|relayed| *relayed);
    }
}

/// The connected peers, written by the policy [`Behaviour`](crate::Behaviour) (before the
/// swarm reports the matching event, so a reader that sees a connection event finds the table
/// up to date) and read through clones of this handle. Bounded by the connection limits: a
/// peer is removed with its last connection.
///
/// A panic while the lock is held cannot leave a row half-written in a way readers care about
/// (each update is one insert, remove or field write), so poisoning is ignored.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    rows: Arc<RwLock<HashMap<PeerId, Row>>>,
    counts: Arc<RwLock<ConnectionCounts>>,
}

impl Peers {
    /// Connection counts: established, pending, and the peak ever established.
    pub fn counts(&self) -> ConnectionCounts {
        *self.counts.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_counts(&self, counts: ConnectionCounts) {
        *self.counts.write().unwrap_or_else(PoisonError::into_inner) = counts;
    }

    /// Every connected peer.
    pub fn all(&self) -> Vec<PeerInfo> {
        let rows = self.rows.read().unwrap_or_else(PoisonError::into_inner);
        rows.values().map(|row| row.info.clone()).collect()
    }

    /// `peer_id`, if connected.
    pub fn get(&self, peer_id: &PeerId) -> Option<PeerInfo> {
        let rows = self.rows.read().unwrap_or_else(PoisonError::into_inner);
        rows.get(peer_id).map(|row| row.info.clone())
    }

    /// Whether `connection` is open and runs through a relay.
    pub fn is_relayed(&self, peer_id: &PeerId, connection: ConnectionId) -> bool {
        let rows = self.rows.read().unwrap_or_else(PoisonError::into_inner);
        rows.get(peer_id)
            .and_then(|row| row.connections.get(&connection))
            .is_some_and(|relayed| *relayed)
    }

    fn update<R>(&self, peer_id: &PeerId, f: impl FnOnce(&mut Row) -> R) -> Option<R> {
        let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
        rows.get_mut(peer_id).map(f)
    }

    pub(crate) fn on_established(
        &self,
        peer_id: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
        now: Instant,
    ) {
        let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
        let row = rows.entry(peer_id).or_insert_with(|| Row {
            info: PeerInfo::new(peer_id, now),
            connections: HashMap::new(),
        });
        row.connections.insert(connection, endpoint.is_relayed());
        row.info.last_seen = now;
        if let ConnectedPoint::Dialer { address, .. } = endpoint {
            row.info.add_address(address.clone());
        }
        row.refresh();
    }

    pub(crate) fn on_closed(&self, peer_id: &PeerId, connection: &ConnectionId) {
        let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(row) = rows.get_mut(peer_id) {
            row.connections.remove(connection);
            row.refresh();
            if row.connections.is_empty() {
                rows.remove(peer_id);
            }
        }
    }

    pub(crate) fn on_pong(&self, peer_id: &PeerId, rtt: Duration, now: Instant) {
        self.update(peer_id, |row| {
            row.info.last_seen = now;
            row.info.rtt = Some(rtt);
        });
    }

    /// What a connected peer told about itself through identify (other peers are ignored).
    pub(crate) fn on_identify(&self, peer_id: &PeerId, info: &libp2p::identify::Info) {
        let now = Instant::now();
        self.update(peer_id, |row| {
            row.info.last_seen = now;
            row.info.agent_version = Some(info.agent_version.clone());
            for address in &info.listen_addrs {
                row.info.add_address(address.clone());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::{
        core::{Endpoint, transport::PortUse},
        multiaddr::Protocol,
    };

    fn dialer(address: &Multiaddr) -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: address.clone(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    #[test]
    fn rows_follow_connections_and_bound_addresses() {
        let peers = Peers::default();
        let peer = PeerId::random();
        let now = Instant::now();
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let relayed: Multiaddr = format!("/ip4/127.0.0.1/tcp/2/p2p/{peer}/p2p-circuit")
            .parse()
            .unwrap();
        let (c1, c2) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        peers.on_established(peer, c1, &dialer(&relayed), now);
        assert!(peers.get(&peer).unwrap().relayed);
        peers.on_established(peer, c2, &dialer(&a.clone().with(Protocol::P2p(peer))), now);
        let info = peers.get(&peer).unwrap();
        assert_eq!((info.connections, info.relayed), (2, false));
        assert!(info.addresses.contains(&a), "{:?}", info.addresses);
        assert!(peers.is_relayed(&peer, c1) && !peers.is_relayed(&peer, c2));

        let many = (0..100u16).map(|port| format!("/ip4/10.0.0.1/tcp/{port}").parse().unwrap());
        let identify = libp2p::identify::Info {
            public_key: libp2p::identity::Keypair::generate_ed25519().public(),
            protocol_version: String::new(),
            agent_version: "agent".into(),
            listen_addrs: many.chain([a.clone()]).collect(),
            protocols: vec![],
            observed_addr: Multiaddr::empty(),
            signed_peer_record: None,
        };
        peers.on_identify(&peer, &identify);
        let info = peers.get(&peer).unwrap();
        assert_eq!(info.addresses.len(), MAX_ADDRESSES_PER_PEER);
        assert_eq!(info.agent_version.as_deref(), Some("agent"));

        peers.on_closed(&peer, &c2);
        assert!(peers.get(&peer).unwrap().relayed);
        peers.on_closed(&peer, &c1);
        assert!(peers.get(&peer).is_none() && peers.all().is_empty());
        peers.on_identify(&peer, &identify);
        assert!(
            peers.get(&peer).is_none(),
            "unconnected peers are not added"
        );
    }
}
