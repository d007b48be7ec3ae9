//! The typed messages of `/codio/1.0.0`.

use serde::{Deserialize, Serialize};

/// The protocol id.
pub const PROTOCOL: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/codio/1.0.0");
/// The message format version carried in every frame.
pub const VERSION: u8 = 1;

/// Identifies a piece of content: 32 bytes (for instance a BLAKE3 or SHA-256 digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentId(pub [u8; 32]);

/// Size and chunking of a piece of content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The content.
    pub content: ContentId,
    /// Total size in bytes.
    pub size: u64,
    /// Size of every chunk but the last.
    pub chunk_size: u32,
}

/// A request; it gets exactly one [`Response`]. Over `/codio/rpc/1.0.0` many requests share
/// one pipelined session stream; over `/codio/1.0.0` each travels on a stream of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// Chunk number `index` of `content`.
    GetChunk {
        /// The content.
        content: ContentId,
        /// Zero-based chunk index.
        index: u64,
    },
    /// The metadata of `content`.
    GetMetadata {
        /// The content.
        content: ContentId,
    },
    /// An application message.
    App {
        /// What kind of message (at most [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN) bytes).
        topic: String,
        /// The body.
        payload: Vec<u8>,
    },
}

impl Request {
    /// Checks what the wire format cannot: an [`App`](Request::App) topic is at most
    /// [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN) bytes. Every decoder of requests calls it
    /// (`/codio/1.0.0` and `/codio/rpc/1.0.0` alike), and so does the sending side.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::Malformed`](crate::ProtocolError::Malformed) naming the violation.
    pub fn validate(&self) -> Result<(), crate::ProtocolError> {
        match self {
            Request::App { topic, .. } if topic.len() > crate::MAX_TOPIC_LEN => {
                Err(crate::ProtocolError::Malformed(format!(
                    "topic of {} bytes (limit {})",
                    topic.len(),
                    crate::MAX_TOPIC_LEN
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Error codes of [`Response::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The content or chunk is not here.
    NotFound,
    /// The responder is busy: retry later, preferably elsewhere.
    Overloaded,
    /// The request was malformed or not allowed.
    BadRequest,
    /// The request used a protocol version the responder does not speak.
    UnsupportedVersion,
    /// The answer would exceed the frame limit.
    TooLarge,
    /// Something went wrong on the responder.
    Internal,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorCode::NotFound => "not found",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::UnsupportedVersion => "unsupported version",
            ErrorCode::TooLarge => "too large",
            ErrorCode::Internal => "internal error",
        })
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// A chunk of content.
    Chunk {
        /// The content.
        content: ContentId,
        /// Zero-based chunk index.
        index: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Content metadata.
    Metadata(Metadata),
    /// An application answer.
    App {
        /// The body.
        payload: Vec<u8>,
    },
    /// The request failed on the responder.
    Error {
        /// Why.
        code: ErrorCode,
        /// Human-readable detail (at most [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN) × 4 bytes).
        message: String,
    },
}

impl Response {
    /// An error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        let limit = crate::MAX_TOPIC_LEN * 4;
        if message.len() > limit {
            let mut end = limit;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Response::Error { code, message }
    }
}
