//! [`Stats`]: what the pub/sub layer delivered and refused, for metrics and tests; with the
//! `metrics` feature, exported to Prometheus by [`Stats::collector`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a received message was not delivered (the `reason` label of
/// `pubsub_refused_messages_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Its propagation source was above the per-peer rate.
    PeerRate,
    /// The payload was above the size bound.
    TooLarge,
    /// The application's validator rejected it (the source is penalised).
    Rejected,
    /// The application's validator ignored it.
    Ignored,
    /// No handle of this node reads the topic any more.
    NotJoined,
}

impl Refusal {
    /// Every reason, in the order of [`Stats::refused`].
    pub const ALL: [Refusal; 5] = [
        Refusal::PeerRate,
        Refusal::TooLarge,
        Refusal::Rejected,
        Refusal::Ignored,
        Refusal::NotJoined,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PeerRate => "peer_rate",
            Refusal::TooLarge => "too_large",
            Refusal::Rejected => "rejected",
            Refusal::Ignored => "ignored",
            Refusal::NotJoined => "not_joined",
        }
    }
}

/// Counters of the pub/sub layer (relaxed atomics, cheap to read at any time).
#[derive(Debug, Default)]
pub struct Stats {
    delivered: AtomicU64,
    published: AtomicU64,
    publish_failed: AtomicU64,
    refused: [AtomicU64; 5],
    lagged: AtomicU64,
    slow_peers: AtomicU64,
    topics: AtomicU64,
    mesh_peers: AtomicU64,
}

impl Stats {
    /// Messages accepted and handed to the topic handles.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Relaxed)
    }

    /// Messages this node published.
    pub fn published(&self) -> u64 {
        self.published.load(Relaxed)
    }

    /// Publishes that failed (no peers, too large, queues full).
    pub fn publish_failed(&self) -> u64 {
        self.publish_failed.load(Relaxed)
    }

    /// Received messages refused for `reason`.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].load(Relaxed)
    }

    /// Events dropped for topic handles that read too slowly.
    pub fn lagged(&self) -> u64 {
        self.lagged.load(Relaxed)
    }

    /// Times gossipsub reported a peer too slow to take its messages.
    pub fn slow_peers(&self) -> u64 {
        self.slow_peers.load(Relaxed)
    }

    /// Topics joined now.
    pub fn topics(&self) -> u64 {
        self.topics.load(Relaxed)
    }

    /// Peers in this node's meshes now (summed over topics).
    pub fn mesh_peers(&self) -> u64 {
        self.mesh_peers.load(Relaxed)
    }

    pub(crate) fn record_delivered(&self) {
        self.delivered.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_published(&self, ok: bool) {
        let counter = if ok {
            &self.published
        } else {
            &self.publish_failed
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_refused(&self, reason: Refusal) {
        self.refused[reason as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn record_lagged(&self, events: u64) {
        self.lagged.fetch_add(events, Relaxed);
    }

    pub(crate) fn record_slow_peer(&self) {
        self.slow_peers.fetch_add(1, Relaxed);
    }

    pub(crate) fn set_topics(&self, topics: usize, mesh_peers: usize) {
        self.topics.store(topics as u64, Relaxed);
        self.mesh_peers.store(mesh_peers as u64, Relaxed);
    }
}

#[cfg(feature = "metrics")]
mod export {
    use std::sync::Arc;

    use codio_base::metrics::{Export, encode_counter_family, encode_counters, encode_gauges};
    use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

    use super::{Refusal, Stats};

    impl Stats {
        /// A Prometheus collector reading these counters at each scrape:
        /// `pubsub_delivered_messages`, `pubsub_published_messages`,
        /// `pubsub_publish_failures`, `pubsub_lagged_events`, `pubsub_slow_peers` (counters),
        /// `pubsub_refused_messages{reason}` (counter family, [`Refusal::as_str`]),
        /// `pubsub_topics` and `pubsub_mesh_peers` (gauges). Register it under the
        /// application's prefix.
        pub fn collector(self: Arc<Self>) -> Box<dyn Collector> {
            codio_base::metrics::collector(self)
        }
    }

    impl Export for Stats {
        fn export(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let stats = self;
            let counters = [
                (
                    "pubsub_delivered_messages",
                    "Messages accepted and delivered to topic handles",
                    stats.delivered(),
                ),
                (
                    "pubsub_published_messages",
                    "Messages this node published",
                    stats.published(),
                ),
                (
                    "pubsub_publish_failures",
                    "Publishes that failed",
                    stats.publish_failed(),
                ),
                (
                    "pubsub_lagged_events",
                    "Topic events dropped for slow readers",
                    stats.lagged(),
                ),
                (
                    "pubsub_slow_peers",
                    "Times a peer was too slow to take its messages",
                    stats.slow_peers(),
                ),
            ];
            encode_counters(&mut encoder, counters)?;
            encode_counter_family(
                &mut encoder,
                (
                    "pubsub_refused_messages",
                    "Received messages not delivered, by reason",
                ),
                "reason",
                Refusal::ALL.map(|reason| (reason.as_str(), stats.refused(reason))),
            )?;
            let gauges = [
                ("pubsub_topics", "Topics joined", stats.topics()),
                (
                    "pubsub_mesh_peers",
                    "Peers in this node's meshes, summed over topics",
                    stats.mesh_peers(),
                ),
            ];
            encode_gauges(&mut encoder, gauges)
        }
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use std::sync::Arc;

    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::{Refusal, Stats};

    #[test]
    fn the_collector_exports_counters_refusals_by_reason_and_gauges() {
        let stats = Arc::new(Stats::default());
        stats.record_delivered();
        stats.record_refused(Refusal::PeerRate);
        stats.record_refused(Refusal::PeerRate);
        stats.set_topics(3, 7);
        let mut registry = Registry::with_prefix("codio");
        registry.register_collector(stats.collector());
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "codio_pubsub_delivered_messages_total 1",
            "codio_pubsub_published_messages_total 0",
            "codio_pubsub_refused_messages_total{reason=\"peer_rate\"} 2",
            "codio_pubsub_refused_messages_total{reason=\"rejected\"} 0",
            "codio_pubsub_topics 3",
            "codio_pubsub_mesh_peers 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
