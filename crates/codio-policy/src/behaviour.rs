//! The policy [`NetworkBehaviour`]: drives the pure state machines with the swarm's events and
//! the clock, and turns their decisions into dials, closes and events.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use either::Either;
use libp2p::{
    Multiaddr, PeerId,
    core::{ConnectedPoint, Endpoint, transport::PortUse},
    memory_connection_limits, ping,
    swarm::{
        CloseConnection, ConnectionDenied, ConnectionHandler, ConnectionHandlerSelect,
        ConnectionId, DialError, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::time::Sleep;

use crate::{
    access::{Access, AccessConfig},
    backoff::{BackoffConfig, Rng},
    handler::{Handler, KeepAlive},
    limits::{ConnectionCounts, ConnectionTable, Denial, LimitsConfig, MemoryLimit},
    liveness::{Liveness, PingOutcome},
    peers::Peers,
    reconnect::{Decision, Reconnector},
    stats::{Counter, DenialReason, Stats},
    throttle::DenialThrottle,
};

/// Most events queued inside the behaviour before the swarm polls them; beyond it the oldest
/// are dropped with a warning.
const MAX_QUEUED: usize = 1024;
/// Most explicitly disconnected peers remembered (oldest forgotten first).
const MAX_DISCONNECTED: usize = 1024;

/// Configuration of the policy behaviour.
///
/// | setting | default |
/// |---|---|
/// | [`limits`](Self::with_limits) | [`LimitsConfig::default`] |
/// | [`backoff`](Self::with_backoff) | [`BackoffConfig::default`] |
/// | [`reconnect`](Self::with_reconnect) | `true`: peers that matter are dialed again |
/// | [`liveness`](Self::with_liveness) | ping every 15 s, 20 s timeout, 3 failures close the connection |
/// | [`access`](Self::with_access) | [`AccessConfig::default`]: open to every peer |
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub(crate) limits: LimitsConfig,
    pub(crate) access: AccessConfig,
    pub(crate) backoff: BackoffConfig,
    pub(crate) ping_failures: u32,
    pub(crate) ping_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) reconnect: bool,
    pub(crate) seed: Option<u64>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            limits: LimitsConfig::default(),
            access: AccessConfig::default(),
            backoff: BackoffConfig::default(),
            ping_failures: 3,
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(20),
            reconnect: true,
            seed: None,
        }
    }
}

impl PolicyConfig {
    /// Sets the connection limits (default [`LimitsConfig::default`]).
    pub fn with_limits(mut self, limits: LimitsConfig) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the reconnection backoff (default [`BackoffConfig::default`]).
    pub fn with_backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets dead peer detection: the ping interval and timeout in use, and how many failed
    /// pings close a connection (defaults 15 s, 20 s, 3; see [`Liveness`]).
    pub fn with_liveness(mut self, interval: Duration, timeout: Duration, failures: u32) -> Self {
        self.ping_interval = interval;
        self.ping_timeout = timeout;
        self.ping_failures = failures;
        self
    }

    /// Enables or disables automatic reconnection (default enabled).
    pub fn with_reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Sets who may connect (default [`AccessConfig::default`]: everyone).
    pub fn with_access(mut self, access: AccessConfig) -> Self {
        self.access = access;
        self
    }

    /// The access rules.
    pub fn access(&self) -> &AccessConfig {
        &self.access
    }

    /// Mutable access to the access rules (for callers that compose configurations).
    pub fn access_mut(&mut self) -> &mut AccessConfig {
        &mut self.access
    }

    /// The liveness settings: ping interval, ping timeout, failures that close a connection.
    pub fn liveness(&self) -> (Duration, Duration, u32) {
        (self.ping_interval, self.ping_timeout, self.ping_failures)
    }

    /// The reconnection backoff.
    pub fn backoff(&self) -> &BackoffConfig {
        &self.backoff
    }

    /// The connection limits.
    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Mutable access to the connection limits (for callers that compose configurations).
    pub fn limits_mut(&mut self) -> &mut LimitsConfig {
        &mut self.limits
    }

    /// Checks for values that cannot work.
    ///
    /// # Errors
    ///
    /// The first [`InvalidConfig`](crate::InvalidConfig) found.
    pub fn validate(&self) -> Result<(), crate::InvalidConfig> {
        if self.ping_interval.is_zero() || self.ping_timeout.is_zero() {
            return Err(crate::invalid(
                "liveness",
                "ping interval and timeout must be greater than zero",
            ));
        }
        self.access.validate()?;
        self.limits.validate()
    }

    /// Seeds the jitter generator (default: from OS randomness).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

/// A policy decision.
///
/// With the `serde` feature, serialized as an object tagged by `event` (`connection_denied`,
/// `peer_trimmed`, `peer_evicted`, `dead_peer`, `reconnecting`, `reconnected`,
/// `reconnect_gave_up`, `pong`); durations in whole milliseconds (`delay_ms`) or
/// microseconds (`rtt_us`), connection ids left out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "event", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Event {
    /// A connection was refused.
    #[cfg_attr(feature = "serde", serde(rename = "connection_denied"))]
    Denied {
        /// The peer, when known at that stage.
        peer_id: Option<PeerId>,
        /// Whether we or the remote dialed.
        #[cfg_attr(
            feature = "serde",
            serde(rename = "direction", serialize_with = "crate::ser::direction")
        )]
        endpoint: Endpoint,
        /// Which limit refused it.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ser::display"))]
        reason: Denial,
        /// Refusals for the same reason left unreported since the previous report: refusals
        /// are reported at most 10 a second per reason (a burst of 10), every one is counted
        /// in [`Stats`](crate::Stats).
        suppressed: u64,
    },
    /// A connection was closed to get back under the low watermark.
    #[cfg_attr(feature = "serde", serde(rename = "peer_trimmed"))]
    Trimmed {
        /// The peer.
        peer_id: PeerId,
        /// The connection.
        #[cfg_attr(feature = "serde", serde(skip))]
        connection_id: ConnectionId,
    },
    /// At the connection ceiling, a connection the node did not keep alive (beyond the low
    /// watermark, or a peer's surplus one) was closed to admit a newcomer.
    #[cfg_attr(feature = "serde", serde(rename = "peer_evicted"))]
    Evicted {
        /// The peer.
        peer_id: PeerId,
        /// The connection.
        #[cfg_attr(feature = "serde", serde(skip))]
        connection_id: ConnectionId,
    },
    /// A connection was closed because its peer stopped answering pings.
    #[cfg_attr(feature = "serde", serde(rename = "dead_peer"))]
    DeadConnection {
        /// The peer.
        peer_id: PeerId,
        /// The connection.
        #[cfg_attr(feature = "serde", serde(skip))]
        connection_id: ConnectionId,
        /// Consecutive ping failures reported, or 0 when the connection went silent for the
        /// whole liveness window.
        failures: u32,
    },
    /// A peer that matters will be dialed again.
    Reconnecting {
        /// The peer.
        peer_id: PeerId,
        /// Which attempt (1-based).
        attempt: u32,
        /// Delay before the dial.
        #[cfg_attr(
            feature = "serde",
            serde(rename = "delay_ms", serialize_with = "crate::ser::millis")
        )]
        delay: Duration,
    },
    /// A peer that matters is connected again.
    Reconnected {
        /// The peer.
        peer_id: PeerId,
        /// Attempts it took.
        attempts: u32,
    },
    /// Reconnection to a peer stopped after the configured number of attempts.
    #[cfg_attr(feature = "serde", serde(rename = "reconnect_gave_up"))]
    GaveUp {
        /// The peer.
        peer_id: PeerId,
        /// Failed attempts.
        attempts: u32,
    },
    /// A ping on a connection was answered.
    Pong {
        /// The peer.
        peer_id: PeerId,
        /// The connection.
        #[cfg_attr(feature = "serde", serde(skip))]
        connection_id: ConnectionId,
        /// The round-trip time.
        #[cfg_attr(
            feature = "serde",
            serde(rename = "rtt_us", serialize_with = "crate::ser::micros")
        )]
        rtt: Duration,
        /// Whether this is the connection's first answered ping (it carries traffic).
        first: bool,
    },
}

/// The connection policy behaviour. Place it **first** in a composed behaviour so denials
/// happen before any other behaviour spends resources on a connection.
///
/// - limits: [`LimitsConfig`] is enforced in the `handle_pending_*` and
///   `handle_established_*` hooks; watermark trimming closes connections with
///   [`ToSwarm::CloseConnection`];
/// - reconnection: peers registered with [`watch`](Self::watch) are protected and dialed again
///   after unexpected disconnects and failed dials, with exponential backoff and jitter;
///   [`unwatch`](Self::unwatch) (an explicit disconnect) stops that for good;
/// - liveness: it runs libp2p ping on every connection and feeds the results to
///   [`Liveness`]; after the configured number of consecutive failures, or a silent window,
///   the connection is closed. Answered pings are reported as [`Event::Pong`].
pub struct Behaviour {
    ping: ping::Behaviour,
    stats: Stats,
    peers: Peers,
    /// Peers with at least one established connection.
    connected_peers: usize,
    /// Connections that answered a ping already.
    verified: HashSet<ConnectionId>,
    table: ConnectionTable,
    reconnector: Reconnector,
    liveness: Liveness,
    reconnect: bool,
    /// Peers explicitly disconnected: this node dials them no more until watched again.
    disconnected: HashSet<PeerId>,
    disconnected_order: VecDeque<PeerId>,
    queue: VecDeque<ToSwarm<Event, KeepAlive>>,
    timer: Option<(Instant, Pin<Box<Sleep>>)>,
    /// Whether each open connection's handler is told to keep it alive.
    keep_alive: HashMap<ConnectionId, bool>,
    /// Memory-based refusal (`None`: off).
    memory: Option<memory_connection_limits::Behaviour>,
    /// How often refusals are reported.
    denials: DenialThrottle,
    /// Who may connect, shared with the application's [`Access`] handles.
    access: Access,
    /// The access generation whose refusals were last applied to open connections.
    access_generation: u64,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("counts", &self.table.counts())
            .field("reconnect", &self.reconnect)
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// Creates the behaviour.
    pub fn new(config: PolicyConfig) -> Self {
        let rng = config.seed.map_or_else(Rng::from_entropy, Rng::with_seed);
        Self {
            stats: Stats::default(),
            peers: Peers::default(),
            connected_peers: 0,
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(config.ping_interval)
                    .with_timeout(config.ping_timeout),
            ),
            verified: HashSet::new(),
            memory: memory_limit(config.limits.max_memory()),
            denials: DenialThrottle::default(),
            access: Access::new(config.access),
            access_generation: 0,
            table: ConnectionTable::new(config.limits),
            reconnector: Reconnector::new(config.backoff, rng),
            liveness: Liveness::new(
                config.ping_failures,
                config.ping_interval,
                config.ping_timeout,
            ),
            reconnect: config.reconnect,
            disconnected: HashSet::new(),
            disconnected_order: VecDeque::new(),
            queue: VecDeque::new(),
            timer: None,
            keep_alive: HashMap::new(),
        }
    }

    /// `Err` (counted and reported) while the process is above its memory limit.
    fn check_memory(
        &mut self,
        peer_id: Option<PeerId>,
        endpoint: Endpoint,
    ) -> Result<(), ConnectionDenied> {
        let Some(memory) = &mut self.memory else {
            return Ok(());
        };
        // libp2p's behaviour decides from the process's memory alone (its pending-inbound
        // and pending-outbound checks ignore their arguments and keep no state per
        // connection): ask it as for a dial, and count and report its refusal here.
        let Err(denied) = memory.handle_pending_outbound_connection(
            ConnectionId::new_unchecked(0),
            None,
            &[],
            Endpoint::Dialer,
        ) else {
            return Ok(());
        };
        let reason =
            match denied.downcast_ref::<memory_connection_limits::MemoryUsageLimitExceeded>() {
                Some(exceeded) => Denial::Memory {
                    used: exceeded.process_physical_memory_bytes(),
                    limit: exceeded.max_allowed_bytes(),
                },
                // Its only refusal is `MemoryUsageLimitExceeded`; a future other one still
                // refuses, as memory.
                None => Denial::Memory { used: 0, limit: 0 },
            };
        Err(self.deny(peer_id, endpoint, reason))
    }

    /// Protects `peer_id` from trimming (and lets it use the protected allowance).
    pub fn protect(&mut self, peer_id: PeerId) {
        self.table.protect(peer_id);
        self.update_keep_alive();
    }

    /// Removes `peer_id`'s protection (it stays watched if it was).
    pub fn unprotect(&mut self, peer_id: &PeerId) {
        self.table.unprotect(peer_id);
        self.update_keep_alive();
    }

    /// Whether `peer_id` is protected.
    pub fn is_protected(&self, peer_id: &PeerId) -> bool {
        self.table.is_protected(peer_id)
    }

    /// Sets the value of connections to `peer_id` for trimming (lower goes first; default 0).
    pub fn set_value(&mut self, peer_id: PeerId, value: i64) {
        self.table.set_value(peer_id, value);
        self.update_keep_alive();
    }

    /// Where eviction at the ceiling learns when peers last did work (see
    /// [`ConnectionTable::set_activity_source`]); none by default.
    pub fn set_activity_source(&mut self, activity: crate::ActivitySource) {
        self.table.set_activity_source(activity);
    }

    /// Marks `peer_id` as a peer that matters: protected, and reconnected at `addresses` after
    /// unexpected disconnects and failed dials (when reconnection is enabled).
    pub fn watch(&mut self, peer_id: PeerId, addresses: Vec<Multiaddr>, connected: bool) {
        self.allow_dials(&peer_id);
        self.table.protect(peer_id);
        self.update_keep_alive();
        if self.reconnect {
            self.reconnector
                .watch(peer_id, addresses, Instant::now(), connected);
            let reserved = self.access.is_reserved(&peer_id);
            self.reconnector.set_reserved(&peer_id, reserved);
        }
    }

    /// Honours an explicit disconnect: `peer_id` is no longer protected nor reconnected, and
    /// no behaviour of this node dials it (e.g. for a DHT query) until it is
    /// [`watch`](Self::watch)ed again. The peer may still dial us.
    pub fn unwatch(&mut self, peer_id: &PeerId) {
        if self.disconnected.insert(*peer_id) {
            self.disconnected_order.push_back(*peer_id);
            if self.disconnected_order.len() > MAX_DISCONNECTED
                && let Some(oldest) = self.disconnected_order.pop_front()
            {
                self.disconnected.remove(&oldest);
            }
        }
        self.table.unprotect(peer_id);
        self.update_keep_alive();
        if self.reconnector.unwatch(peer_id) {
            self.reset_timer();
        }
    }

    /// Lifts the dial block of an explicitly disconnected peer (the application asked to
    /// connect to it again).
    pub fn allow_dials(&mut self, peer_id: &PeerId) {
        if self.disconnected.remove(peer_id) {
            self.disconnected_order.retain(|p| p != peer_id);
        }
    }

    /// Whether `peer_id` is reconnected automatically.
    pub fn is_watched(&self, peer_id: &PeerId) -> bool {
        self.reconnector.is_watched(peer_id)
    }

    /// Dials every watched peer that is neither connected nor scheduled (bootstrap and
    /// reserved peers at start).
    pub fn dial_watched(&mut self) {
        for (peer_id, addresses) in self.reconnector.idle_peers() {
            self.push(dial(peer_id, addresses));
        }
    }

    /// Feeds a ping outcome on `connection_id` to `peer_id`. A connection whose pings keep
    /// failing is closed (see [`Liveness`]).
    fn on_ping(&mut self, peer_id: PeerId, connection_id: ConnectionId, outcome: PingOutcome) {
        let now = Instant::now();
        if let Some(failures) = self.liveness.on_ping(&connection_id, outcome, now) {
            self.close_dead(peer_id, connection_id, failures);
        }
        self.reset_timer();
    }

    fn close_dead(&mut self, peer_id: PeerId, connection_id: ConnectionId, failures: u32) {
        tracing::info!(%peer_id, failures, "peer stopped answering pings; closing the connection");
        self.push(ToSwarm::CloseConnection {
            peer_id,
            connection: CloseConnection::One(connection_id),
        });
        self.push(ToSwarm::GenerateEvent(Event::DeadConnection {
            peer_id,
            connection_id,
            failures,
        }));
    }

    /// Stops all reconnection for good (the node is shutting down).
    pub fn stop_reconnecting(&mut self) {
        self.reconnect = false;
        self.reconnector = Reconnector::new(BackoffConfig::default(), Rng::with_seed(0));
        self.reset_timer();
    }

    /// What the policy counted (clones share the counters).
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// Connection counts, including the peak.
    pub fn counts(&self) -> ConnectionCounts {
        self.table.counts()
    }

    /// A handle to the access rules: change them while the node runs.
    pub fn access(&self) -> Access {
        self.access.clone()
    }

    /// Closes the connections of peers the access rules refuse since they last changed.
    fn enforce_access(&mut self, cx: &mut Context<'_>) {
        let generation = self.access.generation(cx.waker());
        if generation == self.access_generation {
            return;
        }
        self.access_generation = generation;
        let peers: HashSet<PeerId> = self.table.connection_peers().into_values().collect();
        for peer_id in peers {
            if let Err(refusal) = self.access.admits(&peer_id) {
                tracing::info!(%peer_id, %refusal, "closing a peer the access rules now refuse");
                let _ = self.deny(Some(peer_id), Endpoint::Listener, Denial::Access(refusal));
                self.push(ToSwarm::CloseConnection {
                    peer_id,
                    connection: CloseConnection::All,
                });
            }
        }
    }

    /// A handle to the table of connected peers this behaviour keeps.
    pub fn peers(&self) -> Peers {
        self.peers.clone()
    }

    /// Records what a peer told about itself through identify (agent, listen addresses) in
    /// the [`Peers`] table.
    pub fn on_identify(&mut self, peer_id: &PeerId, info: &libp2p::identify::Info) {
        self.peers.on_identify(peer_id, info);
    }

    /// A ping result from `connection_id`'s handler.
    fn on_ping_result(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        result: Result<Duration, ping::Failure>,
    ) {
        let outcome = match &result {
            Ok(_) => PingOutcome::Success,
            Err(ping::Failure::Unsupported) => PingOutcome::Unsupported,
            // A lazily opened ping stream learns of the refusal only when it reads.
            Err(ping::Failure::Other { error }) if codio_base::protocol_refused(error.as_ref()) => {
                PingOutcome::Unsupported
            }
            Err(error) => {
                tracing::debug!(%peer_id, %error, "ping failed");
                PingOutcome::Failure
            }
        };
        self.on_ping(peer_id, connection_id, outcome);
        if let Ok(rtt) = result {
            self.peers.on_pong(&peer_id, rtt, Instant::now());
            let first = self.verified.insert(connection_id);
            self.push(ToSwarm::GenerateEvent(Event::Pong {
                peer_id,
                connection_id,
                rtt,
                first,
            }));
        }
    }

    fn handler(
        &mut self,
        established: Result<THandler<ping::Behaviour>, ConnectionDenied>,
    ) -> Result<PolicyHandler, ConnectionDenied> {
        Ok(Handler::new().select(established?))
    }

    fn push(&mut self, action: ToSwarm<Event, KeepAlive>) {
        if let ToSwarm::GenerateEvent(event) = &action {
            self.count(event);
        }
        if self.queue.len() >= MAX_QUEUED {
            tracing::warn!("policy queue full; dropping the oldest action");
            self.queue.pop_front();
        }
        self.queue.push_back(action);
    }

    fn count(&self, event: &Event) {
        let counter = match event {
            // Counted when refused (`deny`): not every refusal is reported.
            Event::Denied { .. } => return,
            Event::Trimmed { .. } => Counter::PeersTrimmed,
            Event::Evicted { .. } => Counter::PeersEvicted,
            Event::DeadConnection { .. } => Counter::DeadPeers,
            Event::Reconnecting { .. } => Counter::ReconnectAttempts,
            Event::Reconnected { .. } => Counter::Reconnects,
            Event::GaveUp { .. } => Counter::ReconnectsGivenUp,
            Event::Pong { .. } => return,
        };
        self.stats.count(counter);
    }

    /// Counts peers coming and going (first connection, last connection).
    fn count_peer(&mut self, connected: bool) {
        if connected {
            self.connected_peers += 1;
            self.stats.count(Counter::PeersConnected);
        } else {
            self.connected_peers = self.connected_peers.saturating_sub(1);
            self.stats.count(Counter::PeersDisconnected);
        }
        self.stats.set_connected_peers(self.connected_peers);
    }

    fn deny(
        &mut self,
        peer_id: Option<PeerId>,
        endpoint: Endpoint,
        reason: Denial,
    ) -> ConnectionDenied {
        let kind = DenialReason::from(&reason);
        self.stats.count_denial(&reason);
        if let Some(suppressed) = self.denials.report(kind, Instant::now()) {
            tracing::debug!(?peer_id, ?endpoint, %reason, suppressed, "connection denied");
            self.push(ToSwarm::GenerateEvent(Event::Denied {
                peer_id,
                endpoint,
                reason: reason.clone(),
                suppressed,
            }));
        }
        ConnectionDenied::new(reason)
    }

    fn on_decision(&mut self, decision: Decision) {
        let event = match decision {
            Decision::Redial {
                peer_id,
                attempt,
                delay,
            } => {
                tracing::debug!(%peer_id, attempt, ?delay, "reconnecting");
                Event::Reconnecting {
                    peer_id,
                    attempt,
                    delay,
                }
            }
            Decision::GaveUp { peer_id, attempts } => {
                tracing::warn!(%peer_id, attempts, "giving up reconnecting");
                Event::GaveUp { peer_id, attempts }
            }
        };
        self.push(ToSwarm::GenerateEvent(event));
        self.reset_timer();
    }

    /// Points the timer at the earliest of the next due redial, trim check and liveness expiry.
    fn reset_timer(&mut self) {
        let next = [
            self.reconnector.next_due(),
            self.table.next_trim(),
            self.liveness.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            None => self.timer = None,
            Some(at) if self.timer.as_ref().is_some_and(|(t, _)| *t == at) => {}
            Some(at) => self.timer = Some((at, Box::pin(tokio::time::sleep_until(at.into())))),
        }
    }

    fn run_due(&mut self, now: Instant) {
        for due in self.reconnector.poll_due(now) {
            tracing::debug!(peer_id = %due.peer_id, attempt = due.attempt, "redialing");
            self.push(dial(due.peer_id, due.addresses));
        }
        self.trim(now);
        for (connection_id, peer_id) in self.liveness.expired(now) {
            self.close_dead(peer_id, connection_id, 0);
        }
        self.reset_timer();
    }

    /// Releases surplus connections and those beyond the low watermark (they close once
    /// idle) and keeps the others alive.
    fn update_keep_alive(&mut self) {
        let released: HashSet<ConnectionId> = self
            .table
            .released_connections()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let peers = self.table.connection_peers();
        let mut notifications = Vec::new();
        for (connection_id, kept) in &mut self.keep_alive {
            let want = !released.contains(connection_id);
            if *kept != want
                && let Some(peer_id) = peers.get(connection_id)
            {
                *kept = want;
                tracing::debug!(%peer_id, ?connection_id, keep_alive = want, "connection keep-alive");
                notifications.push(ToSwarm::NotifyHandler {
                    peer_id: *peer_id,
                    handler: NotifyHandler::One(*connection_id),
                    event: KeepAlive(want),
                });
            }
        }
        for notification in notifications {
            self.push(notification);
        }
    }

    /// Closes the connection a newcomer to `newcomer` displaces at the ceiling, if any.
    fn evict(&mut self, victim: Option<(ConnectionId, PeerId)>, newcomer: PeerId) {
        let Some((connection_id, peer_id)) = victim else {
            return;
        };
        tracing::debug!(%peer_id, ?connection_id, %newcomer, "evicting for a newcomer at the ceiling");
        self.table.evict(connection_id);
        self.push(ToSwarm::CloseConnection {
            peer_id,
            connection: CloseConnection::One(connection_id),
        });
        self.push(ToSwarm::GenerateEvent(Event::Evicted {
            peer_id,
            connection_id,
        }));
    }

    fn trim(&mut self, now: Instant) {
        for (connection_id, peer_id) in self.table.trim(now) {
            tracing::debug!(%peer_id, ?connection_id, "trimming connection above the high watermark");
            self.push(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(connection_id),
            });
            self.push(ToSwarm::GenerateEvent(Event::Trimmed {
                peer_id,
                connection_id,
            }));
        }
    }
}

fn dial(peer_id: PeerId, addresses: Vec<Multiaddr>) -> ToSwarm<Event, KeepAlive> {
    ToSwarm::Dial {
        opts: DialOpts::peer_id(peer_id)
            .addresses(addresses)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .extend_addresses_through_behaviour()
            .build(),
    }
}

/// libp2p's memory-based refusal for `limit`, or `None` when off.
fn memory_limit(limit: MemoryLimit) -> Option<memory_connection_limits::Behaviour> {
    match limit {
        MemoryLimit::Off => None,
        MemoryLimit::Bytes(bytes) => {
            Some(memory_connection_limits::Behaviour::with_max_bytes(bytes))
        }
        MemoryLimit::Percent(percent) => Some(
            memory_connection_limits::Behaviour::with_max_percentage(f64::from(percent) / 100.0),
        ),
    }
}

/// The keep-alive handler and ping's, side by side.
type PolicyHandler = ConnectionHandlerSelect<Handler, THandler<ping::Behaviour>>;

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = PolicyHandler;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.access
            .check_pending(Endpoint::Listener, None, Some(remote_addr))
            .map_err(|refusal| self.deny(None, Endpoint::Listener, Denial::Access(refusal)))?;
        self.check_memory(None, Endpoint::Listener)?;
        let admitted = self
            .table
            .admit_pending_incoming(
                connection_id,
                codio_base::addr::direct_ip_of(remote_addr),
                Instant::now(),
            )
            .map_err(|reason| self.deny(None, Endpoint::Listener, reason));
        self.peers.set_counts(self.table.counts());
        admitted
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.access
            .check_peer(Endpoint::Listener, &peer, remote_addr)
            .map_err(|refusal| {
                self.deny(Some(peer), Endpoint::Listener, Denial::Access(refusal))
            })?;
        let victim = self
            .table
            .check_established_inbound(
                &peer,
                codio_base::addr::direct_ip_of(remote_addr),
                Instant::now(),
            )
            .map_err(|reason| self.deny(Some(peer), Endpoint::Listener, reason))?;
        self.evict(victim, peer);
        let ping = self.ping.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        );
        self.handler(ping)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(peer_id) = maybe_peer
            && self.disconnected.contains(&peer_id)
        {
            return Err(self.deny(maybe_peer, Endpoint::Dialer, Denial::Disconnected));
        }
        self.access
            .check_pending(Endpoint::Dialer, maybe_peer.as_ref(), addresses.first())
            .map_err(|refusal| self.deny(maybe_peer, Endpoint::Dialer, Denial::Access(refusal)))?;
        self.check_memory(maybe_peer, Endpoint::Dialer)?;
        let admitted = self
            .table
            .admit_pending_outgoing(connection_id, maybe_peer.as_ref(), Instant::now())
            .map_err(|reason| self.deny(maybe_peer, Endpoint::Dialer, reason));
        self.peers.set_counts(self.table.counts());
        admitted.map(|()| Vec::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.access
            .check_peer(Endpoint::Dialer, &peer, addr)
            .map_err(|refusal| self.deny(Some(peer), Endpoint::Dialer, Denial::Access(refusal)))?;
        let victim = self
            .table
            .check_established(&peer, Instant::now())
            .map_err(|reason| self.deny(Some(peer), Endpoint::Dialer, reason))?;
        self.evict(victim, peer);
        let ping = self.ping.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        );
        self.handler(ping)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        let now = Instant::now();
        self.ping.on_swarm_event(event);
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                let remote = match e.endpoint {
                    ConnectedPoint::Listener { send_back_addr, .. } => {
                        codio_base::addr::direct_ip_of(send_back_addr)
                    }
                    ConnectedPoint::Dialer { .. } => None,
                };
                let relayed = e.endpoint.is_relayed();
                self.table
                    .on_established_inbound(e.connection_id, e.peer_id, now, relayed, remote);
                self.peers
                    .on_established(e.peer_id, e.connection_id, e.endpoint, now);
                self.keep_alive.insert(e.connection_id, true);
                self.update_keep_alive();
                self.liveness
                    .on_established(e.connection_id, e.peer_id, now);
                self.trim(now);
                if e.other_established == 0 {
                    self.count_peer(true);
                }
                if e.other_established == 0
                    && let Some(attempts) = self.reconnector.on_connected(&e.peer_id, now)
                {
                    tracing::debug!(peer_id = %e.peer_id, attempts, "reconnected");
                    self.push(ToSwarm::GenerateEvent(Event::Reconnected {
                        peer_id: e.peer_id,
                        attempts,
                    }));
                }
                self.reset_timer();
            }
            FromSwarm::ConnectionClosed(e) => {
                self.table.on_closed(&e.connection_id);
                self.peers.on_closed(&e.peer_id, &e.connection_id);
                self.keep_alive.remove(&e.connection_id);
                self.verified.remove(&e.connection_id);
                self.update_keep_alive();
                self.liveness.on_closed(&e.connection_id);
                if e.remaining_established == 0 {
                    self.count_peer(false);
                }
                if e.remaining_established == 0
                    && let Some(decision) = self.reconnector.on_disconnected(&e.peer_id, now)
                {
                    self.on_decision(decision);
                }
                self.reset_timer();
            }
            FromSwarm::DialFailure(e) => {
                self.table.on_pending_failed(&e.connection_id);
                let counts = !matches!(e.error, DialError::DialPeerConditionFalse(_));
                // A dial that never started (skipped, or refused by a behaviour) is no failure.
                if counts && !matches!(e.error, DialError::Denied { .. }) {
                    self.stats.count(Counter::DialFailures);
                }
                if counts
                    && let Some(peer_id) = e.peer_id
                    && let Some(decision) = self.reconnector.on_dial_failed(&peer_id, now)
                {
                    self.on_decision(decision);
                }
            }
            FromSwarm::ListenFailure(e) => self.table.on_pending_failed(&e.connection_id),
            // Nothing else changes the table: no counts to publish.
            _ => return,
        }
        self.peers.set_counts(self.table.counts());
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(never) => match never {},
            Either::Right(result) => {
                self.on_ping_result(peer_id, connection_id, result);
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        self.enforce_access(cx);
        // Bounded: a deadline that is already due after `run_due` is retried at most a few
        // times, then left to an immediate wake-up.
        for _ in 0..4 {
            let Some((_, timer)) = self.timer.as_mut() else {
                break;
            };
            if timer.as_mut().poll(cx).is_pending() {
                // The waker is registered for this deadline.
                break;
            }
            self.timer = None;
            self.run_due(Instant::now());
        }
        if self
            .timer
            .as_ref()
            .is_some_and(|(at, _)| *at <= Instant::now())
        {
            cx.waker().wake_by_ref();
        }
        // `ping::Behaviour` is not polled: it only turns handler results into events, and
        // those are taken from the handlers directly (`on_connection_handler_event`).
        match self.queue.pop_front() {
            Some(action) => Poll::Ready(action.map_in(Either::Left)),
            None => Poll::Pending,
        }
    }
}
