//! Publish/subscribe for codio nodes on libp2p gossipsub: the control plane of a CDN
//! (announce new content, purge stale content, share load figures) as topics.
//!
//! - Messages are signed by their author and checked before anything else sees them
//!   (gossipsub's strict validation); a message's payload is bounded
//!   ([`PubsubConfig::with_max_message_bytes`]), and so is what each peer may forward us per
//!   second ([`PubsubConfig::with_peer_rate`]); replays within the duplicate cache are dropped.
//! - Peers are scored ([`score`], shaped after Lighthouse's tuned parameters): a peer that
//!   forwards messages the application rejects loses its score, is pruned from the mesh at
//!   the next heartbeat, then no longer gets gossip, then is ignored (graylisted).
//! - The application judges each topic's messages with a [`Validator`] returning an
//!   [`Acceptance`] (accept, ignore, reject), which feeds the score.
//! - A node that has not joined a topic opens no gossipsub stream ([`Handler`]): pub/sub costs
//!   an idle connection nothing until it is used (it cost 32 KiB of stream buffers before).
//! - Topics are handles: [`Pubsub::join`] returns a [`Topic`] that publishes and reads the
//!   topic's [`TopicEvent`]s (messages, mesh changes, subscriptions) from a bounded buffer
//!   that drops the oldest for a slow reader.
//!
//! [`Behaviour`] is a plain libp2p [`NetworkBehaviour`](libp2p::swarm::NetworkBehaviour)
//! and works in any swarm:
//!
//! ```
//! use codio_pubsub::{Behaviour, PubsubConfig, PubsubError};
//! use futures::StreamExt;
//! use libp2p::{Swarm, identity, swarm};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keypair = identity::Keypair::generate_ed25519();
//! let peer_id = keypair.public().to_peer_id();
//! let behaviour = Behaviour::new(&keypair, PubsubConfig::default())?;
//! let pubsub = behaviour.pubsub();
//! let mut swarm = Swarm::new(
//!     codio_transport::build_transport(&keypair, &Default::default())?,
//!     behaviour,
//!     peer_id,
//!     swarm::Config::with_tokio_executor(),
//! );
//! tokio::spawn(async move { while swarm.next().await.is_some() {} });
//!
//! let topic = pubsub.join("content/announce").await?;
//! assert_eq!(topic.name(), "content/announce");
//! // Alone on the network, nobody is subscribed yet.
//! assert!(matches!(topic.publish("new: /videos/1").await, Err(PubsubError::NoPeers)));
//! # Ok(())
//! # }
//! ```

mod behaviour;
mod config;
mod error;
mod handler;
mod mesh;
pub mod score;
mod ser;
mod stats;
mod topic;

pub use behaviour::{Behaviour, Event};
pub use config::PubsubConfig;
pub use error::PubsubError;
pub use handler::{Handler, HandlerIn};
pub use libp2p::gossipsub::MessageId;
pub use mesh::MeshChange;
pub use stats::{Refusal, Stats};
pub use topic::{Acceptance, Message, Pubsub, Topic, TopicEvent, Validator};
