//! The codio protocols: how CDN agents talk, with every engine a reuser needs.
//!
//! - `/codio/1.0.0`: one request and one response per stream, each a bounded, versioned
//!   frame (libp2p request-response with this crate's [`Codec`]);
//! - `/codio/rpc/1.0.0` ([`rpc`]): the same messages pipelined on one long-lived stream per
//!   peer, served by session tasks, never by the swarm's task;
//! - `/codio/bulk/1.0.0` ([`bulk`]): one payload of any size per stream, with back-pressure.
//!
//! ```text
//! frame = length:u32 big-endian ‖ version:u8 (= 1) ‖ postcard(Request | Response)
//! ```
//!
//! [`Behaviour`] runs all three in any swarm and comes with a [`Client`] that sends requests
//! (RPC first, `/codio/1.0.0` for peers without it) and bulk transfers. Inbound requests of
//! both protocols reach one queue as [`InboundRequest`]s with one [`Responder`] type; a
//! [`RequestHandler`] run by [`serve`] answers them. See `docs/protocol.md` for the wire
//! format.
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
//!
//! Serving requests in a swarm of your own:
//!
//! ```no_run
//! use codio_protocol::{Behaviour, ProtocolConfig, Request, Response};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (mut behaviour, client) = Behaviour::new(ProtocolConfig::default());
//! let requests = behaviour.request_queue();
//! tokio::spawn(codio_protocol::serve(requests, |_peer, request: Request| async move {
//!     match request {
//!         Request::App { payload, .. } => Response::App { payload },
//!         _ => Response::error(codio_protocol::ErrorCode::NotFound, "no such content"),
//!     }
//! }, 64));
//! // Put `behaviour` in a swarm; `client.request(peer, request)` asks other peers.
//! # let _ = (behaviour, client);
//! # }
//! ```

mod activity;
mod behaviour;
mod budget;
pub mod bulk;
mod client;
mod codec;
mod config;
mod error;
mod inbound;
mod message;
mod open_streams;
pub mod rpc;
mod stats;
pub mod streams;

pub use activity::ActivitySource;
pub use behaviour::{Behaviour, Event};
pub use client::Client;
pub use codec::{
    Codec, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, MAX_TOPIC_LEN, check_size, decode, encode,
    read_frame, write_frame,
};
pub use config::{InvalidConfig, ProtocolConfig};
pub use error::{ProtocolError, RequestError};
pub use inbound::{InboundRequest, RequestHandler, RespondError, Responder, serve};
pub use message::{ContentId, ErrorCode, Metadata, PROTOCOL, Request, Response, VERSION};
pub use stats::Stats;
