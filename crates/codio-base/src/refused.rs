//! Whether an error says the peer refused a stream's protocol.
//!
//! A stream opened lazily (multistream-select `V1Lazy`, codio's default: the first message
//! goes with the protocol proposal) learns that the peer does not speak the protocol only
//! when it reads the peer's answer: the failure then arrives as an I/O error on the stream
//! (wrapping multistream-select's `NegotiationError::Failed`) instead of as a negotiation
//! failure when the stream is opened. Layers that treat "unsupported" differently from
//! "failed" (the liveness policy's pings, the request client's fallback) ask this.

use std::{error::Error, io};

use libp2p::core::upgrade::NegotiationError;

/// Whether `error`, or an error it wraps (its sources, and what an `io::Error` carries), is a
/// multistream-select refusal of the protocol proposed.
pub fn protocol_refused(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    // Error chains are short; the bound only guards against a cyclic `source`.
    for _ in 0..16 {
        let Some(error) = next else {
            return false;
        };
        if matches!(
            error.downcast_ref::<NegotiationError>(),
            Some(NegotiationError::Failed)
        ) {
            return true;
        }
        // `io::Error::source` skips the error it carries: look at that one first.
        if let Some(inner) = error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            && protocol_refused_here(inner)
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// `error` itself (one level, through an `io::Error` it may be) is a refusal.
fn protocol_refused_here(error: &(dyn Error + Send + Sync + 'static)) -> bool {
    matches!(
        error.downcast_ref::<NegotiationError>(),
        Some(NegotiationError::Failed)
    ) || error
        .downcast_ref::<io::Error>()
        .and_then(io::Error::get_ref)
        .is_some_and(|inner| {
            matches!(
                inner.downcast_ref::<NegotiationError>(),
                Some(NegotiationError::Failed)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("ping failed")]
    struct Wrapper(#[source] io::Error);

    #[test]
    fn a_refusal_is_found_through_io_errors_and_sources() {
        let refused = || io::Error::from(NegotiationError::Failed);
        assert!(protocol_refused(&NegotiationError::Failed));
        assert!(protocol_refused(&refused()));
        assert!(protocol_refused(&Wrapper(refused())));
        assert!(protocol_refused(&io::Error::other(refused())));
        let boxed: Box<dyn Error + Send + 'static> = Box::new(refused());
        assert!(protocol_refused(boxed.as_ref()));
    }

    #[test]
    fn other_errors_are_not_refusals() {
        assert!(!protocol_refused(&io::Error::from(
            io::ErrorKind::ConnectionReset
        )));
        assert!(!protocol_refused(&Wrapper(io::Error::other("timeout"))));
        let protocol_error =
            NegotiationError::ProtocolError(libp2p::core::upgrade::ProtocolError::InvalidMessage);
        assert!(!protocol_refused(&protocol_error));
    }
}
