//! Connection policy for codio nodes: limits, watermarks, reconnection with backoff and dead
//! peer detection.
//!
//! The decisions live in pure state machines that take the current [`Instant`] as an argument
//! and never touch a socket, so they are tested with a fake clock:
//!
//! - [`ConnectionTable`]: admission (hard ceiling, pending bounds, per-peer bound, protected
//!   allowance) and watermark trimming;
//! - [`Reconnector`]: which peers to dial again and when (exponential backoff with jitter,
//!   reset after a stable connection, optional give-up);
//! - [`Liveness`]: ping failures and silence that declare a connection dead.
//!
//! [`Behaviour`] drives them from a swarm: put it first in a composed behaviour. It keeps
//! the table of connected peers ([`Peers`]: connections, RTT, identify) that applications read.
//!
//! [`Behaviour`] also runs libp2p ping on every connection and feeds it to [`Liveness`]: the
//! ping → liveness glue lives here, not in the application.
//!
//! Access rules ([`Access`]): allow and deny lists, reserved-only mode, a connection gate hook.
//!
//! NAT traversal (AutoNAT, relays, hole punching) is a layer of its own, `codio-nat`.
//!
//! ```
//! use codio_policy::{BackoffConfig, Behaviour, LimitsConfig, PolicyConfig};
//! use std::time::Duration;
//!
//! let policy = Behaviour::new(
//!     PolicyConfig::default()
//!         .with_limits(LimitsConfig::new(8).with_watermarks(4, 6))
//!         .with_backoff(BackoffConfig::default().with_min(Duration::from_millis(100)))
//!         .with_liveness(Duration::from_secs(1), Duration::from_secs(1), 2),
//! );
//! assert_eq!(policy.counts().established, 0);
//! ```
//!
//! [`Instant`]: std::time::Instant

pub mod access;
mod backoff;
mod behaviour;
mod error;
mod handler;
mod limits;
mod liveness;
mod peers;
mod reconnect;
#[cfg(feature = "serde")]
pub mod ser;
mod sources;
mod stats;
mod throttle;

pub use access::{Access, AccessConfig, AccessMode, ConnectionGate, Refusal, Verdict};
pub use backoff::{BackoffConfig, Rng};
pub use behaviour::{Behaviour, Event, PolicyConfig};
pub use error::InvalidConfig;
pub(crate) use error::invalid;
pub use handler::{Handler, KeepAlive};
pub use limits::{
    ActivitySource, ConnectionCounts, ConnectionTable, Denial, LimitsConfig, MemoryLimit,
};
pub use liveness::{Liveness, PingOutcome};
pub use peers::{MAX_ADDRESSES_PER_PEER, PeerInfo, Peers};
pub use reconnect::{Decision, DueDial, Reconnector};
pub use stats::{Counter, DenialReason, Stats};
