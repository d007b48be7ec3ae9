//! The task that owns and continuously polls the [`Swarm`], split by concern: this file runs
//! the loop and routes events; [`dials`] connects and disconnects peers, [`addresses`] tracks
//! listen addresses and what identify tells; [`state`] is what handles read. DHT queries do
//! not pass through here: the discovery layer's `Dht` handle talks to its behaviour directly.
//!
//! Handles talk to it through a bounded command queue; every command carries a `oneshot`
//! sender for its reply, and the loop keeps the pending replies keyed by the identifier libp2p
//! reports the outcome with ([`ConnectionId`](libp2p::swarm::ConnectionId) for dials,
//! [`ListenerId`](libp2p::core::transport::ListenerId) for listeners, [`PeerId`] for
//! disconnects), so each reply reaches exactly the caller that asked.

mod addresses;
mod dials;

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm,
    swarm::{ConnectionId, SwarmEvent},
};
use tokio::sync::{broadcast, mpsc, oneshot};

use codio_nat::Event as NatEvent;
use codio_policy::Event as PolicyEvent;
use codio_transport::listen::Need;

use crate::{
    ConnectError, DiscoverySource, NetworkError, NetworkEvent,
    behaviour::{BehaviourEvent, Node},
};
use codio_transport::listen::ListenAddrs;

/// Requests from handles to the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    /// Listen on `addresses`, then start discovery (bootstrap dials, mDNS dials, DHT bootstrap).
    Start {
        addresses: Vec<(Multiaddr, Need)>,
        reply: oneshot::Sender<Result<Vec<Multiaddr>, NetworkError>>,
    },
    /// The application asks for `peer_id`: an earlier explicit disconnect no longer keeps
    /// this node (a DHT lookup included) from dialing it.
    AllowDials {
        peer_id: PeerId,
        reply: oneshot::Sender<()>,
    },
    /// Connect to `peer_id` at `addresses` (found in the DHT).
    DialPeer {
        peer_id: PeerId,
        addresses: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<PeerId, ConnectError>>,
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
}

/// The timeouts the event loop applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) shutdown: Duration,
}

pub(crate) struct EventLoop {
    swarm: Swarm<Node>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<NetworkEvent>,
    listen_addrs: ListenAddrs,
    timeouts: Timeouts,
    metrics: Option<crate::metrics::Metrics>,
    dials: dials::Dials,
    listens: addresses::Listens,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Node>,
        commands: mpsc::Receiver<Command>,
        events: broadcast::Sender<NetworkEvent>,
        listen_addrs: ListenAddrs,
        timeouts: Timeouts,
        metrics: Option<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            swarm,
            commands,
            events,
            listen_addrs,
            timeouts,
            metrics,
            dials: dials::Dials::default(),
            listens: addresses::Listens::default(),
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
        // No subscriber is not an error: events are optional to consume.
        let _ = self.events.send(event);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Start { addresses, reply } => self.start(addresses, reply),
            Command::Dial { address, reply } => self.dial(address, reply),
            Command::Disconnect { peer_id, reply } => self.disconnect(peer_id, reply),
            Command::AllowDials { peer_id, reply } => {
                self.swarm.behaviour_mut().policy.allow_dials(&peer_id);
                let _ = reply.send(());
            }
            Command::DialPeer {
                peer_id,
                addresses,
                reply,
            } => self.dial_peer(peer_id, addresses, reply),
            // `run` intercepts shutdown before dispatching here.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(metrics) = &self.metrics {
            metrics.on_swarm_event(&event);
        }
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            event @ (SwarmEvent::ConnectionEstablished { .. }
            | SwarmEvent::ConnectionClosed { .. }
            | SwarmEvent::OutgoingConnectionError { .. }
            | SwarmEvent::IncomingConnectionError { .. }) => self.on_connection_event(event),
            other => self.on_listen_event(other),
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(event) => self.on_identify_event(event),
            BehaviourEvent::Policy(event) => self.on_policy_event(event),
            BehaviourEvent::Nat(event) => self.on_nat_event(event),
            BehaviourEvent::Protocol(codio_protocol::Event::InboundFailure { peer_id, error }) => {
                self.emit(NetworkEvent::InboundRequestFailed { peer_id, error });
            }
            BehaviourEvent::Protocol(other) => tracing::debug!(?other, "protocol event"),
            BehaviourEvent::Discovery(event) => self.on_discovery_event(event),
            // Topic handles get their messages and mesh changes from the layer itself.
            BehaviourEvent::Pubsub(event) => tracing::debug!(?event, "pubsub event"),
        }
    }

    fn on_discovery_event(&mut self, event: codio_discovery::Event) {
        let (peer_id, addresses, source) = match event {
            codio_discovery::Event::Discovered {
                peer_id, addresses, ..
            } => (peer_id, addresses, DiscoverySource::Mdns),
            codio_discovery::Event::RoutingUpdated {
                peer_id,
                addresses,
                is_new_peer: true,
            } => (peer_id, addresses, DiscoverySource::Dht),
            other => return tracing::trace!(?other, "discovery event"),
        };
        tracing::debug!(%peer_id, ?addresses, ?source, "discovered");
        self.emit(NetworkEvent::PeerDiscovered {
            peer_id,
            addresses,
            source,
        });
    }

    fn on_nat_event(&mut self, event: NatEvent) {
        self.emit(NetworkEvent::Nat(event));
    }

    fn on_policy_event(&mut self, event: PolicyEvent) {
        match event {
            PolicyEvent::Pong {
                peer_id,
                connection_id,
                rtt,
                first,
            } => self.on_pong(peer_id, connection_id, rtt, first),
            event => self.emit(NetworkEvent::Policy(event)),
        }
    }

    /// A connection's first answered ping: it carries traffic.
    fn on_pong(&mut self, peer_id: PeerId, connection: ConnectionId, rtt: Duration, first: bool) {
        if first {
            let relayed = self
                .swarm
                .behaviour()
                .policy
                .peers()
                .is_relayed(&peer_id, connection);
            tracing::debug!(%peer_id, ?rtt, relayed, "connection verified by ping");
            self.emit(NetworkEvent::ConnectionVerified {
                peer_id,
                rtt,
                relayed,
            });
        }
    }

    /// Closes every connection and listener, waiting at most the shutdown timeout.
    async fn close_gracefully(&mut self) {
        self.swarm.behaviour_mut().policy.stop_reconnecting();
        self.remove_listeners();
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        tracing::debug!(peers = peers.len(), "closing connections");
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let deadline = tokio::time::sleep(self.timeouts.shutdown);
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
