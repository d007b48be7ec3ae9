//! [`Stats`]: what the discovery layer refused or left out, for metrics and tests; with the
//! `metrics` feature, exported to Prometheus by [`Stats::collector`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Counters of the discovery layer (relaxed atomics, cheap to read at any time).
#[derive(Debug, Default)]
pub struct Stats {
    identify_dropped: AtomicU64,
    identify_refused_streams: AtomicU64,
    addresses_dropped: AtomicU64,
    max_addresses_per_peer: AtomicU64,
    refused_records: AtomicU64,
    refused_providers: AtomicU64,
    remote_provider_keys: AtomicU64,
    mdns_peers: AtomicU64,
    mdns_busiest_source: AtomicU64,
    mdns_shed: AtomicU64,
    mdns_unanswered: AtomicU64,
    provider_stream_dropped: AtomicU64,
    mdns_running: AtomicBool,
}

impl Stats {
    /// Whether mDNS runs (its series are exported only then).
    pub fn mdns_running(&self) -> bool {
        self.mdns_running.load(Relaxed)
    }

    pub(crate) fn set_mdns_running(&self, running: bool) {
        self.mdns_running.store(running, Relaxed);
    }

    /// Identify results and pushes dropped by the per-peer rate limit.
    pub fn identify_dropped(&self) -> u64 {
        self.identify_dropped.load(Relaxed)
    }

    /// Identify streams a peer opened beyond the per-connection bound, closed unread.
    pub fn identify_refused_streams(&self) -> u64 {
        self.identify_refused_streams.load(Relaxed)
    }

    /// Identify listen addresses left out: beyond the per-peer cap or non-global.
    pub fn addresses_dropped(&self) -> u64 {
        self.addresses_dropped.load(Relaxed)
    }

    /// The most addresses the routing table held for one peer after an identify update (a
    /// high-water mark).
    pub fn max_addresses_per_peer(&self) -> u64 {
        self.max_addresses_per_peer.load(Relaxed)
    }

    /// Value records the store refused (store full or value too large).
    pub fn refused_records(&self) -> u64 {
        self.refused_records.load(Relaxed)
    }

    /// Remote provider records the store refused (too many keys with remote providers).
    pub fn refused_providers(&self) -> u64 {
        self.refused_providers.load(Relaxed)
    }

    /// Keys with remote providers in the record store now.
    pub fn remote_provider_keys(&self) -> u64 {
        self.remote_provider_keys.load(Relaxed)
    }

    /// Peers mDNS holds now.
    pub fn mdns_peers(&self) -> u64 {
        self.mdns_peers.load(Relaxed)
    }

    /// The most of them announced from one address.
    pub fn mdns_busiest_source(&self) -> u64 {
        self.mdns_busiest_source.load(Relaxed)
    }

    /// mDNS peers dropped to make room for newcomers (their sender at its bound, or the
    /// table full).
    pub fn mdns_shed(&self) -> u64 {
        self.mdns_shed.load(Relaxed)
    }

    /// mDNS queries left unanswered by the answer rate.
    pub fn mdns_unanswered(&self) -> u64 {
        self.mdns_unanswered.load(Relaxed)
    }

    pub(crate) fn set_mdns_peers(&self, peers: usize, busiest_source: usize) {
        let to_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.mdns_peers.store(to_u64(peers), Relaxed);
        self.mdns_busiest_source
            .store(to_u64(busiest_source), Relaxed);
    }

    pub(crate) fn record_mdns_shed(&self) {
        self.mdns_shed.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_mdns_unanswered(&self) {
        self.mdns_unanswered.fetch_add(1, Relaxed);
    }

    pub(crate) fn set_remote_provider_keys(&self, keys: usize) {
        let keys = u64::try_from(keys).unwrap_or(u64::MAX);
        self.remote_provider_keys.store(keys, Relaxed);
    }

    /// Providers dropped because a provider stream's reader was too slow.
    pub fn provider_stream_dropped(&self) -> u64 {
        self.provider_stream_dropped.load(Relaxed)
    }

    pub(crate) fn record_stream_dropped(&self) {
        self.provider_stream_dropped.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_identify_dropped(&self) {
        self.identify_dropped.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_identify_refused_stream(&self) {
        self.identify_refused_streams.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_identify_update(&self, offered: usize, kept: usize, held: usize) {
        let left_out = u64::try_from(offered.saturating_sub(kept)).unwrap_or(u64::MAX);
        self.addresses_dropped.fetch_add(left_out, Relaxed);
        let held = u64::try_from(held).unwrap_or(u64::MAX);
        self.max_addresses_per_peer.fetch_max(held, Relaxed);
    }

    pub(crate) fn record_refused_record(&self) {
        self.refused_records.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_refused_provider(&self) {
        self.refused_providers.fetch_add(1, Relaxed);
    }
}

#[cfg(feature = "metrics")]
mod export {
    use std::sync::Arc;

    use codio_base::metrics::{Export, encode_counters, encode_gauges};
    use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

    use super::Stats;

    impl Stats {
        /// A Prometheus collector reading these counters at each scrape: `identify_dropped`,
        /// `identify_refused_streams`, `identify_addresses_dropped`, `dht_refused_records`, `dht_refused_providers`,
        /// `mdns_shed_peers`, `mdns_unanswered_queries`, `dht_provider_stream_dropped` (counters), `dht_max_addresses_per_peer`,
        /// `dht_remote_provider_keys`, `mdns_peers` and `mdns_busiest_source` (gauges); the
        /// `mdns_*` series only while mDNS runs.
        /// Register it under the application's prefix.
        pub fn collector(self: Arc<Self>) -> Box<dyn Collector> {
            codio_base::metrics::collector(self)
        }
    }

    impl Export for Stats {
        fn export(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let stats = self;
            let counters = [
                (
                    "identify_dropped",
                    "Identify results and pushes dropped by the per-peer rate limit",
                    stats.identify_dropped(),
                ),
                (
                    "identify_refused_streams",
                    "Identify streams beyond the per-connection bound, closed unread",
                    stats.identify_refused_streams(),
                ),
                (
                    "identify_addresses_dropped",
                    "Identify listen addresses left out (beyond the per-peer cap, or non-global)",
                    stats.addresses_dropped(),
                ),
                (
                    "dht_refused_records",
                    "DHT value records refused (store full or value too large)",
                    stats.refused_records(),
                ),
                (
                    "dht_refused_providers",
                    "Remote DHT provider records refused (too many keys with remote providers)",
                    stats.refused_providers(),
                ),
                (
                    "dht_provider_stream_dropped",
                    "Providers dropped for provider streams read too slowly",
                    stats.provider_stream_dropped(),
                ),
            ];
            encode_counters(&mut encoder, counters)?;
            let gauges = [
                (
                    "dht_max_addresses_per_peer",
                    "Most addresses the routing table held for one peer after an identify",
                    stats.max_addresses_per_peer(),
                ),
                (
                    "dht_remote_provider_keys",
                    "Keys with remote providers in the DHT record store",
                    stats.remote_provider_keys(),
                ),
            ];
            encode_gauges(&mut encoder, gauges)?;
            if !stats.mdns_running() {
                return Ok(());
            }
            encode_counters(
                &mut encoder,
                [
                    (
                        "mdns_shed_peers",
                        "mDNS peers dropped to make room for newcomers",
                        stats.mdns_shed(),
                    ),
                    (
                        "mdns_unanswered_queries",
                        "mDNS queries left unanswered by the answer rate",
                        stats.mdns_unanswered(),
                    ),
                ],
            )?;
            encode_gauges(
                &mut encoder,
                [
                    ("mdns_peers", "Peers mDNS holds", stats.mdns_peers()),
                    (
                        "mdns_busiest_source",
                        "Most mDNS peers announced from one address",
                        stats.mdns_busiest_source(),
                    ),
                ],
            )
        }
    }
}
