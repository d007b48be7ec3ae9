//! What the layers' Prometheus collectors share: counters, gauges and one-label counter
//! families read from plain numbers at each scrape.

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

/// Numbers a layer exports at each scrape (its `Stats`): what [`collector`] turns into a
/// Prometheus collector.
pub trait Export: std::fmt::Debug + Send + Sync + 'static {
    /// Encodes the current values.
    ///
    /// # Errors
    ///
    /// The encoder's.
    fn export(&self, encoder: DescriptorEncoder) -> std::fmt::Result;
}

/// A Prometheus collector reading `stats` at each scrape; register it under the application's
/// prefix (`registry.sub_registry_with_prefix("codio").register_collector(…)`).
pub fn collector<T: Export>(stats: Arc<T>) -> Box<dyn Collector> {
    Box::new(Exported(stats))
}

#[derive(Debug)]
struct Exported<T>(Arc<T>);

impl<T: Export> Collector for Exported<T> {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        self.0.export(encoder)
    }
}

/// A metric's name, help text and value.
pub type Sample = (&'static str, &'static str, u64);

/// Encodes each `(name, help, value)` as a counter of its own.
///
/// # Errors
///
/// The encoder's.
pub fn encode_counters(
    encoder: &mut DescriptorEncoder,
    counters: impl IntoIterator<Item = Sample>,
) -> std::fmt::Result {
    for (name, help, value) in counters {
        let counter = ConstCounter::new(value);
        counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
    }
    Ok(())
}

/// Encodes each `(name, help, value)` as a gauge of its own (values past `i64::MAX` saturate).
///
/// # Errors
///
/// The encoder's.
pub fn encode_gauges(
    encoder: &mut DescriptorEncoder,
    gauges: impl IntoIterator<Item = Sample>,
) -> std::fmt::Result {
    for (name, help, value) in gauges {
        let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
        gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
    }
    Ok(())
}

/// Encodes one counter family `name{label="…"}`, a value for each label value.
///
/// # Errors
///
/// The encoder's.
pub fn encode_counter_family(
    encoder: &mut DescriptorEncoder,
    (name, help): (&'static str, &'static str),
    label: &'static str,
    values: impl IntoIterator<Item = (&'static str, u64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (label_value, value) in values {
        ConstCounter::new(value).encode(family.encode_family(&[(label, label_value)])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    use prometheus_client::registry::Registry;

    use super::*;

    #[derive(Debug, Default)]
    struct Example(AtomicU64);

    impl Export for Example {
        fn export(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let n = self.0.load(Relaxed);
            encode_counters(&mut encoder, [("sent", "Things sent", n)])?;
            encode_gauges(&mut encoder, [("held", "Things held", u64::MAX)])?;
            encode_counter_family(
                &mut encoder,
                ("refused", "Things refused"),
                "reason",
                [("full", 2), ("late", 3)],
            )
        }
    }

    #[test]
    fn counters_gauges_and_families() {
        let mut registry = Registry::default();
        let example = Arc::new(Example::default());
        example.0.store(7, Relaxed);
        registry
            .sub_registry_with_prefix("codio")
            .register_collector(collector(example));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for line in [
            "codio_sent_total 7",
            &format!("codio_held {}", i64::MAX),
            "codio_refused_total{reason=\"full\"} 2",
            "codio_refused_total{reason=\"late\"} 3",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
        }
    }
}
