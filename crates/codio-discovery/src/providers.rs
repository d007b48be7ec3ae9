//! Content routing beyond Kademlia's: providers with their addresses, ranked by proximity
//! ([`Provider`], [`rank`]); a stream of providers as a lookup finds them
//! ([`ProviderStream`]); and this node's reprovide schedule (`Reprovider`, pure state fed
//! an [`Instant`]), which announces every key again before peers' records of it expire,
//! in batches bounded in rate and in flight.

use std::{
    cmp::Ordering,
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

/// Where an RTT to a peer comes from: the liveness layer's last ping, if any. The discovery
/// layer does not ping; the application (the facade) passes its own source in.
pub type RttSource = Arc<dyn Fn(&PeerId) -> Option<Duration> + Send + Sync>;

/// A provider of a key, with what this node knows of how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Provider {
    /// The provider.
    pub peer_id: PeerId,
    /// Its addresses (from the provider records, the lookup and the routing table), without
    /// `/p2p/` suffixes.
    pub addresses: Vec<Multiaddr>,
    /// Whether this node is connected to it now.
    pub connected: bool,
    /// The last measured round trip to it, when connected and pinged.
    pub rtt: Option<Duration>,
}

/// The nearer of two providers: connected before not connected, then the lower RTT (a
/// measured one before none), then the one with addresses.
pub fn nearer(a: &Provider, b: &Provider) -> Ordering {
    b.connected
        .cmp(&a.connected)
        .then_with(|| match (a.rtt, b.rtt) {
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| a.addresses.is_empty().cmp(&b.addresses.is_empty()))
}

/// Sorts providers nearest first ([`nearer`]); the sort is stable.
pub fn rank(providers: &mut [Provider]) {
    providers.sort_by(nearer);
}

/// Providers of a key as a lookup finds them ([`Dht::providers_stream`](crate::Dht::providers_stream)).
/// Dropping it stops the lookup.
#[derive(Debug)]
pub struct ProviderStream {
    rx: mpsc::Receiver<Provider>,
}

impl ProviderStream {
    pub(crate) fn new(rx: mpsc::Receiver<Provider>) -> Self {
        Self { rx }
    }

    /// The next provider found; `None` when the lookup has ended (or the node shut down).
    pub async fn next(&mut self) -> Option<Provider> {
        self.rx.recv().await
    }
}

/// The reprovide schedule's settings (`DiscoveryConfig::with_reprovide`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReprovideConfig {
    pub(crate) interval: Duration,
    pub(crate) per_second: usize,
    pub(crate) in_flight: usize,
}

impl Default for ReprovideConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(12 * 60 * 60),
            per_second: 16,
            in_flight: 32,
        }
    }
}

/// This node's provided keys and when each is due to be announced again.
#[derive(Debug)]
pub(crate) struct Reprovider {
    config: ReprovideConfig,
    next: HashMap<Vec<u8>, Instant>,
    queue: BTreeSet<(Instant, Vec<u8>)>,
    in_flight: usize,
    /// Keys taken this second, and when that second began.
    window: (Instant, usize),
}

impl Reprovider {
    pub(crate) fn new(config: ReprovideConfig, now: Instant) -> Self {
        Self {
            config,
            next: HashMap::new(),
            queue: BTreeSet::new(),
            in_flight: 0,
            window: (now, 0),
        }
    }

    /// `key` was announced (or failed to be, `reached` false) at `now`: due again after the
    /// interval, or after a short retry delay (a tenth of it, at most a minute) if nobody
    /// took the record.
    pub(crate) fn announced(&mut self, key: Vec<u8>, reached: bool, now: Instant) {
        let delay = if reached {
            self.config.interval
        } else {
            (self.config.interval / 10).min(Duration::from_secs(60))
        };
        self.schedule(key, now + delay);
    }

    fn schedule(&mut self, key: Vec<u8>, at: Instant) {
        if let Some(old) = self.next.insert(key.clone(), at) {
            self.queue.remove(&(old, key.clone()));
        }
        self.queue.insert((at, key));
    }

    /// This node stopped providing `key`.
    pub(crate) fn remove(&mut self, key: &[u8]) {
        if let Some(at) = self.next.remove(key) {
            self.queue.remove(&(at, key.to_vec()));
        }
    }

    /// An announcement this schedule started has finished.
    pub(crate) fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// The keys to announce now: due ones, oldest first, within the rate and the
    /// announcements in flight. They stay scheduled (at the retry delay) until
    /// [`announced`](Self::announced) reports their outcome.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Vec<u8>> {
        if now.saturating_duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
        }
        let room = (self.config.per_second - self.window.1.min(self.config.per_second))
            .min(self.config.in_flight.saturating_sub(self.in_flight));
        let due: Vec<Vec<u8>> = self
            .queue
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(room)
            .map(|(_, key)| key.clone())
            .collect();
        for key in &due {
            self.announced(key.clone(), false, now);
        }
        self.window.1 += due.len();
        self.in_flight += due.len();
        due
    }

    /// Keys provided.
    pub(crate) fn len(&self) -> usize {
        self.next.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(connected: bool, rtt_ms: Option<u64>, addresses: usize) -> Provider {
        Provider {
            peer_id: PeerId::random(),
            addresses: (0..addresses)
                .map(|i| format!("/ip4/192.0.2.1/tcp/{}", 4000 + i).parse().unwrap())
                .collect(),
            connected,
            rtt: rtt_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn connected_and_low_rtt_first() {
        let far = provider(true, Some(80), 1);
        let near = provider(true, Some(5), 1);
        let unmeasured = provider(true, None, 1);
        let unconnected = provider(false, None, 2);
        let unreachable = provider(false, None, 0);
        let mut ranked = vec![
            unreachable.clone(),
            unconnected.clone(),
            unmeasured.clone(),
            far.clone(),
            near.clone(),
        ];
        rank(&mut ranked);
        assert_eq!(
            ranked,
            vec![near, far, unmeasured, unconnected, unreachable]
        );
    }

    fn config(per_second: usize, in_flight: usize) -> ReprovideConfig {
        ReprovideConfig {
            interval: Duration::from_secs(100),
            per_second,
            in_flight,
        }
    }

    #[test]
    fn keys_are_announced_again_before_expiry_within_the_rate() {
        let start = Instant::now();
        let mut schedule = Reprovider::new(config(3, 100), start);
        for key in 0..10u8 {
            schedule.announced(vec![key], true, start);
        }
        assert!(schedule.due(start + Duration::from_secs(99)).is_empty());
        let at = start + Duration::from_secs(100);
        // Three a second, oldest first.
        let first = schedule.due(at);
        assert_eq!(first.len(), 3);
        assert!(schedule.due(at + Duration::from_millis(500)).is_empty());
        let mut seen = first.clone();
        for second in 1..=3u64 {
            let batch = schedule.due(at + Duration::from_secs(second));
            seen.extend(batch.iter().cloned());
            for key in batch {
                schedule.finished();
                schedule.announced(key, true, at + Duration::from_secs(second));
            }
        }
        seen.sort();
        assert_eq!(seen, (0..10u8).map(|k| vec![k]).collect::<Vec<_>>());
        assert_eq!(schedule.len(), 10);
    }

    #[test]
    fn in_flight_bounds_and_failures_retry_soon() {
        let start = Instant::now();
        let mut schedule = Reprovider::new(config(100, 2), start);
        for key in 0..5u8 {
            schedule.announced(vec![key], true, start);
        }
        let at = start + Duration::from_secs(100);
        assert_eq!(schedule.due(at).len(), 2);
        assert!(
            schedule.due(at + Duration::from_secs(2)).is_empty(),
            "two in flight"
        );
        schedule.finished();
        schedule.announced(vec![0], false, at + Duration::from_secs(2));
        assert_eq!(schedule.due(at + Duration::from_secs(3)).len(), 1);
        // Nobody took key 0's record: retried after a tenth of the interval, not the interval.
        assert_eq!(schedule.next[&vec![0]], at + Duration::from_secs(12));
        schedule.remove(&[0]);
        assert_eq!(schedule.len(), 4);
    }
}
