//! The errors of the discovery layer.

/// Errors of the discovery layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// mDNS could not be set up.
    #[error("mDNS: {0}")]
    Mdns(#[source] std::io::Error),
    /// A bootstrap address lacks the `/p2p/<peer id>` suffix.
    #[error("{0} has no /p2p/<peer id> suffix")]
    MissingPeerId(libp2p::Multiaddr),
    /// A setting cannot work.
    #[error(transparent)]
    InvalidConfig(#[from] codio_base::InvalidConfig),
    /// The routing table is empty, so no query can start.
    #[error("no known peers in the routing table")]
    NoKnownPeers,
    /// The local record store refused the record.
    #[error("record store: {0}")]
    Store(String),
}

/// Why a DHT query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The query did not finish within the configured query timeout.
    #[error("the DHT query timed out")]
    Timeout,
    /// The query reached no peer.
    #[error("the DHT query reached no peer")]
    NoPeerReached,
}
