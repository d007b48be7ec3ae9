//! The `/codio/1.0.0` protocol: how CDN agents talk.
//!
//! One request and one response per stream, each a bounded, versioned frame:
//!
//! ```text
//! frame = length:u32 big-endian ‖ version:u8 (= 1) ‖ postcard(Request | Response)
//! ```
//!
//! See `docs/protocol.md` for the full wire format. This crate holds the typed messages
//! ([`Request`], [`Response`]), the framing ([`encode`], [`decode`], [`read_frame`]) and the
//! libp2p `request_response` [`Codec`]; [`behaviour`] builds the libp2p behaviour with timeouts
//! and concurrency limits.
//!
//! ```
//! use codio_protocol::{ContentId, Request, decode, encode, MAX_REQUEST_FRAME};
//!
//! let request = Request::GetChunk { content: ContentId([7; 32]), index: 3 };
//! let frame = encode(&request, MAX_REQUEST_FRAME).unwrap();
//! let length = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
//! assert_eq!(length, frame.len() - 4);
//! assert_eq!(decode::<Request>(&frame[4..]).unwrap(), request);
//! ```

pub mod bulk;
mod codec;
mod message;
pub mod rpc;
pub mod streams;

use std::{io, time::Duration};

pub use codec::{
    Codec, CodecStats, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, MAX_TOPIC_LEN, check_size, decode,
    encode, read_frame, read_frame_rest, write_frame,
};
use libp2p::{StreamProtocol, request_response};
pub use message::{ContentId, ErrorCode, Metadata, Request, Response};

/// The protocol id.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/codio/1.0.0");
/// The message format version carried in every frame.
pub const VERSION: u8 = 1;

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

/// Settings of the request/response behaviour.
///
/// | setting | default |
/// |---|---|
/// | `request_timeout` | 30 s: covers sending the request, the responder's work and reading the response; inbound requests that are not fully read in time are dropped (slow senders) |
/// | `max_concurrent_streams` | 128 concurrent requests per connection (inbound + outbound) |
#[derive(Debug, Clone)]
pub struct ProtocolConfig {
    /// See the table above.
    pub request_timeout: Duration,
    /// See the table above.
    pub max_concurrent_streams: usize,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            max_concurrent_streams: 128,
        }
    }
}

/// The libp2p behaviour speaking `/codio/1.0.0`.
pub type Behaviour = request_response::Behaviour<Codec>;

/// Builds the behaviour; its codec counts into `stats`.
pub fn behaviour(config: &ProtocolConfig, stats: std::sync::Arc<CodecStats>) -> Behaviour {
    request_response::Behaviour::with_codec(
        Codec::new(stats),
        [(PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(config.max_concurrent_streams),
    )
}
