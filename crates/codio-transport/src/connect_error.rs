//! [`ConnectError`]: why a connection could not be set up.

use std::{io, time::Duration};

use libp2p::{Multiaddr, PeerId, TransportError, swarm::DialError};

use crate::is_timeout;

/// Why a connection could not be set up: the swarm's [`DialError`] sorted into what a caller
/// can act on ([`ConnectError::from_dial_error`]).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// The address cannot be dialed (no transport for it, or malformed).
    #[error("address {address} cannot be dialed: {reason}")]
    InvalidAddress {
        /// The address given.
        address: Multiaddr,
        /// Why it cannot be dialed.
        reason: String,
    },
    /// The remote proved a different identity than the `/p2p/` suffix of the address.
    #[error("dialed {address} expecting {expected} but the remote is {obtained}")]
    WrongPeerId {
        /// The peer id in the address.
        expected: PeerId,
        /// The peer id the remote proved in the handshake.
        obtained: PeerId,
        /// The address dialed.
        address: Multiaddr,
    },
    /// The address belongs to this node.
    #[error("{address} is this node's own address")]
    LocalPeerId {
        /// The address dialed.
        address: Multiaddr,
    },
    /// The connection was not established within the connect timeout.
    #[error("connecting to {address} timed out after {after:?}")]
    Timeout {
        /// The address dialed.
        address: Multiaddr,
        /// The timeout that expired.
        after: Duration,
    },
    /// The remote could not be reached (refused, unreachable, handshake failure).
    #[error("{address} is unreachable: {reason}")]
    Unreachable {
        /// The address dialed.
        address: Multiaddr,
        /// The transport's description of the failure.
        reason: String,
    },
    /// A local policy denied the connection (for instance the connection limit).
    #[error("connection to {address} denied: {reason}")]
    Denied {
        /// The address dialed.
        address: Multiaddr,
        /// Which limit or policy denied it.
        reason: String,
    },
    /// The dial was aborted before it completed (for instance the peer was disconnected).
    #[error("dial to {address} was aborted")]
    Aborted {
        /// The address dialed.
        address: Multiaddr,
    },
    /// The network has shut down.
    #[error("the network has shut down")]
    ShutDown,
}

impl ConnectError {
    /// Sorts a failed dial of `address` (expecting `expected`, if known) into a
    /// [`ConnectError`]; `connect_timeout` is the set-up timeout in force, reported with
    /// timeouts.
    pub fn from_dial_error(
        error: DialError,
        address: Multiaddr,
        expected: Option<PeerId>,
        connect_timeout: Duration,
    ) -> Self {
        match error {
            DialError::LocalPeerId { .. } => ConnectError::LocalPeerId { address },
            DialError::WrongPeerId { obtained, address } => match expected {
                Some(expected) => ConnectError::WrongPeerId {
                    expected,
                    obtained,
                    address,
                },
                None => ConnectError::Unreachable {
                    address,
                    reason: format!("unexpected peer id {obtained}"),
                },
            },
            DialError::Denied { cause } => ConnectError::Denied {
                address,
                reason: cause.to_string(),
            },
            DialError::Aborted => ConnectError::Aborted { address },
            DialError::NoAddresses | DialError::DialPeerConditionFalse(_) => {
                ConnectError::InvalidAddress {
                    address,
                    reason: error.to_string(),
                }
            }
            DialError::Transport(errors) => transport_error(&errors, address, connect_timeout),
        }
    }
}

fn transport_error(
    errors: &[(Multiaddr, TransportError<io::Error>)],
    address: Multiaddr,
    after: Duration,
) -> ConnectError {
    let timed_out = errors.iter().any(|(_, e)| match e {
        TransportError::Other(e) => is_timeout(e),
        TransportError::MultiaddrNotSupported(_) => false,
    });
    let unsupported = !errors.is_empty()
        && errors
            .iter()
            .all(|(_, e)| matches!(e, TransportError::MultiaddrNotSupported(_)));
    if timed_out {
        ConnectError::Timeout { address, after }
    } else if unsupported {
        ConnectError::InvalidAddress {
            address,
            reason: "no transport supports this address".to_owned(),
        }
    } else {
        let reason = errors
            .iter()
            .map(|(_, e)| error_chain(e))
            .collect::<Vec<_>>()
            .join("; ");
        ConnectError::Unreachable { address, reason }
    }
}

/// Formats an error with its sources, skipping repeated messages.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    // Bounded: error source chains are finite.
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}
