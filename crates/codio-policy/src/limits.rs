//! Connection limits and watermark trimming, as pure state fed an [`Instant`].

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::sources::{Full, SourceCounts};

use libp2p::{PeerId, swarm::ConnectionId};

/// Evicted connections still closing above which newcomers are refused, not admitted in
/// their place.
pub(crate) const MAX_EVICTING: usize = 16;

/// When a connected peer last did work on its connections (a request, a response, a transfer),
/// if known. The policy layer sees no other protocol's streams; the application (the facade)
/// passes its own source in, and eviction spares peers that were busy within the eviction
/// age.
pub type ActivitySource = Arc<dyn Fn(&PeerId) -> Option<Instant> + Send + Sync>;

/// Limits on connections.
///
/// | setting | default |
/// |---|---|
/// | [`max_established`](Self::with_max_established) | 50: hard ceiling on established connections |
/// | [`protected_extra`](Self::with_protected_extra) | 8: protected peers may exceed the ceiling by this many |
/// | [`max_pending_incoming`](Self::with_max_pending_incoming) | 128 inbound handshakes at once (a backstop: codio-transport's gate bounds them at 64, per source and per subnet, and sheds the oldest of the busiest source; this bound must stay above it so that shedding, not refusing, happens) |
/// | [`max_per_source`](Self::with_max_per_source) | 8 established inbound connections per source (IPv4 address, IPv6 /56), as go-libp2p's resource manager |
/// | [`max_per_subnet`](Self::with_max_per_subnet) | 32 established inbound connections per IPv4 /24 or IPv6 /48 |
/// | [`limit_loopback`](Self::with_limit_loopback) | `false`: loopback sources are not held to the two bounds above (go-libp2p exempts them too) |
/// | [`max_pending_outgoing`](Self::with_max_pending_outgoing) | 128 outbound dials at once |
/// | [`max_per_peer`](Self::with_max_per_peer) | 4 connections per peer |
/// | (kept alive) | every peer's primary connection (its oldest direct one), up to the low watermark: protected peers first, then the most valuable, then the oldest; the others are not kept alive and close once idle (a peer's surplus connections, and peers beyond the low watermark, e.g. the ones a DHT lookup reached) |
/// | [`watermarks`](Self::with_watermarks) | high 80 %, low 60 % of `max_established` |
/// | [`grace_period`](Self::with_grace_period) | 20 s: above the high watermark this long before trimming; connections younger than this are not trimmed |
/// | [`eviction_age`](Self::with_eviction_age) | 5 s: at the ceiling, a newcomer displaces a connection the node does not keep alive (beyond the low watermark, or surplus) once it is this old and its peer did no work for as long ([`ConnectionTable::set_activity_source`]), never one from the newcomer's own subnet, rather than being refused (`codio_peers_evicted_total`) |
/// | [`max_memory`](Self::with_max_memory) | [`MemoryLimit::Percent`] 80: no new connection (either direction) while the process's resident memory is above 80 % of the machine's physical memory (libp2p's `memory-connection-limits`) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub(crate) max_established: usize,
    pub(crate) protected_extra: usize,
    pub(crate) max_pending_incoming: usize,
    pub(crate) max_pending_outgoing: usize,
    pub(crate) max_per_peer: usize,
    pub(crate) max_per_source: usize,
    pub(crate) max_per_subnet: usize,
    pub(crate) limit_loopback: bool,
    /// `(low, high)`; `None`: 60 % and 80 % of `max_established`, whatever it is set to.
    pub(crate) watermarks: Option<(usize, usize)>,
    pub(crate) grace_period: Duration,
    pub(crate) eviction_age: Option<Duration>,
    pub(crate) max_memory: MemoryLimit,
}

/// Above what process memory new connections are refused (libp2p's
/// `memory-connection-limits`, read at most every 100 ms). Connections already open stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemoryLimit {
    /// No memory-based refusal.
    Off,
    /// Refuse above this many bytes of resident memory.
    Bytes(usize),
    /// Refuse above this percentage (1 to 100) of the machine's physical memory.
    Percent(u8),
}

impl Default for MemoryLimit {
    fn default() -> Self {
        MemoryLimit::Percent(80)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self::new(50)
    }
}

impl LimitsConfig {
    /// Limits for at most `max_established` connections, with watermarks at 80 % and 60 %.
    pub fn new(max_established: usize) -> Self {
        Self {
            max_established,
            protected_extra: 8,
            max_pending_incoming: 128,
            max_pending_outgoing: 128,
            max_per_peer: 4,
            max_per_source: 8,
            max_per_subnet: 32,
            limit_loopback: false,
            watermarks: None,
            grace_period: Duration::from_secs(20),
            eviction_age: Some(Duration::from_secs(5)),
            max_memory: MemoryLimit::default(),
        }
    }

    /// Sets the hard ceiling on established connections (watermarks set with
    /// [`with_watermarks`](Self::with_watermarks) stay; default ones follow the ceiling).
    pub fn with_max_established(mut self, max: usize) -> Self {
        self.max_established = max;
        self
    }

    /// Sets how many connections beyond the ceiling protected peers may use.
    pub fn with_protected_extra(mut self, extra: usize) -> Self {
        self.protected_extra = extra;
        self
    }

    /// Sets the bound on inbound connections still in their handshake.
    pub fn with_max_pending_incoming(mut self, max: usize) -> Self {
        self.max_pending_incoming = max;
        self
    }

    /// Sets the bound on outbound dials in progress.
    pub fn with_max_pending_outgoing(mut self, max: usize) -> Self {
        self.max_pending_outgoing = max;
        self
    }

    /// Sets the bound on connections to one peer.
    pub fn with_max_per_peer(mut self, max: usize) -> Self {
        self.max_per_peer = max;
        self
    }

    /// Sets the bound on established inbound connections from one source address (IPv4
    /// address, IPv6 /56); protected peers are not held to it.
    pub fn with_max_per_source(mut self, max: usize) -> Self {
        self.max_per_source = max;
        self
    }

    /// Sets the bound on established inbound connections from one IPv4 /24 or IPv6 /48.
    pub fn with_max_per_subnet(mut self, max: usize) -> Self {
        self.max_per_subnet = max;
        self
    }

    /// Whether loopback sources are held to the per-source and per-subnet bounds.
    pub fn with_limit_loopback(mut self, limit: bool) -> Self {
        self.limit_loopback = limit;
        self
    }

    /// Sets the watermarks: above `high` for the grace period, connections are trimmed down
    /// to `low`.
    pub fn with_watermarks(mut self, low: usize, high: usize) -> Self {
        self.watermarks = Some((low, high));
        self
    }

    /// The watermarks `(low, high)` in force.
    pub fn watermarks(&self) -> (usize, usize) {
        self.watermarks
            .unwrap_or((self.max_established * 3 / 5, self.max_established * 4 / 5))
    }

    /// Checks for values that cannot work.
    ///
    /// # Errors
    ///
    /// The first [`InvalidConfig`](crate::InvalidConfig) found.
    pub fn validate(&self) -> Result<(), crate::InvalidConfig> {
        let invalid = |field, reason| Err(crate::invalid(field, reason));
        if self.max_established == 0 || u32::try_from(self.max_established).is_err() {
            return invalid("max_established", "must be between 1 and 2^32 - 1");
        }
        let (low, high) = self.watermarks();
        if low > high || high > self.max_established {
            return invalid("watermarks", "need low <= high <= max_established");
        }
        if self.max_per_peer == 0 {
            return invalid("max_per_peer", "must be at least 1");
        }
        if matches!(self.max_memory, MemoryLimit::Percent(p) if p == 0 || p > 100) {
            return invalid("max_memory", "a percentage must be between 1 and 100");
        }
        if self.max_per_source == 0 || self.max_per_subnet < self.max_per_source {
            return invalid(
                "max_per_source",
                "need 1 <= max_per_source <= max_per_subnet",
            );
        }
        Ok(())
    }

    /// Sets the process memory above which new connections are refused.
    pub fn with_max_memory(mut self, limit: MemoryLimit) -> Self {
        self.max_memory = limit;
        self
    }

    /// The process memory above which new connections are refused.
    pub fn max_memory(&self) -> MemoryLimit {
        self.max_memory
    }

    /// Sets how long a connection the node does not keep alive must have been unused (since
    /// it opened, and since its peer's last request, response or transfer when the table has
    /// an [activity source](ConnectionTable::set_activity_source)) before a newcomer at the
    /// ceiling may displace it (`None`: newcomers at the ceiling are refused). Young and busy
    /// connections are spared: they may still be doing the work they were opened for (a DHT
    /// request takes well under a second).
    pub fn with_eviction_age(mut self, age: Option<Duration>) -> Self {
        self.eviction_age = age;
        self
    }

    /// Sets the grace period.
    pub fn with_grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// Whether loopback sources are held to the per-source and per-subnet bounds.
    pub fn limit_loopback(&self) -> bool {
        self.limit_loopback
    }

    /// The hard ceiling on established connections.
    pub fn max_established(&self) -> usize {
        self.max_established
    }
}

/// Why a connection was denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denial {
    /// Too many inbound handshakes in progress.
    #[error("too many pending inbound connections (limit {limit})")]
    PendingIncoming {
        /// The limit.
        limit: usize,
    },
    /// Too many dials in progress.
    #[error("too many pending outbound connections (limit {limit})")]
    PendingOutgoing {
        /// The limit.
        limit: usize,
    },
    /// The established-connection ceiling is reached.
    #[error("connection limit reached ({limit} established)")]
    MaxEstablished {
        /// The ceiling that applied (including the protected allowance for protected peers).
        limit: usize,
    },
    /// The peer was explicitly disconnected: this node does not dial it again until asked to.
    #[error("peer was explicitly disconnected")]
    Disconnected,
    /// The peer already has the maximum number of connections.
    #[error("peer already has {limit} connections")]
    PerPeer {
        /// The limit.
        limit: usize,
    },
    /// The connection's source address already has the maximum of inbound connections.
    #[error("{limit} inbound connections from this address already")]
    PerSource {
        /// The limit.
        limit: usize,
    },
    /// The connection's subnet already has the maximum of inbound connections.
    #[error("{limit} inbound connections from this subnet already")]
    PerSubnet {
        /// The limit.
        limit: usize,
    },
    /// The access rules refused the peer (allow list, deny list, application gate).
    #[error(transparent)]
    Access(#[from] crate::access::Refusal),
    /// The process uses more memory than [`LimitsConfig::with_max_memory`] allows.
    #[error("process memory {used} bytes is above the limit of {limit}")]
    Memory {
        /// Resident memory of the process, in bytes, when last read.
        used: usize,
        /// The limit, in bytes.
        limit: usize,
    },
}

#[derive(Debug, Clone, Copy)]
struct Established {
    peer_id: PeerId,
    since: Instant,
    relayed: bool,
    /// The remote IP of an inbound connection held to the source bounds.
    source: Option<IpAddr>,
}

/// Counts of connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// Established connections now.
    pub established: usize,
    /// Inbound connections in their handshake.
    pub pending_incoming: usize,
    /// Outbound dials in progress.
    pub pending_outgoing: usize,
    /// The most established connections ever held at once.
    pub peak_established: usize,
    /// The most established inbound connections from one source address now (among those
    /// held to the per-source bound).
    pub busiest_inbound_source: usize,
}

/// The connection table: decides admissions and which connections to trim.
pub struct ConnectionTable {
    config: LimitsConfig,
    established: HashMap<ConnectionId, Established>,
    per_peer: HashMap<PeerId, usize>,
    sources: SourceCounts,
    pending_incoming: HashSet<ConnectionId>,
    pending_outgoing: HashSet<ConnectionId>,
    protected: HashSet<PeerId>,
    values: HashMap<PeerId, i64>,
    /// Since when the table has been under pressure: set when it rises above the high
    /// watermark, cleared once it is back at the low watermark.
    above_high_since: Option<Instant>,
    /// Connections being closed by a trim, not yet reported closed.
    closing: HashSet<ConnectionId>,
    peak: usize,
    activity: Option<ActivitySource>,
}

impl std::fmt::Debug for ConnectionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionTable")
            .field("config", &self.config)
            .field("counts", &self.counts())
            .field("protected", &self.protected.len())
            .field("closing", &self.closing.len())
            .field("activity", &self.activity.is_some())
            .finish_non_exhaustive()
    }
}

impl ConnectionTable {
    /// An empty table.
    pub fn new(config: LimitsConfig) -> Self {
        Self {
            config,
            established: HashMap::new(),
            per_peer: HashMap::new(),
            sources: SourceCounts::default(),
            pending_incoming: HashSet::new(),
            pending_outgoing: HashSet::new(),
            protected: HashSet::new(),
            values: HashMap::new(),
            above_high_since: None,
            closing: HashSet::new(),
            peak: 0,
            activity: None,
        }
    }

    /// Where eviction learns when peers last did work (none by default: a connection's
    /// age is all it goes by).
    pub fn set_activity_source(&mut self, activity: ActivitySource) {
        self.activity = Some(activity);
    }

    /// The later of `since` and the last work `peer_id` did.
    fn last_used(&self, peer_id: &PeerId, since: Instant) -> Instant {
        let active = self
            .activity
            .as_ref()
            .and_then(|activity| activity(peer_id));
        active.map_or(since, |active| active.max(since))
    }

    /// The limits in force.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Protects `peer_id` from trimming and lets it use the protected allowance.
    pub fn protect(&mut self, peer_id: PeerId) {
        self.protected.insert(peer_id);
    }

    /// Removes the protection of `peer_id`.
    pub fn unprotect(&mut self, peer_id: &PeerId) {
        self.protected.remove(peer_id);
    }

    /// Whether `peer_id` is protected.
    pub fn is_protected(&self, peer_id: &PeerId) -> bool {
        self.protected.contains(peer_id)
    }

    /// Sets how valuable connections to `peer_id` are: lower values are trimmed first
    /// (default 0).
    pub fn set_value(&mut self, peer_id: PeerId, value: i64) {
        self.values.insert(peer_id, value);
    }

    /// The value of connections to `peer_id` (default 0).
    fn value(&self, peer_id: &PeerId) -> i64 {
        self.values.get(peer_id).copied().unwrap_or(0)
    }

    /// Current counts.
    pub fn counts(&self) -> ConnectionCounts {
        ConnectionCounts {
            established: self.established.len(),
            pending_incoming: self.pending_incoming.len(),
            pending_outgoing: self.pending_outgoing.len(),
            peak_established: self.peak,
            busiest_inbound_source: self.sources.busiest(),
        }
    }

    fn ceiling(&self, protected: bool) -> usize {
        if protected {
            self.config.max_established + self.config.protected_extra
        } else {
            self.config.max_established
        }
    }

    /// Admits an inbound connection from `remote` (its IP; `None` for relayed connections)
    /// into its handshake (peer still unknown).
    pub fn admit_pending_incoming(
        &mut self,
        id: ConnectionId,
        remote: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Denial> {
        if self.pending_incoming.len() >= self.config.max_pending_incoming {
            return Err(Denial::PendingIncoming {
                limit: self.config.max_pending_incoming,
            });
        }
        // Refused before the handshake (which costs both sides more than the refusal) when
        // nobody could be admitted at its end: not an unprotected peer, and not a protected
        // one either, because all are connected already or even they would not fit.
        let from = self.held_ip(remote);
        if self.live() >= self.ceiling(false) && self.victim(None, from, now).is_none() {
            let awaited = self
                .protected
                .iter()
                .any(|p| !self.per_peer.contains_key(p));
            let ceiling = self.ceiling(awaited);
            if !awaited || self.live() >= ceiling {
                return Err(Denial::MaxEstablished { limit: ceiling });
            }
        }
        self.pending_incoming.insert(id);
        Ok(())
    }

    /// Admits an outbound dial (to `peer_id` when known).
    pub fn admit_pending_outgoing(
        &mut self,
        id: ConnectionId,
        peer_id: Option<&PeerId>,
        now: Instant,
    ) -> Result<(), Denial> {
        if self.pending_outgoing.len() >= self.config.max_pending_outgoing {
            return Err(Denial::PendingOutgoing {
                limit: self.config.max_pending_outgoing,
            });
        }
        let protected = peer_id.is_some_and(|p| self.is_protected(p));
        let ceiling = self.ceiling(protected);
        if self.live() >= ceiling && self.victim(peer_id, None, now).is_none() {
            return Err(Denial::MaxEstablished { limit: ceiling });
        }
        if let Some(peer_id) = peer_id {
            self.check_per_peer(peer_id)?;
        }
        self.pending_outgoing.insert(id);
        Ok(())
    }

    fn check_per_peer(&self, peer_id: &PeerId) -> Result<(), Denial> {
        if self.per_peer.get(peer_id).copied().unwrap_or(0) >= self.config.max_per_peer {
            return Err(Denial::PerPeer {
                limit: self.config.max_per_peer,
            });
        }
        Ok(())
    }

    /// Checks whether a connection to `peer_id` that finished its handshake may be
    /// established. Does not record it: call [`on_established`](Self::on_established) when
    /// the swarm reports it. At the ceiling, `Ok(Some(victim))`: the newcomer is admitted
    /// if the caller closes `victim` (see [`evict`](Self::evict)).
    pub fn check_established(
        &self,
        peer_id: &PeerId,
        now: Instant,
    ) -> Result<Option<(ConnectionId, PeerId)>, Denial> {
        self.check_established_from(peer_id, None, now)
    }

    /// [`check_established`](Self::check_established) for a newcomer from the held source
    /// `from`, if any.
    fn check_established_from(
        &self,
        peer_id: &PeerId,
        from: Option<IpAddr>,
        now: Instant,
    ) -> Result<Option<(ConnectionId, PeerId)>, Denial> {
        let ceiling = self.ceiling(self.is_protected(peer_id));
        let victim = if self.live() < ceiling {
            None
        } else {
            let victim = self.victim(Some(peer_id), from, now);
            if victim.is_none() {
                return Err(Denial::MaxEstablished { limit: ceiling });
            }
            victim
        };
        self.check_per_peer(peer_id)?;
        Ok(victim)
    }

    /// The connection a newcomer (to `peer_id`, when known; from the held source `from`, if
    /// any) may displace at the ceiling: one the node does not keep alive
    /// ([`released_connections`](Self::released_connections)) and unused for at least the
    /// eviction age (neither opened nor, per the [activity source](Self::set_activity_source),
    /// used by its peer since: it may still be doing the work it was opened for); never a
    /// protected peer's, one to the newcomer's peer, or one from the newcomer's subnet (a
    /// source re-dialing must not refresh its own connections' ages by displacing them).
    /// A surplus connection first, then the least valuable, then the one from the most
    /// crowded source, then the one unused longest. `None` when there is none, or when
    /// [`MAX_EVICTING`] connections are still closing: evicting sheds idle work the node kept
    /// only while it had room, rather than refusing newcomers, and it is bounded so that
    /// connections closing never pile up.
    fn victim(
        &self,
        peer_id: Option<&PeerId>,
        from: Option<IpAddr>,
        now: Instant,
    ) -> Option<(ConnectionId, PeerId)> {
        let age = self.config.eviction_age?;
        if self.closing.len() >= MAX_EVICTING {
            return None;
        }
        let subnet = |ip: IpAddr| codio_base::Source::of(ip).subnet;
        let from = from.map(subnet);
        let primaries = self.primaries();
        self.released(&primaries)
            .into_iter()
            .filter(|(_, peer)| Some(peer) != peer_id && !self.is_protected(peer))
            .filter_map(|(id, peer)| Some((id, peer, *self.established.get(&id)?)))
            .filter(|(_, _, c)| from.is_none() || c.source.map(subnet) != from)
            .map(|(id, peer, c)| (id, peer, c.source, self.last_used(&peer, c.since)))
            .filter(|(_, _, _, used)| now.saturating_duration_since(*used) >= age)
            .min_by_key(|(id, peer, source, used)| {
                let primary = primaries.get(peer) == Some(id);
                let crowd = source.map_or(0, |ip| self.sources.count(ip));
                (
                    primary,
                    self.value(peer),
                    std::cmp::Reverse(crowd),
                    *used,
                    *id,
                )
            })
            .map(|(id, peer, _, _)| (id, peer))
    }

    /// Marks `victim` (from [`check_established`](Self::check_established)) as closing: it
    /// no longer counts toward the ceiling. Call it when closing the connection.
    pub fn evict(&mut self, victim: ConnectionId) {
        if self.established.contains_key(&victim) {
            self.closing.insert(victim);
        }
    }

    /// The inbound source `remote` is held to, if any: not for protected peers, nor for
    /// loopback addresses unless configured.
    fn held_source(&self, peer_id: &PeerId, remote: Option<IpAddr>) -> Option<IpAddr> {
        self.held_ip(remote).filter(|_| !self.is_protected(peer_id))
    }

    /// `remote` if its address is held to the source bounds at all (loopback only when
    /// configured), whoever the peer turns out to be.
    fn held_ip(&self, remote: Option<IpAddr>) -> Option<IpAddr> {
        remote.filter(|ip| self.config.limit_loopback || !ip.is_loopback())
    }

    /// [`check_established`](Self::check_established) for an inbound connection from
    /// `remote` (its IP; `None` for relayed connections), also held to the per-source and
    /// per-subnet bounds.
    pub fn check_established_inbound(
        &self,
        peer_id: &PeerId,
        remote: Option<IpAddr>,
        now: Instant,
    ) -> Result<Option<(ConnectionId, PeerId)>, Denial> {
        let held = self.held_source(peer_id, remote);
        let victim = self.check_established_from(peer_id, held, now)?;
        if let Some(ip) = held {
            self.sources
                .check(ip, self.config.max_per_source, self.config.max_per_subnet)
                .map_err(|full| match full {
                    Full::Source(limit) => Denial::PerSource { limit },
                    Full::Subnet(limit) => Denial::PerSubnet { limit },
                })?;
        }
        Ok(victim)
    }

    /// The most established inbound connections held from one source address now.
    pub fn busiest_source(&self) -> usize {
        self.sources.busiest()
    }

    /// A pending connection ended without being established (failed or denied).
    pub fn on_pending_failed(&mut self, id: &ConnectionId) {
        self.pending_incoming.remove(id);
        self.pending_outgoing.remove(id);
    }

    /// A connection was established (`relayed`: through a relay circuit).
    pub fn on_established(
        &mut self,
        id: ConnectionId,
        peer_id: PeerId,
        now: Instant,
        relayed: bool,
    ) {
        self.on_established_inbound(id, peer_id, now, relayed, None);
    }

    /// An inbound connection from `remote` (its IP) was established: it counts toward its
    /// source's bounds until closed.
    pub fn on_established_inbound(
        &mut self,
        id: ConnectionId,
        peer_id: PeerId,
        now: Instant,
        relayed: bool,
        remote: Option<IpAddr>,
    ) {
        let source = self.held_source(&peer_id, remote);
        self.pending_incoming.remove(&id);
        self.pending_outgoing.remove(&id);
        if self
            .established
            .insert(
                id,
                Established {
                    peer_id,
                    since: now,
                    relayed,
                    source,
                },
            )
            .is_none()
        {
            *self.per_peer.entry(peer_id).or_default() += 1;
            if let Some(ip) = source {
                self.sources.add(ip);
            }
        }
        self.peak = self.peak.max(self.established.len());
    }

    /// A connection closed.
    pub fn on_closed(&mut self, id: &ConnectionId) {
        self.closing.remove(id);
        let removed = self.established.remove(id);
        if let Some(ip) = removed.and_then(|conn| conn.source) {
            self.sources.remove(ip);
        }
        if let Some(conn) = removed
            && let Some(count) = self.per_peer.get_mut(&conn.peer_id)
        {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&conn.peer_id);
            }
        }
        if self.live() <= self.config.watermarks().0 {
            self.above_high_since = None;
        }
    }

    /// Established connections not already being closed by a trim.
    fn live(&self) -> usize {
        self.established.len() - self.closing.len()
    }

    fn trimmable(&self) -> impl Iterator<Item = (&ConnectionId, &Established)> {
        self.established
            .iter()
            .filter(|(id, c)| !self.closing.contains(id) && !self.protected.contains(&c.peer_id))
    }

    /// The connections to close at `now` to get back to the low watermark: only once the
    /// table rose above the high watermark and the grace period passed, then down to the low
    /// watermark (connections that were too young at first are trimmed once old enough);
    /// never protected peers, never connections younger than the grace period; lowest value
    /// first, then newest. Returned connections count as closing until
    /// [`on_closed`](Self::on_closed).
    pub fn trim(&mut self, now: Instant) -> Vec<(ConnectionId, PeerId)> {
        let count = self.live();
        if count <= self.config.watermarks().0 {
            self.above_high_since = None;
            return Vec::new();
        }
        if self.above_high_since.is_none() && count <= self.config.watermarks().1 {
            return Vec::new();
        }
        let since = *self.above_high_since.get_or_insert(now);
        if now.saturating_duration_since(since) < self.config.grace_period {
            return Vec::new();
        }
        let excess = count.saturating_sub(self.config.watermarks().0);
        let mut candidates: Vec<(ConnectionId, Established)> = self
            .trimmable()
            .filter(|(_, c)| now.saturating_duration_since(c.since) >= self.config.grace_period)
            .map(|(id, c)| (*id, *c))
            .collect();
        candidates.sort_by_key(|(id, c)| {
            let value = self.value(&c.peer_id);
            (value, std::cmp::Reverse(c.since), *id)
        });
        let trimmed: Vec<(ConnectionId, PeerId)> = candidates
            .into_iter()
            .take(excess)
            .map(|(id, c)| (id, c.peer_id))
            .collect();
        self.closing.extend(trimmed.iter().map(|(id, _)| *id));
        if self.live() <= self.config.watermarks().0 {
            self.above_high_since = None;
        }
        trimmed
    }

    /// Open connections not being closed by a trim.
    fn open(&self) -> impl Iterator<Item = (&ConnectionId, &Established)> {
        self.established
            .iter()
            .filter(|(id, _)| !self.closing.contains(id))
    }

    /// Every connected peer's primary connection: its oldest direct one (its oldest relayed
    /// one when none is direct).
    fn primaries(&self) -> HashMap<PeerId, ConnectionId> {
        let mut best: HashMap<PeerId, (bool, Instant, ConnectionId)> = HashMap::new();
        for (id, c) in self.open() {
            let rank = (c.relayed, c.since, *id);
            let entry = best.entry(c.peer_id).or_insert(rank);
            if rank < *entry {
                *entry = rank;
            }
        }
        best.into_iter()
            .map(|(peer, (_, _, id))| (peer, id))
            .collect()
    }

    /// The peer of every open connection.
    pub fn connection_peers(&self) -> HashMap<ConnectionId, PeerId> {
        self.established
            .iter()
            .map(|(id, c)| (*id, c.peer_id))
            .collect()
    }

    /// The connections not kept alive: each closes once no protocol has used it for the
    /// swarm's idle timeout, so requests in flight on it are never cut. They are
    /// - surplus connections: for every peer with several, all but its primary one (its
    ///   oldest direct connection, its oldest relayed one when none is direct);
    /// - beyond the low watermark, the primary connections of the unprotected peers that do
    ///   not fit under it: lowest value first, then newest, the order trimming takes them.
    ///   Connections a protocol keeps busy (a gossip mesh, a transfer) stay; the ones a
    ///   lookup opened go once quiet, so they do not fill the table until trimmed.
    pub fn released_connections(&self) -> Vec<(ConnectionId, PeerId)> {
        self.released(&self.primaries())
    }

    /// [`released_connections`](Self::released_connections), given the primaries.
    fn released(&self, primaries: &HashMap<PeerId, ConnectionId>) -> Vec<(ConnectionId, PeerId)> {
        let mut released: Vec<(ConnectionId, PeerId)> = self
            .open()
            .filter(|(id, c)| primaries.get(&c.peer_id) != Some(*id))
            .map(|(id, c)| (*id, c.peer_id))
            .collect();
        let mut unprotected: Vec<(ConnectionId, Established)> = primaries
            .iter()
            .filter(|(peer, _)| !self.is_protected(peer))
            .filter_map(|(_, id)| self.established.get(id).map(|c| (*id, *c)))
            .collect();
        unprotected.sort_by_key(|(id, c)| {
            let value = self.value(&c.peer_id);
            (std::cmp::Reverse(value), c.since, *id)
        });
        let budget =
            (self.config.watermarks().0).saturating_sub(primaries.len() - unprotected.len());
        released.extend(
            unprotected
                .into_iter()
                .skip(budget)
                .map(|(id, c)| (id, c.peer_id)),
        );
        released
    }

    /// When [`trim`](Self::trim) may next have something to do: while the table is under
    /// pressure, the later of the end of the grace period and the moment the oldest
    /// trimmable connection is old enough. `None` when nothing could ever be trimmed.
    pub fn next_trim(&self) -> Option<Instant> {
        let since = self.above_high_since?;
        let grace = self.config.grace_period;
        let oldest = self.trimmable().map(|(_, c)| c.since).min()?;
        Some((since + grace).max(oldest + grace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize) -> ConnectionTable {
        ConnectionTable::new(
            LimitsConfig::new(max)
                .with_protected_extra(1)
                .with_max_pending_incoming(3)
                .with_max_pending_outgoing(3)
                .with_grace_period(Duration::from_secs(10)),
        )
    }

    fn id(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    #[test]
    fn ceiling_is_hard_and_protected_peers_get_the_extra_allowance() {
        // Every peer fits under the low watermark: all are kept, none can be evicted.
        let mut t = ConnectionTable::new(
            LimitsConfig::new(2)
                .with_protected_extra(1)
                .with_watermarks(3, 3),
        );
        let now = Instant::now();
        for n in 0..2 {
            let p = PeerId::random();
            t.check_established(&p, now).unwrap();
            t.on_established(id(n), p, now, false);
        }
        let stranger = PeerId::random();
        assert_eq!(
            t.check_established(&stranger, now),
            Err(Denial::MaxEstablished { limit: 2 })
        );
        let friend = PeerId::random();
        t.protect(friend);
        // Refused before the handshake only when nobody could be admitted at its end.
        assert_eq!(
            t.admit_pending_incoming(id(8), None, now),
            Ok(()),
            "a protected peer not yet connected would fit"
        );
        t.on_pending_failed(&id(8));
        t.check_established(&friend, now).unwrap();
        t.on_established(id(2), friend, now, false);
        let friend2 = PeerId::random();
        t.protect(friend2);
        assert_eq!(
            t.check_established(&friend2, now),
            Err(Denial::MaxEstablished { limit: 3 })
        );
        assert_eq!(
            t.admit_pending_incoming(id(9), None, now),
            Err(Denial::MaxEstablished { limit: 3 })
        );
        t.unprotect(&friend2);
        assert_eq!(
            t.admit_pending_incoming(id(9), None, now),
            Err(Denial::MaxEstablished { limit: 2 }),
            "every protected peer is connected: no newcomer would fit"
        );
        assert_eq!(t.counts().peak_established, 3);
    }

    #[test]
    fn at_the_ceiling_a_newcomer_displaces_a_connection_the_node_does_not_keep() {
        // Ceiling 4, low watermark 2: two peers are kept, the others only while used.
        let mut t = ConnectionTable::new(
            LimitsConfig::new(4)
                .with_watermarks(2, 3)
                .with_eviction_age(Some(Duration::from_secs(20))),
        );
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Past the grace period of every connection here (a younger one is never evicted).
        let late = at(60);
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        for (i, peer) in peers.iter().enumerate() {
            t.on_established(id(i), *peer, at(i as u64), false);
        }
        t.protect(peers[0]);
        // Released: peers 2 and 3 (kept: the protected peer 0 and the oldest other, 1).
        // A surplus connection goes first, then the least valuable, then the oldest.
        t.on_established(id(4), peers[1], at(10), false);
        let newcomer = PeerId::random();
        assert_eq!(
            t.check_established(&newcomer, at(21)),
            Err(Denial::MaxEstablished { limit: 4 }),
            "no released connection is old enough yet"
        );
        assert_eq!(
            t.check_established(&newcomer, late),
            Ok(Some((id(4), peers[1])))
        );
        t.evict(id(4));
        t.on_established(id(5), newcomer, at(11), false);
        t.on_closed(&id(4));
        // Valuing peer 2 keeps it and releases peer 1, now the oldest released one.
        t.set_value(peers[2], 5);
        let next = PeerId::random();
        assert_eq!(
            t.check_established(&next, late),
            Ok(Some((id(1), peers[1])))
        );
        t.evict(id(1));
        assert_eq!(
            t.counts().established,
            5,
            "the victim counts until it closed"
        );
        t.on_closed(&id(1));
        t.on_established(id(6), next, at(12), false);
        // Never the newcomer's own peer (3 is the oldest released), a protected or kept one.
        assert_eq!(
            t.check_established(&peers[3], late),
            Ok(Some((id(5), newcomer)))
        );
        t.protect(newcomer);
        t.protect(next);
        let stranger = PeerId::random();
        assert_eq!(
            t.check_established(&stranger, late),
            Ok(Some((id(3), peers[3])))
        );
        t.protect(peers[3]);
        assert_eq!(
            t.check_established(&stranger, late),
            Ok(Some((id(2), peers[2])))
        );
        t.protect(peers[2]);
        assert_eq!(
            t.check_established(&stranger, late),
            Err(Denial::MaxEstablished { limit: 4 })
        );
    }

    #[test]
    fn eviction_spares_peers_that_did_work_within_the_eviction_age() {
        // Ceiling 3, nothing kept alive: all three are released.
        let mut t = ConnectionTable::new(
            LimitsConfig::new(3)
                .with_watermarks(0, 3)
                .with_eviction_age(Some(Duration::from_secs(5))),
        );
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for (i, peer) in peers.iter().enumerate() {
            t.on_established(id(i), *peer, at(i as u64), false);
        }
        // Peer 0 (the oldest) sent a request at 8 s, peer 1 at 3 s.
        let activity: HashMap<PeerId, Instant> = [(peers[0], at(8)), (peers[1], at(3))].into();
        t.set_activity_source(Arc::new(move |peer| activity.get(peer).copied()));
        let newcomer = PeerId::random();
        // At 10 s only peer 2 (opened at 2 s, idle since) has been unused for 5 s.
        assert_eq!(
            t.check_established(&newcomer, at(10)),
            Ok(Some((id(2), peers[2])))
        );
        t.evict(id(2));
        t.on_closed(&id(2));
        t.on_established(id(3), newcomer, at(10), false);
        // At 12 s peer 1 (idle since 3 s) goes before peer 0 (busy at 8 s); the newcomer is
        // too young.
        assert_eq!(
            t.check_established(&PeerId::random(), at(12)),
            Ok(Some((id(1), peers[1])))
        );
        t.evict(id(1));
        t.on_closed(&id(1));
        t.on_established(id(4), PeerId::random(), at(12), false);
        assert_eq!(
            t.check_established(&PeerId::random(), at(12)),
            Err(Denial::MaxEstablished { limit: 3 }),
            "peer 0 worked 4 s ago"
        );
    }

    #[test]
    fn a_source_never_displaces_its_own_subnet_and_the_most_crowded_source_goes_first() {
        // Ceiling 4, nothing kept alive; an attacker at 10.0.5.1 holds 3, a lone peer 1.
        let mut t = ConnectionTable::new(
            LimitsConfig::new(4)
                .with_watermarks(0, 4)
                .with_eviction_age(Some(Duration::from_secs(1))),
        );
        let t0 = Instant::now();
        let late = t0 + Duration::from_secs(60);
        let attacker: IpAddr = "10.0.5.1".parse().unwrap();
        let neighbour: IpAddr = "10.0.5.77".parse().unwrap();
        let lone: IpAddr = "192.0.2.1".parse().unwrap();
        let good: IpAddr = "198.51.100.7".parse().unwrap();
        // The lone peer's connection is the oldest; the attacker's came later.
        let lone_peer = PeerId::random();
        t.on_established_inbound(id(0), lone_peer, t0, false, Some(lone));
        let mut attackers = Vec::new();
        for n in 1..4 {
            let peer = PeerId::random();
            let at = t0 + Duration::from_secs(n as u64);
            t.on_established_inbound(id(n), peer, at, false, Some(attacker));
            attackers.push(peer);
        }
        // A newcomer from elsewhere displaces the crowded source's oldest connection, not
        // the lone peer's older one.
        assert_eq!(
            t.check_established_inbound(&PeerId::random(), Some(good), late),
            Ok(Some((id(1), attackers[0])))
        );
        // A re-dial from the attacker's subnet may displace only the lone peer's idle one...
        assert_eq!(
            t.check_established_inbound(&PeerId::random(), Some(neighbour), late),
            Ok(Some((id(0), lone_peer)))
        );
        t.evict(id(0));
        t.on_closed(&id(0));
        t.on_established_inbound(id(4), PeerId::random(), late, false, Some(attacker));
        // ...and once the subnet holds them all, nothing: it cannot refresh its own
        // connections by displacing them (refused before the handshake, too).
        let later = late + Duration::from_secs(60);
        for from in [attacker, neighbour] {
            assert_eq!(
                t.check_established_inbound(&PeerId::random(), Some(from), later),
                Err(Denial::MaxEstablished { limit: 4 })
            );
            assert_eq!(
                t.admit_pending_incoming(id(9), Some(from), later),
                Err(Denial::MaxEstablished { limit: 4 })
            );
        }
        t.admit_pending_incoming(id(9), Some(good), later).unwrap();
    }

    #[test]
    fn evictions_still_closing_are_bounded() {
        let mut t = ConnectionTable::new(LimitsConfig::new(64).with_watermarks(0, 1));
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        for n in 0..64 {
            t.on_established(id(n), PeerId::random(), now, false);
        }
        for n in 64..64 + MAX_EVICTING {
            let (victim, _) = t
                .check_established(&PeerId::random(), later)
                .unwrap()
                .unwrap();
            t.evict(victim);
            t.on_established(id(n), PeerId::random(), now, false);
        }
        assert_eq!(
            t.check_established(&PeerId::random(), later),
            Err(Denial::MaxEstablished { limit: 64 })
        );
    }

    #[test]
    fn pending_connections_are_bounded_and_released() {
        let mut t = table(10);
        let now = Instant::now();
        for n in 0..3 {
            t.admit_pending_incoming(id(n), None, now).unwrap();
        }
        assert_eq!(
            t.admit_pending_incoming(id(3), None, now),
            Err(Denial::PendingIncoming { limit: 3 })
        );
        t.on_pending_failed(&id(0));
        t.admit_pending_incoming(id(3), None, now).unwrap();
        t.on_established(id(1), PeerId::random(), Instant::now(), false);
        assert_eq!(t.counts().pending_incoming, 2);
        for n in 10..13 {
            t.admit_pending_outgoing(id(n), None, now).unwrap();
        }
        assert_eq!(
            t.admit_pending_outgoing(id(13), None, now),
            Err(Denial::PendingOutgoing { limit: 3 })
        );
    }

    #[test]
    fn no_trimming_between_the_watermarks_without_pressure() {
        let mut t = ConnectionTable::new(
            LimitsConfig::new(100)
                .with_watermarks(1, 3)
                .with_grace_period(Duration::ZERO),
        );
        let t0 = Instant::now();
        for n in 0..3 {
            t.on_established(id(n), PeerId::random(), t0, false);
        }
        assert!(t.trim(t0).is_empty(), "at the high watermark, not above");
        assert_eq!(t.next_trim(), None);
        t.on_established(id(3), PeerId::random(), t0, false);
        assert_eq!(t.trim(t0).len(), 3, "above high: down to low");
    }

    #[test]
    fn surplus_connections_are_all_but_the_oldest_direct_one() {
        let mut t = ConnectionTable::new(LimitsConfig::new(100));
        let t0 = Instant::now();
        let p = PeerId::random();
        let q = PeerId::random();
        t.on_established(id(0), p, t0, true); // relayed first
        t.on_established(id(1), p, t0 + Duration::from_secs(1), false); // hole punched
        t.on_established(id(2), p, t0 + Duration::from_secs(2), false); // a dial-back
        t.on_established(id(3), q, t0, false); // a single connection is never surplus
        let mut surplus = t.released_connections();
        surplus.sort();
        assert_eq!(surplus, vec![(id(0), p), (id(2), p)]);
        t.on_closed(&id(1));
        // The primary went away: the oldest remaining direct connection takes over.
        assert_eq!(t.released_connections(), vec![(id(0), p)]);
    }

    #[test]
    fn peers_beyond_the_low_watermark_are_released_least_valuable_and_newest_first() {
        let mut t = ConnectionTable::new(LimitsConfig::new(100).with_watermarks(3, 5));
        let t0 = Instant::now();
        let peers: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        for (i, peer) in peers.iter().enumerate() {
            t.on_established(id(i), *peer, t0 + Duration::from_secs(i as u64), false);
        }
        // Six peers, three fit: the three newest go.
        let released = |t: &ConnectionTable| {
            let mut r: Vec<usize> = t
                .released_connections()
                .into_iter()
                .map(|(_, p)| peers.iter().position(|q| *q == p).unwrap())
                .collect();
            r.sort();
            r
        };
        assert_eq!(released(&t), vec![3, 4, 5]);
        // A protected peer takes a place under the watermark; a valued one is kept first.
        t.protect(peers[5]);
        t.set_value(peers[4], 10);
        assert_eq!(released(&t), vec![1, 2, 3]);
        // Back under the watermark, everyone is kept.
        for i in 2..6 {
            t.on_closed(&id(i));
        }
        assert!(t.released_connections().is_empty());
    }

    #[test]
    fn per_peer_limit() {
        let mut t = ConnectionTable::new(LimitsConfig::new(10).with_max_per_peer(2));
        let p = PeerId::random();
        let now = Instant::now();
        t.on_established(id(0), p, now, false);
        t.on_established(id(1), p, now, false);
        assert_eq!(
            t.check_established(&p, now),
            Err(Denial::PerPeer { limit: 2 })
        );
        assert_eq!(
            t.admit_pending_outgoing(id(5), Some(&p), now),
            Err(Denial::PerPeer { limit: 2 })
        );
        t.on_closed(&id(0));
        t.check_established(&p, now).unwrap();
    }

    #[test]
    fn trims_unprotected_down_to_low_after_grace_lowest_value_first() {
        let mut t = ConnectionTable::new(
            LimitsConfig::new(100)
                .with_watermarks(3, 5)
                .with_grace_period(Duration::from_secs(10)),
        );
        let t0 = Instant::now();
        let protected: Vec<PeerId> = (0..2).map(|_| PeerId::random()).collect();
        let others: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        for p in &protected {
            t.protect(*p);
        }
        for (n, p) in protected.iter().chain(&others).enumerate() {
            t.on_established(id(n), *p, t0 + Duration::from_millis(n as u64), false);
        }
        t.set_value(others[5], 10); // the most valuable unprotected peer stays
        assert!(
            t.trim(t0 + Duration::from_secs(1)).is_empty(),
            "grace period not over"
        );
        assert_eq!(t.next_trim(), Some(t0 + Duration::from_secs(11)));
        let trimmed = t.trim(t0 + Duration::from_secs(11));
        assert_eq!(trimmed.len(), 5, "8 connections down to 3");
        // Closing connections are not trimmed twice while their close is in flight.
        assert!(t.trim(t0 + Duration::from_secs(12)).is_empty());
        assert_eq!(t.next_trim(), None);
        let trimmed_peers: HashSet<PeerId> = trimmed.iter().map(|(_, p)| *p).collect();
        assert!(protected.iter().all(|p| !trimmed_peers.contains(p)));
        assert!(!trimmed_peers.contains(&others[5]));
        for (id, _) in &trimmed {
            t.on_closed(id);
        }
        assert_eq!(t.counts().established, 3);
        assert!(t.trim(t0 + Duration::from_secs(30)).is_empty());
        assert_eq!(t.next_trim(), None);
    }

    #[test]
    fn young_connections_and_protected_peers_are_never_trimmed() {
        let mut t = ConnectionTable::new(
            LimitsConfig::new(100)
                .with_watermarks(1, 2)
                .with_grace_period(Duration::from_secs(10)),
        );
        let t0 = Instant::now();
        let p = PeerId::random();
        t.protect(p);
        t.on_established(id(0), p, t0, false);
        t.on_established(id(1), PeerId::random(), t0, false);
        t.on_established(id(2), PeerId::random(), t0 + Duration::from_secs(9), false);
        t.trim(t0 + Duration::from_secs(9));
        // At t0+19 the table has been above high for 10 s; id(2) is 10 s old, id(1) 19 s.
        assert_eq!(t.next_trim(), Some(t0 + Duration::from_secs(19)));
        let trimmed = t.trim(t0 + Duration::from_secs(19));
        assert_eq!(
            trimmed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![id(2), id(1)]
        );
        // Only the protected peer is left above nothing trimmable: no further checks.
        assert_eq!(t.next_trim(), None);
        let mut t2 = ConnectionTable::new(
            LimitsConfig::new(100)
                .with_watermarks(0, 1)
                .with_grace_period(Duration::from_secs(10)),
        );
        t2.on_established(id(0), PeerId::random(), t0, false);
        t2.on_established(id(1), PeerId::random(), t0 + Duration::from_secs(6), false);
        t2.trim(t0 + Duration::from_secs(5));
        // Only the old connection qualifies at t0+15; the young one a second later.
        assert_eq!(
            t2.trim(t0 + Duration::from_secs(15)),
            vec![(id(0), t2.established[&id(0)].peer_id)]
        );
        // Trimming goes on down to the low watermark as the young connection comes of age.
        assert_eq!(t2.next_trim(), Some(t0 + Duration::from_secs(16)));
        assert_eq!(
            t2.trim(t0 + Duration::from_secs(16)),
            vec![(id(1), t2.established[&id(1)].peer_id)]
        );
        assert_eq!(t2.next_trim(), None);
    }

    #[test]
    fn many_peer_ids_from_one_address_get_its_share_only() {
        let config = LimitsConfig::new(50)
            .with_max_per_source(8)
            .with_max_per_subnet(12);
        let mut t = ConnectionTable::new(config);
        let now = Instant::now();
        let attacker: IpAddr = "10.0.5.1".parse().unwrap();
        let mut admitted = 0;
        for n in 0..60 {
            if t.check_established_inbound(&PeerId::random(), Some(attacker), now)
                .is_ok()
            {
                t.on_established_inbound(id(n), PeerId::random(), now, false, Some(attacker));
                admitted += 1;
            }
        }
        assert_eq!(admitted, 8);
        assert_eq!(t.busiest_source(), 8);
        assert_eq!(
            t.check_established_inbound(&PeerId::random(), Some(attacker), now),
            Err(Denial::PerSource { limit: 8 })
        );
        let neighbour: IpAddr = "10.0.5.2".parse().unwrap();
        for n in 100..104 {
            t.check_established_inbound(&PeerId::random(), Some(neighbour), now)
                .unwrap();
            t.on_established_inbound(id(n), PeerId::random(), now, false, Some(neighbour));
        }
        assert_eq!(
            t.check_established_inbound(&PeerId::random(), Some(neighbour), now),
            Err(Denial::PerSubnet { limit: 12 })
        );
        // Elsewhere, relayed, protected and loopback connections are not held to the bounds.
        let good: IpAddr = "192.0.2.9".parse().unwrap();
        t.check_established_inbound(&PeerId::random(), Some(good), now)
            .unwrap();
        t.check_established_inbound(&PeerId::random(), None, now)
            .unwrap();
        let friend = PeerId::random();
        t.protect(friend);
        t.check_established_inbound(&friend, Some(attacker), now)
            .unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for n in 200..220 {
            t.on_established_inbound(id(n), PeerId::random(), now, false, Some(lo));
        }
        t.check_established_inbound(&PeerId::random(), Some(lo), now)
            .unwrap();
        // Closing releases the source's share.
        t.on_closed(&id(0));
        t.check_established_inbound(&PeerId::random(), Some(attacker), now)
            .unwrap();
    }
}
