//! The protocol [`Behaviour`]: `/codio/1.0.0` (libp2p request-response), the
//! `/codio/rpc/1.0.0` and `/codio/bulk/1.0.0` stream carriers, and the engine around them.
//!
//! Besides composing the three, it
//! - sends the [`Client`]'s `/codio/1.0.0` requests and routes their outcomes back;
//! - hands inbound requests of both protocols to one queue with one [`Responder`] type and
//!   sends the `/codio/1.0.0` answers;
//! - spawns a session task per inbound RPC stream and moves inbound bulk streams to the
//!   receiver's queue (refusing them beyond it);
//! - ends a peer's RPC sessions when its last connection closes, and every session when it is
//!   dropped (the node stopped): a dead Yamux stream is not guaranteed to wake its reader.
//!
//! It spawns tasks, so the swarm must be polled inside a Tokio runtime.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use libp2p::{
    PeerId, Stream,
    request_response::{self, InboundRequestId, OutboundFailure, OutboundRequestId},
    swarm::{
        ConnectionHandlerSelect, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, ToSwarm,
    },
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    Client, Codec, ErrorCode, InboundRequest, PROTOCOL, ProtocolConfig, Request, RequestError,
    Responder, Response, Stats,
    activity::{Activity, Toucher},
    budget::{Budget, Taken},
    bulk::{BULK_PROTOCOL, IncomingBulk},
    client::{OutboundRequest, Parts},
    error::response_result,
    inbound::{RequestQueue, SwarmAnswer},
    open_streams::OpenStreams,
    rpc::{RPC_PROTOCOL, client::RpcClient, server, session::KillSwitches},
    streams::{self, IncomingStreams, StreamsConfig},
};

/// `/codio/1.0.0` requests queued from clients to the behaviour.
const PER_STREAM_QUEUE: usize = 256;
/// `/codio/1.0.0` answers queued from responders to the behaviour.
const ANSWER_QUEUE: usize = 256;
/// RPC streams are long-lived, one per peer and direction: a small inbound queue.
const RPC_INBOUND_QUEUE: usize = 64;

/// Something the protocol layer reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An inbound `/codio/1.0.0` request failed before it could be answered (malformed or
    /// oversized frame, truncated stream, slow sender hitting the timeout); its stream was
    /// reset, other streams are unaffected.
    InboundFailure {
        /// The peer.
        peer_id: PeerId,
        /// What went wrong.
        error: String,
    },
}

/// The three behaviours this one drives.
#[derive(libp2p::swarm::NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub(crate) struct Inner {
    requests: request_response::Behaviour<Codec>,
    rpc: streams::Behaviour,
    bulk: streams::Behaviour,
}

/// Requests, RPC sessions and bulk streams in one behaviour: `/codio/1.0.0`
/// (request-response), `/codio/rpc/1.0.0` sessions and `/codio/bulk/1.0.0` streams, with the
/// engine around them (see the [crate docs](crate)). Spawns tasks: poll the swarm inside a
/// Tokio runtime.
pub struct Behaviour {
    inner: Inner,
    per_stream: mpsc::Receiver<OutboundRequest>,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Response, RequestError>>>,
    answers_tx: mpsc::Sender<SwarmAnswer>,
    answers: mpsc::Receiver<SwarmAnswer>,
    rpc_incoming: IncomingStreams,
    bulk_incoming: IncomingStreams,
    queue: RequestQueue,
    bulk_queue: Option<mpsc::Sender<IncomingBulk>>,
    rpc: Arc<RpcClient>,
    switches: Arc<KillSwitches>,
    activity: Arc<Activity>,
    stats: Arc<Stats>,
    config: ProtocolConfig,
    events: VecDeque<Event>,
    /// Bytes of answers handed over but not yet written, in total.
    budget: Budget,
    /// `/codio/1.0.0` answers being written, holding their budget until sent or failed.
    sending: HashMap<InboundRequestId, Taken>,
    /// Each peer's inbound `/codio/1.0.0` streams in flight.
    open_streams: OpenStreams<InboundRequestId>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("pending", &self.pending.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// When each connected peer last exchanged a request, a response or bulk data (`None` for
    /// peers not connected), for other layers to read: e.g. a connection policy sparing busy
    /// peers.
    pub fn activity_source(&self) -> crate::ActivitySource {
        let activity = self.activity.clone();
        Arc::new(move |peer| activity.last(peer))
    }

    /// The behaviour and the [`Client`] that sends through it. Until a queue is taken with
    /// [`request_queue`](Self::request_queue) / [`bulk_queue`](Self::bulk_queue), inbound
    /// requests are answered `NotFound` and inbound bulk streams are refused.
    pub fn new(config: ProtocolConfig) -> (Self, Client) {
        let stats = Arc::new(Stats::default());
        let activity = Arc::new(Activity::default());
        let switches = Arc::new(KillSwitches::default());
        let (rpc_streams, rpc_control, rpc_incoming) = streams::Behaviour::new(
            StreamsConfig::new(RPC_PROTOCOL).with_inbound_capacity(RPC_INBOUND_QUEUE),
        );
        let (bulk_streams, bulk_control, bulk_incoming) =
            streams::Behaviour::new(StreamsConfig::new(BULK_PROTOCOL));
        let rpc = Arc::new(RpcClient::new(
            rpc_control,
            activity.clone(),
            switches.clone(),
            config.request_timeout,
        ));
        let (per_stream_tx, per_stream) = mpsc::channel(PER_STREAM_QUEUE);
        let (answers_tx, answers) = mpsc::channel(ANSWER_QUEUE);
        let client = Client::new(Parts {
            rpc: rpc.clone(),
            per_stream: per_stream_tx,
            bulk: bulk_control,
            config: config.clone(),
            stats: stats.clone(),
            activity: activity.clone(),
        });
        let inner = Inner {
            requests: request_response::Behaviour::with_codec(
                Codec::new(stats.clone()),
                [(PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(config.request_timeout)
                    .with_max_concurrent_streams(config.max_concurrent_streams),
            ),
            rpc: rpc_streams,
            bulk: bulk_streams,
        };
        let behaviour = Self {
            inner,
            per_stream,
            pending: HashMap::new(),
            answers_tx,
            answers,
            rpc_incoming,
            bulk_incoming,
            queue: RequestQueue::new(None, stats.clone(), config.max_requests_per_peer),
            bulk_queue: None,
            rpc,
            switches,
            activity,
            budget: Budget::new(config.response_budget),
            sending: HashMap::new(),
            open_streams: OpenStreams::default(),
            stats,
            config,
            events: VecDeque::new(),
        };
        behaviour
            .stats
            .set_response_budget(behaviour.budget.clone());
        (behaviour, client)
    }

    /// Inbound requests of both protocols, from now on, in a queue of
    /// `inbound_request_buffer`; beyond it requests are answered `Overloaded` at once. Take it
    /// before the swarm runs; a second call replaces the first queue.
    pub fn request_queue(&mut self) -> mpsc::Receiver<InboundRequest> {
        // `validate` refuses a zero capacity; an unvalidated one must not panic here.
        let (tx, rx) = mpsc::channel(self.config.inbound_request_buffer.max(1));
        self.set_request_queue(tx);
        rx
    }

    /// Sends inbound requests to `queue` (a bounded queue made elsewhere; while it is full,
    /// requests are answered `Overloaded` at once).
    pub fn set_request_queue(&mut self, queue: mpsc::Sender<InboundRequest>) {
        self.queue = RequestQueue::new(
            Some(queue),
            self.stats.clone(),
            self.config.max_requests_per_peer,
        );
    }

    /// Inbound bulk transfers, from now on, in a queue of `bulk_stream_buffer`; beyond it
    /// streams are refused. Take it before the swarm runs; a second call replaces the first.
    pub fn bulk_queue(&mut self) -> mpsc::Receiver<IncomingBulk> {
        let (tx, rx) = mpsc::channel(self.config.bulk_stream_buffer.max(1));
        self.set_bulk_queue(tx);
        rx
    }

    /// Sends inbound bulk transfers to `queue` (while it is full, streams are refused).
    pub fn set_bulk_queue(&mut self, queue: mpsc::Sender<IncomingBulk>) {
        self.bulk_queue = Some(queue);
    }

    fn server_context(&self) -> server::ServerContext {
        server::ServerContext {
            queue: self.queue.clone(),
            stats: self.stats.clone(),
            activity: self.activity.clone(),
            frame_timeout: self.config.request_timeout,
            write_timeout: self.config.write_timeout,
            total_budget: self.budget.clone(),
            session_budget: self.config.session_response_budget,
        }
    }

    /// Serves an inbound session; a peer at its session bound loses its oldest one.
    fn on_inbound_rpc(&mut self, peer: PeerId, stream: Stream) {
        let (kill, shed) = self.switches.arm(peer, self.config.max_sessions_per_peer);
        if shed {
            tracing::debug!(%peer, "too many sessions: ending the peer's oldest");
            self.stats.record_shed_session();
        }
        server::spawn_session(peer, stream, self.server_context(), kill);
    }

    /// Moves an inbound bulk stream to the receiver's queue, or refuses it without waiting.
    fn on_inbound_bulk(&mut self, peer: PeerId, stream: Stream) {
        let idle = self.config.bulk_idle_timeout;
        let toucher = Toucher::new(self.activity.clone(), peer);
        let bulk = IncomingBulk::new(peer, stream, idle, self.stats.clone(), toucher);
        let (bulk, why) = match &self.bulk_queue {
            None => (bulk, "no bulk receiver"),
            Some(queue) => match queue.try_send(bulk) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(bulk)) => (bulk, "bulk queue full"),
                Err(mpsc::error::TrySendError::Closed(bulk)) => (bulk, "bulk receiver gone"),
            },
        };
        tracing::debug!(%peer, why, "refusing a bulk stream");
        self.stats.record_refused_bulk();
        // Answer without blocking the swarm on a slow peer (bounded by the idle timeout).
        tokio::spawn(async move {
            let _ = bulk.reject(ErrorCode::Overloaded, why).await;
        });
    }

    fn on_requests_event(&mut self, event: request_response::Event<Request, Response>) {
        use request_response::{Event as RrEvent, Message};
        match event {
            RrEvent::Message {
                peer,
                message:
                    Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => {
                self.activity.record(peer, Instant::now());
                if !self.open_stream(peer, request_id) {
                    self.refuse_over_streams(peer, channel);
                    return;
                }
                let answers = self.answers_tx.clone();
                let responder = Responder::swarm(request_id, channel, answers, self.budget.clone());
                self.queue.enqueue(InboundRequest {
                    peer_id: peer,
                    request,
                    responder,
                });
            }
            RrEvent::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                self.activity.record(peer, Instant::now());
                self.reply(request_id, response_result(response));
            }
            RrEvent::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "request failed");
                self.reply(request_id, Err(outbound_error(error)));
            }
            RrEvent::InboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                self.stream_ended(request_id);
                tracing::debug!(%peer, %error, "inbound request failed; stream reset");
                self.events.push_back(Event::InboundFailure {
                    peer_id: peer,
                    error: error.to_string(),
                });
            }
            RrEvent::ResponseSent { request_id, .. } => self.stream_ended(request_id),
        }
    }

    /// Counts an inbound `/codio/1.0.0` stream of `peer`; `false` if the peer has its share.
    fn open_stream(&mut self, peer: PeerId, id: InboundRequestId) -> bool {
        let max = self.config.max_streams_per_peer;
        let opened = self.open_streams.open(peer, id, max);
        let total = self.open_streams.total();
        self.stats.record_request_streams(total, opened.ok());
        opened.is_ok()
    }

    /// Answers `Overloaded` at once: a small answer, written without the handler, that
    /// ends the stream (it fits the requester's stream window whether it reads or not).
    fn refuse_over_streams(
        &mut self,
        peer: PeerId,
        channel: request_response::ResponseChannel<Response>,
    ) {
        tracing::debug!(%peer, "peer has its share of request streams");
        self.stats.record_inbound();
        self.stats.record_refused();
        self.stats.record_refused_over_streams();
        let answer = Response::error(ErrorCode::Overloaded, "too many streams from this peer");
        let _ = self.inner.requests.send_response(channel, answer);
    }

    /// An inbound `/codio/1.0.0` stream ended: its answer was written, or it failed.
    fn stream_ended(&mut self, id: InboundRequestId) {
        self.sending.remove(&id);
        self.open_streams.close(&id);
        let total = self.open_streams.total();
        self.stats.record_request_streams(total, None);
    }

    fn reply(&mut self, id: OutboundRequestId, result: Result<Response, RequestError>) {
        if let Some(reply) = self.pending.remove(&id) {
            let _ = reply.send(result);
        }
    }

    /// Drains what clients, responders and the stream carriers handed over.
    fn poll_queues(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(Some(outbound)) = self.per_stream.poll_recv(cx) {
            let id = self
                .inner
                .requests
                .send_request(&outbound.peer, outbound.request);
            self.pending.insert(id, outbound.reply);
        }
        while let Poll::Ready(Some(answer)) = self.answers.poll_recv(cx) {
            let SwarmAnswer {
                request_id,
                channel,
                response,
                bytes,
            } = answer;
            if self
                .inner
                .requests
                .send_response(channel, response)
                .is_err()
            {
                tracing::debug!("response dropped: the requester's stream is gone");
            } else {
                self.sending.insert(request_id, bytes);
            }
        }
        while let Poll::Ready(Some((peer, stream))) = self.rpc_incoming.poll_next(cx) {
            self.on_inbound_rpc(peer, stream);
        }
        while let Poll::Ready(Some((peer, stream))) = self.bulk_incoming.poll_next(cx) {
            self.on_inbound_bulk(peer, stream);
        }
    }
}

/// What a failed `/codio/1.0.0` request means to its caller.
fn outbound_error(error: OutboundFailure) -> RequestError {
    match error {
        OutboundFailure::Timeout => RequestError::Timeout,
        OutboundFailure::DialFailure => RequestError::PeerUnreachable("dial failed".to_owned()),
        OutboundFailure::ConnectionClosed => {
            RequestError::PeerUnreachable("connection closed before the response".to_owned())
        }
        OutboundFailure::UnsupportedProtocols => {
            RequestError::ProtocolViolation(format!("peer does not speak {PROTOCOL}"))
        }
        // With lazy streams a refusal arrives as an I/O error on the stream.
        OutboundFailure::Io(e) if codio_base::protocol_refused(&e) => {
            RequestError::ProtocolViolation(format!("peer does not speak {PROTOCOL}"))
        }
        OutboundFailure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            RequestError::ProtocolViolation(e.to_string())
        }
        OutboundFailure::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            RequestError::ProtocolViolation(format!("truncated response: {e}"))
        }
        OutboundFailure::Io(e) => RequestError::PeerUnreachable(e.to_string()),
    }
}

impl Drop for Behaviour {
    fn drop(&mut self) {
        // The swarm is gone: so is every stream; end the sessions that would wait on them.
        self.switches.trip_all();
    }
}

impl NetworkBehaviour for Behaviour {
    // What the derive builds for the private `Inner`, spelled out.
    type ConnectionHandler = ConnectionHandlerSelect<
        ConnectionHandlerSelect<
            THandler<request_response::Behaviour<Codec>>,
            THandler<streams::Behaviour>,
        >,
        THandler<streams::Behaviour>,
    >;
    type ToSwarm = Event;

    codio_base::delegate_to!(inner);

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionEstablished(established) => {
                self.activity.connected(established.peer_id, Instant::now());
            }
            FromSwarm::ConnectionClosed(closed) => {
                // The outbound session may have run on this connection: later requests
                // open a new one rather than race the dying stream.
                self.rpc.forget(&closed.peer_id);
                if closed.remaining_established == 0 {
                    self.switches.trip(&closed.peer_id);
                    self.activity.forget(&closed.peer_id);
                }
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        self.poll_queues(cx);
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(event));
            }
            match self.inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(ToSwarm::GenerateEvent(InnerEvent::Requests(event))) => {
                    self.on_requests_event(event);
                }
                Poll::Ready(ToSwarm::GenerateEvent(InnerEvent::Rpc(()) | InnerEvent::Bulk(()))) => {
                }
                Poll::Ready(action) => {
                    // Invariant: only `GenerateEvent` carries an event, and every one is
                    // matched above.
                    return Poll::Ready(action.map_out(|_| unreachable!("matched above")));
                }
            }
        }
    }
}
