//! [`Stats`]: what the policy layer counts — connections, refusals by reason, trims, dead
//! peers, reconnections — readable at any time and, with the `metrics` feature,
//! exported to Prometheus by [`Stats::collector`].

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use crate::{Denial, Refusal};

/// Why a connection was refused, as a fixed label value (`reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenialReason {
    /// Too many inbound handshakes in progress.
    PendingIncoming,
    /// Too many dials in progress.
    PendingOutgoing,
    /// The established-connection ceiling.
    MaxEstablished,
    /// The peer was explicitly disconnected.
    Disconnected,
    /// The per-peer connection bound.
    PerPeer,
    /// The per-source (address) bound on inbound connections.
    PerSource,
    /// The per-subnet bound on inbound connections.
    PerSubnet,
    /// The process memory limit.
    Memory,
    /// Not on the allow list (allow-list mode).
    NotAllowed,
    /// On the deny list.
    DenyListed,
    /// Refused by the application's connection gate.
    Gate,
}

impl DenialReason {
    /// Every reason, in label order.
    pub const ALL: [DenialReason; 11] = [
        DenialReason::PendingIncoming,
        DenialReason::PendingOutgoing,
        DenialReason::MaxEstablished,
        DenialReason::Disconnected,
        DenialReason::PerPeer,
        DenialReason::PerSource,
        DenialReason::PerSubnet,
        DenialReason::Memory,
        DenialReason::NotAllowed,
        DenialReason::DenyListed,
        DenialReason::Gate,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DenialReason::PendingIncoming => "pending_incoming",
            DenialReason::PendingOutgoing => "pending_outgoing",
            DenialReason::MaxEstablished => "max_established",
            DenialReason::Disconnected => "disconnected",
            DenialReason::PerPeer => "per_peer",
            DenialReason::PerSource => "per_source",
            DenialReason::PerSubnet => "per_subnet",
            DenialReason::Memory => "memory",
            DenialReason::NotAllowed => "not_allowed",
            DenialReason::DenyListed => "deny_listed",
            DenialReason::Gate => "gate",
        }
    }
}

impl From<&Denial> for DenialReason {
    fn from(denial: &Denial) -> Self {
        match denial {
            Denial::PendingIncoming { .. } => DenialReason::PendingIncoming,
            Denial::PendingOutgoing { .. } => DenialReason::PendingOutgoing,
            Denial::MaxEstablished { .. } => DenialReason::MaxEstablished,
            Denial::Disconnected => DenialReason::Disconnected,
            Denial::PerPeer { .. } => DenialReason::PerPeer,
            Denial::PerSource { .. } => DenialReason::PerSource,
            Denial::PerSubnet { .. } => DenialReason::PerSubnet,
            Denial::Memory { .. } => DenialReason::Memory,
            Denial::Access(Refusal::NotAllowed) => DenialReason::NotAllowed,
            Denial::Access(Refusal::DenyListed) => DenialReason::DenyListed,
            Denial::Access(Refusal::Gate) => DenialReason::Gate,
        }
    }
}

/// A counter of the policy layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Counter {
    /// Peers that became connected (first connection).
    PeersConnected,
    /// Peers whose last connection closed.
    PeersDisconnected,
    /// Outbound dials that failed.
    DialFailures,
    /// Reconnection attempts scheduled.
    ReconnectAttempts,
    /// Peers reconnected after an unexpected disconnect.
    Reconnects,
    /// Peers the policy stopped reconnecting.
    ReconnectsGivenUp,
    /// Connections closed to get back under the low watermark.
    PeersTrimmed,
    /// Connections closed because pings stopped being answered.
    DeadPeers,
    /// Connections closed at the ceiling to admit a newcomer.
    PeersEvicted,
}

/// Name and help of each [`Counter`], in its order (names without the application's
/// prefix; exported as `<prefix>_<name>_total`).
const COUNTERS: [(Counter, &str, &str); 9] = [
    (
        Counter::PeersConnected,
        "peers_connected",
        "Peers that became connected",
    ),
    (
        Counter::PeersDisconnected,
        "peers_disconnected",
        "Peers whose last connection closed",
    ),
    (
        Counter::DialFailures,
        "dial_failures",
        "Outbound dials that failed",
    ),
    (
        Counter::ReconnectAttempts,
        "reconnect_attempts",
        "Reconnection attempts scheduled by the policy",
    ),
    (
        Counter::Reconnects,
        "reconnects",
        "Peers reconnected after an unexpected disconnect",
    ),
    (
        Counter::ReconnectsGivenUp,
        "reconnects_given_up",
        "Peers the policy stopped reconnecting",
    ),
    (
        Counter::PeersTrimmed,
        "peers_trimmed",
        "Connections closed to get back under the low watermark",
    ),
    (
        Counter::DeadPeers,
        "dead_peers",
        "Connections closed because pings stopped being answered",
    ),
    (
        Counter::PeersEvicted,
        "peers_evicted",
        "Connections closed at the connection ceiling to admit a newcomer",
    ),
];

/// Counters of the policy layer (relaxed atomics), shared by its behaviours; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Stats(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    counters: [AtomicU64; COUNTERS.len()],
    denied: [AtomicU64; DenialReason::ALL.len()],
    connected_peers: AtomicU64,
}

impl Stats {
    /// The value of `counter`.
    pub fn get(&self, counter: Counter) -> u64 {
        self.0.counters[counter as usize].load(Relaxed)
    }

    /// Connections refused for `reason`.
    pub fn denied(&self, reason: DenialReason) -> u64 {
        self.0.denied[reason as usize].load(Relaxed)
    }

    /// Peers with at least one established connection now.
    pub fn connected_peers(&self) -> u64 {
        self.0.connected_peers.load(Relaxed)
    }

    pub(crate) fn count(&self, counter: Counter) {
        self.0.counters[counter as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn count_denial(&self, denial: &Denial) {
        self.0.denied[DenialReason::from(denial) as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn set_connected_peers(&self, peers: usize) {
        let peers = u64::try_from(peers).unwrap_or(u64::MAX);
        self.0.connected_peers.store(peers, Relaxed);
    }
}

#[cfg(feature = "metrics")]
mod export {
    use codio_base::metrics::{Export, encode_counter_family, encode_counters, encode_gauges};
    use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

    use super::{COUNTERS, DenialReason, Stats};

    impl Stats {
        /// A Prometheus collector reading these counters at each scrape: `connected_peers`
        /// (gauge), the counters above and `connections_denied{reason}`. Register it under the
        /// application's prefix
        /// (`registry.sub_registry_with_prefix("codio").register_collector(…)`).
        pub fn collector(&self) -> Box<dyn Collector> {
            codio_base::metrics::collector(std::sync::Arc::new(self.clone()))
        }
    }

    impl Export for Stats {
        fn export(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            encode_gauges(
                &mut encoder,
                [(
                    "connected_peers",
                    "Peers with at least one established connection",
                    self.connected_peers(),
                )],
            )?;
            encode_counters(
                &mut encoder,
                COUNTERS
                    .iter()
                    .map(|&(counter, name, help)| (name, help, self.get(counter))),
            )?;
            encode_counter_family(
                &mut encoder,
                (
                    "connections_denied",
                    "Connections refused by the connection limits, by reason",
                ),
                "reason",
                DenialReason::ALL.map(|reason| (reason.as_str(), self.denied(reason))),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_counter_and_by_reason() {
        let stats = Stats::default();
        stats.count_denial(&Denial::PerPeer { limit: 4 });
        stats.count_denial(&Denial::PerPeer { limit: 4 });
        stats.count_denial(&Denial::Disconnected);
        stats.count(Counter::DeadPeers);
        stats.set_connected_peers(3);
        let shared = stats.clone();
        assert_eq!(shared.denied(DenialReason::PerPeer), 2);
        assert_eq!(shared.denied(DenialReason::Disconnected), 1);
        assert_eq!(shared.denied(DenialReason::PendingIncoming), 0);
        assert_eq!(shared.get(Counter::DeadPeers), 1);
        assert_eq!(shared.connected_peers(), 3);
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn the_collector_exports_every_series() {
        let stats = Stats::default();
        stats.count_denial(&Denial::MaxEstablished { limit: 50 });
        stats.count(Counter::DeadPeers);
        let mut registry = prometheus_client::registry::Registry::default();
        registry
            .sub_registry_with_prefix("codio")
            .register_collector(stats.collector());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "codio_connected_peers 0",
            "codio_peers_connected_total 0",
            "codio_connections_denied_total{reason=\"max_established\"} 1",
            "codio_connections_denied_total{reason=\"per_peer\"} 0",
            "codio_dead_peers_total 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
