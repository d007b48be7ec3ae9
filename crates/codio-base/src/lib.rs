//! The floor under codio-network's layers: small, pure pieces that more than one layer needs,
//! written once so that they cannot drift apart.
//!
//! Nothing here holds a policy, a state machine or I/O of its own; each piece is a value or a
//! function the layers build on:
//!
//! - [`addr`]: the IP of a multiaddress, `/p2p/<id>` read, added and stripped, and the one rule
//!   for what counts as a non-global address ([`addr::is_non_global`]).
//! - [`source`]: where a connection comes from ([`Source`]: the address and subnet keys every
//!   per-source bound counts by).
//! - [`rate`]: one token bucket ([`Rate`], [`Bucket`], [`Buckets`] per key, [`Throttle`] for reports), pure state fed an `Instant`.
//! - [`call`]: a command sent to an event loop and its answer awaited with a bounded wait.
//! - [`InvalidConfig`]: the error every layer's `validate` returns.
//! - [`Edit`]: a configuration edited in place with its own consuming builders.
//! - [`delegate_to!`]: a wrapping behaviour's connection set-up and handler-event methods
//!   delegated to the behaviour it wraps.
//! - [`boxed`]: a behaviour whose connection handlers live on the heap.
//! - [`protocol_refused`]: whether an error is a peer's refusal of a lazily proposed stream
//!   protocol.
//! - `metrics` (feature `metrics`): the encoding the layers' Prometheus collectors share.

pub mod addr;
pub mod boxed;
pub mod call;
mod config;
mod delegate;
mod edit;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod rate;
mod refused;
pub mod source;

pub use config::InvalidConfig;
pub use edit::Edit;
pub use rate::{Bucket, Buckets, Rate, Throttle};
pub use refused::protocol_refused;
pub use source::Source;

// The libp2p the macros name, so that a user's own `libp2p` import does not matter.
#[doc(hidden)]
pub use libp2p as __libp2p;
