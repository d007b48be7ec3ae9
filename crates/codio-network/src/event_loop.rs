//! The task that owns and continuously polls the [`Swarm`].
//!
//! Handles talk to it through a bounded command queue; every command carries a `oneshot`
//! sender for its reply, and the loop keeps the pending replies keyed by the identifier libp2p
//! reports the outcome with ([`ConnectionId`] for dials, [`ListenerId`] for listeners,
//! [`PeerId`] for disconnects), so each reply reaches exactly the caller that asked.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, TransportError,
    core::{ConnectedPoint, transport::ListenerId},
    identify, ping,
    swarm::{
        ConnectionId, DialError, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::sync::{broadcast, mpsc, oneshot};

use codio_discovery::{Event as DiscoveryEvent, QueryId};
use codio_policy::{ConnectionCounts, Event as PolicyEvent, PingOutcome};
use codio_protocol::{ErrorCode, Request, Response};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};

use crate::{
    ConnectError, DhtError, DiscoverySource, Lookup, NatStatus, NetworkError, NetworkEvent,
    PeerInfo, RequestError,
    behaviour::{Behaviour, BehaviourEvent},
    event::Direction,
    peer_id_of, without_p2p,
};

/// Most addresses kept per peer in [`PeerInfo::addresses`].
const MAX_ADDRESSES_PER_PEER: usize = 32;

/// Requests from handles to the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    /// Listen on `address`, then start discovery (bootstrap dials, mDNS dials, DHT bootstrap).
    Start {
        address: Multiaddr,
        external: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<Multiaddr, NetworkError>>,
    },
    FindPeer {
        peer_id: PeerId,
        reply: oneshot::Sender<Result<Vec<Multiaddr>, DhtError>>,
    },
    ClosestPeers {
        key: Vec<u8>,
        reply: oneshot::Sender<Result<Lookup, DhtError>>,
    },
    Provide {
        key: Vec<u8>,
        reply: oneshot::Sender<Result<(), DhtError>>,
    },
    FindProviders {
        key: Vec<u8>,
        reply: oneshot::Sender<Result<HashSet<PeerId>, DhtError>>,
    },
    Dial {
        address: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, ConnectError>>,
    },
    Disconnect {
        peer_id: PeerId,
        reply: oneshot::Sender<Result<(), NetworkError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    SendRequest {
        peer_id: PeerId,
        request: Request,
        reply: oneshot::Sender<Result<Response, RequestError>>,
    },
    Respond {
        channel: ResponseChannel<Response>,
        response: Response,
    },
}

/// A request from a peer, for the application to answer through its [`Responder`].
#[derive(Debug)]
pub struct InboundRequest {
    /// Who asked.
    pub peer_id: PeerId,
    /// What.
    pub request: Request,
    /// Where the answer goes.
    pub responder: Responder,
}

/// Answers one [`InboundRequest`]. Dropping it unanswered answers `Internal` so the requester
/// does not wait for its timeout.
#[derive(Debug)]
pub struct Responder {
    inner: Option<ReplyPath>,
}

/// How the response travels back: through the swarm (`/codio/1.0.0`) or to the writer of an
/// RPC stream (`/codio/rpc/1.0.0`).
#[derive(Debug)]
enum ReplyPath {
    Swarm {
        channel: ResponseChannel<Response>,
        commands: mpsc::Sender<Command>,
    },
    Rpc(crate::rpc::RpcReply),
}

impl Responder {
    pub(crate) fn swarm(
        channel: ResponseChannel<Response>,
        commands: mpsc::Sender<Command>,
    ) -> Self {
        Self {
            inner: Some(ReplyPath::Swarm { channel, commands }),
        }
    }

    pub(crate) fn rpc(reply: crate::rpc::RpcReply) -> Self {
        Self {
            inner: Some(ReplyPath::Rpc(reply)),
        }
    }

    /// Sends `response`. Waits while the node's command queue is full (back-pressure).
    ///
    /// # Errors
    ///
    /// [`NetworkError::ShutDown`] when the node has shut down or the requester's stream is
    /// gone.
    pub async fn respond(mut self, response: Response) -> Result<(), NetworkError> {
        match self.inner.take() {
            None => Ok(()),
            Some(ReplyPath::Swarm { channel, commands }) => commands
                .send(Command::Respond { channel, response })
                .await
                .map_err(|_| NetworkError::ShutDown),
            Some(ReplyPath::Rpc(reply)) => {
                let tx = reply.tx.clone();
                tx.send(reply.answer(response))
                    .await
                    .map_err(|_| NetworkError::ShutDown)
            }
        }
    }

    /// Answers at once with an error, without waiting (best effort).
    pub(crate) fn refuse(mut self, code: ErrorCode, message: &str) {
        self.send_now(Response::error(code, message));
    }

    fn send_now(&mut self, response: Response) {
        match self.inner.take() {
            None => {}
            // Best effort: with a full queue the requester times out instead.
            Some(ReplyPath::Swarm { channel, commands }) => {
                let _ = commands.try_send(Command::Respond { channel, response });
            }
            // Never full: the queue has a slot for every permit, and the reply holds one.
            Some(ReplyPath::Rpc(reply)) => {
                let tx = reply.tx.clone();
                let _ = tx.try_send(reply.answer(response));
            }
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.send_now(Response::error(
            ErrorCode::Internal,
            "the handler dropped the request",
        ));
    }
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

/// Hands `request` to the application's queue, or answers `Overloaded` (queue full) or
/// `NotFound` (handler gone) at once; the queue never waits.
pub(crate) fn enqueue(queue: &mpsc::Sender<InboundRequest>, request: InboundRequest) {
    match queue.try_send(request) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(request)) => {
            tracing::debug!(peer_id = %request.peer_id, "request handler saturated; answering Overloaded");
            request
                .responder
                .refuse(ErrorCode::Overloaded, "request queue full");
        }
        Err(mpsc::error::TrySendError::Closed(request)) => {
            request
                .responder
                .refuse(ErrorCode::NotFound, "request handler gone");
        }
    }
}

/// State shared between the event loop (the only writer) and the handles (readers).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    peers: RwLock<HashMap<PeerId, PeerInfo>>,
    listen_addrs: RwLock<Vec<Multiaddr>>,
    counts: RwLock<ConnectionCounts>,
    nat: RwLock<NatStatus>,
}

impl Shared {
    pub(crate) fn peers(&self) -> Vec<PeerInfo> {
        // A panic while holding the lock cannot leave the map half-updated in a way readers
        // care about (each update is a single insert/remove/field write), so poisoning is ignored.
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        peers.values().cloned().collect()
    }

    /// Records that `peer_id` was heard from at `now`.
    pub(crate) fn touch(&self, peer_id: &PeerId, now: Instant) {
        self.update_peers(|peers| {
            if let Some(info) = peers.get_mut(peer_id) {
                info.last_seen = now;
            }
        });
    }

    pub(crate) fn peer(&self, peer_id: &PeerId) -> Option<PeerInfo> {
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        peers.get(peer_id).cloned()
    }

    pub(crate) fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn counts(&self) -> ConnectionCounts {
        *self.counts.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn nat_status(&self) -> NatStatus {
        self.nat
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_nat_status(&self, status: NatStatus) {
        *self.nat.write().unwrap_or_else(PoisonError::into_inner) = status;
    }

    fn set_counts(&self, counts: ConnectionCounts) {
        *self.counts.write().unwrap_or_else(PoisonError::into_inner) = counts;
    }

    fn update_peers<R>(&self, f: impl FnOnce(&mut HashMap<PeerId, PeerInfo>) -> R) -> R {
        f(&mut self.peers.write().unwrap_or_else(PoisonError::into_inner))
    }

    fn update_listen_addrs(&self, f: impl FnOnce(&mut Vec<Multiaddr>)) {
        f(&mut self
            .listen_addrs
            .write()
            .unwrap_or_else(PoisonError::into_inner))
    }
}

struct PendingDial {
    address: Multiaddr,
    expected: Option<PeerId>,
    reply: DialReply,
}

/// Who waits for a dial: a `connect_peer` caller, or a `find_peer` caller whose peer the DHT
/// resolved to `addresses`.
enum DialReply {
    Connect(oneshot::Sender<Result<PeerId, ConnectError>>),
    FindPeer {
        addresses: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<Vec<Multiaddr>, DhtError>>,
    },
}

impl DialReply {
    fn send(self, result: Result<PeerId, ConnectError>) {
        // A caller that gave up dropped its receiver; nothing to do then.
        let _ = match self {
            DialReply::Connect(reply) => reply.send(result).map_err(drop),
            DialReply::FindPeer { addresses, reply } => reply
                .send(result.map(|_| addresses).map_err(DhtError::Connect))
                .map_err(drop),
        };
    }
}

/// A DHT query a caller waits for.
enum PendingQuery {
    FindPeer {
        peer_id: PeerId,
        reply: oneshot::Sender<Result<Vec<Multiaddr>, DhtError>>,
    },
    ClosestPeers(oneshot::Sender<Result<Lookup, DhtError>>),
    Provide(oneshot::Sender<Result<(), DhtError>>),
    FindProviders(oneshot::Sender<Result<HashSet<PeerId>, DhtError>>),
}

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<NetworkEvent>,
    shared: Arc<Shared>,
    connect_timeout: Duration,
    shutdown_timeout: Duration,
    pending_dials: HashMap<ConnectionId, PendingDial>,
    pending_listens:
        HashMap<ListenerId, (Multiaddr, oneshot::Sender<Result<Multiaddr, NetworkError>>)>,
    pending_disconnects: HashMap<PeerId, Vec<oneshot::Sender<Result<(), NetworkError>>>>,
    pending_queries: HashMap<QueryId, PendingQuery>,
    listeners: Vec<ListenerId>,
    query_timeout: Duration,
    pending_requests: HashMap<OutboundRequestId, oneshot::Sender<Result<Response, RequestError>>>,
    inbound: mpsc::Sender<InboundRequest>,
    handler_installed: Arc<AtomicBool>,
    commands_tx: mpsc::WeakSender<Command>,
    metrics: Option<crate::metrics::Metrics>,
    /// Its sessions are forgotten when a connection of their peer closes.
    rpc: Arc<crate::rpc::RpcClient>,
    /// Every open connection: its peer and whether it is relayed.
    connections: HashMap<ConnectionId, (PeerId, bool)>,
    /// Connections that answered a ping already.
    verified: HashSet<ConnectionId>,
}

/// The channels the event loop works with.
pub(crate) struct Channels {
    pub(crate) commands: mpsc::Receiver<Command>,
    /// For [`Responder`]s: weak, so the loop does not keep itself alive.
    pub(crate) commands_tx: mpsc::WeakSender<Command>,
    pub(crate) events: broadcast::Sender<NetworkEvent>,
    pub(crate) inbound: mpsc::Sender<InboundRequest>,
    pub(crate) handler_installed: Arc<AtomicBool>,
    pub(crate) metrics: Option<crate::metrics::Metrics>,
    pub(crate) rpc: Arc<crate::rpc::RpcClient>,
}

/// The timeouts the event loop applies.
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) shutdown: Duration,
    pub(crate) query: Duration,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        channels: Channels,
        shared: Arc<Shared>,
        timeouts: Timeouts,
    ) -> Self {
        let Channels {
            commands,
            commands_tx,
            events,
            inbound,
            handler_installed,
            metrics,
            rpc,
        } = channels;
        let Timeouts {
            connect: connect_timeout,
            shutdown: shutdown_timeout,
            query: query_timeout,
        } = timeouts;
        Self {
            swarm,
            commands,
            events,
            shared,
            connect_timeout,
            shutdown_timeout,
            pending_dials: HashMap::new(),
            pending_listens: HashMap::new(),
            pending_disconnects: HashMap::new(),
            pending_queries: HashMap::new(),
            listeners: Vec::new(),
            query_timeout,
            connections: HashMap::new(),
            verified: HashSet::new(),
            pending_requests: HashMap::new(),
            inbound,
            handler_installed,
            commands_tx,
            metrics,
            rpc,
        }
    }

    /// Runs until a shutdown command arrives or every handle is dropped.
    pub(crate) async fn run(mut self) {
        let local = *self.swarm.local_peer_id();
        tracing::debug!(%local, "event loop started");
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        self.close_gracefully().await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.on_command(command),
                    None => {
                        tracing::debug!("every handle dropped; shutting down");
                        self.close_gracefully().await;
                        break;
                    }
                },
            }
        }
        // Pending replies are dropped here: their callers see `ShutDown`.
        tracing::debug!(%local, "event loop stopped");
    }

    fn emit(&self, event: NetworkEvent) {
        if let Some(metrics) = &self.metrics {
            metrics.on_network_event(&event);
            if matches!(
                event,
                NetworkEvent::PeerConnected { .. } | NetworkEvent::PeerDisconnected { .. }
            ) {
                metrics
                    .codio
                    .set_connected_peers(self.swarm.connected_peers().count());
            }
        }
        // No subscriber is not an error: events are optional to consume.
        let _ = self.events.send(event);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Start {
                address,
                external,
                reply,
            } => match self.swarm.listen_on(address.clone()) {
                Ok(id) => {
                    for address in external {
                        tracing::info!(%address, "external address (configured)");
                        self.swarm.add_external_address(address);
                    }
                    self.listeners.push(id);
                    self.pending_listens.insert(id, (address, reply));
                    self.swarm.behaviour_mut().discovery.start();
                    self.swarm.behaviour_mut().policy.dial_watched();
                }
                Err(error) => {
                    let _ = reply.send(Err(NetworkError::Listen {
                        address,
                        reason: error.to_string(),
                    }));
                }
            },
            Command::Dial { address, reply } => self.dial(address, reply),
            Command::SendRequest {
                peer_id,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .protocol
                    .send_request(&peer_id, request);
                self.pending_requests.insert(id, reply);
            }
            Command::Respond { channel, response } => {
                if self
                    .swarm
                    .behaviour_mut()
                    .protocol
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!("response dropped: the requester's stream is gone");
                }
            }
            Command::FindPeer { peer_id, reply } => {
                self.swarm.behaviour_mut().policy.allow_dials(&peer_id);
                if let Some(info) = self.shared.peer(&peer_id) {
                    let _ = reply.send(Ok(info.addresses));
                } else {
                    let id = self.swarm.behaviour_mut().discovery.find_peer(peer_id);
                    self.pending_queries
                        .insert(id, PendingQuery::FindPeer { peer_id, reply });
                }
            }
            Command::ClosestPeers { key, reply } => {
                let id = self.swarm.behaviour_mut().discovery.closest_peers(key);
                self.pending_queries
                    .insert(id, PendingQuery::ClosestPeers(reply));
            }
            Command::Provide { key, reply } => {
                match self.swarm.behaviour_mut().discovery.start_providing(key) {
                    Ok(id) => {
                        self.pending_queries
                            .insert(id, PendingQuery::Provide(reply));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(DhtError::Store(error.to_string())));
                    }
                }
            }
            Command::FindProviders { key, reply } => {
                let id = self.swarm.behaviour_mut().discovery.providers(key);
                self.pending_queries
                    .insert(id, PendingQuery::FindProviders(reply));
            }
            Command::Disconnect { peer_id, reply } => {
                // An explicit disconnect is never undone by reconnection.
                let was_watched = self.swarm.behaviour().policy.is_watched(&peer_id);
                self.swarm.behaviour_mut().policy.unwatch(&peer_id);
                self.swarm.behaviour_mut().discovery.remove_peer(&peer_id);
                if self.swarm.disconnect_peer_id(peer_id).is_ok() {
                    tracing::debug!(%peer_id, "disconnecting");
                    self.pending_disconnects
                        .entry(peer_id)
                        .or_default()
                        .push(reply);
                } else if was_watched {
                    // Not connected, but a reconnection was pending: cancelling it is the
                    // disconnect.
                    let _ = reply.send(Ok(()));
                } else {
                    let _ = reply.send(Err(NetworkError::NotConnected(peer_id)));
                }
            }
            // `run` intercepts shutdown before dispatching here.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn dial(&mut self, address: Multiaddr, reply: oneshot::Sender<Result<PeerId, ConnectError>>) {
        let reply = DialReply::Connect(reply);
        let expected = peer_id_of(&address);
        let opts = match expected {
            Some(peer_id) if peer_id == *self.swarm.local_peer_id() => {
                reply.send(Err(ConnectError::LocalPeerId { address }));
                return;
            }
            Some(peer_id) if self.swarm.is_connected(&peer_id) => {
                self.swarm
                    .behaviour_mut()
                    .policy
                    .watch(peer_id, vec![without_p2p(address)], true);
                reply.send(Ok(peer_id));
                return;
            }
            Some(peer_id) => {
                // The application asks for this peer: an earlier explicit disconnect no
                // longer applies.
                self.swarm.behaviour_mut().policy.allow_dials(&peer_id);
                DialOpts::peer_id(peer_id)
                    .addresses(vec![address.clone()])
                    .condition(PeerCondition::Always)
                    .build()
            }
            None => DialOpts::unknown_peer_id().address(address.clone()).build(),
        };
        self.dial_with(opts, address, expected, reply);
    }

    fn dial_with(
        &mut self,
        opts: DialOpts,
        address: Multiaddr,
        expected: Option<PeerId>,
        reply: DialReply,
    ) {
        let connection_id = opts.connection_id();
        tracing::debug!(%address, ?connection_id, "dialing");
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(
                    connection_id,
                    PendingDial {
                        address,
                        expected,
                        reply,
                    },
                );
            }
            Err(error) => {
                let error = self.connect_error(error, address, expected);
                reply.send(Err(error));
            }
        }
    }

    fn connect_error(
        &self,
        error: DialError,
        address: Multiaddr,
        expected: Option<PeerId>,
    ) -> ConnectError {
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
            DialError::Transport(errors) => {
                let timed_out = errors.iter().any(|(_, e)| match e {
                    TransportError::Other(e) => codio_transport::is_timeout(e),
                    TransportError::MultiaddrNotSupported(_) => false,
                });
                let unsupported = errors
                    .iter()
                    .all(|(_, e)| matches!(e, TransportError::MultiaddrNotSupported(_)));
                if timed_out {
                    ConnectError::Timeout {
                        address,
                        after: self.connect_timeout,
                    }
                } else if unsupported && !errors.is_empty() {
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
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(metrics) = &self.metrics {
            metrics.on_swarm_event(&event);
        }
        let connections_changed = matches!(
            event,
            SwarmEvent::ConnectionEstablished { .. }
                | SwarmEvent::ConnectionClosed { .. }
                | SwarmEvent::IncomingConnection { .. }
                | SwarmEvent::IncomingConnectionError { .. }
                | SwarmEvent::OutgoingConnectionError { .. }
                | SwarmEvent::Dialing { .. }
        );
        if connections_changed {
            // Counts first, so subscribers of the matching event read them up to date.
            self.shared
                .set_counts(self.swarm.behaviour().policy.counts());
        }
        self.dispatch(event);
    }

    fn dispatch(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.on_connection_established(
                peer_id,
                connection_id,
                endpoint,
                num_established.get(),
            ),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => self.on_connection_closed(
                peer_id,
                connection_id,
                num_established,
                cause.map(|c| c.to_string()),
            ),
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(?peer_id, %error, "outgoing connection failed");
                let message = error.to_string();
                if let Some(pending) = self.pending_dials.remove(&connection_id) {
                    let error = self.connect_error(error, pending.address, pending.expected);
                    pending.reply.send(Err(error));
                }
                self.emit(NetworkEvent::DialFailed {
                    peer_id,
                    error: message,
                });
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(%send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::info!(%address, "listening");
                self.shared.update_listen_addrs(|addrs| {
                    if !addrs.contains(&address) {
                        addrs.push(address.clone());
                    }
                });
                if let Some((_, reply)) = self.pending_listens.remove(&listener_id) {
                    let _ = reply.send(Ok(address.clone()));
                }
                self.emit(NetworkEvent::Listening { address });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::info!(%address, "no longer listening");
                self.shared
                    .update_listen_addrs(|addrs| addrs.retain(|a| a != &address));
                self.emit(NetworkEvent::ListenAddressExpired { address });
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                tracing::info!(?addresses, ?reason, "listener closed");
                self.listeners.retain(|id| *id != listener_id);
                self.shared
                    .update_listen_addrs(|addrs| addrs.retain(|a| !addresses.contains(a)));
                if let Some((address, reply)) = self.pending_listens.remove(&listener_id) {
                    let reason = match reason {
                        Ok(()) => "listener closed".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    let _ = reply.send(Err(NetworkError::Listen { address, reason }));
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                tracing::warn!(?listener_id, %error, "listener error");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    fn on_connection_established(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        endpoint: ConnectedPoint,
        num_established: u32,
    ) {
        let now = Instant::now();
        let relayed = endpoint.is_relayed();
        self.connections.insert(connection_id, (peer_id, relayed));
        let all_relayed = self.all_relayed(&peer_id);
        let (address, direction) = match &endpoint {
            ConnectedPoint::Dialer { address, .. } => (address.clone(), Direction::Outbound),
            ConnectedPoint::Listener { send_back_addr, .. } => {
                (send_back_addr.clone(), Direction::Inbound)
            }
        };
        self.shared.update_peers(|peers| {
            let info = peers
                .entry(peer_id)
                .or_insert_with(|| PeerInfo::new(peer_id, now));
            info.connections = num_established as usize;
            info.last_seen = now;
            info.relayed = all_relayed;
            if direction == Direction::Outbound {
                info.add_address(address.clone(), MAX_ADDRESSES_PER_PEER);
            }
        });
        if let Some(pending) = self.pending_dials.remove(&connection_id) {
            // Peers the application asked for are protected and reconnected.
            let addresses = match &pending.reply {
                DialReply::FindPeer { addresses, .. } => addresses.clone(),
                DialReply::Connect(_) => vec![without_p2p(pending.address.clone())],
            };
            self.swarm
                .behaviour_mut()
                .policy
                .watch(peer_id, addresses, true);
            pending.reply.send(Ok(peer_id));
        }
        if num_established == 1 {
            tracing::info!(%peer_id, %address, ?direction, relayed, "peer connected");
            self.emit(NetworkEvent::PeerConnected {
                peer_id,
                address,
                direction,
                relayed,
            });
        } else if !relayed {
            tracing::info!(%peer_id, %address, ?direction, "direct connection added");
        }
    }

    fn all_relayed(&self, peer_id: &PeerId) -> bool {
        self.connections
            .values()
            .filter(|(p, _)| p == peer_id)
            .all(|(_, relayed)| *relayed)
    }

    fn on_connection_closed(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        remaining: u32,
        cause: Option<String>,
    ) {
        self.connections.remove(&connection_id);
        self.verified.remove(&connection_id);
        // The request stream may have run on this connection: later requests open a new one
        // rather than race the dying stream.
        self.rpc.forget(&peer_id);
        if remaining > 0 {
            let all_relayed = self.all_relayed(&peer_id);
            self.shared.update_peers(|peers| {
                if let Some(info) = peers.get_mut(&peer_id) {
                    info.connections = remaining as usize;
                    info.relayed = all_relayed;
                }
            });
            return;
        }
        self.shared.update_peers(|peers| peers.remove(&peer_id));
        // No connection is left: every request stream of this peer is dead.
        self.rpc.peer_gone(&peer_id);
        tracing::info!(%peer_id, ?cause, "peer disconnected");
        for reply in self
            .pending_disconnects
            .remove(&peer_id)
            .unwrap_or_default()
        {
            let _ = reply.send(Ok(()));
        }
        self.emit(NetworkEvent::PeerDisconnected { peer_id, cause });
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                tracing::debug!(%peer_id, agent = %info.agent_version, "identified");
                let now = Instant::now();
                self.shared.update_peers(|peers| {
                    if let Some(peer) = peers.get_mut(&peer_id) {
                        peer.last_seen = now;
                        peer.agent_version = Some(info.agent_version.clone());
                        for addr in &info.listen_addrs {
                            peer.add_address(addr.clone(), MAX_ADDRESSES_PER_PEER);
                        }
                    }
                });
                for addr in codio_discovery::usable_addresses(&info) {
                    self.swarm.add_peer_address(peer_id, addr.clone());
                }
                if let Some(autorelay) = self.swarm.behaviour_mut().autorelay.as_mut() {
                    autorelay.on_identify(peer_id, &info);
                }
                self.swarm
                    .behaviour_mut()
                    .discovery
                    .on_identify(peer_id, &info);
                self.emit(NetworkEvent::PeerIdentified {
                    peer_id,
                    agent_version: info.agent_version,
                    listen_addrs: info.listen_addrs,
                });
            }
            BehaviourEvent::Identify(identify::Event::Error { peer_id, error, .. }) => {
                tracing::debug!(%peer_id, %error, "identify failed");
            }
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            }) => match result {
                Ok(rtt) => {
                    self.swarm.behaviour_mut().policy.on_ping(
                        peer,
                        connection,
                        PingOutcome::Success,
                    );
                    if self.verified.insert(connection) {
                        let relayed = self
                            .connections
                            .get(&connection)
                            .is_some_and(|(_, relayed)| *relayed);
                        tracing::info!(%peer, ?rtt, relayed, "connection verified by ping");
                        self.emit(NetworkEvent::ConnectionVerified {
                            peer_id: peer,
                            rtt,
                            relayed,
                        });
                    }
                    let now = Instant::now();
                    self.shared.update_peers(|peers| {
                        if let Some(info) = peers.get_mut(&peer) {
                            info.last_seen = now;
                            info.rtt = Some(rtt);
                        }
                    });
                }
                Err(error) => {
                    tracing::debug!(%peer, %error, "ping failed");
                    let outcome = match error {
                        ping::Failure::Unsupported => PingOutcome::Unsupported,
                        _ => PingOutcome::Failure,
                    };
                    self.swarm
                        .behaviour_mut()
                        .policy
                        .on_ping(peer, connection, outcome);
                }
            },
            BehaviourEvent::Policy(event) => self.on_policy_event(event),
            BehaviourEvent::RelayClient(event) => self.on_relay_client_event(event),
            BehaviourEvent::RelayServer(event) => tracing::debug!(?event, "relay server"),
            BehaviourEvent::Autonat(event) => self.on_autonat_event(event),
            BehaviourEvent::Dcutr(libp2p::dcutr::Event {
                remote_peer_id,
                result,
            }) => match result {
                Ok(_) => {
                    tracing::info!(peer_id = %remote_peer_id, "hole punch succeeded: direct connection");
                    self.emit(NetworkEvent::HolePunchSucceeded {
                        peer_id: remote_peer_id,
                    });
                }
                Err(error) => {
                    tracing::info!(peer_id = %remote_peer_id, %error, "hole punch failed");
                    self.emit(NetworkEvent::HolePunchFailed {
                        peer_id: remote_peer_id,
                        error: error.to_string(),
                    });
                }
            },
            BehaviourEvent::Autorelay(event) => tracing::debug!(?event, "autorelay"),
            BehaviourEvent::Protocol(event) => self.on_protocol_event(event),
            BehaviourEvent::Bulk(()) | BehaviourEvent::Rpc(()) => {}
            BehaviourEvent::Discovery(event) => self.on_discovery_event(event),
        }
    }

    fn on_protocol_event(&mut self, event: request_response::Event<Request, Response>) {
        use request_response::{Event, Message, OutboundFailure};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.touch(&peer);
                self.on_inbound_request(peer, request, channel);
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                self.touch(&peer);
                if let Some(reply) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(response_result(response));
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "request failed");
                if let Some(reply) = self.pending_requests.remove(&request_id) {
                    let error = match error {
                        OutboundFailure::Timeout => RequestError::Timeout,
                        OutboundFailure::DialFailure => {
                            RequestError::PeerUnreachable("dial failed".to_owned())
                        }
                        OutboundFailure::ConnectionClosed => RequestError::PeerUnreachable(
                            "connection closed before the response".to_owned(),
                        ),
                        OutboundFailure::UnsupportedProtocols => RequestError::ProtocolViolation(
                            format!("peer does not speak {}", codio_protocol::PROTOCOL),
                        ),
                        OutboundFailure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                            RequestError::ProtocolViolation(e.to_string())
                        }
                        OutboundFailure::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                            RequestError::ProtocolViolation(format!("truncated response: {e}"))
                        }
                        OutboundFailure::Io(e) => RequestError::PeerUnreachable(e.to_string()),
                    };
                    let _ = reply.send(Err(error));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound request failed; stream reset");
                self.emit(NetworkEvent::InboundRequestFailed {
                    peer_id: peer,
                    error: error.to_string(),
                });
            }
            Event::ResponseSent { .. } => {}
        }
    }

    /// Hands an inbound request to the application, or answers at once when there is no
    /// handler or its queue is full.
    fn on_inbound_request(
        &mut self,
        peer_id: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) {
        if let Some(metrics) = &self.metrics {
            metrics.codio.on_inbound_request();
        }
        let refuse = |this: &mut Self, channel, code, message: &str| {
            let _ = this
                .swarm
                .behaviour_mut()
                .protocol
                .send_response(channel, Response::error(code, message));
        };
        if !self.handler_installed.load(Ordering::Acquire) {
            refuse(self, channel, ErrorCode::NotFound, "no request handler");
            return;
        }
        let Some(commands) = self.commands_tx.upgrade() else {
            refuse(self, channel, ErrorCode::Internal, "shutting down");
            return;
        };
        let inbound = InboundRequest {
            peer_id,
            request,
            responder: Responder::swarm(channel, commands),
        };
        enqueue(&self.inbound, inbound);
    }

    fn touch(&self, peer_id: &PeerId) {
        self.shared.touch(peer_id, Instant::now());
    }

    fn on_relay_client_event(&mut self, event: libp2p::relay::client::Event) {
        match event {
            libp2p::relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                tracing::info!(relay = %relay_peer_id, renewal, "relay reservation accepted");
                if let Some(autorelay) = self.swarm.behaviour_mut().autorelay.as_mut() {
                    autorelay.on_accepted(&relay_peer_id);
                }
                self.emit(NetworkEvent::RelayReservationAccepted {
                    relay: relay_peer_id,
                    renewal,
                });
            }
            other => tracing::debug!(?other, "relay client"),
        }
    }

    fn on_autonat_event(&mut self, event: libp2p::autonat::v1::Event) {
        use codio_policy::autorelay::Reachability;
        use libp2p::autonat::v1::{Event, NatStatus as AutonatStatus};
        let Event::StatusChanged { new, .. } = event else {
            tracing::debug!(?event, "autonat");
            return;
        };
        let (status, reachability) = match new {
            AutonatStatus::Public(address) => (NatStatus::Public { address }, Reachability::Public),
            AutonatStatus::Private => (NatStatus::Private, Reachability::Private),
            AutonatStatus::Unknown => (NatStatus::Unknown, Reachability::Unknown),
        };
        tracing::info!(?status, "NAT status");
        if let Some(autorelay) = self.swarm.behaviour_mut().autorelay.as_mut() {
            autorelay.set_reachability(reachability);
        }
        self.shared.set_nat_status(status.clone());
        self.emit(NetworkEvent::NatStatusChanged { status });
    }

    fn on_policy_event(&mut self, event: PolicyEvent) {
        let event = match event {
            PolicyEvent::Denied {
                peer_id,
                endpoint,
                reason,
            } => NetworkEvent::ConnectionDenied {
                peer_id,
                direction: match endpoint {
                    libp2p::core::Endpoint::Dialer => Direction::Outbound,
                    libp2p::core::Endpoint::Listener => Direction::Inbound,
                },
                reason: reason.to_string(),
            },
            PolicyEvent::Trimmed { peer_id, .. } => NetworkEvent::PeerTrimmed { peer_id },
            PolicyEvent::DeadConnection {
                peer_id, failures, ..
            } => NetworkEvent::DeadPeer { peer_id, failures },
            PolicyEvent::Reconnecting {
                peer_id,
                attempt,
                delay,
            } => NetworkEvent::Reconnecting {
                peer_id,
                attempt,
                delay,
            },
            PolicyEvent::Reconnected { peer_id, attempts } => {
                NetworkEvent::Reconnected { peer_id, attempts }
            }
            PolicyEvent::GaveUp { peer_id, attempts } => {
                NetworkEvent::ReconnectGaveUp { peer_id, attempts }
            }
            other => {
                tracing::debug!(?other, "policy event");
                return;
            }
        };
        self.emit(event);
    }

    fn on_discovery_event(&mut self, event: DiscoveryEvent) {
        match event {
            DiscoveryEvent::Discovered {
                peer_id, addresses, ..
            } => {
                tracing::info!(%peer_id, ?addresses, "discovered via mDNS");
                self.emit(NetworkEvent::PeerDiscovered {
                    peer_id,
                    addresses,
                    source: DiscoverySource::Mdns,
                });
            }
            DiscoveryEvent::RoutingUpdated {
                peer_id,
                addresses,
                is_new_peer: true,
            } => {
                tracing::debug!(%peer_id, "new peer in the DHT routing table");
                self.emit(NetworkEvent::PeerDiscovered {
                    peer_id,
                    addresses,
                    source: DiscoverySource::Dht,
                });
            }
            DiscoveryEvent::Bootstrapped { result } => {
                tracing::debug!(?result, "DHT bootstrap finished");
            }
            DiscoveryEvent::ClosestPeers {
                query_id,
                result,
                stats,
            } => match self.pending_queries.remove(&query_id) {
                Some(PendingQuery::FindPeer { peer_id, reply }) => {
                    self.on_find_peer_result(peer_id, result, reply);
                }
                Some(PendingQuery::ClosestPeers(reply)) => {
                    let lookup = result
                        .map(|peers| Lookup {
                            peers: peers.into_iter().map(|p| p.peer_id).collect(),
                            requests: stats.num_requests(),
                            successes: stats.num_successes(),
                            duration: stats.duration().unwrap_or_default(),
                        })
                        .map_err(|_| self.query_timeout_error());
                    let _ = reply.send(lookup);
                }
                Some(other) => {
                    self.pending_queries.insert(query_id, other);
                }
                None => {}
            },
            DiscoveryEvent::Providers { query_id, result } => {
                if let Some(PendingQuery::FindProviders(reply)) =
                    self.pending_queries.remove(&query_id)
                {
                    let _ = reply.send(result.map_err(|_| self.query_timeout_error()));
                }
            }
            DiscoveryEvent::Provided { query_id, result } => {
                if let Some(PendingQuery::Provide(reply)) = self.pending_queries.remove(&query_id) {
                    let _ = reply.send(result.map_err(|_| self.query_timeout_error()));
                }
            }
            other => tracing::trace!(?other, "discovery event"),
        }
    }

    fn query_timeout_error(&self) -> DhtError {
        DhtError::Timeout {
            after: self.query_timeout,
        }
    }

    /// The DHT answered a `find_peer` lookup: dial the peer at the addresses found.
    fn on_find_peer_result(
        &mut self,
        peer_id: PeerId,
        result: Result<Vec<codio_discovery::PeerInfo>, codio_discovery::QueryError>,
        reply: oneshot::Sender<Result<Vec<Multiaddr>, DhtError>>,
    ) {
        let found = match &result {
            Ok(peers) => peers
                .iter()
                .filter(|p| p.peer_id == peer_id)
                .flat_map(|p| p.addrs.iter().cloned())
                .collect(),
            Err(_) => Vec::new(),
        };
        let known = self.swarm.behaviour_mut().discovery.addresses_of(&peer_id);
        let mut addresses: Vec<Multiaddr> = Vec::new();
        for address in found.into_iter().chain(known).map(without_p2p) {
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        if self.swarm.is_connected(&peer_id) {
            let _ = reply.send(Ok(addresses));
            return;
        }
        if addresses.is_empty() {
            let error = match result {
                Err(_) => self.query_timeout_error(),
                Ok(_) => DhtError::NotFound(peer_id),
            };
            let _ = reply.send(Err(error));
            return;
        }
        tracing::debug!(%peer_id, ?addresses, "found in the DHT; dialing");
        let opts = DialOpts::peer_id(peer_id)
            .addresses(addresses.clone())
            .condition(PeerCondition::Always)
            .build();
        let display = addresses[0].clone();
        self.dial_with(
            opts,
            display,
            Some(peer_id),
            DialReply::FindPeer { addresses, reply },
        );
    }

    /// Closes every connection and listener, waiting at most `shutdown_timeout`.
    async fn close_gracefully(&mut self) {
        self.swarm.behaviour_mut().policy.stop_reconnecting();
        for id in std::mem::take(&mut self.listeners) {
            self.swarm.remove_listener(id);
        }
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        tracing::debug!(peers = peers.len(), "closing connections");
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let deadline = tokio::time::sleep(self.shutdown_timeout);
        tokio::pin!(deadline);
        while self.swarm.connected_peers().next().is_some() {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                () = &mut deadline => {
                    tracing::warn!("connections still open after the shutdown timeout");
                    break;
                }
            }
        }
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
