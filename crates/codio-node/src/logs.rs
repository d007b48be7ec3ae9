//! Logging with a bounded rate: every log line's call site may print a burst of 20 lines,
//! then 10 a second; the rest are dropped and their number is logged every 10 s. A flood of
//! refusals (or anything else an attacker can trigger once per packet) cannot flood the log
//! or slow the node down writing it; metrics keep the exact counts.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use tracing::{Metadata, callsite::Identifier, subscriber::Interest};
use tracing_subscriber::{
    EnvFilter, Layer,
    layer::{Context, Filter, SubscriberExt},
    util::SubscriberInitExt,
};

/// Lines one call site may print at once.
const BURST: u32 = 20;
/// Then one line per this, per call site.
const INTERVAL: Duration = Duration::from_millis(100);
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

/// A token bucket: a burst of 20, then one per 100 ms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: u32,
    since: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            tokens: BURST,
            since: now,
        }
    }

    /// Takes a token at `now`, if one is left.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.since).as_nanos() / INTERVAL.as_nanos();
        if refill > 0 {
            self.tokens = self
                .tokens
                .saturating_add(u32::try_from(refill).unwrap_or(u32::MAX))
                .min(BURST);
            self.since = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// The rate limit, as a per-layer filter: a token bucket per call site.
#[derive(Debug, Default)]
struct RateLimit {
    sites: Mutex<HashMap<Identifier, Bucket>>,
    dropped: Arc<AtomicU64>,
}

impl RateLimit {
    fn admit(&self, site: Identifier, now: Instant) -> bool {
        // Each update is a whole token step: poisoning cannot leave it half-done.
        let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        let admitted = sites.entry(site).or_insert(Bucket::new(now)).take(now);
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
        for _ in 0..BURST {
            assert!(limit.admit(site.clone(), now));
        }
        assert!(!limit.admit(site.clone(), now));
        assert!(!limit.admit(site.clone(), now + INTERVAL / 2));
        assert!(limit.admit(site.clone(), now + INTERVAL));
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
