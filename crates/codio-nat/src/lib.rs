//! NAT traversal for codio nodes, as one behaviour: the relay v2 client (reach and be reached
//! through relays), an optional relay server, AutoNAT (am I reachable?), DCUtR (hole punching
//! that upgrades relayed connections to direct ones) and [`autorelay`] (reserve relay slots
//! when AutoNAT finds the node private; rust-libp2p has relay, AutoNAT and DCUtR, but nothing
//! that ties them together), with the glue between them: AutoNAT's verdict drives AutoRelay,
//! accepted reservations are recorded, configured external addresses are confirmed.
//!
//! The relay client's transport half must be part of the swarm's transport
//! (`codio_transport::build_with_relay` builds both); pass its behaviour half to
//! [`Behaviour::new`]. Feed identify results to [`Behaviour::on_identify`] so relays that
//! advertise the HOP protocol become candidates.
//!
//! ```
//! use codio_nat::{Behaviour, NatConfig};
//! use libp2p::PeerId;
//!
//! // Without the relay client: AutoNAT only (and a relay server if configured).
//! let nat = Behaviour::new(PeerId::random(), &NatConfig::default(), None).unwrap();
//! assert_eq!(nat.stats().hole_punches(), (0, 0));
//! ```
//!
//! Which connections a node keeps, and from whom it accepts them, is the policy layer's
//! (`codio-policy`); this crate only adds the ways to reach and be reached.

pub mod autorelay;
mod behaviour;
mod config;
mod stats;

pub use behaviour::{Behaviour, Event, NatStatus, SharedStatus};
pub use codio_base::InvalidConfig;
pub use config::{AutonatSettings, NatConfig, RelayServerLimits};
pub use stats::Stats;
