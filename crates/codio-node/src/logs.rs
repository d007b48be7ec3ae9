//! Logging with a bounded rate: every log line's call site may print a burst of 20 lines,
//! then 10 a second; the rest are dropped and their number is logged every 10 s. A flood of
//! refusals (or anything else an attacker can trigger once per packet) cannot flood the log
//! or slow the node down writing it; metrics keep the exact counts.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use codio_base::{Buckets, Rate};
use tracing::{Metadata, callsite::Identifier, subscriber::Interest};
use tracing_subscriber::{
    EnvFilter, Layer,
    layer::{Context, Filter, SubscriberExt},
    util::SubscriberInitExt,
};

/// Lines one call site may print: a burst of 20 at once, then one per 100 ms.
pub(crate) const RATE: Rate = Rate::every(Duration::from_millis(100), 20);
/// How often the number of dropped lines is reported.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Installs the node's logger (stderr, `RUST_LOG` or `info`) with the rate limit; reports
/// dropped lines from a task on the current runtime.
pub(crate) fn init() {
    let env = EnvFilter::try_from_default_env()
        // kad warns of "no known peers" at every lone node's start.
        .unwrap_or_else(|_| EnvFilter::new("info,libp2p_kad=error"));
    let limit = RateLimit::default();
    let dropped = limit.dropped.clone();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_filter(limit);
    tracing_subscriber::registry().with(env).with(layer).init();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REPORT_EVERY);
        loop {
            tick.tick().await;
            let n = dropped.swap(0, Relaxed);
            if n > 0 {
                tracing::warn!(dropped = n, "log lines dropped by the rate limit");
            }
        }
    });
}

/// The rate limit, as a per-layer filter: a token bucket per call site.
#[derive(Debug)]
struct RateLimit {
    sites: Mutex<Buckets<Identifier>>,
    dropped: Arc<AtomicU64>,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            sites: Mutex::new(Buckets::new(RATE)),
            dropped: Arc::default(),
        }
    }
}

impl RateLimit {
    fn admit(&self, site: Identifier, now: Instant) -> bool {
        // Each update is a whole token step: poisoning cannot leave it half-done.
        let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        let admitted = sites.admit(site, now);
        if !admitted {
            self.dropped.fetch_add(1, Relaxed);
        }
        admitted
    }
}

impl<S> Filter<S> for RateLimit {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        !meta.is_event() || self.admit(meta.callsite(), Instant::now())
    }

    // Decided line by line, never cached per call site.
    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_ten_a_second_per_call_site() {
        let limit = RateLimit::default();
        let site = Identifier(&SITE);
        let now = Instant::now();
        for _ in 0..RATE.burst {
            assert!(limit.admit(site.clone(), now));
        }
        assert!(!limit.admit(site.clone(), now));
        assert!(!limit.admit(site.clone(), now + RATE.interval / 2));
        assert!(limit.admit(site.clone(), now + RATE.interval));
        assert_eq!(limit.dropped.load(Relaxed), 2);
    }

    struct Site;
    static SITE: Site = Site;
    impl tracing::Callsite for Site {
        fn set_interest(&self, _: Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unreachable!("the test only compares identities")
        }
    }
}
