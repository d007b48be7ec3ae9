//! Prometheus metrics: libp2p's own (`libp2p-metrics`: swarm connections and dials,
//! identify, bandwidth by protocol stack) and codio's (`codio_*`), in one registry that
//! the application owns and serves.
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

use std::{sync::Arc, time::Duration};

use libp2p::metrics::Recorder;
pub use libp2p::metrics::Registry;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::Unit,
};

use crate::{NetworkEvent, behaviour::BehaviourEvent};

/// Encodes `registry` in the Prometheus text exposition format (OpenMetrics).
///
/// # Errors
///
/// Only when writing to `out` fails.
pub fn encode(out: &mut String, registry: &Registry) -> std::fmt::Result {
    prometheus_client::encoding::text::encode(out, registry)
}

/// The protocol layer's counters ([`codio_protocol::Stats`]), read at scrape time.
#[derive(Debug)]
struct ProtocolCollector(Arc<codio_protocol::Stats>);

impl Collector for ProtocolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let counters = [
            (
                "inbound_requests",
                "Inbound requests read in full (/codio/1.0.0 and /codio/rpc/1.0.0)",
                self.0.inbound_requests(),
            ),
            (
                "rejected_requests",
                "Inbound requests rejected while reading (malformed, oversized, too slow)",
                self.0.rejected_requests(),
            ),
            (
                "refused_requests",
                "Inbound requests answered NotFound or Overloaded at once",
                self.0.refused_requests(),
            ),
            (
                "refused_bulk",
                "Inbound bulk streams refused (no receiver or queue full)",
                self.0.refused_bulk(),
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let mut bulk = encoder.encode_descriptor(
            "bulk",
            "Bulk transfer payload bytes by direction",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        for (direction, bytes) in [
            (Direction::inbound, self.0.bulk_received()),
            (Direction::outbound, self.0.bulk_sent()),
        ] {
            ConstCounter::new(bytes).encode(bulk.encode_family(&DirectionLabel { direction })?)?;
        }
        Ok(())
    }
}

// Label values are the variant names: lower case, as Prometheus labels usually are.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelValue)]
enum Direction {
    inbound,
    outbound,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: Direction,
}

#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelValue)]
pub(crate) enum Outcome {
    ok,
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: Outcome,
}

/// An event counter: name, help, and which events count.
type EventCounter = (&'static str, &'static str, fn(&NetworkEvent) -> bool);

const EVENT_COUNTERS: [EventCounter; 9] = [
    ("peers_connected", "Peers that became connected", |e| {
        matches!(e, NetworkEvent::PeerConnected { .. })
    }),
    (
        "peers_disconnected",
        "Peers whose last connection closed",
        |e| matches!(e, NetworkEvent::PeerDisconnected { .. }),
    ),
    ("dial_failures", "Outbound dials that failed", |e| {
        matches!(e, NetworkEvent::DialFailed { .. })
    }),
    (
        "reconnect_attempts",
        "Reconnection attempts scheduled by the policy",
        |e| matches!(e, NetworkEvent::Reconnecting { .. }),
    ),
    (
        "reconnects",
        "Peers reconnected after an unexpected disconnect",
        |e| matches!(e, NetworkEvent::Reconnected { .. }),
    ),
    (
        "reconnects_given_up",
        "Peers the policy stopped reconnecting",
        |e| matches!(e, NetworkEvent::ReconnectGaveUp { .. }),
    ),
    (
        "connections_denied",
        "Connections refused by the connection limits",
        |e| matches!(e, NetworkEvent::ConnectionDenied { .. }),
    ),
    (
        "peers_trimmed",
        "Connections closed to get back under the low watermark",
        |e| matches!(e, NetworkEvent::PeerTrimmed { .. }),
    ),
    (
        "dead_peers",
        "Connections closed because pings stopped being answered",
        |e| matches!(e, NetworkEvent::DeadPeer { .. }),
    ),
];

/// codio's own metrics (prefix `codio_`).
#[derive(Debug)]
pub(crate) struct CodioMetrics {
    connected_peers: Gauge,
    /// One per [`EVENT_COUNTERS`] entry.
    events: Vec<Counter>,
    hole_punches: Family<OutcomeLabel, Counter>,
    requests: Family<OutcomeLabel, Counter>,
    request_duration: Histogram,
}

impl CodioMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            connected_peers: Gauge::default(),
            events: EVENT_COUNTERS.iter().map(|_| Counter::default()).collect(),
            hole_punches: Family::default(),
            requests: Family::default(),
            // 50 us .. ~26 s, doubling.
            request_duration: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(50e-6, 2.0, 20),
            ),
        };
        let r = registry.sub_registry_with_prefix("codio");
        r.register(
            "connected_peers",
            "Peers with at least one established connection",
            metrics.connected_peers.clone(),
        );
        for ((name, help, _), counter) in EVENT_COUNTERS.iter().zip(&metrics.events) {
            r.register(*name, *help, counter.clone());
        }
        r.register(
            "hole_punches",
            "DCUtR hole punches by outcome",
            metrics.hole_punches.clone(),
        );
        r.register(
            "requests",
            "Outbound /codio/1.0.0 requests by outcome",
            metrics.requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Outbound /codio/1.0.0 request latency, send to response",
            prometheus_client::registry::Unit::Seconds,
            metrics.request_duration.clone(),
        );
        // Every labelled series exists from the start, at zero, so dashboards and alerts see
        // it before the first event.
        for outcome in [Outcome::ok, Outcome::error] {
            let label = OutcomeLabel { outcome };
            drop(metrics.requests.get_or_create(&label));
            drop(metrics.hole_punches.get_or_create(&label));
        }
        metrics
    }

    pub(crate) fn on_request(&self, took: Duration, outcome: Outcome) {
        self.request_duration.observe(took.as_secs_f64());
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub(crate) fn set_connected_peers(&self, peers: usize) {
        self.connected_peers
            .set(i64::try_from(peers).unwrap_or(i64::MAX));
    }

    fn on_event(&self, event: &NetworkEvent) {
        for ((_, _, counts), counter) in EVENT_COUNTERS.iter().zip(&self.events) {
            if counts(event) {
                counter.inc();
            }
        }
        let outcome = match event {
            NetworkEvent::HolePunchSucceeded { .. } => Outcome::ok,
            NetworkEvent::HolePunchFailed { .. } => Outcome::error,
            _ => return,
        };
        self.hole_punches
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }
}

/// Everything recorded by the event loop.
#[derive(Clone)]
pub(crate) struct Metrics {
    libp2p: Arc<libp2p::metrics::Metrics>,
    pub(crate) codio: Arc<CodioMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric; the protocol layer's counters are read from `stats` on
    /// each scrape.
    pub(crate) fn register(registry: &mut Registry, stats: Arc<codio_protocol::Stats>) -> Self {
        registry
            .sub_registry_with_prefix("codio")
            .register_collector(Box::new(ProtocolCollector(stats)));
        Self {
            libp2p: Arc::new(libp2p::metrics::Metrics::new(registry)),
            codio: Arc::new(CodioMetrics::register(registry)),
        }
    }

    pub(crate) fn on_network_event(&self, event: &NetworkEvent) {
        self.codio.on_event(event);
    }

    pub(crate) fn on_swarm_event(&self, event: &libp2p::swarm::SwarmEvent<BehaviourEvent>) {
        self.libp2p.record(event);
        // Kademlia's, the relay server's and DCUtR's raw events stay inside their layers
        // (codio-discovery, codio-policy); their `libp2p_*` metrics are therefore not
        // recorded (codio's own count their outcomes). Answered pings come out of the policy
        // with their RTT and are recorded as libp2p's ping metrics.
        match event {
            libp2p::swarm::SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => {
                self.libp2p.record(e);
            }
            libp2p::swarm::SwarmEvent::Behaviour(BehaviourEvent::Policy(
                codio_policy::Event::Pong {
                    peer_id,
                    connection_id,
                    rtt,
                    ..
                },
            )) => self.libp2p.record(&libp2p::ping::Event {
                peer: *peer_id,
                connection: *connection_id,
                result: Ok(*rtt),
            }),
            _ => {}
        }
    }
}
