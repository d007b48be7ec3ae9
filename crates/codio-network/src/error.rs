//! Typed errors of the facade.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};

/// Why [`NetworkManager::connect_peer`](crate::NetworkManager::connect_peer) failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// The address cannot be dialed (no transport for it, or malformed).
    #[error("address {address} cannot be dialed: {reason}")]
    InvalidAddress {
        /// The address given.
        address: Multiaddr,
        /// Why it cannot be dialed.
        reason: String,
    },
    /// The remote proved a different identity than the `/p2p/` suffix of the address.
    #[error("dialed {address} expecting {expected} but the remote is {obtained}")]
    WrongPeerId {
        /// The peer id in the address.
        expected: PeerId,
        /// The peer id the remote proved in the handshake.
        obtained: PeerId,
        /// The address dialed.
        address: Multiaddr,
    },
    /// The address belongs to this node.
    #[error("{address} is this node's own address")]
    LocalPeerId {
        /// The address dialed.
        address: Multiaddr,
    },
    /// The connection was not established within the connect timeout.
    #[error("connecting to {address} timed out after {after:?}")]
    Timeout {
        /// The address dialed.
        address: Multiaddr,
        /// The timeout that expired.
        after: Duration,
    },
    /// The remote could not be reached (refused, unreachable, handshake failure).
    #[error("{address} is unreachable: {reason}")]
    Unreachable {
        /// The address dialed.
        address: Multiaddr,
        /// The transport's description of the failure.
        reason: String,
    },
    /// A local policy denied the connection (for instance the connection limit).
    #[error("connection to {address} denied: {reason}")]
    Denied {
        /// The address dialed.
        address: Multiaddr,
        /// Which limit or policy denied it.
        reason: String,
    },
    /// The dial was aborted before it completed (for instance the peer was disconnected).
    #[error("dial to {address} was aborted")]
    Aborted {
        /// The address dialed.
        address: Multiaddr,
    },
    /// The network has shut down.
    #[error("the network has shut down")]
    ShutDown,
}

/// Errors of the [`NetworkManager`](crate::NetworkManager).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// A configuration value cannot work.
    #[error("invalid configuration field `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The transport could not be built.
    #[error("building the transport: {0}")]
    Transport(#[from] codio_transport::TransportBuildError),
    /// The discovery layer could not be set up (for instance mDNS sockets).
    #[error("setting up discovery: {0}")]
    Discovery(#[source] codio_discovery::DiscoveryError),
    /// Listening on the configured address failed.
    #[error("listening on {address}: {reason}")]
    Listen {
        /// The address.
        address: Multiaddr,
        /// Why it failed.
        reason: String,
    },
    /// [`NetworkManager::start`](crate::NetworkManager::start) was called twice.
    #[error("the network is already started")]
    AlreadyStarted,
    /// The peer is not connected.
    #[error("peer {0} is not connected")]
    NotConnected(PeerId),
    /// An operation did not complete in time.
    #[error("{operation} did not complete within {after:?}")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The network has shut down (or its event loop stopped).
    #[error("the network has shut down")]
    ShutDown,
}

/// Why a DHT operation ([`find_peer`](crate::NetworkManager::find_peer),
/// [`closest_peers`](crate::NetworkManager::closest_peers),
/// [`provide`](crate::NetworkManager::provide),
/// [`find_providers`](crate::NetworkManager::find_providers)) failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DhtError {
    /// The query did not finish in time.
    #[error("the DHT query timed out after {after:?}")]
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// The DHT knows no address of the peer.
    #[error("peer {0} was not found in the DHT")]
    NotFound(PeerId),
    /// The routing table is empty: the node knows no DHT peer to ask.
    #[error("no known DHT peers")]
    NoKnownPeers,
    /// The peer was found but connecting to it failed.
    #[error("peer found but connecting failed: {0}")]
    Connect(#[source] ConnectError),
    /// The local record store refused the record.
    #[error("record store: {0}")]
    Store(String),
    /// The network has shut down.
    #[error("the network has shut down")]
    ShutDown,
}
