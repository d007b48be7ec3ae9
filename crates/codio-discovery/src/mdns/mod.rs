//! mDNS discovery on the local network (the libp2p spec, `discovery/mdns.md`; interoperates
//! with libp2p-mdns and js-libp2p), bounded against a hostile neighbour.
//!
//! libp2p-mdns keeps every `(peer, address)` it hears, for as long as the sender asks, in an
//! unbounded list searched linearly on each packet; its service name is fixed. This one:
//!
//! - holds at most [`MdnsConfig::with_max_peers`] peers,
//!   [`MdnsConfig::with_max_peers_per_source`] of them from one sender address, and 8
//!   addresses per peer; when full, the oldest entry of the sender (or of the busiest
//!   sender) goes (`codio_mdns_shed_peers_total`);
//! - caps the sender's TTL ([`with_max_ttl`](MdnsConfig::with_max_ttl), 6 min: what
//!   libp2p-mdns announces);
//! - points every announced address at the sender's own IP (as libp2p-mdns does), so an
//!   answer cannot make this node dial a third host;
//! - dials discovered peers at a bounded rate (a burst of 16, then one a second), answers
//!   queries at most once a second (burst 4), and reads at most 64 packets per poll;
//! - lets the service name be set, so a private swarm never merges with a public one.

mod io;
mod packet;
mod table;

use std::{
    collections::{HashMap, VecDeque},
    future::Future as _,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hickory_proto::rr::Name;
use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    multiaddr::Protocol,
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
        dial_opts::{DialOpts, PeerCondition},
        dummy,
    },
};
use tokio::time::Sleep;

use codio_base::{Bucket, Rate};
use table::{Bounds, Change, Table};

/// The libp2p service name.
pub const DEFAULT_SERVICE_NAME: &str = "_p2p._udp.local";

/// Packets read per poll at most; more wait for the next poll (the swarm's other work goes
/// first).
const PACKETS_PER_POLL: usize = 64;

/// The first query goes out this soon after an interface comes up; the next ones double the
/// wait up to the query interval (a probe lost at start-up is repeated soon).
const FIRST_PROBE: Duration = Duration::from_millis(500);

/// Settings of mDNS discovery.
///
/// | setting | default |
/// |---|---|
/// | [`service_name`](Self::with_service_name) | `_p2p._udp.local` (libp2p's; set another for a private swarm) |
/// | [`query_interval`](Self::with_query_interval) | 5 min, after probes at 0.5 s, 1 s, 2 s, … |
/// | [`ttl`](Self::with_ttl) | 6 min: how long others may keep our announcement |
/// | [`max_peers`](Self::with_max_peers) | 128 discovered peers |
/// | [`max_peers_per_source`](Self::with_max_peers_per_source) | 8 peers announced from one IP address |
/// | [`max_ttl`](Self::with_max_ttl) | 6 min: longer TTLs of senders are cut to it |
/// | [`max_addresses_per_peer`](Self::with_max_addresses_per_peer) | 8 |
/// | [`dial_rate`](Self::with_dial_rate) | a burst of 16 dials, then one per second |
/// | [`answer_rate`](Self::with_answer_rate) | a burst of 4 answers to queries, then one per second |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsConfig {
    service_name: String,
    query_interval: Duration,
    ttl: Duration,
    max_peers: usize,
    max_peers_per_source: usize,
    max_ttl: Duration,
    max_addresses_per_peer: usize,
    dial_rate: Rate,
    answer_rate: Rate,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        Self {
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            query_interval: Duration::from_secs(5 * 60),
            ttl: Duration::from_secs(6 * 60),
            max_peers: 128,
            max_peers_per_source: 8,
            max_ttl: Duration::from_secs(6 * 60),
            max_addresses_per_peer: 8,
            dial_rate: Rate::every(Duration::from_secs(1), 16),
            answer_rate: Rate::every(Duration::from_secs(1), 4),
        }
    }
}

impl MdnsConfig {
    /// Sets the DNS-SD service name peers are announced under (`_name._udp.local`).
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// Sets how often the network is queried once the start-up probes are done.
    pub fn with_query_interval(mut self, interval: Duration) -> Self {
        self.query_interval = interval;
        self
    }

    /// Sets the TTL of this node's announcements.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets how many discovered peers are kept.
    pub fn with_max_peers(mut self, max: usize) -> Self {
        self.max_peers = max;
        self
    }

    /// Sets how many of them one sender address may announce.
    pub fn with_max_peers_per_source(mut self, max: usize) -> Self {
        self.max_peers_per_source = max;
        self
    }

    /// Sets the longest a discovered peer is kept without being announced again.
    pub fn with_max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// Sets how many addresses of one peer are kept.
    pub fn with_max_addresses_per_peer(mut self, max: usize) -> Self {
        self.max_addresses_per_peer = max;
        self
    }

    /// Sets the dial rate: `burst` at once, then one per `interval`.
    pub fn with_dial_rate(mut self, interval: Duration, burst: u32) -> Self {
        self.dial_rate = Rate::every(interval, burst.max(1));
        self
    }

    /// Sets the rate of answers to queries: `burst` at once, then one per `interval`.
    pub fn with_answer_rate(mut self, interval: Duration, burst: u32) -> Self {
        self.answer_rate = Rate::every(interval, burst.max(1));
        self
    }

    /// The DNS-SD service name peers are announced and looked up under.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// The interval between queries.
    pub fn query_interval(&self) -> Duration {
        self.query_interval
    }

    /// The first setting that cannot work, as `(field, reason)`.
    pub(crate) fn invalid(&self) -> Option<(&'static str, &'static str)> {
        if service(&self.service_name).is_none() {
            return Some(("mdns_service_name", "must be a valid DNS name"));
        }
        let zero = [
            ("mdns_query_interval", self.query_interval.is_zero()),
            ("mdns_ttl", self.ttl.is_zero()),
            ("mdns_max_ttl", self.max_ttl.is_zero()),
            ("mdns_max_peers", self.max_peers == 0),
            ("mdns_max_peers_per_source", self.max_peers_per_source == 0),
            (
                "mdns_max_addresses_per_peer",
                self.max_addresses_per_peer == 0,
            ),
        ];
        zero.into_iter()
            .find(|(_, zero)| *zero)
            .map(|(field, _)| (field, "must be greater than zero"))
    }
}

/// `name` as a fully qualified DNS name.
fn service(name: &str) -> Option<Name> {
    let mut name = Name::from_ascii(name).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// What mDNS reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A peer was found, or announced other addresses.
    Discovered {
        /// The peer.
        peer_id: PeerId,
        /// Where it listens (at the IP its announcement came from).
        addresses: Vec<Multiaddr>,
    },
    /// A peer's announcement expired, it said goodbye, or it was shed for a newcomer.
    Expired {
        /// The peer.
        peer_id: PeerId,
    },
}

/// The mDNS behaviour: discovers peers, answers queries, dials what it finds once the
/// discovery behaviour is started.
pub struct Behaviour {
    config: MdnsConfig,
    service: Name,
    instance: Name,
    local: PeerId,
    io: io::Io,
    table: Table,
    listen: Vec<Multiaddr>,
    connected: HashMap<PeerId, usize>,
    dial: bool,
    dials: Bucket,
    answers: Bucket,
    next_query: Instant,
    probe_wait: Duration,
    events: VecDeque<ToSwarm<Event, THandlerInEvent<Self>>>,
    timer: Pin<Box<Sleep>>,
    stats: Arc<crate::Stats>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("service", &self.service)
            .field("peers", &self.table.len())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// mDNS for `local` with `config`, counting into `stats`; dials nothing until started.
    ///
    /// # Errors
    ///
    /// The sockets or the interface watcher could not be set up (an invalid service name is
    /// reported as `InvalidInput`).
    pub(crate) fn new(
        local: PeerId,
        config: MdnsConfig,
        stats: Arc<crate::Stats>,
    ) -> std::io::Result<Self> {
        let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "service name");
        let service = service(&config.service_name).ok_or_else(invalid)?;
        let instance = Name::from_ascii(random_label())
            .and_then(|label| label.append_domain(&service))
            .map_err(|_| invalid())?;
        let now = Instant::now();
        let bounds = Bounds {
            max_peers: config.max_peers,
            max_per_source: config.max_peers_per_source,
            max_ttl: config.max_ttl,
        };
        Ok(Self {
            io: io::Io::new()?,
            table: Table::new(bounds),
            dials: Bucket::full(config.dial_rate, now),
            answers: Bucket::full(config.answer_rate, now),
            next_query: now + FIRST_PROBE,
            probe_wait: FIRST_PROBE,
            timer: Box::pin(tokio::time::sleep(FIRST_PROBE)),
            service,
            instance,
            local,
            config,
            listen: Vec::new(),
            connected: HashMap::new(),
            dial: false,
            events: VecDeque::new(),
            stats,
        })
    }

    /// Dials discovered peers from now on (those found so far first).
    pub(crate) fn start_dialing(&mut self) {
        self.dial = true;
    }

    fn on_packet(&mut self, bytes: &[u8], source: std::net::IpAddr, now: Instant) {
        let max = self.config.max_addresses_per_peer;
        match packet::parse(bytes, source, &self.service, max) {
            Some(packet::Packet::Query) => self.answer(now),
            Some(packet::Packet::Answer(peers)) => {
                let local = self.local;
                for peer in peers.into_iter().filter(|p| p.peer_id != local) {
                    self.on_announced(peer, source, now);
                }
            }
            None => {}
        }
    }

    fn on_announced(&mut self, peer: packet::Announced, source: std::net::IpAddr, now: Instant) {
        let packet::Announced {
            peer_id,
            addresses,
            ttl,
        } = peer;
        if addresses.is_empty() && !ttl.is_zero() {
            return;
        }
        let change = self
            .table
            .announce(peer_id, source, addresses.clone(), ttl, now);
        match change {
            Change::Added { shed } => {
                if let Some(shed) = shed {
                    tracing::debug!(peer_id = %shed, "mDNS: shedding the oldest of a full sender");
                    self.stats.record_mdns_shed();
                    self.report(Event::Expired { peer_id: shed });
                }
                tracing::debug!(%peer_id, ?addresses, "mDNS discovered");
                self.report(Event::Discovered { peer_id, addresses });
            }
            Change::Moved => self.report(Event::Discovered { peer_id, addresses }),
            Change::Removed => self.report(Event::Expired { peer_id }),
            Change::Refreshed | Change::Ignored => {}
        }
    }

    fn report(&mut self, event: Event) {
        self.events.push_back(ToSwarm::GenerateEvent(event));
    }

    /// Answers a query with this node's addresses, within the answer rate.
    fn answer(&mut self, now: Instant) {
        if self.listen.is_empty() {
            return;
        }
        if !self.answers.take(self.config.answer_rate, now) {
            self.stats.record_mdns_unanswered();
            return;
        }
        let addresses = &self.listen[..self.listen.len().min(16)];
        let ttl = self.config.ttl;
        if let Some(bytes) =
            packet::answer(&self.service, &self.instance, self.local, addresses, ttl)
        {
            self.io.send(&bytes);
        }
    }

    fn query(&mut self, now: Instant) {
        if let Some(bytes) = packet::query(&self.service) {
            self.io.send(&bytes);
        }
        self.probe_wait = (self.probe_wait * 2).min(self.config.query_interval);
        self.next_query = now + self.probe_wait;
    }

    /// Due dials, within the dial rate; `true` if the rate held one back.
    fn dial_due(&mut self, now: Instant) -> bool {
        while self.dial {
            let Some((peer_id, addresses)) = self.table.take_dial(now) else {
                return false;
            };
            if self.connected.contains_key(&peer_id) {
                continue;
            }
            if !self.dials.take(self.config.dial_rate, now) {
                // Due again; the timer comes back for it.
                self.table.redial(peer_id);
                return true;
            }
            self.events.push_back(ToSwarm::Dial {
                opts: DialOpts::peer_id(peer_id)
                    .addresses(addresses)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
            });
        }
        false
    }

    /// Reads waiting packets (at most [`PACKETS_PER_POLL`]); `true` if more may wait.
    fn read_packets(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut buf = [0u8; io::MAX_PACKET];
        for _ in 0..PACKETS_PER_POLL {
            match self.io.poll_recv(cx, &mut buf) {
                Poll::Ready(Ok((len, source))) => self.on_packet(&buf[..len], source, now),
                Poll::Ready(Err(error)) => tracing::debug!(%error, "mDNS: receive failed"),
                Poll::Pending => return false,
            }
        }
        true
    }

    /// Runs what is due at `now` and arms the timer for what comes next.
    fn on_time(&mut self, cx: &mut Context<'_>, now: Instant) {
        if now >= self.next_query {
            self.query(now);
        }
        for peer_id in self.table.expire(now) {
            tracing::debug!(%peer_id, "mDNS: expired");
            self.report(Event::Expired { peer_id });
        }
        self.stats
            .set_mdns_peers(self.table.len(), self.table.busiest_count());
        let held = self.dial_due(now);
        let mut next = self.next_query;
        if let Some(expiry) = self.table.next_expiry() {
            next = next.min(expiry);
        }
        if self.dial
            && let Some(dial) = self.table.next_dial()
        {
            // Held by the dial rate: come back when a token is there; else when a retry is due.
            next = next.min(if held {
                now + self.config.dial_rate.interval
            } else {
                dial.max(now)
            });
        }
        self.timer.as_mut().reset(next.into());
        // Registers the waker; a deadline already passed is handled on the next poll.
        if self.timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
    }
}

/// A random DNS label naming this node under the service (the spec asks for one; it is
/// not the peer id, which the `TXT` records carry).
fn random_label() -> String {
    use std::fmt::Write;
    let mut label = String::with_capacity(32);
    for _ in 0..4 {
        let _ = write!(label, "{:08x}", rand_u32());
    }
    label
}

/// 32 random bits: the label and retry delays need to differ between nodes, not to be
/// secret; the standard library's randomly keyed hasher gives them.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    // Keeps the low half on purpose.
    bits as u32
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let known = peer.and_then(|peer| self.table.addresses(&peer));
        Ok(known.map(<[Multiaddr]>::to_vec).unwrap_or_default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::NewListenAddr(e)
                if announceable(e.addr) && !self.listen.contains(e.addr) =>
            {
                self.listen.push(e.addr.clone());
            }
            FromSwarm::ExpiredListenAddr(e) => self.listen.retain(|a| a != e.addr),
            FromSwarm::ConnectionEstablished(e) => {
                *self.connected.entry(e.peer_id).or_default() += 1;
            }
            FromSwarm::DialFailure(e) => {
                if let Some(peer) = e.peer_id
                    && !self.connected.contains_key(&peer)
                {
                    // Half a second to a second and a half: two nodes that failed dialing
                    // each other at once retry apart.
                    let delay = Duration::from_millis(500 + u64::from(rand_u32() % 1000));
                    self.table.dial_failed(&peer, Instant::now(), delay);
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(n) = self.connected.get_mut(&e.peer_id) {
                    *n -= 1;
                    if *n == 0 {
                        self.connected.remove(&e.peer_id);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        let now = Instant::now();
        if self.io.poll_interfaces(cx) {
            // A new interface: probe it soon.
            self.probe_wait = FIRST_PROBE;
            self.next_query = self.next_query.min(now + FIRST_PROBE);
        }
        if self.read_packets(cx, now) {
            cx.waker().wake_by_ref();
        }
        self.on_time(cx, now);
        match self.events.pop_front() {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }
}

/// Listen addresses worth announcing: direct IP ones, not loopback or unspecified.
fn announceable(address: &Multiaddr) -> bool {
    let ip_ok = match address.iter().next() {
        Some(Protocol::Ip4(ip)) => !ip.is_loopback() && !ip.is_unspecified(),
        Some(Protocol::Ip6(ip)) => !ip.is_loopback() && !ip.is_unspecified(),
        _ => false,
    };
    ip_ok && !address.iter().any(|p| p == Protocol::P2pCircuit)
}
