//! Automatic relay reservations ("AutoRelay", which go-libp2p has and rust-libp2p lacks).
//!
//! A node that AutoNAT found to be private cannot be dialed; it reserves a slot on up to
//! `max_reservations` relays and listens on the resulting `/p2p-circuit` addresses, which it
//! then advertises (identify, the DHT). The decisions are pure state ([`AutoRelay`]); the
//! [`Behaviour`] turns them into `ListenOn`/`RemoveListener` swarm actions. The relay client
//! renews accepted reservations by itself.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId, StreamProtocol,
    core::{
        Endpoint,
        transport::{ListenerId, PortUse},
    },
    identify,
    multiaddr::Protocol,
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, ListenOpts, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
    },
};

/// The relay v2 HOP protocol: a peer that lists it in identify serves reservations.
pub const HOP_PROTOCOL: StreamProtocol = libp2p::relay::HOP_PROTOCOL_NAME;

/// Whether the node can be dialed from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Reachability {
    /// Not known yet.
    #[default]
    Unknown,
    /// Publicly reachable.
    Public,
    /// Behind a NAT or firewall.
    Private,
}

/// What the swarm should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Listen on `address` (a `/p2p-circuit` address of `relay`): requests a reservation.
    Reserve {
        /// The relay.
        relay: PeerId,
        /// The circuit listen address.
        address: Multiaddr,
    },
    /// Give up the reservation on `relay`.
    Release {
        /// The relay.
        relay: PeerId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Reservation {
    address: Multiaddr,
    active: bool,
}

/// A relay that may serve reservations.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    address: Multiaddr,
    /// Configured by the operator (kept while disconnected, preferred, never evicted).
    configured: bool,
    /// Arrival order: candidates are tried first come, first served (never in peer id
    /// order, which an attacker can grind).
    arrival: u64,
}

/// Most relay candidates kept: discovered ones beyond it evict the oldest discovered one
/// without a reservation.
pub const MAX_CANDIDATES: usize = 32;

/// The reservation state machine.
///
/// Reservations are wanted while reachability is [`Reachability::Private`]. Candidates are
/// configured relays and connected peers that advertise [`HOP_PROTOCOL`]; configured ones are
/// tried first (and take a slot from a discovered relay when they become available), then
/// discovered ones in arrival order. At most [`MAX_CANDIDATES`] are kept; a discovered
/// candidate is forgotten when it disconnects. A relay whose reservation failed is not tried
/// again until it reconnects.
#[derive(Debug)]
pub struct AutoRelay {
    max_reservations: usize,
    reachability: Reachability,
    candidates: HashMap<PeerId, Candidate>,
    arrivals: u64,
    connected: HashSet<PeerId>,
    reservations: HashMap<PeerId, Reservation>,
    failed: HashSet<PeerId>,
}

impl AutoRelay {
    /// A state machine keeping at most `max_reservations` reservations.
    pub fn new(max_reservations: usize) -> Self {
        Self {
            max_reservations,
            reachability: Reachability::Unknown,
            candidates: HashMap::new(),
            arrivals: 0,
            connected: HashSet::new(),
            reservations: HashMap::new(),
            failed: HashSet::new(),
        }
    }

    /// The candidates known now.
    pub fn candidates(&self) -> usize {
        self.candidates.len()
    }

    /// The current reachability.
    pub fn reachability(&self) -> Reachability {
        self.reachability
    }

    /// Relays with an accepted reservation and their circuit addresses.
    pub fn active(&self) -> Vec<(PeerId, Multiaddr)> {
        self.reservations
            .iter()
            .filter(|(_, r)| r.active)
            .map(|(p, r)| (*p, r.address.clone()))
            .collect()
    }

    /// AutoNAT's verdict changed.
    pub fn set_reachability(&mut self, reachability: Reachability) -> Vec<Action> {
        self.reachability = reachability;
        match reachability {
            Reachability::Private => self.fill(),
            Reachability::Public => self
                .reservations
                .drain()
                .map(|(relay, _)| Action::Release { relay })
                .collect(),
            Reachability::Unknown => Vec::new(),
        }
    }

    /// `relay`, reachable at `address` (without `/p2p`), can serve reservations (it listed
    /// [`HOP_PROTOCOL`]).
    pub fn add_candidate(&mut self, relay: PeerId, address: Multiaddr) -> Vec<Action> {
        self.insert(relay, address, false);
        self.fill()
    }

    /// `relay`, reachable at `address`, is a relay the operator configured.
    pub fn add_configured(&mut self, relay: PeerId, address: Multiaddr) -> Vec<Action> {
        self.insert(relay, address, true);
        self.fill()
    }

    fn insert(&mut self, relay: PeerId, address: Multiaddr, configured: bool) {
        if let Some(known) = self.candidates.get_mut(&relay) {
            known.address = address;
            known.configured |= configured;
            return;
        }
        if self.candidates.len() >= MAX_CANDIDATES && !self.evict_oldest_discovered() && !configured
        {
            return;
        }
        self.arrivals += 1;
        let arrival = self.arrivals;
        self.candidates.insert(
            relay,
            Candidate {
                address,
                configured,
                arrival,
            },
        );
    }

    /// Forgets the oldest discovered candidate without a reservation; `false` if none.
    fn evict_oldest_discovered(&mut self) -> bool {
        let oldest = self
            .candidates
            .iter()
            .filter(|(p, c)| !c.configured && !self.reservations.contains_key(p))
            .min_by_key(|(_, c)| c.arrival)
            .map(|(p, _)| *p);
        oldest.is_some_and(|peer| self.candidates.remove(&peer).is_some())
    }

    /// A connection to `peer` was established.
    pub fn on_connected(&mut self, peer: PeerId) -> Vec<Action> {
        self.connected.insert(peer);
        // A relay that failed gets another chance once it is back.
        self.failed.remove(&peer);
        self.fill()
    }

    /// The last connection to `peer` closed: its reservation is gone, and so is the peer
    /// as a candidate unless configured.
    pub fn on_disconnected(&mut self, peer: &PeerId) -> Vec<Action> {
        self.connected.remove(peer);
        self.reservations.remove(peer);
        if self.candidates.get(peer).is_some_and(|c| !c.configured) {
            self.candidates.remove(peer);
            self.failed.remove(peer);
        }
        self.fill()
    }

    /// The relay accepted the reservation.
    pub fn on_accepted(&mut self, relay: &PeerId) {
        if let Some(r) = self.reservations.get_mut(relay) {
            r.active = true;
        }
    }

    /// The circuit listener on `relay` closed (reservation refused, expired or relay lost).
    pub fn on_closed(&mut self, relay: &PeerId) -> Vec<Action> {
        if self.reservations.remove(relay).is_some() {
            self.failed.insert(*relay);
        }
        self.fill()
    }

    /// Candidates that could take a reservation now: configured first, then by arrival.
    fn free(&self) -> Vec<(PeerId, Candidate)> {
        let mut free: Vec<(PeerId, Candidate)> = self
            .candidates
            .iter()
            .filter(|(p, _)| {
                self.connected.contains(p)
                    && !self.failed.contains(p)
                    && !self.reservations.contains_key(p)
            })
            .map(|(p, c)| (*p, c.clone()))
            .collect();
        free.sort_by_key(|(_, c)| (!c.configured, c.arrival));
        free
    }

    fn fill(&mut self) -> Vec<Action> {
        if self.reachability != Reachability::Private {
            return Vec::new();
        }
        let mut actions = Vec::new();
        for (relay, candidate) in self.free() {
            if self.reservations.len() >= self.max_reservations {
                if !candidate.configured {
                    break;
                }
                // A configured relay takes the slot of the newest discovered one.
                let Some(discovered) = self.newest_discovered_reservation() else {
                    break;
                };
                self.reservations.remove(&discovered);
                actions.push(Action::Release { relay: discovered });
            }
            let address = circuit_address(candidate.address, relay);
            self.reservations.insert(
                relay,
                Reservation {
                    address: address.clone(),
                    active: false,
                },
            );
            actions.push(Action::Reserve { relay, address });
        }
        actions
    }

    fn newest_discovered_reservation(&self) -> Option<PeerId> {
        self.reservations
            .keys()
            .filter_map(|p| self.candidates.get(p).map(|c| (p, c)))
            .filter(|(_, c)| !c.configured)
            .max_by_key(|(_, c)| c.arrival)
            .map(|(p, _)| *p)
    }
}

/// `{relay address}/p2p/{relay}/p2p-circuit`.
pub fn circuit_address(relay_address: Multiaddr, relay: PeerId) -> Multiaddr {
    let mut address = relay_address;
    if !matches!(address.iter().last(), Some(Protocol::P2p(_))) {
        address.push(Protocol::P2p(relay));
    }
    address.with(Protocol::P2pCircuit)
}

/// The relay of a `/p2p/<relay>/p2p-circuit…` address.
pub fn relay_of(address: &Multiaddr) -> Option<PeerId> {
    relay_part(address).map(|(relay, _)| relay)
}

/// The relay of a `/p2p/<relay>/p2p-circuit…` address and the relay's own address (the part
/// before `/p2p-circuit`).
pub fn relay_part(address: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut relay = None;
    for (i, protocol) in address.iter().enumerate() {
        match protocol {
            Protocol::P2p(peer) => relay = Some(peer),
            Protocol::P2pCircuit => return relay.map(|r| (r, address.iter().take(i).collect())),
            _ => {}
        }
    }
    None
}

/// Events of the AutoRelay behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A reservation was requested on `relay`.
    Reserving {
        /// The relay.
        relay: PeerId,
        /// The circuit address listened on.
        address: Multiaddr,
    },
}

/// Drives [`AutoRelay`] from swarm events; feed it reachability
/// ([`set_reachability`](Self::set_reachability)), identify results
/// ([`on_identify`](Self::on_identify)) and accepted reservations
/// ([`on_accepted`](Self::on_accepted)).
#[derive(Debug)]
pub struct Behaviour {
    state: AutoRelay,
    static_relays: HashMap<PeerId, Multiaddr>,
    /// Remote addresses of outbound connections, the addresses relays are reached at.
    dialed: HashMap<PeerId, Multiaddr>,
    listeners: HashMap<ListenerId, PeerId>,
    queue: VecDeque<ToSwarm<Event, Infallible>>,
}

impl Behaviour {
    /// Keeps up to `max_reservations` reservations; the `static_relays` are used once
    /// connected, whether or not identify lists HOP, and are preferred.
    pub fn new(max_reservations: usize, static_relays: Vec<(PeerId, Multiaddr)>) -> Self {
        Self {
            state: AutoRelay::new(max_reservations),
            static_relays: static_relays.into_iter().collect(),
            dialed: HashMap::new(),
            listeners: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    /// The current reachability.
    pub fn reachability(&self) -> Reachability {
        self.state.reachability()
    }

    /// Relays with an accepted reservation and their circuit addresses.
    pub fn reservations(&self) -> Vec<(PeerId, Multiaddr)> {
        self.state.active()
    }

    /// AutoNAT's verdict changed.
    pub fn set_reachability(&mut self, reachability: Reachability) {
        let actions = self.state.set_reachability(reachability);
        self.apply(actions);
    }

    /// Feeds an identify result: a peer listing [`HOP_PROTOCOL`] becomes a candidate.
    pub fn on_identify(&mut self, peer: PeerId, info: &identify::Info) {
        if !info.protocols.contains(&HOP_PROTOCOL) {
            return;
        }
        let address = self.dialed.get(&peer).cloned().or_else(|| {
            info.listen_addrs
                .iter()
                .find(|a| !a.iter().any(|p| p == Protocol::P2pCircuit))
                .cloned()
        });
        if let Some(address) = address {
            let actions = self.state.add_candidate(peer, address);
            self.apply(actions);
        }
    }

    /// The relay client reports an accepted reservation.
    pub fn on_accepted(&mut self, relay: &PeerId) {
        self.state.on_accepted(relay);
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Reserve { relay, address } => {
                    tracing::info!(%relay, %address, "requesting a relay reservation");
                    let opts = ListenOpts::new(address.clone());
                    self.listeners.insert(opts.listener_id(), relay);
                    self.queue.push_back(ToSwarm::ListenOn { opts });
                    self.queue
                        .push_back(ToSwarm::GenerateEvent(Event::Reserving { relay, address }));
                }
                Action::Release { relay } => {
                    let ids: Vec<ListenerId> = self
                        .listeners
                        .iter()
                        .filter(|(_, r)| **r == relay)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ids {
                        tracing::info!(%relay, "releasing the relay reservation");
                        self.listeners.remove(&id);
                        self.queue.push_back(ToSwarm::RemoveListener { id });
                    }
                }
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        let actions = match event {
            FromSwarm::ConnectionEstablished(e) if e.other_established == 0 => {
                if let libp2p::core::ConnectedPoint::Dialer { address, .. } = e.endpoint
                    && !address.iter().any(|p| p == Protocol::P2pCircuit)
                {
                    let mut address = address.clone();
                    if matches!(address.iter().last(), Some(Protocol::P2p(_))) {
                        address.pop();
                    }
                    self.dialed.insert(e.peer_id, address);
                }
                let mut actions = self.state.on_connected(e.peer_id);
                if let Some(address) = self.static_relays.get(&e.peer_id).cloned() {
                    actions.extend(self.state.add_configured(e.peer_id, address));
                }
                actions
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.dialed.remove(&e.peer_id);
                self.listeners.retain(|_, relay| *relay != e.peer_id);
                self.state.on_disconnected(&e.peer_id)
            }
            FromSwarm::ListenerClosed(e) => match self.listeners.remove(&e.listener_id) {
                Some(relay) => {
                    tracing::info!(%relay, reason = ?e.reason, "relay reservation ended");
                    self.state.on_closed(&relay)
                }
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        self.apply(actions);
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        match self.queue.pop_front() {
            Some(action) => Poll::Ready(action),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> Multiaddr {
        format!("/ip4/10.77.100.{n}/tcp/4001").parse().unwrap()
    }

    #[test]
    fn reserves_only_when_private_and_connected() {
        let mut a = AutoRelay::new(2);
        let relay = PeerId::random();
        assert!(
            a.add_candidate(relay, addr(1)).is_empty(),
            "reachability unknown"
        );
        assert!(a.on_connected(relay).is_empty(), "still unknown");
        let actions = a.set_reachability(Reachability::Private);
        assert_eq!(
            actions,
            vec![Action::Reserve {
                relay,
                address: format!("/ip4/10.77.100.1/tcp/4001/p2p/{relay}/p2p-circuit")
                    .parse()
                    .unwrap()
            }]
        );
        assert!(a.active().is_empty());
        a.on_accepted(&relay);
        assert_eq!(a.active().len(), 1);
        // Nothing more to do: already reserved.
        assert!(a.set_reachability(Reachability::Private).is_empty());
    }

    #[test]
    fn public_nodes_release_and_never_reserve() {
        let mut a = AutoRelay::new(2);
        let relay = PeerId::random();
        a.on_connected(relay);
        a.set_reachability(Reachability::Public);
        assert!(a.add_candidate(relay, addr(1)).is_empty());
        assert_eq!(a.set_reachability(Reachability::Private).len(), 1);
        assert_eq!(
            a.set_reachability(Reachability::Public),
            vec![Action::Release { relay }]
        );
        assert!(a.active().is_empty());
    }

    #[test]
    fn at_most_max_reservations_and_replacement_on_loss() {
        let mut a = AutoRelay::new(2);
        let relays: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        a.set_reachability(Reachability::Private);
        let mut reserved = 0;
        for (n, r) in relays.iter().enumerate() {
            a.on_connected(*r);
            reserved += a.add_candidate(*r, addr(n as u8 + 1)).len();
        }
        assert_eq!(reserved, 2);
        let held: Vec<PeerId> = relays
            .iter()
            .copied()
            .filter(|r| a.reservations.contains_key(r))
            .collect();
        let spare = relays.iter().copied().find(|r| !held.contains(r)).unwrap();
        // A reserved relay goes away: the spare one is used.
        let actions = a.on_disconnected(&held[0]);
        assert!(matches!(&actions[..], [Action::Reserve { relay, .. }] if *relay == spare));
    }

    #[test]
    fn failed_relay_is_retried_only_after_it_reconnects() {
        let mut a = AutoRelay::new(1);
        let relay = PeerId::random();
        a.set_reachability(Reachability::Private);
        a.on_connected(relay);
        assert_eq!(a.add_candidate(relay, addr(1)).len(), 1);
        assert!(
            a.on_closed(&relay).is_empty(),
            "refused: not retried at once"
        );
        assert!(a.on_disconnected(&relay).is_empty());
        assert!(
            a.on_connected(relay).is_empty(),
            "a candidate again once identified"
        );
        assert_eq!(
            a.add_candidate(relay, addr(1)).len(),
            1,
            "retried after reconnecting"
        );
    }

    #[test]
    fn configured_relays_come_first_and_take_a_discovered_slot() {
        let mut a = AutoRelay::new(1);
        a.set_reachability(Reachability::Private);
        let (found, configured) = (PeerId::random(), PeerId::random());
        a.on_connected(found);
        assert_eq!(a.add_candidate(found, addr(1)).len(), 1);
        a.on_connected(configured);
        let actions = a.add_configured(configured, addr(2));
        assert!(
            matches!(&actions[..], [Action::Release { relay: r }, Action::Reserve { relay, .. }]
                if *r == found && *relay == configured),
            "{actions:?}"
        );
        // A configured relay that goes away stays a candidate.
        a.on_disconnected(&configured);
        assert_eq!(a.candidates(), 2, "the configured one is kept");
    }

    #[test]
    fn candidates_are_bounded_tried_in_arrival_order_and_forgotten_on_disconnect() {
        let mut a = AutoRelay::new(1);
        let peers: Vec<PeerId> = (0..MAX_CANDIDATES + 10).map(|_| PeerId::random()).collect();
        for (n, p) in peers.iter().enumerate() {
            a.on_connected(*p);
            a.add_candidate(*p, addr((n % 200) as u8));
        }
        assert_eq!(a.candidates(), MAX_CANDIDATES);
        assert!(
            !a.candidates.contains_key(&peers[0]),
            "the oldest were evicted"
        );
        // Whatever their ids, the first to arrive (of those kept) is tried first.
        let actions = a.set_reachability(Reachability::Private);
        assert!(matches!(&actions[..], [Action::Reserve { relay, .. }] if *relay == peers[10]));
        a.on_disconnected(&peers[20]);
        assert_eq!(a.candidates(), MAX_CANDIDATES - 1);
    }

    #[test]
    fn circuit_and_relay_addresses() {
        let relay = PeerId::random();
        let target = PeerId::random();
        let circuit = circuit_address(addr(1), relay);
        assert_eq!(relay_of(&circuit), Some(relay));
        let full = circuit.clone().with(Protocol::P2p(target));
        assert_eq!(relay_of(&full), Some(relay));
        assert_eq!(relay_of(&addr(1)), None);
        let relay_address = addr(1).with(Protocol::P2p(relay));
        assert_eq!(relay_part(&full), Some((relay, relay_address)));
    }
}
