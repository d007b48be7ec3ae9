//! The codio network facade.
//!
//! [`NetworkManager`] is a cheap, cloneable handle to a node whose libp2p [`Swarm`] runs in its
//! own task (the *event loop*). Methods send a command over a bounded queue and await the reply
//! the event loop sends back when libp2p reports the outcome; the event loop publishes
//! [`NetworkEvent`]s to every [`subscribe`](NetworkManager::subscribe)r and keeps the
//! [`PeerInfo`] table that [`connected_peers`](NetworkManager::connected_peers) reads.
//!
//! The node is built from the codio layers: the authenticated, multiplexed transport of
//! [`codio_transport`], connection limits (first in the composed behaviour), discovery
//! ([`codio_discovery`]: mDNS, Kademlia, bootstrap peers), identify and ping.
//!
//! ```
//! use codio_network::{NetworkConfig, NetworkEvent, NetworkManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = || NetworkConfig::default()
//!     .with_listen_ip("127.0.0.1".parse().unwrap())
//!     .with_mdns(false)
//!     .with_relay(false);
//! let a = NetworkManager::new(config()).await?;
//! let b = NetworkManager::new(config()).await?;
//! let addrs = a.start().await?;
//!
//! let mut events = a.subscribe();
//! let peer = b.connect_peer(addrs[0].clone()).await?;
//! assert_eq!(peer, a.local_peer_id());
//! assert!(b.connected_peers().iter().any(|p| p.peer_id == peer));
//! loop {
//!     if let NetworkEvent::PeerConnected { peer_id, .. } = events.recv().await? {
//!         assert_eq!(peer_id, b.local_peer_id());
//!         break;
//!     }
//! }
//! b.shutdown().await;
//! a.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`Swarm`]: libp2p::Swarm

mod behaviour;
mod bulk;
mod config;
mod error;
mod event;
mod event_loop;
pub mod metrics;
mod peer;
mod rpc;

use std::{
    collections::HashSet,
    sync::{
        Arc, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use libp2p::core::muxing::StreamMuxerBox;

pub use bulk::IncomingBulk;
pub use codio_discovery::KadMode;
pub use codio_policy::{BackoffConfig, ConnectionCounts};
pub use codio_protocol::bulk::{BulkError, BulkHeader};
use codio_protocol::streams::OpenStreamError;
pub use codio_protocol::{
    ContentId, ErrorCode, MAX_TOPIC_LEN, Metadata, ProtocolConfig, Request, Response,
};
pub use codio_transport::TransportConfig;
pub use config::{AutonatSettings, NetworkConfig, RelayServerLimits};
pub use error::{ConnectError, DhtError, NetworkError, RequestError};
pub use event::{Direction, DiscoverySource, NatStatus, NetworkEvent};
pub use event_loop::{InboundRequest, Responder};
pub use libp2p::{Multiaddr, PeerId, identity::Keypair};
use libp2p::{Swarm, multiaddr::Protocol, swarm};
pub use peer::PeerInfo;
use tokio::{
    sync::{Mutex, broadcast, mpsc, oneshot},
    task::JoinHandle,
};

use crate::event_loop::{Command, EventLoop, Shared};

/// Extra time a handle waits beyond a libp2p-side timeout before giving up on its reply.
const REPLY_GRACE: Duration = Duration::from_secs(2);

/// The peer id of a `/p2p/<id>`-terminated address.
pub(crate) fn peer_id_of(address: &Multiaddr) -> Option<PeerId> {
    match address.iter().last() {
        Some(Protocol::P2p(peer_id)) => Some(peer_id),
        _ => None,
    }
}

/// TCP + Noise + Yamux, and with `enable_relay` the relay client transport with the same
/// upgrades, as one transport.
fn build_transport(
    keypair: &Keypair,
    config: &NetworkConfig,
) -> Result<
    (
        codio_transport::CodioTransport,
        Option<libp2p::relay::client::Behaviour>,
    ),
    NetworkError,
> {
    let direct = codio_transport::build_transport(keypair, &config.transport)?;
    if !config.enable_relay {
        return Ok((direct, None));
    }
    let (relay_transport, relay_client) = libp2p::relay::client::new(keypair.public().to_peer_id());
    let relayed = codio_transport::upgrade(relay_transport, keypair, &config.transport)?;
    // Relay first: the DNS layer of the direct transport reports addresses it cannot dial as
    // errors rather than "not supported", which would stop the fall-through.
    let transport =
        libp2p::Transport::map_err(libp2p::Transport::or_transport(relayed, direct), |error| {
            error.into_inner()
        });
    let transport = libp2p::Transport::map(transport, |output, _| output.into_inner());
    Ok((libp2p::Transport::boxed(transport), Some(relay_client)))
}

/// The receiving end of a queue the application takes once; taking it tells the producer
/// (through `installed`) that somebody consumes, so it stops refusing.
#[derive(Debug)]
struct Handoff<T> {
    receiver: std::sync::Mutex<Option<mpsc::Receiver<T>>>,
    installed: Arc<AtomicBool>,
}

impl<T> Handoff<T> {
    fn new(receiver: mpsc::Receiver<T>, installed: Arc<AtomicBool>) -> Self {
        Self {
            receiver: std::sync::Mutex::new(Some(receiver)),
            installed,
        }
    }

    fn take(&self) -> Option<mpsc::Receiver<T>> {
        let receiver = self
            .receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if receiver.is_some() {
            self.installed.store(true, Ordering::Release);
        }
        receiver
    }
}

/// The outcome of a DHT lookup ([`NetworkManager::lookup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lookup {
    /// The closest peers found, closest first.
    pub peers: Vec<PeerId>,
    /// Requests sent to other peers during the lookup.
    pub requests: u32,
    /// Requests that were answered.
    pub successes: u32,
    /// How long the lookup took.
    pub duration: Duration,
}

/// `address` without a trailing `/p2p/<id>`.
pub(crate) fn without_p2p(mut address: Multiaddr) -> Multiaddr {
    if matches!(address.iter().last(), Some(Protocol::P2p(_))) {
        address.pop();
    }
    address
}

/// Handle to a running codio node. Clone it freely: every clone talks to the same node, and
/// the node shuts down when [`shutdown`](Self::shutdown) is called or the last clone is dropped.
#[derive(Debug, Clone)]
pub struct NetworkManager {
    local_peer_id: PeerId,
    requests: Arc<tokio::sync::Semaphore>,
    bulk_control: codio_protocol::streams::Control,
    rpc: Arc<rpc::RpcClient>,
    metrics: Option<Arc<metrics::CodioMetrics>>,
    bulk: Arc<Handoff<IncomingBulk>>,
    codec_stats: Arc<codio_protocol::CodecStats>,
    inbound: Arc<Handoff<InboundRequest>>,
    config: Arc<NetworkConfig>,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<NetworkEvent>,
    shared: Arc<Shared>,
    started: Arc<AtomicBool>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl NetworkManager {
    /// Builds the node (identity, transport, behaviours) and spawns its event loop on the
    /// current Tokio runtime. The node dials out but does not listen until [`start`](Self::start).
    ///
    /// # Errors
    ///
    /// [`NetworkError::InvalidConfig`] for configuration values that cannot work,
    /// [`NetworkError::Transport`] when the transport cannot be built.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub async fn new(config: NetworkConfig) -> Result<Self, NetworkError> {
        config.validate()?;
        let keypair = config
            .keypair
            .clone()
            .unwrap_or_else(libp2p::identity::Keypair::generate_ed25519);
        let local_peer_id = keypair.public().to_peer_id();
        let (transport, relay_client) = build_transport(&keypair, &config)?;
        let (transport, metrics) = match &config.metrics {
            Some(registry) => {
                // A poisoned lock only means another thread panicked while encoding; the
                // registry itself is still consistent.
                let mut registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
                let metrics = metrics::Metrics::register(&mut registry);
                let transport = libp2p::Transport::boxed(libp2p::Transport::map(
                    libp2p::metrics::BandwidthTransport::new(transport, &mut registry),
                    |(peer_id, muxer), _| (peer_id, StreamMuxerBox::new(muxer)),
                ));
                (transport, Some(metrics))
            }
            None => (transport, None),
        };
        let codec_stats = Arc::new(codio_protocol::CodecStats::default());
        let (bulk, bulk_control, bulk_incoming) = codio_protocol::streams::Behaviour::new(
            codio_protocol::streams::StreamsConfig::new(codio_protocol::bulk::BULK_PROTOCOL),
        );
        // RPC streams are long-lived, one per peer and direction: a small inbound queue.
        let (rpc_streams, rpc_control, rpc_incoming) = codio_protocol::streams::Behaviour::new(
            codio_protocol::streams::StreamsConfig::new(codio_protocol::rpc::RPC_PROTOCOL)
                .with_inbound_capacity(64),
        );
        let mut behaviour = behaviour::Behaviour::new(
            &keypair,
            &config,
            relay_client,
            codec_stats.clone(),
            bulk,
            rpc_streams,
        )?;
        // Bootstrap and reserved peers matter: protected, dialed at start, reconnected.
        for address in config.bootstrap_peers.iter().chain(&config.reserved_peers) {
            if let Some(peer_id) = peer_id_of(address) {
                behaviour
                    .policy
                    .watch(peer_id, vec![without_p2p(address.clone())], false);
            }
        }
        let swarm_config = swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(config.idle_timeout.unwrap_or(Duration::MAX));
        let swarm = Swarm::new(transport, behaviour, local_peer_id, swarm_config);

        let (commands, command_rx) = mpsc::channel(config.command_buffer);
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_request_buffer);
        let shared = Arc::new(Shared::default());
        let rpc_client = Arc::new(rpc::RpcClient::new(rpc_control, shared.clone()));
        let codio_metrics = metrics.as_ref().map(|m| m.codio.clone());
        let handler_installed = Arc::new(AtomicBool::new(false));
        let (events, _) = broadcast::channel(config.event_buffer);
        let event_loop = EventLoop::new(
            swarm,
            event_loop::Channels {
                commands: command_rx,
                commands_tx: commands.downgrade(),
                events: events.clone(),
                inbound: inbound_tx.clone(),
                handler_installed: handler_installed.clone(),
                metrics: metrics.clone(),
                rpc: rpc_client.clone(),
            },
            shared.clone(),
            event_loop::Timeouts {
                connect: config.transport.connect_timeout(),
                shutdown: config.shutdown_timeout,
                query: config.query_timeout,
            },
        );
        let (bulk_tx, bulk_rx) = mpsc::channel(config.bulk_stream_buffer);
        let bulk_installed = Arc::new(AtomicBool::new(false));
        let (alive_tx, alive_rx) = tokio::sync::watch::channel(());
        tokio::spawn(rpc::accept_loop(
            rpc_incoming,
            rpc::ServerContext {
                inbound: inbound_tx,
                installed: handler_installed.clone(),
                stats: codec_stats.clone(),
                metrics: codio_metrics.clone(),
                frame_timeout: config.protocol.request_timeout,
                shared: shared.clone(),
                switches: rpc_client.switches.clone(),
            },
            alive_rx.clone(),
        ));
        tokio::spawn(bulk::accept_loop(
            bulk_incoming,
            bulk_tx,
            bulk_installed.clone(),
            alive_rx,
            config.bulk_idle_timeout,
            codio_metrics.clone(),
        ));
        let task = tokio::spawn(async move {
            event_loop.run().await;
            drop(alive_tx);
        });
        tracing::info!(%local_peer_id, "network created");
        let requests = Arc::new(tokio::sync::Semaphore::new(config.max_outbound_requests));
        Ok(Self {
            local_peer_id,
            bulk_control,
            rpc: rpc_client,
            metrics: codio_metrics,
            bulk: Arc::new(Handoff::new(bulk_rx, bulk_installed)),
            codec_stats,
            requests,
            inbound: Arc::new(Handoff::new(inbound_rx, handler_installed)),
            config: Arc::new(config),
            commands,
            events,
            shared,
            started: Arc::new(AtomicBool::new(false)),
            task: Arc::new(Mutex::new(Some(task))),
        })
    }

    /// Starts listening on the configured address and starts discovery: dials the bootstrap
    /// peers (and dials them again when lost), dials peers found by mDNS, bootstraps the DHT.
    ///
    /// Returns the listen addresses known once the listener reported its first address (with
    /// `0.0.0.0` there may be more later; [`listen_addrs`](Self::listen_addrs) has them all).
    ///
    /// # Errors
    ///
    /// [`NetworkError::AlreadyStarted`] on a second call, [`NetworkError::Listen`] when the
    /// address cannot be listened on, [`NetworkError::ShutDown`] after shutdown.
    pub async fn start(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Err(NetworkError::AlreadyStarted);
        }
        let address = self.config.listen_multiaddr();
        let (reply, rx) = oneshot::channel();
        let external = self.config.external_addrs.clone();
        self.send(Command::Start {
            address,
            external,
            reply,
        })
        .await?;
        let first = rx.await.map_err(|_| NetworkError::ShutDown)??;
        let mut addrs = self.shared.listen_addrs();
        if addrs.is_empty() {
            addrs.push(first);
        }
        Ok(addrs)
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
        if let Some(relay) = codio_policy::autorelay::relay_of(&address) {
            self.prepare_relay(&address, relay).await?;
        }
        self.dial(address).await
    }

    /// Before dialing through a relay: be connected to it and identified by it, so that the
    /// relay has told us our observed address (DCUtR needs it to punch a hole).
    async fn prepare_relay(&self, address: &Multiaddr, relay: PeerId) -> Result<(), ConnectError> {
        let identified = |m: &Self| {
            m.peer_info(&relay)
                .is_some_and(|info| info.agent_version.is_some())
        };
        if identified(self) {
            return Ok(());
        }
        let mut relay_address = Multiaddr::empty();
        for protocol in address.iter() {
            if protocol == Protocol::P2pCircuit {
                break;
            }
            relay_address.push(protocol);
        }
        let mut events = self.subscribe();
        self.dial(relay_address).await?;
        let wait = async {
            while !identified(self) {
                match events.recv().await {
                    Ok(NetworkEvent::PeerIdentified { peer_id, .. }) if peer_id == relay => break,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Err(ConnectError::ShutDown),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.config.transport.connect_timeout(), wait).await {
            Ok(result) => result,
            // Not identified in time: dial anyway; the connection may still be relayed only.
            Err(_) => Ok(()),
        }
    }

    async fn dial(&self, address: Multiaddr) -> Result<PeerId, ConnectError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Dial {
            address: address.clone(),
            reply,
        })
        .await
        .map_err(|_| ConnectError::ShutDown)?;
        let after = self.config.transport.connect_timeout();
        match tokio::time::timeout(after + REPLY_GRACE, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ConnectError::ShutDown),
            Err(_) => Err(ConnectError::Timeout { address, after }),
        }
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
        let (reply, rx) = oneshot::channel();
        self.send(Command::Disconnect { peer_id, reply }).await?;
        let after = self.config.shutdown_timeout;
        match tokio::time::timeout(after, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NetworkError::ShutDown),
            Err(_) => Err(NetworkError::Timeout {
                operation: "disconnect_peer",
                after,
            }),
        }
    }

    /// Resolves `peer_id`'s addresses through the DHT and connects to it. Returns the addresses
    /// found (or, when already connected, the known ones).
    ///
    /// # Errors
    ///
    /// [`DhtError::NotFound`] when no DHT peer knows an address, [`DhtError::Connect`] when the
    /// addresses found do not answer, [`DhtError::Timeout`], [`DhtError::ShutDown`].
    pub async fn find_peer(&self, peer_id: PeerId) -> Result<Vec<Multiaddr>, DhtError> {
        let (reply, rx) = oneshot::channel();
        let limit = self.config.query_timeout + self.config.transport.connect_timeout();
        self.dht_request(Command::FindPeer { peer_id, reply }, rx, limit)
            .await
    }

    /// The peers closest to `key` in the DHT's XOR metric (up to 20), found by an iterative
    /// lookup.
    ///
    /// # Errors
    ///
    /// [`DhtError::Timeout`] when the lookup does not finish, [`DhtError::ShutDown`].
    pub async fn closest_peers(&self, key: impl Into<Vec<u8>>) -> Result<Vec<PeerId>, DhtError> {
        self.lookup(key).await.map(|lookup| lookup.peers)
    }

    /// Like [`closest_peers`](Self::closest_peers), with what the lookup cost.
    ///
    /// # Errors
    ///
    /// As [`closest_peers`](Self::closest_peers).
    pub async fn lookup(&self, key: impl Into<Vec<u8>>) -> Result<Lookup, DhtError> {
        let (reply, rx) = oneshot::channel();
        let key = key.into();
        self.dht_request(
            Command::ClosestPeers { key, reply },
            rx,
            self.config.query_timeout,
        )
        .await
    }

    /// Announces this node as a provider of `key` (a content id) to the peers closest to it.
    ///
    /// # Errors
    ///
    /// [`DhtError::Timeout`] when the announcement does not finish, [`DhtError::Store`] when
    /// the local store is full, [`DhtError::ShutDown`].
    pub async fn provide(&self, key: impl Into<Vec<u8>>) -> Result<(), DhtError> {
        let (reply, rx) = oneshot::channel();
        let key = key.into();
        self.dht_request(
            Command::Provide { key, reply },
            rx,
            self.config.query_timeout,
        )
        .await
    }

    /// The providers of `key` known to the DHT (including this node if it provides it).
    ///
    /// # Errors
    ///
    /// [`DhtError::Timeout`] when the lookup finds nothing in time, [`DhtError::ShutDown`].
    pub async fn find_providers(
        &self,
        key: impl Into<Vec<u8>>,
    ) -> Result<HashSet<PeerId>, DhtError> {
        let (reply, rx) = oneshot::channel();
        let key = key.into();
        self.dht_request(
            Command::FindProviders { key, reply },
            rx,
            self.config.query_timeout,
        )
        .await
    }

    async fn dht_request<T>(
        &self,
        command: Command,
        rx: oneshot::Receiver<Result<T, DhtError>>,
        limit: Duration,
    ) -> Result<T, DhtError> {
        self.send(command).await.map_err(|_| DhtError::ShutDown)?;
        match tokio::time::timeout(limit + REPLY_GRACE, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(DhtError::ShutDown),
            Err(_) => Err(DhtError::Timeout { after: limit }),
        }
    }

    /// Sends a `/codio/1.0.0` request to `peer_id` and waits for its response. At most
    /// [`NetworkConfig::max_outbound_requests`] requests are in flight; further calls wait for
    /// a slot (back-pressure). The peer is dialed if needed (addresses from the DHT, identify,
    /// earlier connections).
    ///
    /// # Errors
    ///
    /// A [`RequestError`]: timeout, peer unreachable, protocol violation, too large, remote
    /// error, shut down.
    pub async fn send_request(
        &self,
        peer_id: PeerId,
        request: Request,
    ) -> Result<Response, RequestError> {
        // Refuse oversized requests here rather than after a round trip (sized, not encoded:
        // the request path encodes it once).
        codio_protocol::check_size(&request, codio_protocol::MAX_REQUEST_FRAME)
            .map_err(|e| RequestError::TooLarge(e.to_string()))?;
        let _permit = self
            .requests
            .acquire()
            .await
            .map_err(|_| RequestError::ShutDown)?;
        let limit = self.config.protocol.request_timeout + self.config.transport.connect_timeout();
        let started = std::time::Instant::now();
        // `/codio/rpc/1.0.0` first; `/codio/1.0.0` for peers that do not speak it.
        let result = match self.rpc.request(peer_id, request, limit).await {
            Ok(response) => Ok(response),
            Err(rpc::RpcFailure::Failed(error)) => Err(error),
            Err(rpc::RpcFailure::Unsupported(request)) => {
                self.send_request_per_stream(peer_id, request, limit).await
            }
        };
        if let Some(metrics) = &self.metrics {
            let outcome = match result {
                Ok(_) => metrics::Outcome::ok,
                Err(_) => metrics::Outcome::error,
            };
            metrics.on_request(started.elapsed(), outcome);
        }
        result
    }

    /// `/codio/1.0.0`: one stream per request, through the event loop.
    async fn send_request_per_stream(
        &self,
        peer_id: PeerId,
        request: Request,
        limit: Duration,
    ) -> Result<Response, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::SendRequest {
                peer_id,
                request,
                reply,
            })
            .await
            .map_err(|_| RequestError::ShutDown)?;
        // libp2p's own timeout answers first; this only guards against a stuck event loop.
        match tokio::time::timeout(limit + REPLY_GRACE, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RequestError::ShutDown),
            Err(_) => Err(RequestError::Timeout),
        }
    }

    /// Takes the stream of inbound `/codio/1.0.0` requests (once; later calls return `None`).
    /// Until it is taken, requests are answered `NotFound`. The queue holds
    /// [`NetworkConfig::inbound_request_buffer`] requests; beyond that requests are answered
    /// `Overloaded` at once, so a slow handler never makes the node buffer without bound.
    pub fn take_inbound_requests(&self) -> Option<mpsc::Receiver<InboundRequest>> {
        self.inbound.take()
    }

    /// Inbound `/codio/1.0.0` requests rejected while reading (malformed, oversized,
    /// truncated, wrong version); their streams were dropped.
    pub fn rejected_requests(&self) -> u64 {
        self.codec_stats.rejected_requests()
    }

    /// Streams `header.size` bytes from `source` to `peer_id` on one `/codio/bulk/1.0.0`
    /// stream, in 64 KiB chunks with back-pressure, calling `progress` with the bytes sent so
    /// far; returns once the receiver confirmed every byte. Memory use does not depend on the
    /// size. Fails when a read or write makes no progress for
    /// [`NetworkConfig::bulk_idle_timeout`].
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
        let idle = self.config.bulk_idle_timeout;
        let open = self.bulk_control.open_stream(peer_id);
        let mut stream = match tokio::time::timeout(idle, open).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(OpenStreamError::UnsupportedProtocol(protocol))) => {
                return Err(BulkError::Protocol(
                    codio_protocol::ProtocolError::Malformed(format!(
                        "peer does not speak {protocol}"
                    )),
                ));
            }
            Ok(Err(error)) => {
                return Err(BulkError::Protocol(codio_protocol::ProtocolError::Io(
                    std::io::Error::new(std::io::ErrorKind::ConnectionRefused, error.to_string()),
                )));
            }
            Err(_) => return Err(BulkError::Timeout(idle)),
        };
        let sent =
            codio_protocol::bulk::send_bulk(&mut stream, &header, source, idle, progress).await?;
        if let Some(metrics) = &self.metrics {
            metrics.on_bulk(false, sent);
        }
        Ok(sent)
    }

    /// Takes the stream of inbound bulk transfers (once; later calls return `None`). Until
    /// it is taken, inbound bulk streams are refused.
    pub fn take_bulk_streams(&self) -> Option<mpsc::Receiver<IncomingBulk>> {
        self.bulk.take()
    }

    /// The currently connected peers.
    pub fn connected_peers(&self) -> Vec<PeerInfo> {
        self.shared.peers()
    }

    /// What the node knows about `peer_id`, if connected.
    pub fn peer_info(&self, peer_id: &PeerId) -> Option<PeerInfo> {
        self.shared.peer(peer_id)
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// What AutoNAT found out about this node's reachability.
    pub fn nat_status(&self) -> NatStatus {
        self.shared.nat_status()
    }

    /// Connection counts: established now, pending, and the peak ever established.
    pub fn connection_counts(&self) -> ConnectionCounts {
        self.shared.counts()
    }

    /// The addresses the node listens on.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.shared.listen_addrs()
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
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        if let Some(task) = self.task.lock().await.take()
            && let Err(error) = task.await
        {
            tracing::error!(%error, "event loop ended abnormally");
        }
    }

    async fn send(&self, command: Command) -> Result<(), NetworkError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| NetworkError::ShutDown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_suffix() {
        let peer = PeerId::random();
        let with: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}").parse().unwrap();
        let without: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert_eq!(peer_id_of(&with), Some(peer));
        assert_eq!(peer_id_of(&without), None);
    }
}
