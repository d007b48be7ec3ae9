//! Raw streams of one protocol, opened to and accepted from peers — the carrier of bulk
//! transfers ([`crate::bulk`]).
//!
//! [`Behaviour::new`] returns the behaviour to compose into a swarm, a cloneable [`Control`]
//! that opens outbound streams (dialing the peer when not connected) and the
//! [`IncomingStreams`] of the protocol.
//!
//! Unlike `libp2p-stream` 0.5, which hands inbound streams through a channel holding a single
//! stream and resets the rest of a burst (the opener then sees a misleading "connection is
//! closed"), inbound streams wait in a bounded queue of [`StreamsConfig::with_inbound_capacity`];
//! only beyond it is a stream reset, logged and counted ([`Control::dropped_inbound`]).
//! Outbound streams open concurrently rather than one at a time per connection.
//!
//! ```
//! use codio_protocol::streams::{Behaviour, StreamsConfig};
//! use libp2p::StreamProtocol;
//!
//! let config = StreamsConfig::new(StreamProtocol::new("/example/1.0.0")).with_inbound_capacity(32);
//! let (behaviour, control, incoming) = Behaviour::new(config);
//! # let _ = (behaviour, control, incoming);
//! ```

mod behaviour;
mod handler;

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

pub use behaviour::Behaviour;
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

/// Configuration of a [`Behaviour`].
///
/// | setting | default |
/// |---|---|
/// | [`inbound_capacity`](Self::with_inbound_capacity) | 64 inbound streams waiting to be taken |
/// | [`open_capacity`](Self::with_open_capacity) | 256 open requests queued to the swarm |
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    protocol: StreamProtocol,
    inbound_capacity: usize,
    open_capacity: usize,
}

impl StreamsConfig {
    /// Streams of `protocol`, other settings at their defaults.
    pub fn new(protocol: StreamProtocol) -> Self {
        Self {
            protocol,
            inbound_capacity: 64,
            open_capacity: 256,
        }
    }

    /// How many accepted inbound streams may wait for [`IncomingStreams::next`] (default 64,
    /// at least 1); streams beyond it are reset.
    pub fn with_inbound_capacity(mut self, capacity: usize) -> Self {
        self.inbound_capacity = capacity.max(1);
        self
    }

    /// How many [`Control::open_stream`] calls may wait for the swarm (default 256, at least
    /// 1); further callers wait for a slot.
    pub fn with_open_capacity(mut self, capacity: usize) -> Self {
        self.open_capacity = capacity.max(1);
        self
    }

    /// The protocol.
    pub fn protocol(&self) -> &StreamProtocol {
        &self.protocol
    }
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStreamError {
    /// The peer does not speak the protocol.
    #[error("peer does not speak {0}")]
    UnsupportedProtocol(StreamProtocol),
    /// The peer could not be dialed.
    #[error("dial failed: {0}")]
    Dial(String),
    /// The connection failed while negotiating the stream.
    #[error("stream negotiation: {0}")]
    Io(#[source] io::Error),
    /// Negotiation did not finish within the swarm's substream timeout.
    #[error("stream negotiation timed out")]
    Timeout,
    /// The connection closed before the stream was open.
    #[error("connection closed")]
    ConnectionClosed,
    /// The swarm is gone.
    #[error("swarm shut down")]
    ShutDown,
}

pub(crate) type OpenReply = oneshot::Sender<Result<Stream, OpenStreamError>>;

/// An open request on its way to a connection (opaque): the caller's reply, and where it goes
/// back to if the connection drops it unanswered.
///
/// An open whose connection closes or is lost before the stream is open carried no data yet,
/// so it returns to the behaviour, which forgets that connection and routes the open once more
/// (another connection of the peer, or a new dial): a peer that dialed us over two transports
/// at once and dropped the slower connection (happy eyeballs) costs the caller nothing.
#[derive(Debug)]
pub struct Pending {
    reply: Option<OpenReply>,
    /// Where it returns if dropped unanswered, and the connection it was sent to; `None`
    /// once it was routed again (a second loss fails the caller).
    back: Option<(mpsc::Sender<Returned>, PeerId, libp2p::swarm::ConnectionId)>,
    rerouted: bool,
}

/// An open its connection dropped unanswered, on its way back to the behaviour.
#[derive(Debug)]
pub(crate) struct Returned {
    peer: PeerId,
    connection: libp2p::swarm::ConnectionId,
    open: Pending,
}

impl Pending {
    fn new(reply: OpenReply) -> Self {
        Self {
            reply: Some(reply),
            back: None,
            rerouted: false,
        }
    }

    /// Answers the caller.
    fn send(mut self, result: Result<Stream, OpenStreamError>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result);
        }
    }

    /// Whether dropping it unanswered routes it again.
    fn returns(&self) -> bool {
        self.back.is_some()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let (Some(reply), Some((back, peer, connection))) = (self.reply.take(), self.back.take())
        else {
            return;
        };
        let open = Pending {
            reply: Some(reply),
            back: None,
            rerouted: true,
        };
        // Full (as many returns under way as opens allowed): the caller is told the
        // connection closed, as without the return.
        let _ = back.try_send(Returned {
            peer,
            connection,
            open,
        });
    }
}

/// A request from a [`Control`] to the behaviour.
#[derive(Debug)]
pub(crate) struct OpenRequest {
    peer: PeerId,
    reply: OpenReply,
}

/// Counters shared by the behaviour, its handlers and the controls.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    dropped_inbound: AtomicU64,
}

/// Opens outbound streams; cheap to clone.
#[derive(Debug, Clone)]
pub struct Control {
    requests: mpsc::Sender<OpenRequest>,
    counters: Arc<Counters>,
}

impl Control {
    /// Opens a stream to `peer`, dialing it first when it is not connected. An open whose
    /// connection closes or is lost before the stream is open is tried once more, on another
    /// connection or a new dial (nothing was sent yet).
    ///
    /// # Errors
    ///
    /// An [`OpenStreamError`] saying why.
    pub async fn open_stream(&self, peer: PeerId) -> Result<Stream, OpenStreamError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(OpenRequest { peer, reply })
            .await
            .map_err(|_| OpenStreamError::ShutDown)?;
        rx.await.map_err(|_| OpenStreamError::ConnectionClosed)?
    }

    /// Inbound streams reset because the inbound queue was full.
    pub fn dropped_inbound(&self) -> u64 {
        self.counters.dropped_inbound.load(Ordering::Relaxed)
    }
}

/// The inbound streams of the protocol, with the peer that opened each.
#[derive(Debug)]
pub struct IncomingStreams {
    receiver: mpsc::Receiver<(PeerId, Stream)>,
}

impl IncomingStreams {
    /// The next inbound stream; `None` once the behaviour is gone.
    pub async fn next(&mut self) -> Option<(PeerId, Stream)> {
        self.receiver.recv().await
    }

    /// Polls for the next inbound stream (for a behaviour that accepts them in its `poll`).
    pub fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<(PeerId, Stream)>> {
        self.receiver.poll_recv(cx)
    }
}
