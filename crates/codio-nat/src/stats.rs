//! What NAT traversal counted: hole punches by outcome, readable by the application and
//! exported to Prometheus (feature `metrics`).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

/// Counters of the NAT layer; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Stats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    hole_punches_ok: AtomicU64,
    hole_punches_failed: AtomicU64,
}

impl Stats {
    /// Hole punches that gave a direct connection, and those that failed.
    pub fn hole_punches(&self) -> (u64, u64) {
        (
            self.0.hole_punches_ok.load(Relaxed),
            self.0.hole_punches_failed.load(Relaxed),
        )
    }

    pub(crate) fn record_hole_punch(&self, ok: bool) {
        let counter = if ok {
            &self.0.hole_punches_ok
        } else {
            &self.0.hole_punches_failed
        };
        counter.fetch_add(1, Relaxed);
    }
}

#[cfg(feature = "metrics")]
mod export {
    use codio_base::metrics::{Export, encode_counter_family};
    use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

    use super::Stats;

    impl Stats {
        /// A Prometheus collector reading these counters at each scrape:
        /// `hole_punches{outcome}` (`ok`, `error`). Register it under the application's prefix
        /// (`registry.sub_registry_with_prefix("codio").register_collector(…)`).
        pub fn collector(&self) -> Box<dyn Collector> {
            codio_base::metrics::collector(std::sync::Arc::new(self.clone()))
        }
    }

    impl Export for Stats {
        fn export(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let (ok, failed) = self.hole_punches();
            encode_counter_family(
                &mut encoder,
                ("hole_punches", "DCUtR hole punches by outcome"),
                "outcome",
                [("ok", ok), ("error", failed)],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_counts() {
        let stats = Stats::default();
        let shared = stats.clone();
        stats.record_hole_punch(true);
        stats.record_hole_punch(false);
        stats.record_hole_punch(false);
        assert_eq!(shared.hole_punches(), (1, 2));
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn the_collector_exports_both_outcomes() {
        let stats = Stats::default();
        stats.record_hole_punch(true);
        let mut registry = prometheus_client::registry::Registry::default();
        registry
            .sub_registry_with_prefix("codio")
            .register_collector(stats.collector());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "codio_hole_punches_total{outcome=\"ok\"} 1",
            "codio_hole_punches_total{outcome=\"error\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
