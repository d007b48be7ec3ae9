//! Bounds on inbound connections still in their handshake, per source address, per subnet and
//! in total, with the oldest work of the busiest source shed first.
//!
//! An inbound connection costs a socket, a task and buffers from its first byte, long before
//! the remote proves an identity: a single host can open hundreds of TCP connections and send
//! nothing. The bounds below are enforced where a handshake in progress can still be cancelled
//! (the connection set-up futures of this transport; a `NetworkBehaviour` can only refuse a
//! newcomer): when a bound is reached, the *oldest* pending connection of the offending source,
//! or of the busiest source when the total is reached, is aborted and the newcomer is kept, so
//! a flood from one place never locks out a peer from another.
//!
//! [`PendingTable`] is the decision, as pure state; [`InboundGate`] applies it to live
//! connection set-ups and counts what it did ([`InboundStats`]).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

pub use codio_base::Source;
use futures::future::AbortHandle;
use libp2p::Multiaddr;

/// Limits on inbound connections in their handshake.
///
/// | setting | default |
/// |---|---|
/// | [`max_pending`](Self::with_max_pending) | 64 handshakes at once, in total |
/// | [`max_pending_per_source`](Self::with_max_pending_per_source) | 8 per source: an IPv4 address, or an IPv6 /56 (go-libp2p's resource manager: 8 per IPv4 /32 and IPv6 /56) |
/// | [`max_pending_per_subnet`](Self::with_max_pending_per_subnet) | 16 per IPv4 /24 or IPv6 /48 |
/// | [`handshake_timeout`](Self::with_handshake_timeout) | 5 s for an inbound set-up (TCP accept to Yamux), half the 10 s a dial may take |
/// | [`limit_loopback`](Self::with_limit_loopback) | `false`: loopback sources (127.0.0.0/8, ::1) count toward the total only, as go-libp2p exempts them |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundLimits {
    pub(crate) max_pending: usize,
    pub(crate) max_pending_per_source: usize,
    pub(crate) max_pending_per_subnet: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) limit_loopback: bool,
}

impl Default for InboundLimits {
    fn default() -> Self {
        Self {
            max_pending: 64,
            max_pending_per_source: 8,
            max_pending_per_subnet: 16,
            handshake_timeout: Duration::from_secs(5),
            limit_loopback: false,
        }
    }
}

impl InboundLimits {
    /// Sets the bound on inbound handshakes in progress, in total (at least 1).
    pub fn with_max_pending(mut self, max: usize) -> Self {
        self.max_pending = max.max(1);
        self
    }

    /// Sets the bound per source address (IPv4 address, IPv6 /56; at least 1).
    pub fn with_max_pending_per_source(mut self, max: usize) -> Self {
        self.max_pending_per_source = max.max(1);
        self
    }

    /// Sets the bound per subnet (IPv4 /24, IPv6 /48; at least 1).
    pub fn with_max_pending_per_subnet(mut self, max: usize) -> Self {
        self.max_pending_per_subnet = max.max(1);
        self
    }

    /// Sets the time an inbound connection has from TCP accept to a multiplexed, authenticated
    /// connection.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Whether loopback sources are held to the per-source and per-subnet bounds too (tests
    /// that play an attacker on one machine turn this on).
    pub fn with_limit_loopback(mut self, limit: bool) -> Self {
        self.limit_loopback = limit;
        self
    }

    /// The inbound handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }
}

/// Which bound made the gate shed a pending connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShedReason {
    /// Its source had `max_pending_per_source` handshakes in progress.
    PerSource,
    /// Its subnet had `max_pending_per_subnet` handshakes in progress.
    PerSubnet,
    /// The node had `max_pending` handshakes in progress, and its source was the busiest.
    Total,
}

impl ShedReason {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerSource => "per_source",
            Self::PerSubnet => "per_subnet",
            Self::Total => "total",
        }
    }
}

/// A pending connection's place in the [`PendingTable`].
pub type Ticket = u64;

/// The pending inbound connections, in arrival order, and what to shed when one more
/// arrives: pure state, no sockets.
#[derive(Debug)]
pub struct PendingTable {
    limits: InboundLimits,
    next: Ticket,
    /// Pending connections by ticket (arrival order), with their source when they have one.
    pending: BTreeMap<Ticket, Option<Source>>,
    per_source: HashMap<IpAddr, usize>,
    per_subnet: HashMap<IpAddr, usize>,
}

impl PendingTable {
    /// An empty table enforcing `limits`.
    pub fn new(limits: InboundLimits) -> Self {
        Self {
            limits,
            next: 0,
            pending: BTreeMap::new(),
            per_source: HashMap::new(),
            per_subnet: HashMap::new(),
        }
    }

    /// Connections pending now.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no connection is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The most connections pending from one source address.
    pub fn busiest_source(&self) -> usize {
        self.per_source.values().copied().max().unwrap_or(0)
    }

    /// Admits a connection from `source`: its ticket, and the tickets to shed (already
    /// removed from the table) so that every bound holds with the newcomer in.
    pub fn admit(&mut self, source: Option<Source>) -> (Ticket, Vec<(Ticket, ShedReason)>) {
        let mut shed = Vec::new();
        if let Some(source) =
            source.filter(|s| self.limits.limit_loopback || !s.address.is_loopback())
        {
            if self.count(&self.per_source, source.address) >= self.limits.max_pending_per_source {
                let same = |s: &Option<Source>| s.is_some_and(|s| s.address == source.address);
                self.shed_oldest(same, ShedReason::PerSource, &mut shed);
            } else if self.count(&self.per_subnet, source.subnet)
                >= self.limits.max_pending_per_subnet
            {
                let same = |s: &Option<Source>| s.is_some_and(|s| s.subnet == source.subnet);
                self.shed_oldest(same, ShedReason::PerSubnet, &mut shed);
            }
        }
        if self.pending.len() >= self.limits.max_pending {
            self.shed_busiest(&mut shed);
        }
        let ticket = self.next;
        self.next += 1;
        self.pending.insert(ticket, source);
        if let Some(source) = source {
            *self.per_source.entry(source.address).or_default() += 1;
            *self.per_subnet.entry(source.subnet).or_default() += 1;
        }
        (ticket, shed)
    }

    /// The connection of `ticket` finished its handshake, failed or was dropped.
    pub fn release(&mut self, ticket: Ticket) {
        if let Some(source) = self.pending.remove(&ticket).flatten() {
            decrement(&mut self.per_source, source.address);
            decrement(&mut self.per_subnet, source.subnet);
        }
    }

    fn count(&self, counts: &HashMap<IpAddr, usize>, key: IpAddr) -> usize {
        counts.get(&key).copied().unwrap_or(0)
    }

    /// Sheds the oldest pending connection whose source (`None`: it has none) matches.
    fn shed_oldest(
        &mut self,
        matches: impl Fn(&Option<Source>) -> bool,
        reason: ShedReason,
        shed: &mut Vec<(Ticket, ShedReason)>,
    ) {
        let oldest = self
            .pending
            .iter()
            .find(|(_, source)| matches(source))
            .map(|(ticket, _)| *ticket);
        if let Some(ticket) = oldest {
            self.release(ticket);
            shed.push((ticket, reason));
        }
    }

    /// Sheds the oldest pending connection of the source with the most pending (connections
    /// without a source count as one source), so the flood pays, not the newcomer.
    fn shed_busiest(&mut self, shed: &mut Vec<(Ticket, ShedReason)>) {
        let unsourced = self.pending.values().filter(|s| s.is_none()).count();
        let busiest = self
            .per_source
            .iter()
            .max_by_key(|(_, count)| **count)
            .filter(|(_, count)| **count >= unsourced)
            .map(|(address, _)| *address);
        let from_busiest = |s: &Option<Source>| match busiest {
            Some(address) => s.is_some_and(|s| s.address == address),
            None => s.is_none(),
        };
        self.shed_oldest(from_busiest, ShedReason::Total, shed);
    }
}

fn decrement(counts: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(count) = counts.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&key);
        }
    }
}

/// What the gate did, for metrics and tests; cheap to read (relaxed atomics and one lock).
#[derive(Debug, Default)]
struct Counters {
    admitted: AtomicU64,
    shed_per_source: AtomicU64,
    shed_per_subnet: AtomicU64,
    shed_total: AtomicU64,
    timed_out: AtomicU64,
    /// Security handshakes completed, in either direction: TLS, Noise.
    secured: [AtomicU64; 2],
}

#[derive(Debug)]
struct State {
    table: PendingTable,
    aborts: HashMap<Ticket, AbortHandle>,
}

/// The [`PendingTable`] applied to live connection set-ups: shared by a transport's inbound
/// upgrades, and a handle to read what it did ([`InboundStats`]).
#[derive(Debug, Clone)]
pub struct InboundGate {
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
    limits: InboundLimits,
}

impl InboundGate {
    /// A gate enforcing `limits`.
    pub fn new(limits: InboundLimits) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                table: PendingTable::new(limits.clone()),
                aborts: HashMap::new(),
            })),
            counters: Arc::default(),
            limits,
        }
    }

    /// The limits enforced.
    pub fn limits(&self) -> &InboundLimits {
        &self.limits
    }

    /// What the gate did so far.
    pub fn stats(&self) -> InboundStats {
        InboundStats(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Each critical section is one table update; a panic in another cannot leave the
        // table inconsistent, so poisoning is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a connection from `remote`, aborting the set-ups it sheds; the returned guard
    /// releases the connection's place when dropped.
    pub(crate) fn admit(&self, remote: &Multiaddr, abort: AbortHandle) -> Admission {
        let source = Source::of_multiaddr(remote);
        let mut state = self.lock();
        let (ticket, shed) = state.table.admit(source);
        state.aborts.insert(ticket, abort);
        for (ticket, reason) in shed {
            if let Some(handle) = state.aborts.remove(&ticket) {
                handle.abort();
            }
            let counter = match reason {
                ShedReason::PerSource => &self.counters.shed_per_source,
                ShedReason::PerSubnet => &self.counters.shed_per_subnet,
                ShedReason::Total => &self.counters.shed_total,
            };
            counter.fetch_add(1, Relaxed);
            tracing::debug!(?reason, %remote, "shed a pending inbound connection");
        }
        self.counters.admitted.fetch_add(1, Relaxed);
        Admission {
            gate: self.clone(),
            ticket,
        }
    }

    pub(crate) fn record_timeout(&self) {
        self.counters.timed_out.fetch_add(1, Relaxed);
    }
}

/// A pending connection's place in the gate, released when dropped.
#[derive(Debug)]
pub(crate) struct Admission {
    gate: InboundGate,
    ticket: Ticket,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.aborts.remove(&self.ticket);
        state.table.release(self.ticket);
    }
}

/// Read-only view of an [`InboundGate`]: pending handshakes now, and what was shed.
#[derive(Debug, Clone)]
pub struct InboundStats(InboundGate);

impl InboundStats {
    /// Inbound connections in their handshake now.
    pub fn pending(&self) -> usize {
        self.0.lock().table.len()
    }

    /// The most handshakes in progress from one source now.
    pub fn busiest_source(&self) -> usize {
        self.0.lock().table.busiest_source()
    }

    /// Inbound connections admitted to a handshake so far.
    pub fn admitted(&self) -> u64 {
        self.0.counters.admitted.load(Relaxed)
    }

    /// Pending connections shed because of `reason`.
    pub fn shed(&self, reason: ShedReason) -> u64 {
        let counters = &self.0.counters;
        match reason {
            ShedReason::PerSource => counters.shed_per_source.load(Relaxed),
            ShedReason::PerSubnet => counters.shed_per_subnet.load(Relaxed),
            ShedReason::Total => counters.shed_total.load(Relaxed),
        }
    }

    /// Inbound handshakes that did not finish within the handshake timeout.
    pub fn timed_out(&self) -> u64 {
        self.0.counters.timed_out.load(Relaxed)
    }

    /// Security handshakes completed with `protocol`, inbound and outbound.
    pub fn secured(&self, protocol: crate::SecurityProtocol) -> u64 {
        self.0.counters.secured[secured_index(protocol)].load(Relaxed)
    }

    pub(crate) fn count_secured(&self, protocol: crate::SecurityProtocol) {
        self.0.counters.secured[secured_index(protocol)].fetch_add(1, Relaxed);
    }
}

fn secured_index(protocol: crate::SecurityProtocol) -> usize {
    match protocol {
        crate::SecurityProtocol::Tls => 0,
        crate::SecurityProtocol::Noise => 1,
    }
}

#[cfg(feature = "metrics")]
mod export {
    use codio_base::metrics::{Export, encode_counter_family, encode_counters, encode_gauges};
    use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

    use super::{InboundStats, ShedReason};

    impl InboundStats {
        /// A Prometheus collector reading the gate at each scrape: `inbound_pending` and
        /// `inbound_pending_busiest_source` (gauges), `inbound_admitted`,
        /// `inbound_shed{reason}` (`per_source`, `per_subnet`, `total`) and
        /// `inbound_handshake_timeouts` (counters). Register it under the application's
        /// prefix.
        pub fn collector(&self) -> Box<dyn Collector> {
            codio_base::metrics::collector(std::sync::Arc::new(self.clone()))
        }
    }

    impl Export for InboundStats {
        fn export(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let gauges = [
                (
                    "inbound_pending",
                    "Inbound connections in their handshake",
                    self.pending() as u64,
                ),
                (
                    "inbound_pending_busiest_source",
                    "Most inbound handshakes in progress from one source address",
                    self.busiest_source() as u64,
                ),
            ];
            encode_gauges(&mut encoder, gauges)?;
            let counters = [
                (
                    "inbound_admitted",
                    "Inbound connections admitted to a handshake",
                    self.admitted(),
                ),
                (
                    "inbound_handshake_timeouts",
                    "Inbound handshakes that did not finish within the handshake timeout",
                    self.timed_out(),
                ),
            ];
            encode_counters(&mut encoder, counters)?;
            encode_counter_family(
                &mut encoder,
                (
                    "security_handshakes",
                    "Security handshakes completed (both directions), by protocol",
                ),
                "protocol",
                [
                    ("tls", self.secured(crate::SecurityProtocol::Tls)),
                    ("noise", self.secured(crate::SecurityProtocol::Noise)),
                ],
            )?;
            encode_counter_family(
                &mut encoder,
                (
                    "inbound_shed",
                    "Pending inbound connections shed (aborted) to make room, by bound",
                ),
                "reason",
                [
                    ShedReason::PerSource,
                    ShedReason::PerSubnet,
                    ShedReason::Total,
                ]
                .map(|reason| (reason.as_str(), self.shed(reason))),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(ip: &str) -> Option<Source> {
        Some(Source::of(ip.parse().unwrap()))
    }

    fn limits(total: usize, per_source: usize, per_subnet: usize) -> InboundLimits {
        InboundLimits::default()
            .with_max_pending(total)
            .with_max_pending_per_source(per_source)
            .with_max_pending_per_subnet(per_subnet)
            .with_limit_loopback(true)
    }

    #[test]
    fn a_flooding_source_sheds_its_own_oldest() {
        let mut table = PendingTable::new(limits(64, 8, 16));
        let first: Vec<Ticket> = (0..8).map(|_| table.admit(source("10.0.0.1")).0).collect();
        let (good, shed) = table.admit(source("10.9.0.1"));
        assert!(shed.is_empty());
        for (i, oldest) in first.iter().enumerate() {
            let (_, shed) = table.admit(source("10.0.0.1"));
            assert_eq!(shed, vec![(*oldest, ShedReason::PerSource)], "arrival {i}");
        }
        assert_eq!(table.len(), 9);
        assert_eq!(table.busiest_source(), 8);
        table.release(good);
        assert_eq!(table.len(), 8);
    }

    #[test]
    fn a_subnet_is_bounded_across_its_addresses() {
        let mut table = PendingTable::new(limits(64, 8, 4));
        let first = table.admit(source("10.0.0.1")).0;
        for host in 2..5 {
            assert!(table.admit(source(&format!("10.0.0.{host}"))).1.is_empty());
        }
        let (_, shed) = table.admit(source("10.0.0.200"));
        assert_eq!(shed, vec![(first, ShedReason::PerSubnet)]);
        assert!(table.admit(source("10.0.1.1")).1.is_empty(), "another /24");
    }

    #[test]
    fn a_full_table_sheds_the_busiest_source_not_the_newcomer() {
        let mut table = PendingTable::new(limits(10, 8, 16));
        let busy: Vec<Ticket> = (0..6).map(|_| table.admit(source("10.0.0.1")).0).collect();
        for host in 1..5 {
            table.admit(source(&format!("10.{host}.0.1")));
        }
        assert_eq!(table.len(), 10);
        let (_, shed) = table.admit(source("10.7.0.1"));
        assert_eq!(shed, vec![(busy[0], ShedReason::Total)]);
        assert_eq!(table.len(), 10);
    }

    #[test]
    fn loopback_is_exempt_by_default_and_unsourced_count_as_one() {
        let mut table = PendingTable::new(InboundLimits::default().with_max_pending(20));
        for _ in 0..12 {
            assert!(table.admit(source("127.0.0.1")).1.is_empty());
        }
        let mut table = PendingTable::new(limits(3, 8, 16));
        let relayed = table.admit(None).0;
        table.admit(None);
        table.admit(source("10.0.0.1"));
        let (_, shed) = table.admit(source("10.0.0.2"));
        assert_eq!(shed, vec![(relayed, ShedReason::Total)]);
    }
}
