//! [`RequestError`]: why a request got no usable response; [`ProtocolError`]: why a frame
//! could not be read or written.

use std::io;

use crate::{ErrorCode, Response};

/// Why a request ([`Client::request`](crate::Client::request)) failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// No response within the request timeout.
    #[error("no response within the request timeout")]
    Timeout,
    /// The peer could not be reached or the connection closed before the response.
    #[error("peer unreachable: {0}")]
    PeerUnreachable(String),
    /// The peer broke the protocol (malformed frame, unsupported protocol or version).
    #[error("protocol violation: {0}")]
    ProtocolViolation(String),
    /// The request or its response exceeds the frame limit.
    #[error("message too large: {0}")]
    TooLarge(String),
    /// The request breaks a rule of the protocol (see [`Request::validate`](crate::Request::validate))
    /// and was not sent.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The peer answered with an error.
    #[error("remote error ({code}): {message}")]
    Remote {
        /// The error code.
        code: ErrorCode,
        /// The peer's description.
        message: String,
    },
    /// The node has shut down.
    #[error("the network has shut down")]
    ShutDown,
}

/// A response as the requester sees it: error responses become [`RequestError`]s.
pub(crate) fn response_result(response: Response) -> Result<Response, RequestError> {
    match response {
        Response::Error {
            code: ErrorCode::TooLarge,
            message,
        } => Err(RequestError::TooLarge(message)),
        Response::Error { code, message } => Err(RequestError::Remote { code, message }),
        other => Ok(other),
    }
}

/// Errors of the protocol layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame exceeds its limit (checked before allocating).
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The claimed or actual size.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// A frame of length zero.
    #[error("empty frame")]
    Empty,
    /// The frame's version byte is not one this implementation speaks.
    #[error("unsupported message version {0}")]
    UnsupportedVersion(u8),
    /// The frame does not decode as the expected message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message could not be encoded.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The stream failed (a truncated frame is `UnexpectedEof`).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<ProtocolError> for io::Error {
    fn from(error: ProtocolError) -> Self {
        match error {
            ProtocolError::Io(error) => error,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}
