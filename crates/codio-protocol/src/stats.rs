//! [`Stats`]: what the protocol layer counts, for metrics and tests; with the `metrics`
//! feature, exported to Prometheus by [`Stats::collector`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of the protocol layer, shared by its codec copies, sessions and handles. Cheap
/// to read at any time (relaxed atomics).
#[derive(Debug, Default)]
pub struct Stats {
    rejected_requests: AtomicU64,
    inbound_requests: AtomicU64,
    refused_requests: AtomicU64,
    bulk_received: AtomicU64,
    bulk_sent: AtomicU64,
    refused_bulk: AtomicU64,
}

impl Stats {
    /// Inbound requests rejected while reading (malformed, oversized, truncated, wrong
    /// version, too slow); their streams were dropped.
    pub fn rejected_requests(&self) -> u64 {
        self.rejected_requests.load(Relaxed)
    }

    /// Inbound requests read in full (on either protocol), answered or not.
    pub fn inbound_requests(&self) -> u64 {
        self.inbound_requests.load(Relaxed)
    }

    /// Inbound requests answered at once with `NotFound` (no handler) or `Overloaded`
    /// (handler queue full).
    pub fn refused_requests(&self) -> u64 {
        self.refused_requests.load(Relaxed)
    }

    /// Payload bytes received by completed inbound bulk transfers.
    pub fn bulk_received(&self) -> u64 {
        self.bulk_received.load(Relaxed)
    }

    /// Payload bytes sent by completed outbound bulk transfers.
    pub fn bulk_sent(&self) -> u64 {
        self.bulk_sent.load(Relaxed)
    }

    /// Inbound bulk streams refused (no receiver, or its queue full).
    pub fn refused_bulk(&self) -> u64 {
        self.refused_bulk.load(Relaxed)
    }

    pub(crate) fn record_rejected(&self) {
        self.rejected_requests.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_inbound(&self) {
        self.inbound_requests.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_refused(&self) {
        self.refused_requests.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_bulk(&self, inbound: bool, bytes: u64) {
        let counter = if inbound {
            &self.bulk_received
        } else {
            &self.bulk_sent
        };
        counter.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn record_refused_bulk(&self) {
        self.refused_bulk.fetch_add(1, Relaxed);
    }
}

#[cfg(feature = "metrics")]
mod export {
    use std::sync::Arc;

    use prometheus_client::{
        collector::Collector,
        encoding::{DescriptorEncoder, EncodeMetric},
        metrics::{MetricType, counter::ConstCounter},
        registry::Unit,
    };

    use super::Stats;

    /// Exports [`Stats`] at each scrape (see [`Stats::collector`]).
    #[derive(Debug)]
    struct StatsCollector(Arc<Stats>);

    impl Stats {
        /// A Prometheus collector reading these counters at each scrape: `inbound_requests`,
        /// `rejected_requests`, `refused_requests`, `refused_bulk` and `bulk_bytes{direction}`.
        /// Register it under the application's prefix
        /// (`registry.sub_registry_with_prefix("codio").register_collector(…)`).
        pub fn collector(self: Arc<Self>) -> Box<dyn Collector> {
            Box::new(StatsCollector(self))
        }
    }

    impl Collector for StatsCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let stats = &self.0;
            let counters = [
                (
                    "inbound_requests",
                    "Inbound requests read in full (/codio/1.0.0 and /codio/rpc/1.0.0)",
                    stats.inbound_requests(),
                ),
                (
                    "rejected_requests",
                    "Inbound requests rejected while reading (malformed, oversized, too slow)",
                    stats.rejected_requests(),
                ),
                (
                    "refused_requests",
                    "Inbound requests answered NotFound or Overloaded at once",
                    stats.refused_requests(),
                ),
                (
                    "refused_bulk",
                    "Inbound bulk streams refused (no receiver or queue full)",
                    stats.refused_bulk(),
                ),
            ];
            for (name, help, value) in counters {
                let counter = ConstCounter::new(value);
                let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
                counter.encode(metric)?;
            }
            let mut bulk = encoder.encode_descriptor(
                "bulk",
                "Bulk transfer payload bytes by direction",
                Some(&Unit::Bytes),
                MetricType::Counter,
            )?;
            for (direction, bytes) in [
                ("inbound", stats.bulk_received()),
                ("outbound", stats.bulk_sent()),
            ] {
                let label = [("direction", direction)];
                ConstCounter::new(bytes).encode(bulk.encode_family(&label)?)?;
            }
            Ok(())
        }
    }
}
