//! Samples and their quantiles.

use std::time::Duration;

/// Latency samples in microseconds.
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples(Vec<f64>);

impl Samples {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    pub(crate) fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e6);
    }

    pub(crate) fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The `q`-quantile (0.0..=1.0), nearest rank; `NaN` without samples.
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }
}

/// CPU time this process used so far (all threads, user and system), from `/proc/self/stat`
/// in clock ticks of 10 ms (Linux's `USER_HZ`).
pub(crate) fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses: utime and stime
    // are fields 14 and 15 of the line, 12 and 13 after ") ".
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// One bulk measurement: throughput and the CPU it cost (both ends run in this process).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BulkRun {
    /// Bytes per second over all streams.
    pub(crate) bytes_per_s: f64,
    /// CPU seconds per GiB moved, sender and receiver together.
    pub(crate) cpu_s_per_gib: f64,
}

/// Measures a bulk transfer: call [`start`](Self::start) as the clock starts, then
/// [`finish`](Self::finish) when every byte is confirmed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BulkClock {
    started: std::time::Instant,
    cpu: f64,
}

impl BulkClock {
    pub(crate) fn start() -> Self {
        Self {
            started: std::time::Instant::now(),
            cpu: cpu_seconds(),
        }
    }

    /// The run, `bytes` having been moved.
    pub(crate) fn finish(self, bytes: u64) -> BulkRun {
        let seconds = self.started.elapsed().as_secs_f64();
        let gib = bytes as f64 / f64::from(1u32 << 30);
        BulkRun {
            bytes_per_s: bytes as f64 / seconds,
            cpu_s_per_gib: (cpu_seconds() - self.cpu) / gib,
        }
    }
}

/// The median of a few repeated measurements.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = cpu_seconds();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
        let used = cpu_seconds() - before;
        assert!(
            (0.05..1.0).contains(&used),
            "{used} CPU-s for 100 ms of spinning"
        );
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut s = Samples::default();
        for us in 1..=100 {
            s.push(Duration::from_micros(us));
        }
        assert_eq!(s.quantile(0.0), 1.0);
        assert_eq!(s.quantile(0.5), 51.0);
        assert_eq!(s.quantile(0.99), 99.0);
        assert_eq!(s.quantile(1.0), 100.0);
        assert!(Samples::default().quantile(0.5).is_nan());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
