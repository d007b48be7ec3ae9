//! Building a node: the swarm from the layers, then the tasks that run it.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, PoisonError, atomic::AtomicBool},
    time::Duration,
};

use codio_protocol::{
    InboundRequest, RequestHandler,
    bulk::{BulkHandler, IncomingBulk},
};
use codio_transport::InboundStats;
use libp2p::{Swarm, core::muxing::StreamMuxerBox, identity::Keypair, swarm};
use tokio::sync::{broadcast, mpsc};

use crate::{
    NetworkConfig, NetworkError, NetworkManager,
    behaviour::{Behaviour, Node},
    event_loop::{EventLoop, Timeouts},
    metrics::Metrics,
};
use codio_base::addr::{peer_id_of, without_p2p};
use codio_transport::listen::ListenAddrs;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;
/// A handler task, made once the node exists (it may hold a handle to its node).
type MakeTask = Box<dyn FnOnce(NetworkManager) -> Task + Send>;

/// Builds a [`NetworkManager`] with its handlers registered up front (iroh's `Router::accept` is
/// the model): what serves inbound requests and bulk streams is fixed when the node is built, never
/// swapped at run time. Without any, inbound requests are answered `NotFound` and inbound bulk
/// streams are refused.
///
/// ```no_run
/// use codio_network::{NetworkConfig, NetworkManager, protocol::Request, protocol::Response};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), codio_network::NetworkError> {
/// let node = NetworkManager::builder(NetworkConfig::default())
///     .serve_requests(|_peer, request: Request| async move {
///         match request {
///             Request::App { payload, .. } => Response::App { payload },
///             _ => Response::error(codio_network::protocol::ErrorCode::NotFound, "nothing here"),
///         }
///     })
///     .build()
///     .await?;
/// # let _ = node;
/// # Ok(())
/// # }
/// ```
pub struct NodeBuilder {
    config: NetworkConfig,
    requests: Option<mpsc::Sender<InboundRequest>>,
    bulk: Option<mpsc::Sender<IncomingBulk>>,
    tasks: Vec<MakeTask>,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("requests", &self.requests.is_some())
            .field("bulk", &self.bulk.is_some())
            .finish_non_exhaustive()
    }
}

impl NodeBuilder {
    pub(crate) fn new(config: NetworkConfig) -> Self {
        Self {
            config,
            requests: None,
            bulk: None,
            tasks: Vec::new(),
        }
    }

    /// Inbound requests (both request protocols) go to the returned queue of
    /// `protocol.inbound_request_buffer`; while it is full they are answered `Overloaded` at once.
    /// Replaces an earlier request queue or handler.
    pub fn request_queue(&mut self) -> mpsc::Receiver<InboundRequest> {
        // A zero capacity is refused by `build` (config validation); never panic before it.
        let (tx, rx) = mpsc::channel(self.config.protocol.inbound_request_buffer.max(1));
        self.requests = Some(tx);
        rx
    }

    /// Inbound requests are answered by `handler`, up to `protocol.inbound_request_buffer` at once
    /// (each in its own task); beyond that they queue, and then are answered `Overloaded`.
    pub fn serve_requests<H: RequestHandler>(self, handler: H) -> Self {
        self.serve_requests_with(|_node| handler)
    }

    /// As [`serve_requests`](Self::serve_requests), with a handler made by `make` from a handle
    /// to the node being built (to send a request, a transfer or an event from inside a
    /// handler). That handle does not keep the node running.
    pub fn serve_requests_with<F, H>(mut self, make: F) -> Self
    where
        F: FnOnce(NetworkManager) -> H + Send + 'static,
        H: RequestHandler,
    {
        let queue = self.request_queue();
        let concurrency = self.config.protocol.inbound_request_buffer;
        self.tasks.push(Box::new(move |node| {
            Box::pin(codio_protocol::serve(queue, make(node), concurrency))
        }));
        self
    }

    /// Inbound bulk transfers are handled by `handler`, up to `protocol.bulk_stream_buffer` at
    /// once (each in its own task); beyond that they queue, and then are refused.
    pub fn serve_bulk<H: BulkHandler>(self, handler: H) -> Self {
        self.serve_bulk_with(|_node| handler)
    }

    /// As [`serve_bulk`](Self::serve_bulk), with a handler made by `make` from a handle to the
    /// node being built (which does not keep the node running).
    pub fn serve_bulk_with<F, H>(mut self, make: F) -> Self
    where
        F: FnOnce(NetworkManager) -> H + Send + 'static,
        H: BulkHandler,
    {
        let queue = self.bulk_queue();
        let concurrency = self.config.protocol.bulk_stream_buffer;
        self.tasks.push(Box::new(move |node| {
            Box::pin(codio_protocol::bulk::serve_bulk(
                queue,
                make(node),
                concurrency,
            ))
        }));
        self
    }

    /// Inbound bulk transfers go to the returned queue of `protocol.bulk_stream_buffer`; beyond it
    /// they are refused.
    pub fn bulk_queue(&mut self) -> mpsc::Receiver<IncomingBulk> {
        let (tx, rx) = mpsc::channel(self.config.protocol.bulk_stream_buffer.max(1));
        self.bulk = Some(tx);
        rx
    }

    /// Builds the node (identity, transport, behaviours) and spawns its event loop and handlers on
    /// the current Tokio runtime. The node dials out but does not listen until
    /// [`start`](NetworkManager::start).
    ///
    /// # Errors
    ///
    /// [`NetworkError::InvalidConfig`] for configuration values that cannot work,
    /// [`NetworkError::Transport`] when the transport cannot be built.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub async fn build(self) -> Result<NetworkManager, NetworkError> {
        let Self {
            config,
            requests,
            bulk,
            tasks,
        } = self;
        let keypair = config
            .keypair
            .clone()
            .unwrap_or_else(Keypair::generate_ed25519);
        let (mut protocol, client) = codio_protocol::Behaviour::new(config.protocol.clone());
        if let Some(queue) = requests {
            protocol.set_request_queue(queue);
        }
        if let Some(queue) = bulk {
            protocol.set_bulk_queue(queue);
        }
        let (swarm, dht, inbound) = build_swarm(&keypair, &config, protocol)?;
        let metrics = config.metrics.as_ref().map(|registry| {
            // A poisoned lock only means another thread panicked while encoding; the
            // registry itself is still consistent.
            let mut registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
            Metrics::register(&mut registry, swarm.behaviour(), client.stats(), &inbound)
        });
        let node = spawn(swarm, config, client, dht, metrics);
        for make in tasks {
            tokio::spawn(make(node.downgrade()));
        }
        Ok(node)
    }
}

/// The swarm: the layers' transport and behaviours, with the seed fields applied.
fn build_swarm(
    keypair: &Keypair,
    config: &NetworkConfig,
    protocol: codio_protocol::Behaviour,
) -> Result<(Swarm<Node>, codio_discovery::Dht, InboundStats), NetworkError> {
    let mut layers = config.layers()?;
    let built = codio_transport::build(keypair, &config.transport, layers.nat.client)?;
    let (transport, relay_client) = (built.transport, built.relay_client);
    let transport = match &config.metrics {
        Some(registry) => {
            let mut registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
            libp2p::Transport::boxed(libp2p::Transport::map(
                libp2p::metrics::BandwidthTransport::new(transport, &mut registry),
                |(peer_id, muxer), _| (peer_id, StreamMuxerBox::new(muxer)),
            ))
        }
        None => transport,
    };
    let kept = std::mem::take(&mut layers.kept);
    let mut behaviour = Behaviour::new(keypair, layers, relay_client, protocol)?;
    // Bootstrap and reserved peers matter: protected, dialed at start, reconnected.
    for address in &kept {
        if let Some(peer_id) = peer_id_of(address) {
            behaviour
                .policy
                .watch(peer_id, vec![without_p2p(address.clone())], false);
        }
    }
    let swarm_config = swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(config.idle_timeout.unwrap_or(Duration::MAX))
        .with_substream_upgrade_protocol_override(config.transport.stream_negotiation());
    let local_peer_id = keypair.public().to_peer_id();
    let dht = behaviour.discovery.dht();
    let swarm = Swarm::new(transport, Node::new(behaviour), local_peer_id, swarm_config);
    Ok((swarm, dht, built.inbound))
}

/// Spawns the event loop and returns the handle to it.
fn spawn(
    swarm: Swarm<Node>,
    config: NetworkConfig,
    protocol: codio_protocol::Client,
    dht: codio_discovery::Dht,
    metrics: Option<Metrics>,
) -> NetworkManager {
    let local_peer_id = *swarm.local_peer_id();
    let (peers, access) = (
        swarm.behaviour().policy.peers(),
        swarm.behaviour().policy.access(),
    );
    let swarm_nat = swarm.behaviour().nat.status();
    let pubsub = swarm.behaviour().pubsub.pubsub();
    let (commands, command_rx) = mpsc::channel(config.command_buffer);
    let (events, _) = broadcast::channel(config.event_buffer);
    let listen_addrs = ListenAddrs::default();
    let timeouts = Timeouts {
        connect: config.transport.connect_timeout(),
        shutdown: config.shutdown_timeout,
    };
    let event_loop = EventLoop::new(
        swarm,
        command_rx,
        events.clone(),
        listen_addrs.clone(),
        timeouts,
        metrics,
    );
    let task = tokio::spawn(event_loop.run());
    tracing::info!(%local_peer_id, "network created");
    NetworkManager {
        local_peer_id,
        protocol,
        dht,
        pubsub,
        peers,
        access,
        config: Arc::new(config),
        commands: crate::Commands::Strong(commands),
        events,
        listen_addrs,
        nat: swarm_nat,
        started: Arc::new(AtomicBool::new(false)),
        task: Arc::new(tokio::sync::Mutex::new(Some(task))),
    }
}
