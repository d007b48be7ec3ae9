//! [`Stats`]: what the protocol layer counts, for metrics and tests; with the `metrics`
//! feature, exported to Prometheus by [`Stats::collector`].

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Upper bounds of the request latency buckets: 50 us, doubling, 20 of them (~26 s); slower
/// requests land in a last, unbounded bucket.
const LATENCY_BUCKETS: usize = 20;
const FIRST_BUCKET_MICROS: u64 = 50;

/// The latency bucket of a request that took `micros`.
fn latency_bucket(micros: u64) -> usize {
    (0..LATENCY_BUCKETS)
        .find(|i| micros <= FIRST_BUCKET_MICROS << i)
        .unwrap_or(LATENCY_BUCKETS)
}

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
    inbound_sessions: AtomicU64,
    shed_sessions: AtomicU64,
    stalled_sessions: AtomicU64,
    refused_over_share: AtomicU64,
    peak_peer_share: AtomicU64,
    request_streams: AtomicU64,
    peak_peer_streams: AtomicU64,
    refused_over_streams: AtomicU64,
    response_budget: std::sync::OnceLock<crate::budget::Budget>,
    requests_ok: AtomicU64,
    requests_failed: AtomicU64,
    /// Outbound requests by latency bucket (not cumulative), and their total time.
    latency: [AtomicU64; LATENCY_BUCKETS + 1],
    latency_sum_micros: AtomicU64,
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

    /// Inbound `/codio/rpc/1.0.0` sessions open now.
    pub fn inbound_sessions(&self) -> u64 {
        self.inbound_sessions.load(Relaxed)
    }

    /// Inbound sessions ended because their peer opened more than its share.
    pub fn shed_sessions(&self) -> u64 {
        self.shed_sessions.load(Relaxed)
    }

    /// Inbound sessions ended because their peer did not read an answer in time.
    pub fn stalled_sessions(&self) -> u64 {
        self.stalled_sessions.load(Relaxed)
    }

    /// Inbound requests answered `Overloaded` because their peer had its share of the queue.
    pub fn refused_over_share(&self) -> u64 {
        self.refused_over_share.load(Relaxed)
    }

    /// The most requests one peer ever had queued for or held by the handler at once.
    pub fn peak_peer_share(&self) -> u64 {
        self.peak_peer_share.load(Relaxed)
    }

    /// Inbound `/codio/1.0.0` streams in flight now (request read, answer not yet written).
    pub fn request_streams(&self) -> u64 {
        self.request_streams.load(Relaxed)
    }

    /// The most inbound `/codio/1.0.0` streams one peer ever had in flight at once.
    pub fn peak_peer_streams(&self) -> u64 {
        self.peak_peer_streams.load(Relaxed)
    }

    /// Inbound `/codio/1.0.0` requests answered `Overloaded` because their peer had its
    /// share of streams in flight.
    pub fn refused_over_streams(&self) -> u64 {
        self.refused_over_streams.load(Relaxed)
    }

    /// Bytes of answers handed over by responders and not yet written, in total.
    pub fn queued_response_bytes(&self) -> u64 {
        self.response_budget.get().map_or(0, |budget| {
            u64::try_from(budget.size() - budget.available()).unwrap_or(u64::MAX)
        })
    }

    pub(crate) fn set_response_budget(&self, budget: crate::budget::Budget) {
        let _ = self.response_budget.set(budget);
    }

    pub(crate) fn record_peer_share(&self, held: usize) {
        let held = u64::try_from(held).unwrap_or(u64::MAX);
        self.peak_peer_share.fetch_max(held, Relaxed);
    }

    /// Streams in flight now, and the count of the peer whose stream just opened.
    pub(crate) fn record_request_streams(&self, total: usize, peer_held: Option<usize>) {
        let to_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.request_streams.store(to_u64(total), Relaxed);
        if let Some(held) = peer_held {
            self.peak_peer_streams.fetch_max(to_u64(held), Relaxed);
        }
    }

    pub(crate) fn record_refused_over_streams(&self) {
        self.refused_over_streams.fetch_add(1, Relaxed);
    }

    pub(crate) fn session_opened(&self) {
        self.inbound_sessions.fetch_add(1, Relaxed);
    }

    pub(crate) fn session_closed(&self) {
        self.inbound_sessions.fetch_sub(1, Relaxed);
    }

    pub(crate) fn record_shed_session(&self) {
        self.shed_sessions.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_stalled_session(&self) {
        self.stalled_sessions.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_refused_over_share(&self) {
        self.refused_over_share.fetch_add(1, Relaxed);
    }

    /// Outbound requests made through the [`Client`](crate::Client): answered, failed.
    pub fn requests(&self) -> (u64, u64) {
        (
            self.requests_ok.load(Relaxed),
            self.requests_failed.load(Relaxed),
        )
    }

    pub(crate) fn record_request(&self, took: Duration, ok: bool) {
        let counter = if ok {
            &self.requests_ok
        } else {
            &self.requests_failed
        };
        counter.fetch_add(1, Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency[latency_bucket(micros)].fetch_add(1, Relaxed);
        self.latency_sum_micros.fetch_add(micros, Relaxed);
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

    use codio_base::metrics::{Export, encode_counter_family, encode_counters, encode_gauges};
    use prometheus_client::{
        collector::Collector,
        encoding::{DescriptorEncoder, EncodeMetric},
        metrics::{MetricType, counter::ConstCounter},
        registry::Unit,
    };

    use super::{FIRST_BUCKET_MICROS, LATENCY_BUCKETS, Stats};

    impl Stats {
        /// A Prometheus collector reading these counters at each scrape: `inbound_requests`,
        /// `rejected_requests`, `refused_requests`, `refused_bulk`, `bulk_bytes{direction}`,
        /// `requests{outcome}` (outbound, `ok`/`error`) and the `request_duration_seconds`
        /// histogram (outbound, 50 us … ~26 s, doubling buckets).
        /// Register it under the application's prefix
        /// (`registry.sub_registry_with_prefix("codio").register_collector(…)`).
        pub fn collector(self: Arc<Self>) -> Box<dyn Collector> {
            codio_base::metrics::collector(self)
        }
    }

    impl Export for Stats {
        fn export(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let stats = self;
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
                (
                    "shed_sessions",
                    "Inbound RPC sessions ended: their peer opened more than its share",
                    stats.shed_sessions(),
                ),
                (
                    "stalled_sessions",
                    "Inbound RPC sessions ended: their peer did not read an answer in time",
                    stats.stalled_sessions(),
                ),
                (
                    "refused_over_share",
                    "Inbound requests answered Overloaded: their peer had its share of the queue",
                    stats.refused_over_share(),
                ),
                (
                    "refused_over_streams",
                    "Inbound /codio/1.0.0 requests answered Overloaded: their peer had its share of streams",
                    stats.refused_over_streams(),
                ),
            ];
            encode_counters(&mut encoder, counters)?;
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
            let gauges = [
                (
                    "inbound_sessions",
                    "Inbound RPC sessions open",
                    stats.inbound_sessions(),
                ),
                (
                    "peak_peer_share",
                    "Most requests one peer had queued for or held by the handler at once",
                    stats.peak_peer_share(),
                ),
                (
                    "request_streams",
                    "Inbound /codio/1.0.0 streams in flight (request read, answer not written)",
                    stats.request_streams(),
                ),
                (
                    "peak_peer_streams",
                    "Most inbound /codio/1.0.0 streams one peer had in flight at once",
                    stats.peak_peer_streams(),
                ),
                (
                    "queued_response_bytes",
                    "Bytes of answers handed over by responders and not yet written",
                    stats.queued_response_bytes(),
                ),
            ];
            encode_gauges(&mut encoder, gauges)?;
            encode_requests(stats, &mut encoder)
        }
    }

    /// Outbound requests by outcome, and their latency.
    fn encode_requests(stats: &Stats, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let (ok, failed) = stats.requests();
        encode_counter_family(
            encoder,
            ("requests", "Outbound requests by outcome"),
            "outcome",
            [("ok", ok), ("error", failed)],
        )?;
        let help = "Outbound request latency, send to response";
        let unit = Some(&Unit::Seconds);
        let mut duration =
            encoder.encode_descriptor("request_duration", help, unit, MetricType::Histogram)?;
        let buckets: Vec<(f64, u64)> = stats
            .latency
            .iter()
            .enumerate()
            .map(|(i, count)| {
                let bound = if i < LATENCY_BUCKETS {
                    (FIRST_BUCKET_MICROS << i) as f64 / 1e6
                } else {
                    f64::INFINITY
                };
                (bound, count.load(std::sync::atomic::Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = stats
            .latency_sum_micros
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1e6;
        duration
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_latency_lands_in_doubling_buckets() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(50), 0);
        assert_eq!(latency_bucket(51), 1);
        assert_eq!(latency_bucket(100), 1);
        assert_eq!(latency_bucket(50 << 19), 19);
        assert_eq!(latency_bucket((50 << 19) + 1), LATENCY_BUCKETS);
        let stats = Stats::default();
        stats.record_request(Duration::from_micros(70), true);
        stats.record_request(Duration::from_secs(60), false);
        assert_eq!(stats.requests(), (1, 1));
        assert_eq!(stats.latency[1].load(Relaxed), 1);
        assert_eq!(stats.latency[LATENCY_BUCKETS].load(Relaxed), 1);
        assert_eq!(stats.latency_sum_micros.load(Relaxed), 60_000_070);
    }
}
