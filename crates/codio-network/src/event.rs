//! Events published by the network to its subscribers.

use libp2p::{Multiaddr, PeerId};

/// Direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// This node dialed.
    Outbound,
    /// The remote dialed.
    Inbound,
}

/// How a peer was discovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoverySource {
    /// mDNS on the local network.
    Mdns,
    /// The Kademlia DHT (the peer entered the routing table).
    Dht,
}

/// Something that happened in the network.
///
/// Subscribe with [`NetworkManager::subscribe`](crate::NetworkManager::subscribe). Events are
/// published after the state that [`NetworkManager::connected_peers`](crate::NetworkManager::connected_peers)
/// reads has been updated, so a subscriber that sees [`NetworkEvent::PeerConnected`] also finds
/// the peer there.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetworkEvent {
    /// The node listens on a new address.
    Listening {
        /// The address.
        address: Multiaddr,
    },
    /// The node no longer listens on an address.
    ListenAddressExpired {
        /// The address.
        address: Multiaddr,
    },
    /// The first connection to a peer was established.
    PeerConnected {
        /// The peer.
        peer_id: PeerId,
        /// The remote address of the connection.
        address: Multiaddr,
        /// Who dialed.
        direction: Direction,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer_id: PeerId,
        /// Why, when the connection closed because of an error.
        cause: Option<String>,
    },
    /// A peer told us who it is (identify).
    PeerIdentified {
        /// The peer.
        peer_id: PeerId,
        /// Its agent version string.
        agent_version: String,
        /// The addresses it listens on.
        listen_addrs: Vec<Multiaddr>,
    },
    /// A peer was discovered.
    PeerDiscovered {
        /// The peer.
        peer_id: PeerId,
        /// Its addresses as discovered.
        addresses: Vec<Multiaddr>,
        /// How.
        source: DiscoverySource,
    },
    /// An outgoing connection attempt failed.
    DialFailed {
        /// The peer, when known.
        peer_id: Option<PeerId>,
        /// What went wrong.
        error: String,
    },
}
