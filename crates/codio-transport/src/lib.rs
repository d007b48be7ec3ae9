//! Authenticated, multiplexed transport for codio nodes.
//!
//! [`build_transport`] returns the transport every codio node speaks: TCP (with `TCP_NODELAY`)
//! and, beside it, QUIC ([`QuicConfig`]; TCP dials wait briefly for a QUIC dial to the same
//! peer, happy-eyeballs style), optionally behind DNS resolution; [`listen`] says which
//! addresses a node listens on (TCP and QUIC, IPv4 and IPv6). TCP is secured with TLS 1.3 or
//! [Noise](libp2p::noise) (XX
//! handshake), negotiated in a configured order ([`security`]; Ed25519 identities either way;
//! a peer met before is dialed with the protocol it completed, at no negotiation round trip),
//! and multiplexed with Yamux ([`YamuxConfig`], tuned: see the `muxer` notes on
//! [`NOISE_FRAME_PAYLOAD`]); a failed set-up is a [`SetupError`]. The whole connection set-up — TCP
//! connect, protocol negotiation, security handshake and Yamux negotiation — is bounded by
//! [`TransportConfig::connect_timeout`]; a set-up that takes longer fails with an
//! [`std::io::ErrorKind::TimedOut`] error.
//!
//! [`upgrade`] applies the same security and multiplexing upgrades to any other byte-stream
//! transport, so that every path into a node is authenticated and multiplexed the same way;
//! [`build_with_relay`] uses it to put the relay v2 client transport (NAT traversal: dialing and
//! listening on `/p2p-circuit` addresses) in front of TCP and hands back the relay client's
//! behaviour half. [`ConnectError::from_dial_error`] turns a failed dial into what a caller can
//! act on (timeout, wrong peer id, unreachable with the whole error chain, denied, …).
//!
//! Inbound connections in their handshake pass through an [`InboundGate`] ([`gate`]): at most
//! 64 at once, 8 per source address and 16 per subnet, 5 s each; when a bound is reached the
//! oldest handshake of the offending (or busiest) source is aborted and the newcomer kept.
//! [`build`] returns its [`InboundStats`] with the transport.
//!
//! The result is a plain [`Boxed`](libp2p::core::transport::Boxed) libp2p transport and works with any [`libp2p::Swarm`]:
//!
//! ```
//! use codio_transport::{TransportConfig, build_transport};
//! use libp2p::{Swarm, identity, ping, swarm};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keypair = identity::Keypair::generate_ed25519();
//! let config = TransportConfig::default()
//!     .with_connect_timeout(Duration::from_secs(5))
//!     .with_max_streams(256);
//! let transport = build_transport(&keypair, &config)?;
//! let swarm = Swarm::new(
//!     transport,
//!     ping::Behaviour::default(),
//!     keypair.public().to_peer_id(),
//!     swarm::Config::with_tokio_executor(),
//! );
//! assert_eq!(*swarm.local_peer_id(), keypair.public().to_peer_id());
//! # Ok(())
//! # }
//! ```

pub use libp2p::pnet::PreSharedKey;

pub mod addr;
mod build;
mod coalesce;
mod config;
mod connect_error;
mod eyeballs;
pub mod gate;
pub mod listen;
mod muxer;
mod negotiate;
mod quic;
mod reuse;
pub mod security;
mod timeout;
mod tls;

pub use build::{Built, build, build_transport, build_with_relay, is_timeout, upgrade};
pub use coalesce::Coalesce;
pub use config::{CodioTransport, NegotiationMode, TransportBuildError, TransportConfig};
pub use connect_error::ConnectError;
pub use gate::{InboundGate, InboundLimits, InboundStats, ShedReason};
pub use muxer::{Muxer, MuxerError, NOISE_FRAME_PAYLOAD, Stream, YamuxConfig};
pub use negotiate::SetupError;
pub use quic::{QuicConfig, QuicError};
pub use security::{SecureStream, SecurityError, SecurityProtocol};
