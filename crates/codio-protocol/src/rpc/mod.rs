//! `/codio/rpc/1.0.0`: the requests and responses of `/codio/1.0.0`, pipelined on one
//! long-lived stream per peer instead of one stream per request.
//!
//! Opening and negotiating a Yamux stream per request costs a round trip and several task
//! hand-offs inside libp2p; on one stream, requests go out as soon as they are made (several
//! per Noise message under load) and responses come back in any order, matched by id.
//!
//! Frames are those of `/codio/1.0.0` (`u32` big-endian length ‖ version 1 ‖ postcard body);
//! the bodies are [`RpcRequest`] (opener → acceptor) and [`RpcResponse`] (acceptor → opener).
//! An id is the opener's, unique among its requests in flight on the stream. The acceptor
//! answers every request exactly once, in any order; it may stop reading while it has
//! [`MAX_IN_FLIGHT`] requests unanswered (Yamux flow control then holds the opener back). A
//! malformed or oversized frame ends the stream; requests in flight on it fail.
//!
//! ```
//! use codio_protocol::{Request, rpc::{RpcRequest, decode_request, encode_request}};
//!
//! let frame = encode_request(&RpcRequest { id: 7, request: Request::App { topic: "t".into(), payload: vec![1] } })?;
//! let decoded = decode_request(&frame[4..])?;
//! assert_eq!(decoded.id, 7);
//! # Ok::<(), codio_protocol::ProtocolError>(())
//! ```

pub(crate) mod client;
pub(crate) mod reply;
pub(crate) mod server;
pub(crate) mod session;

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::{
    MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, ProtocolError, Request, Response, decode, encode,
};

/// The protocol name.
pub const RPC_PROTOCOL: StreamProtocol = StreamProtocol::new("/codio/rpc/1.0.0");

/// Requests an acceptor lets wait for their responses on one stream before it stops reading.
pub const MAX_IN_FLIGHT: usize = 256;

/// Room for the id on top of the `/codio/1.0.0` frame limits (a `u64` varint is at most 10
/// bytes).
const ID_OVERHEAD: usize = 16;

/// Largest request frame body on an RPC stream.
pub const MAX_RPC_REQUEST_FRAME: usize = MAX_REQUEST_FRAME + ID_OVERHEAD;
/// Largest response frame body on an RPC stream.
pub const MAX_RPC_RESPONSE_FRAME: usize = MAX_RESPONSE_FRAME + ID_OVERHEAD;

/// A request with its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcRequest {
    /// Chosen by the opener; echoed in the response.
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// A response with the id of its request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcResponse {
    /// The request's id.
    pub id: u64,
    /// The response.
    pub response: Response,
}

/// Encodes a request frame (length prefix included).
///
/// # Errors
///
/// [`ProtocolError::TooLarge`] beyond [`MAX_RPC_REQUEST_FRAME`].
pub fn encode_request(request: &RpcRequest) -> Result<Vec<u8>, ProtocolError> {
    encode(request, MAX_RPC_REQUEST_FRAME)
}

/// Encodes a response frame (length prefix included).
///
/// # Errors
///
/// [`ProtocolError::TooLarge`] beyond [`MAX_RPC_RESPONSE_FRAME`].
pub fn encode_response(response: &RpcResponse) -> Result<Vec<u8>, ProtocolError> {
    encode(response, MAX_RPC_RESPONSE_FRAME)
}

/// Decodes a request frame body (without the length prefix).
///
/// # Errors
///
/// As [`decode`].
pub fn decode_request(body: &[u8]) -> Result<RpcRequest, ProtocolError> {
    decode(body)
}

/// Decodes a response frame body (without the length prefix).
///
/// # Errors
///
/// As [`decode`].
pub fn decode_response(body: &[u8]) -> Result<RpcResponse, ProtocolError> {
    decode(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{ContentId, ErrorCode};

    #[test]
    fn frames_round_trip_and_carry_the_id() {
        let request = RpcRequest {
            id: u64::MAX,
            request: Request::GetChunk {
                content: ContentId([3; 32]),
                index: 9,
            },
        };
        let frame = encode_request(&request).unwrap();
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        assert_eq!(decode_request(&frame[4..]).unwrap(), request);
        let response = RpcResponse {
            id: 1,
            response: Response::error(ErrorCode::NotFound, "no"),
        };
        let frame = encode_response(&response).unwrap();
        assert_eq!(decode_response(&frame[4..]).unwrap(), response);
    }

    #[test]
    fn the_largest_request_still_fits_with_its_id() {
        let payload = vec![0u8; MAX_REQUEST_FRAME - 100];
        let request = Request::App {
            topic: "t".into(),
            payload,
        };
        let plain = encode(&request, MAX_REQUEST_FRAME).unwrap();
        let with_id = encode_request(&RpcRequest {
            id: u64::MAX,
            request,
        })
        .unwrap();
        assert!(with_id.len() - plain.len() <= ID_OVERHEAD);
    }
}
