//! The set-up of a connection after its byte stream exists: multistream-select of the security
//! protocol, its handshake, multistream-select of Yamux.
//!
//! libp2p's `transport::upgrade::Builder` does the same with one list of protocols for every
//! connection. codio needs the endpoint in view: a dial to a peer whose security protocol is
//! known from an earlier connection proposes that one protocol alone, which the lazy
//! multistream-select dialer sends together with its first handshake message (no round trip
//! for the negotiation), where proposing several costs a round trip before the handshake.

use std::io;

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::{
    ConnectedPoint, Endpoint, Negotiated,
    upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, Version},
};
use multistream_select::{NegotiationError, dialer_select_proto, listener_select_proto};

use crate::SecurityError;

/// A failed connection set-up (after the transport connected).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// No protocol both sides support, or the negotiation broke off.
    #[error("protocol negotiation: {0}")]
    Negotiation(#[from] NegotiationError),
    /// The security handshake failed.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// The multiplexer could not start.
    #[error("multiplexer: {0}")]
    Muxer(#[from] io::Error),
}

/// Whether this side proposes protocols: the dialer, unless a hole punch gave it the
/// listener's role.
pub(crate) fn proposes(endpoint: &ConnectedPoint) -> bool {
    matches!(
        endpoint,
        ConnectedPoint::Dialer {
            role_override: Endpoint::Dialer,
            ..
        }
    )
}

/// Negotiates one of `upgrade`'s protocols on `io` as `endpoint`'s side and runs it.
pub(crate) async fn negotiate<C, U, O, E>(
    io: C,
    upgrade: U,
    endpoint: &ConnectedPoint,
    version: Version,
) -> Result<O, SetupError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: InboundConnectionUpgrade<Negotiated<C>, Output = O, Error = E>
        + OutboundConnectionUpgrade<Negotiated<C>, Output = O, Error = E>,
    SetupError: From<E>,
{
    if proposes(endpoint) {
        let (info, io) = dialer_select_proto(io, upgrade.protocol_info(), version).await?;
        Ok(upgrade.upgrade_outbound(io, info).await?)
    } else {
        let (info, io) = listener_select_proto(io, upgrade.protocol_info()).await?;
        Ok(upgrade.upgrade_inbound(io, info).await?)
    }
}
