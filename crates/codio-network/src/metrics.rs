//! Prometheus metrics: libp2p's own (`libp2p-metrics`: swarm connections and dials,
//! identify, ping round trips, bandwidth by protocol stack) and codio's (`codio_*`), in one
//! registry that the application owns and serves. The layers count what they decide (the
//! transport: inbound handshakes pending and shed; the policy: connections, refusals by
//! reason, trims, dead peers, reconnections; NAT: hole punches; the protocol: inbound, rejected and refused requests, bulk bytes, outbound requests and
//! their latency) and export it through their `Stats::collector`; the facade registers those
//! and records what only it sees: swarm events.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use codio_network::{NetworkConfig, metrics::Registry};
//!
//! let registry = Arc::new(Mutex::new(Registry::default()));
//! let config = NetworkConfig::default().with_metrics(registry.clone());
//! // ... NetworkManager::new(config), then encode the registry on each scrape:
//! let mut text = String::new();
//! codio_network::metrics::encode(&mut text, &registry.lock().unwrap()).unwrap();
//! ```

use std::sync::Arc;

pub use libp2p::metrics::Registry;
use libp2p::{metrics::Recorder, swarm::SwarmEvent};

use crate::behaviour::BehaviourEvent;

/// Encodes `registry` in the Prometheus text exposition format (OpenMetrics).
///
/// # Errors
///
/// Only when writing to `out` fails.
pub fn encode(out: &mut String, registry: &Registry) -> std::fmt::Result {
    prometheus_client::encoding::text::encode(out, registry)
}

/// What the event loop records: libp2p's swarm, identify and ping metrics.
#[derive(Clone)]
pub(crate) struct Metrics {
    libp2p: Arc<libp2p::metrics::Metrics>,
}

impl Metrics {
    /// Registers libp2p's metrics and the layers' collectors.
    pub(crate) fn register(
        registry: &mut Registry,
        layers: &crate::behaviour::Behaviour,
        protocol: Arc<codio_protocol::Stats>,
        inbound: &codio_transport::InboundStats,
    ) -> Self {
        let libp2p = Arc::new(libp2p::metrics::Metrics::new(registry));
        let codio = registry.sub_registry_with_prefix("codio");
        codio.register_collector(layers.policy.stats().collector());
        codio.register_collector(layers.nat.stats().collector());
        codio.register_collector(protocol.collector());
        codio.register_collector(inbound.collector());
        codio.register_collector(layers.discovery.stats().collector());
        codio.register_collector(layers.pubsub.stats().collector());
        Self { libp2p }
    }

    /// Identify events, recorded by the event loop once discovery's rate limit let them in (a
    /// flood of pushes is not recorded push by push).
    pub(crate) fn on_identify(
        &self,
        connection_id: libp2p::swarm::ConnectionId,
        peer_id: libp2p::PeerId,
        info: &libp2p::identify::Info,
    ) {
        self.libp2p.record(&libp2p::identify::Event::Received {
            connection_id,
            peer_id,
            info: info.clone(),
        });
    }

    /// Kademlia's, the relay server's and DCUtR's raw events stay inside their layers
    /// (codio-discovery, codio-policy): their `libp2p_*` metrics are not recorded (the
    /// layers' own counters cover them). Answered pings come out of the policy with their
    /// RTT and are recorded as libp2p's ping metrics.
    pub(crate) fn on_swarm_event(&self, event: &SwarmEvent<BehaviourEvent>) {
        self.libp2p.record(event);
        if let SwarmEvent::Behaviour(BehaviourEvent::Policy(codio_policy::Event::Pong {
            peer_id,
            connection_id,
            rtt,
            ..
        })) = event
        {
            self.libp2p.record(&libp2p::ping::Event {
                peer: *peer_id,
                connection: *connection_id,
                result: Ok(*rtt),
            });
        }
    }
}
