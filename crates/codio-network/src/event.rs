//! Events published by the network to its subscribers.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde::Serialize;

/// Direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// This node dialed.
    Outbound,
    /// The remote dialed.
    Inbound,
}

/// How a peer was discovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
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
///
/// Serialized (for logs and scripts) as an object tagged by `event` with the variant's name
/// in snake case; durations are whole milliseconds (`delay_ms`) or microseconds (`rtt_us`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
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
        /// Whether the connection runs through a relay.
        relayed: bool,
    },
    /// A connection answered its first ping: it carries traffic.
    #[serde(rename = "ping_answered")]
    ConnectionVerified {
        /// The peer.
        peer_id: PeerId,
        /// The round-trip time measured.
        #[serde(rename = "rtt_us", serialize_with = "codio_policy::ser::micros")]
        rtt: Duration,
        /// Whether the connection runs through a relay.
        relayed: bool,
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
    /// An inbound `/codio/1.0.0` request failed before it could be answered (malformed or
    /// oversized frame, truncated stream, slow sender hitting the timeout); its stream was
    /// reset, other streams are unaffected.
    InboundRequestFailed {
        /// The peer.
        peer_id: PeerId,
        /// What went wrong.
        error: String,
    },
    /// An outgoing connection attempt failed.
    DialFailed {
        /// The peer, when known.
        peer_id: Option<PeerId>,
        /// What went wrong.
        error: String,
    },
    /// A decision of the connection policy: a refused connection, a trimmed or dead peer,
    /// reconnection (answered pings come as [`ConnectionVerified`](Self::ConnectionVerified)).
    /// Serialized as the layer's event (`connection_denied`, `dead_peer`, …).
    #[serde(untagged)]
    Policy(codio_policy::Event),
    /// NAT traversal: AutoNAT's verdict, relay reservations, hole punching. Serialized as the
    /// layer's event (`nat_status`, `relay_reservation`, `hole_punch_succeeded`, …).
    #[serde(untagged)]
    Nat(codio_nat::Event),
}
