//! The codio network facade.
//!
//! [`NetworkManager`] is a cheap, cloneable handle to a node whose libp2p [`Swarm`] runs in its
//! own task (the *event loop*). Methods send a command over a bounded queue and await the reply
//! the event loop sends back when libp2p reports the outcome; the event loop publishes
//! [`NetworkEvent`]s to every [`subscribe`](NetworkManager::subscribe)r and keeps the
//! [`PeerInfo`](policy::PeerInfo) table that [`connected_peers`](NetworkManager::connected_peers) reads.
//!
//! The facade only composes. Every engine lives in its layer: the authenticated, multiplexed
//! transport of [`codio_transport`]; connection policy and liveness (ping) of
//! [`codio_policy`]; NAT traversal (relay, AutoNAT, hole punching) of [`codio_nat`];
//! discovery of [`codio_discovery`] (mDNS, Kademlia, bootstrap peers); requests, RPC sessions
//! and bulk streams of [`codio_protocol`]; publish/subscribe of [`codio_pubsub`].
//! [`NetworkConfig`] is made of the layers' configurations; [`NodeBuilder`] registers the
//! handlers of inbound requests and bulk transfers when the node is built. The root holds the
//! essentials; each layer's names are in a module of their own ([`transport`], [`discovery`],
//! [`policy`], [`nat`], [`protocol`], [`pubsub`]), and [`prelude`] has what most programs use.
//!
//! ```
//! use codio_network::{NetworkConfig, NetworkEvent, NetworkManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // On this host only: 127.0.0.1, no mDNS, no relay client.
//! let a = NetworkManager::new(NetworkConfig::loopback()).await?;
//! let b = NetworkManager::new(NetworkConfig::loopback()).await?;
//! a.start().await?;
//!
//! let mut events = a.subscribe();
//! let peer = b.connect_peer(a.dial_addr().expect("listening")).await?;
//! assert_eq!(peer, a.local_peer_id());
//! assert!(b.connected_peers().iter().any(|p| p.peer_id == peer));
//! loop {
//!     if let NetworkEvent::PeerConnected { peer_id, .. } = events.recv().await? {
//!         assert_eq!(peer_id, b.local_peer_id());
//!         break;
//!     }
//! }
//! b.shutdown().await;
//! a.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`Swarm`]: libp2p::Swarm

mod behaviour;
mod build;
mod config;
mod error;
mod event;
mod event_loop;
mod manager;
pub mod metrics;

pub use build::NodeBuilder;
pub use codio_base::{Edit, addr::with_p2p};
pub use codio_transport::ConnectError;
pub use config::NetworkConfig;
pub use error::{FindPeerError, NetworkError};
pub use event::{Direction, DiscoverySource, NetworkEvent};
pub use libp2p::{Multiaddr, PeerId, identity::Keypair, multiaddr::Protocol};
pub(crate) use manager::Commands;
pub use manager::NetworkManager;

/// Transport settings: TCP and QUIC, security, Yamux, the inbound gate, a private network key.
pub mod transport {
    pub use codio_transport::{InboundLimits, PreSharedKey, QuicConfig, TransportConfig};
}

/// Discovery: mDNS, the Kademlia DHT and its lookups, content routing (providers).
pub mod discovery {
    pub use codio_discovery::{
        DhtError, DiscoveryConfig, KadMode, Lookup, Provider, ProviderStream, mdns::MdnsConfig,
    };
}

/// Connection policy: limits, eviction, watermarks, reconnection, liveness and access rules.
pub mod policy {
    pub use codio_policy::{
        Access, AccessConfig, AccessMode, BackoffConfig, ConnectionCounts, ConnectionGate, Denial,
        Event, LimitsConfig, MemoryLimit, PeerInfo, PolicyConfig, Verdict,
    };
}

/// NAT traversal: AutoNAT, relays, hole punching.
pub mod nat {
    pub use codio_nat::{AutonatSettings, Event, NatConfig, NatStatus, RelayServerLimits};
}

/// The `/codio/1.0.0` protocol: typed requests and responses, their handlers, bulk transfers.
pub mod protocol {
    pub use codio_protocol::bulk::{BulkError, BulkHeader, IncomingBulk};
    pub use codio_protocol::{
        ContentId, ErrorCode, InboundRequest, MAX_TOPIC_LEN, Metadata, ProtocolConfig, Request,
        RequestError, RequestHandler, RespondError, Responder, Response, serve,
    };
}

/// Publish/subscribe: topics, messages, validation.
pub mod pubsub {
    pub use codio_pubsub::{
        Acceptance, MeshChange, Message, PubsubConfig, PubsubError, Topic, TopicEvent, Validator,
    };
}

/// What most programs need, in one import: `use codio_network::prelude::*;`.
pub mod prelude {
    pub use crate::protocol::{Request, Response};
    pub use crate::{
        Edit, Multiaddr, NetworkConfig, NetworkError, NetworkEvent, NetworkManager, NodeBuilder,
        PeerId,
    };
}

/// The README's library snippet, compiled as a doc test.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
