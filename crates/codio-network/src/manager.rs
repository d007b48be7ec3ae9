//! [`NetworkManager`]: the handle to a running node. Its methods send a command to the event
//! loop and wait, bounded, for the answer; reads of shared state (peers, addresses, status)
//! need no round trip.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use codio_base::{addr::with_p2p, call::CallError};
use libp2p::Multiaddr;
use tokio::{
    sync::{Mutex, broadcast, mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    discovery::{DhtError, Lookup, Provider},
    event_loop::Command,
    nat::NatStatus,
    policy::{Access, ConnectionCounts, PeerInfo},
    protocol::{BulkError, BulkHeader, Request, RequestError, Response},
    pubsub::{PubsubError, Topic},
};
use codio_transport::listen::ListenAddrs;

use crate::{
    ConnectError, FindPeerError, NetworkConfig, NetworkError, NetworkEvent, NodeBuilder, PeerId,
};

/// What a call into the event loop that got no answer means for each kind of operation.
trait CallFailure {
    fn network(self, operation: &'static str, after: Duration) -> NetworkError;
    fn connect(self, address: Multiaddr, after: Duration) -> ConnectError;
}

impl CallFailure for CallError {
    fn network(self, operation: &'static str, after: Duration) -> NetworkError {
        match self {
            CallError::Timeout => NetworkError::Timeout { operation, after },
            _ => NetworkError::ShutDown,
        }
    }

    fn connect(self, address: Multiaddr, after: Duration) -> ConnectError {
        match self {
            CallError::Timeout => ConnectError::Timeout { address, after },
            _ => ConnectError::ShutDown,
        }
    }
}

/// The command queue into the event loop: a handle holds it strongly (the loop runs while any
/// does) or weakly (handlers: they must not keep their own node alive).
#[derive(Debug, Clone)]
pub(crate) enum Commands {
    Strong(mpsc::Sender<Command>),
    Weak(mpsc::WeakSender<Command>),
}

impl Commands {
    fn sender(&self) -> Option<mpsc::Sender<Command>> {
        match self {
            Self::Strong(sender) => Some(sender.clone()),
            Self::Weak(weak) => weak.upgrade(),
        }
    }

    fn downgrade(&self) -> Self {
        match self {
            Self::Strong(sender) => Self::Weak(sender.downgrade()),
            Self::Weak(weak) => Self::Weak(weak.clone()),
        }
    }
}

/// Handle to a running codio node. Clone it freely: every clone talks to the same node, and
/// the node shuts down when [`shutdown`](Self::shutdown) is called or the last clone is dropped.
/// (The handle a handler receives from the [`NodeBuilder`] does not keep the node running: once
/// every other handle is gone, its calls fail with `ShutDown`.)
#[derive(Debug, Clone)]
pub struct NetworkManager {
    pub(crate) local_peer_id: PeerId,
    pub(crate) protocol: codio_protocol::Client,
    pub(crate) dht: codio_discovery::Dht,
    pub(crate) pubsub: codio_pubsub::Pubsub,
    pub(crate) peers: codio_policy::Peers,
    pub(crate) access: Access,
    pub(crate) config: Arc<NetworkConfig>,
    pub(crate) commands: Commands,
    pub(crate) events: broadcast::Sender<NetworkEvent>,
    pub(crate) listen_addrs: ListenAddrs,
    pub(crate) nat: codio_nat::SharedStatus,
    pub(crate) started: Arc<AtomicBool>,
    pub(crate) task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl NetworkManager {
    /// Builds a node without request or bulk handlers (inbound requests are answered
    /// `NotFound`, bulk streams refused) and spawns its event loop; the seed API's
    /// constructor. [`builder`](Self::builder) registers handlers.
    ///
    /// # Errors
    ///
    /// As [`NodeBuilder::build`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub async fn new(config: NetworkConfig) -> Result<Self, NetworkError> {
        Self::builder(config).build().await
    }

    /// A builder to register handlers with before the node is built.
    pub fn builder(config: NetworkConfig) -> NodeBuilder {
        NodeBuilder::new(config)
    }

    /// Sends a command built around a reply sender and waits for the reply up to `limit`
    /// (the operation's own bound) plus [`REPLY_GRACE`](codio_base::call::REPLY_GRACE).
    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
        limit: Duration,
    ) -> Result<T, CallError> {
        let commands = self.commands.sender().ok_or(CallError::ShutDown)?;
        codio_base::call::call(&commands, command, limit).await
    }

    /// Starts listening on the configured addresses ([`NetworkConfig::listen_plan`]) and starts
    /// discovery: dials the bootstrap and reserved peers (and dials them again when lost),
    /// dials peers found by mDNS, bootstraps the DHT.
    ///
    /// Returns the listen addresses known once every listener reported its first address or
    /// failed (with `0.0.0.0` there may be more later; [`listen_addrs`](Self::listen_addrs)).
    ///
    /// # Errors
    ///
    /// [`NetworkError::AlreadyStarted`] on a second call, [`NetworkError::Listen`] when a
    /// required address (or every address) cannot be listened on, [`NetworkError::ShutDown`]
    /// after shutdown.
    pub async fn start(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Err(NetworkError::AlreadyStarted);
        }
        let addresses = self.config.listen_plan();
        let limit = self.config.transport.connect_timeout();
        self.call(|reply| Command::Start { addresses, reply }, limit)
            .await
            .map_err(|e| e.network("start", limit))?
    }

    /// Connects to the peer at `address` and returns its peer id once a connection is
    /// established.
    ///
    /// A `/p2p/<relay>/p2p-circuit/p2p/<id>` address reaches a peer through a relay: the node
    /// connects to the relay first and waits (up to the connect timeout) until the relay has
    /// identified it, so hole punching can upgrade the relayed connection to a direct one.
    ///
    /// With a `/p2p/<id>` suffix the remote must prove that identity, and an already connected
    /// peer is returned at once; without it, whoever answers is accepted. A connected peer is
    /// protected from trimming and reconnected with backoff after unexpected disconnects, until
    /// [`disconnect_peer`](Self::disconnect_peer). (A first dial that fails is the caller's to
    /// retry; bootstrap and reserved peers are retried automatically.)
    ///
    /// # Errors
    ///
    /// A [`ConnectError`] saying why: wrong peer id, timeout, unreachable, denied, shut down.
    pub async fn connect_peer(&self, address: Multiaddr) -> Result<PeerId, ConnectError> {
        if let Some((relay, relay_address)) = codio_nat::autorelay::relay_part(&address) {
            self.prepare_relay(relay_address, relay).await?;
        }
        self.dial(address).await
    }

    /// Before dialing through a relay: be connected to it and identified by it, so that the
    /// relay has told us our observed address (DCUtR needs it to punch a hole).
    async fn prepare_relay(
        &self,
        relay_address: Multiaddr,
        relay: PeerId,
    ) -> Result<(), ConnectError> {
        if self.peer_info(&relay).is_some_and(|info| info.identified()) {
            return Ok(());
        }
        self.dial(relay_address).await?;
        match self
            .identified(relay, self.config.transport.connect_timeout())
            .await
        {
            Err(NetworkError::ShutDown) => Err(ConnectError::ShutDown),
            // Identified, or not in time: dial anyway (the connection may stay relayed only).
            _ => Ok(()),
        }
    }

    /// Waits until `peer` is connected and has been identified (its listen addresses, protocols
    /// and agent are known: what the DHT, relays and hole punching use), up to `timeout`.
    /// Returns at once when it already is.
    ///
    /// # Errors
    ///
    /// [`NetworkError::Timeout`] when `peer` was not identified in time,
    /// [`NetworkError::ShutDown`] when the node stops first.
    pub async fn identified(
        &self,
        peer: PeerId,
        timeout: Duration,
    ) -> Result<PeerInfo, NetworkError> {
        // Subscribed before the check: an identification between the two is not missed.
        let mut events = self.subscribe();
        // Held for the wait only (bounded by `timeout`): tells when the event loop has ended.
        let commands = self.commands.sender().ok_or(NetworkError::ShutDown)?;
        let wait = async {
            loop {
                if let Some(info) = self.peer_info(&peer).filter(PeerInfo::identified) {
                    return Ok(info);
                }
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return Err(NetworkError::ShutDown),
                    },
                    () = commands.closed() => return Err(NetworkError::ShutDown),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(NetworkError::Timeout {
                operation: "identified",
                after: timeout,
            }))
    }

    async fn dial(&self, address: Multiaddr) -> Result<PeerId, ConnectError> {
        let after = self.config.transport.connect_timeout();
        let command = |reply| Command::Dial {
            address: address.clone(),
            reply,
        };
        self.call(command, after)
            .await
            .map_err(|e| e.connect(address, after))?
    }

    /// Closes every connection to `peer_id` and returns once they are closed. The peer is no
    /// longer protected nor reconnected: an explicit disconnect is never undone by the policy
    /// (it also cancels a pending reconnection of a peer that is not connected right now).
    ///
    /// # Errors
    ///
    /// [`NetworkError::NotConnected`] when there is no connection and no pending reconnection,
    /// [`NetworkError::Timeout`] when the connections do not close within the shutdown timeout.
    pub async fn disconnect_peer(&self, peer_id: PeerId) -> Result<(), NetworkError> {
        let after = self.config.shutdown_timeout;
        let command = |reply| Command::Disconnect { peer_id, reply };
        self.call(command, after)
            .await
            .map_err(|e| e.network("disconnect_peer", after))?
    }

    /// Resolves `peer_id`'s addresses through the DHT and connects to it. Returns the addresses
    /// found (or, when already connected, the known ones).
    ///
    /// # Errors
    ///
    /// [`FindPeerError::Dht`] when the lookup fails ([`DhtError::NotFound`],
    /// [`DhtError::NoKnownPeers`], [`DhtError::Timeout`], [`DhtError::ShutDown`]),
    /// [`FindPeerError::Connect`] when the addresses found do not answer.
    pub async fn find_peer(&self, peer_id: PeerId) -> Result<Vec<Multiaddr>, FindPeerError> {
        if let Some(info) = self.peer_info(&peer_id) {
            return Ok(info.addresses);
        }
        let after = self.config.transport.connect_timeout();
        // The lookup must be able to reach the peer itself (it answers for its own id).
        let allow = |reply| Command::AllowDials { peer_id, reply };
        if let Err(CallError::ShutDown) = self.call(allow, after).await {
            return Err(FindPeerError::Dht(DhtError::ShutDown));
        }
        let addresses = self.dht.find_addresses(peer_id).await?;
        let command = |reply| Command::DialPeer {
            peer_id,
            addresses: addresses.clone(),
            reply,
        };
        let first = addresses.first().cloned().unwrap_or_else(Multiaddr::empty);
        match self.call(command, after).await {
            Ok(connected) => connected,
            Err(e) => Err(e.connect(first, after)),
        }
        .map_err(FindPeerError::Connect)?;
        Ok(addresses)
    }

    /// The peers closest to `key` in the DHT's XOR metric (up to 20), as
    /// [`Dht::closest_peers`](codio_discovery::Dht::closest_peers) (errors included).
    pub async fn closest_peers(&self, key: impl Into<Vec<u8>>) -> Result<Vec<PeerId>, DhtError> {
        self.lookup(key).await.map(|lookup| lookup.peers)
    }

    /// Like [`closest_peers`](Self::closest_peers), with what the lookup cost.
    pub async fn lookup(&self, key: impl Into<Vec<u8>>) -> Result<Lookup, DhtError> {
        self.dht.closest_peers(key.into()).await
    }

    /// Announces this node as a provider of `key` (a content id), as
    /// [`Dht::provide`](codio_discovery::Dht::provide) (errors included).
    pub async fn provide(&self, key: impl Into<Vec<u8>>) -> Result<(), DhtError> {
        self.dht.provide(key.into()).await
    }

    /// Stops providing `key`, as [`Dht::stop_providing`](codio_discovery::Dht::stop_providing).
    pub async fn stop_providing(&self, key: impl Into<Vec<u8>>) -> Result<(), DhtError> {
        self.dht.stop_providing(key.into()).await
    }

    /// The providers of `key` with their addresses, nearest first (connected, then lowest
    /// ping RTT), as [`Dht::find_providers`](codio_discovery::Dht::find_providers).
    pub async fn find_providers(&self, key: impl Into<Vec<u8>>) -> Result<Vec<Provider>, DhtError> {
        self.dht.find_providers(key.into()).await
    }

    /// The DHT handle, for what the methods above leave out (provider streams).
    pub fn dht(&self) -> &codio_discovery::Dht {
        &self.dht
    }

    /// Joins a pub/sub topic, as [`Pubsub::join`](codio_pubsub::Pubsub::join).
    pub async fn join(&self, topic: &str) -> Result<Topic, PubsubError> {
        self.pubsub.join(topic).await
    }

    /// The pub/sub handle, for validators and peer scores.
    pub fn pubsub(&self) -> &codio_pubsub::Pubsub {
        &self.pubsub
    }

    /// Sends a request to `peer_id` and waits for its response (pipelined on
    /// `/codio/rpc/1.0.0`, or `/codio/1.0.0` for peers without it). At most
    /// `protocol.max_outbound_requests` are in flight; further calls wait for a slot
    /// (back-pressure). The peer is dialed if needed (addresses from the DHT, identify,
    /// earlier connections).
    ///
    /// # Errors
    ///
    /// A [`RequestError`]: invalid, timeout, peer unreachable, protocol violation, too large,
    /// remote error, shut down.
    pub async fn send_request(
        &self,
        peer_id: PeerId,
        request: Request,
    ) -> Result<Response, RequestError> {
        self.protocol.request(peer_id, request).await
    }

    /// Inbound requests rejected while reading (malformed, oversized, truncated, wrong
    /// version, too slow), on either request protocol; their streams were dropped.
    pub fn rejected_requests(&self) -> u64 {
        self.protocol.stats().rejected_requests()
    }

    /// Streams `header.size` bytes from `source` to `peer_id` on one `/codio/bulk/1.0.0`
    /// stream, in 64 KiB chunks with back-pressure, calling `progress` with the bytes sent so
    /// far; returns once the receiver confirmed every byte. Memory use does not depend on the
    /// size. Fails when a read or write makes no progress for `protocol.bulk_idle_timeout`.
    ///
    /// # Errors
    ///
    /// A [`BulkError`]: stalled peer, rejected by the receiver, source too short, stream
    /// failure.
    pub async fn send_bulk<R>(
        &self,
        peer_id: PeerId,
        header: BulkHeader,
        source: &mut R,
        progress: impl FnMut(u64),
    ) -> Result<u64, BulkError>
    where
        R: futures::AsyncRead + Unpin,
    {
        self.protocol
            .send_bulk(peer_id, header, source, progress)
            .await
    }

    /// The currently connected peers.
    pub fn connected_peers(&self) -> Vec<PeerInfo> {
        let mut peers = self.peers.all();
        for info in &mut peers {
            self.merge_activity(info);
        }
        peers
    }

    /// What the node knows about `peer_id`, if connected.
    pub fn peer_info(&self, peer_id: &PeerId) -> Option<PeerInfo> {
        let mut info = self.peers.get(peer_id)?;
        self.merge_activity(&mut info);
        Some(info)
    }

    /// Request streams run outside the event loop: their peers' last activity is theirs.
    fn merge_activity(&self, info: &mut PeerInfo) {
        if let Some(last) = self.protocol.last_activity(&info.peer_id) {
            info.last_seen = info.last_seen.max(last);
        }
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// What AutoNAT found out about this node's reachability.
    pub fn nat_status(&self) -> NatStatus {
        self.nat.get()
    }

    /// Connection counts: established now, pending, and the peak ever established.
    pub fn connection_counts(&self) -> ConnectionCounts {
        self.peers.counts()
    }

    /// Who may connect: the allow and deny lists, changeable while the node runs.
    pub fn access(&self) -> Access {
        self.access.clone()
    }

    /// The addresses the node listens on: TCP ones first, then QUIC.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs.get()
    }

    /// The addresses other nodes dial this one by: each listen address with `/p2p/<this node's
    /// id>` (what [`connect_peer`](Self::connect_peer) and `bootstrap_peers` take). Empty
    /// before [`start`](Self::start).
    pub fn dial_addrs(&self) -> Vec<Multiaddr> {
        let id = self.local_peer_id;
        self.listen_addrs()
            .into_iter()
            .map(|address| with_p2p(address, id))
            .collect()
    }

    /// The first of [`dial_addrs`](Self::dial_addrs) (a TCP address when there is one), or
    /// `None` before [`start`](Self::start).
    pub fn dial_addr(&self) -> Option<Multiaddr> {
        self.listen_addrs
            .get()
            .into_iter()
            .next()
            .map(|address| with_p2p(address, self.local_peer_id))
    }

    /// A handle to this node that does not keep it running (what handlers receive).
    pub(crate) fn downgrade(&self) -> Self {
        Self {
            commands: self.commands.downgrade(),
            ..self.clone()
        }
    }

    /// Subscribes to [`NetworkEvent`]s published from now on. The channel is bounded by
    /// [`NetworkConfig::event_buffer`]: a subscriber that falls behind gets
    /// [`broadcast::error::RecvError::Lagged`] with the number of events it missed.
    pub fn subscribe(&self) -> broadcast::Receiver<NetworkEvent> {
        self.events.subscribe()
    }

    /// Closes every connection gracefully (bounded by [`NetworkConfig::shutdown_timeout`]),
    /// stops listening and waits for the event loop to finish. Further calls on any handle fail
    /// with `ShutDown`. Calling it twice is harmless.
    pub async fn shutdown(&self) {
        let limit = self.config.shutdown_timeout;
        let _ = self.call(|reply| Command::Shutdown { reply }, limit).await;
        if let Some(task) = self.task.lock().await.take()
            && let Err(error) = task.await
        {
            tracing::error!(%error, "event loop ended abnormally");
        }
    }
}
