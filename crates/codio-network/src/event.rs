//! Events published by the network to its subscribers.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId, core::Endpoint};
use serde::Serialize;

use crate::NatStatus;

/// Durations as whole milliseconds in serialized events.
fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Durations as whole microseconds in serialized events.
fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// This node dialed.
    Outbound,
    /// The remote dialed.
    Inbound,
}

impl Direction {
    /// The direction of a connection on which this node is `endpoint`.
    pub fn of(endpoint: Endpoint) -> Self {
        match endpoint {
            Endpoint::Dialer => Direction::Outbound,
            Endpoint::Listener => Direction::Inbound,
        }
    }
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
        #[serde(rename = "rtt_us", serialize_with = "micros")]
        rtt: Duration,
        /// Whether the connection runs through a relay.
        relayed: bool,
    },
    /// AutoNAT's verdict on this node's reachability changed.
    #[serde(rename = "nat_status")]
    NatStatusChanged {
        /// The new status.
        #[serde(flatten)]
        status: NatStatus,
    },
    /// A relay accepted (or renewed) this node's reservation: the node is reachable through it.
    #[serde(rename = "relay_reservation")]
    RelayReservationAccepted {
        /// The relay.
        relay: PeerId,
        /// Whether this renewed an existing reservation.
        renewal: bool,
    },
    /// Hole punching upgraded a relayed connection to a direct one.
    HolePunchSucceeded {
        /// The peer.
        peer_id: PeerId,
    },
    /// Hole punching failed; the connection stays relayed.
    HolePunchFailed {
        /// The peer.
        peer_id: PeerId,
        /// Why.
        error: String,
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
    /// The connection policy refused a connection.
    ConnectionDenied {
        /// The peer, when known at that stage (inbound connections are refused before the
        /// handshake when possible).
        peer_id: Option<PeerId>,
        /// Who dialed.
        direction: Direction,
        /// Which limit refused it.
        reason: String,
    },
    /// A connection was closed to bring the node back under its low watermark.
    PeerTrimmed {
        /// The peer.
        peer_id: PeerId,
    },
    /// A connection was closed because the peer stopped answering pings.
    DeadPeer {
        /// The peer.
        peer_id: PeerId,
        /// Consecutive failed pings reported (0: silent for the whole liveness window).
        failures: u32,
    },
    /// A peer that matters will be dialed again.
    Reconnecting {
        /// The peer.
        peer_id: PeerId,
        /// Which attempt (1-based).
        attempt: u32,
        /// Delay before the dial.
        #[serde(rename = "delay_ms", serialize_with = "millis")]
        delay: Duration,
    },
    /// A peer that matters is connected again after `attempts` attempts.
    Reconnected {
        /// The peer.
        peer_id: PeerId,
        /// Attempts it took.
        attempts: u32,
    },
    /// Reconnection to a peer stopped after the configured number of attempts.
    ReconnectGaveUp {
        /// The peer.
        peer_id: PeerId,
        /// Failed attempts.
        attempts: u32,
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
}
