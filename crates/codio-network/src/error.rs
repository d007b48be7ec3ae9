//! Typed errors of the facade.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};

/// Errors of the [`NetworkManager`](crate::NetworkManager).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// A configuration value cannot work.
    #[error(transparent)]
    InvalidConfig(#[from] codio_base::InvalidConfig),
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

/// Why [`NetworkManager::find_peer`](crate::NetworkManager::find_peer) failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FindPeerError {
    /// The DHT did not find the peer.
    #[error(transparent)]
    Dht(#[from] codio_discovery::DhtError),
    /// The peer was found but connecting to it failed.
    #[error("peer found but connecting failed: {0}")]
    Connect(#[source] codio_transport::ConnectError),
}
