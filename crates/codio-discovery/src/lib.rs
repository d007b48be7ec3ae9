//! Peer discovery for codio nodes: mDNS on the local network, a Kademlia DHT for global
//! discovery and content routing, and bootstrap peers to join it through.
//!
//! [`Behaviour`] is a plain libp2p [`NetworkBehaviour`](libp2p::swarm::NetworkBehaviour) and
//! works in any swarm:
//!
//! - peers found by mDNS are added to the routing table and dialed (connection limits of the
//!   surrounding swarm apply to those dials like to any other);
//! - [`Behaviour::on_identify`] is the identify → Kademlia glue: Kademlia learns no listen
//!   address of peers that dialed us, so the addresses they report through identify are added
//!   when they speak our Kademlia protocol;
//! - [`Behaviour::start`] adds the bootstrap peers to the routing table and bootstraps the
//!   DHT, which contacts them; Kademlia then bootstraps periodically (keeping bootstrap peers
//!   connected is the reconnection policy's job, in `codio-policy`);
//! - DHT operations ([`closest_peers`](Behaviour::closest_peers),
//!   [`find_peer`](Behaviour::find_peer), [`start_providing`](Behaviour::start_providing),
//!   [`providers`](Behaviour::providers)) return a query id whose single final outcome arrives
//!   as an [`Event`]; or, through a [`Dht`] handle ([`Behaviour::dht`]), as `async` calls
//!   that return the outcome with a typed [`DhtError`].
//!
//! ```
//! use codio_discovery::{Behaviour, DiscoveryConfig, KadMode};
//! use libp2p::{Swarm, identity, swarm};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keypair = identity::Keypair::generate_ed25519();
//! let peer_id = keypair.public().to_peer_id();
//! let config = DiscoveryConfig::default()
//!     .with_mdns(false)
//!     .with_kad_mode(KadMode::Server)
//!     .with_bootstrap_peers([format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", identity::PeerId::random()).parse()?])?;
//! let mut swarm = Swarm::new(
//!     codio_transport::build_transport(&keypair, &Default::default())?,
//!     Behaviour::new(peer_id, config)?,
//!     peer_id,
//!     swarm::Config::with_tokio_executor(),
//! );
//! swarm.behaviour_mut().start();
//! assert_eq!(swarm.behaviour_mut().routing_table_size(), 1);
//! # Ok(())
//! # }
//! ```

mod behaviour;
mod config;
mod dht;
mod error;
pub mod identify;
pub mod mdns;
pub mod providers;
mod stats;
pub mod store;

pub use behaviour::{Behaviour, Event, Source};
pub use config::{DiscoveryConfig, KadMode, split_peer_id};
pub use dht::{Dht, DhtError, Lookup};
pub use error::{DiscoveryError, QueryError};
pub use libp2p::kad::{Mode, PeerInfo, QueryId, QueryStats};
pub use providers::{Provider, ProviderStream, RttSource, rank};
pub use stats::Stats;
pub use store::{Store, StoreLimits};
