//! The identify behaviour: every connection's handler shares one copy of what this node says
//! about itself; the behaviour keeps the addresses current and pushes their changes.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, multiaddr::Protocol, transport::PortUse},
    identify::Info,
    identity::PublicKey,
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
};

use super::{
    IdentifyError,
    handler::{Command, Handler, Report, Shared},
};
use crate::Stats;

/// Settings of [`Identify`].
///
/// | setting | default |
/// |---|---|
/// | [`max_message`](Self::with_max_message) | 4,096 bytes, libp2p-identify's bound (a larger message would not reach rust-libp2p peers); what does not fit of this node's addresses and protocols is left out |
/// | [`timeout`](Self::with_timeout) | 10 s to open, read or write one identify stream |
/// | [`push_updates`](Self::with_push_updates) | `true`: changed addresses and protocols are pushed to connected peers |
#[derive(Debug, Clone)]
pub struct IdentifyConfig {
    protocol_version: String,
    agent_version: String,
    max_message: usize,
    timeout: Duration,
    push_updates: bool,
}

impl IdentifyConfig {
    /// A configuration announcing `protocol_version` and `agent_version`.
    pub fn new(protocol_version: impl Into<String>, agent_version: impl Into<String>) -> Self {
        Self {
            protocol_version: protocol_version.into(),
            agent_version: agent_version.into(),
            max_message: 4096,
            timeout: Duration::from_secs(10),
            push_updates: true,
        }
    }

    /// Sets the largest identify message read or written (at least 512 bytes).
    pub fn with_max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes.max(512);
        self
    }

    /// Sets the time allowed to open, read or write one identify stream.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets whether changed addresses and protocols are pushed to connected peers.
    pub fn with_push_updates(mut self, push: bool) -> Self {
        self.push_updates = push;
        self
    }
}

/// What [`Identify`] reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A peer's information: its answer when the connection opened, or a push.
    Received {
        /// The peer.
        peer_id: PeerId,
        /// The connection it came on.
        connection_id: ConnectionId,
        /// What the peer says about itself. Listen addresses naming another peer id are
        /// left out; everything else is the peer's claim.
        info: Box<Info>,
        /// Whether the peer pushed it (a push may leave fields empty that did not change).
        pushed: bool,
        /// The peer's address as this node sees it: what to judge the peer's claims by.
        remote: Multiaddr,
    },
    /// This node's information went to a peer.
    Sent {
        /// The peer.
        peer_id: PeerId,
        /// The connection.
        connection_id: ConnectionId,
    },
    /// An exchange failed.
    Error {
        /// The peer.
        peer_id: PeerId,
        /// The connection.
        connection_id: ConnectionId,
        /// Why.
        error: IdentifyError,
    },
}

/// The libp2p identify protocol (`/ipfs/id/1.0.0` and `/ipfs/id/push/1.0.0`), wire-compatible
/// with libp2p-identify and other libp2p implementations, built for many idle connections:
/// a connection's handler holds a pointer to this node's shared information and the peer's
/// address, nothing else, once its exchanges are done (libp2p-identify keeps a copy of both
/// sides' information per connection: ~6 KiB). Each side asks once when the connection
/// opens; changes are pushed, there is no periodic re-identify. A peer's message is bounded
/// in size and time and at most four identify streams run per connection.
#[derive(Debug)]
pub struct Identify {
    shared: Arc<Shared>,
    push_updates: bool,
    /// Connections per peer: whom to push to.
    connected: HashMap<PeerId, u32>,
    listen: Vec<Multiaddr>,
    external: Vec<Multiaddr>,
    events: VecDeque<ToSwarm<Event, Command>>,
}

impl Identify {
    /// Identify for the node with `public_key`; refusals are counted in `stats`.
    pub fn new(public_key: &PublicKey, config: IdentifyConfig, stats: Arc<Stats>) -> Self {
        let shared = Shared::new(
            public_key.encode_protobuf(),
            config.protocol_version,
            config.agent_version,
            config.max_message,
            config.timeout,
            stats,
        );
        Self {
            shared: Arc::new(shared),
            push_updates: config.push_updates,
            connected: HashMap::new(),
            listen: Vec::new(),
            external: Vec::new(),
            events: VecDeque::new(),
        }
    }

    fn addresses_changed(&mut self) {
        let mut addresses = self.listen.clone();
        addresses.extend(
            self.external
                .iter()
                .filter(|a| !self.listen.contains(a))
                .cloned(),
        );
        *self
            .shared
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = addresses;
        if self.push_updates {
            for peer_id in self.connected.keys() {
                self.events.push_back(ToSwarm::NotifyHandler {
                    peer_id: *peer_id,
                    handler: NotifyHandler::Any,
                    event: Command::Push,
                });
            }
        }
    }

    /// External address candidates from the address a peer says it sees this node at: as
    /// observed when its port is one this node listens on (the connection reused it),
    /// otherwise translated onto each listen address of the same transport.
    fn candidates(&self, observed: &Multiaddr) -> Vec<Multiaddr> {
        let port = |address: &Multiaddr| {
            address.iter().find_map(|p| match p {
                Protocol::Tcp(port) => Some((true, port)),
                Protocol::Udp(port) => Some((false, port)),
                _ => None,
            })
        };
        let observed_port = port(observed);
        if observed_port.is_some() && self.listen.iter().any(|a| port(a) == observed_port) {
            return vec![observed.clone()];
        }
        let mut translated: Vec<Multiaddr> = self
            .listen
            .iter()
            .filter(|server| same_transport(server, observed))
            .filter_map(|server| libp2p::swarm::_address_translation(server, observed))
            .collect();
        translated.sort_unstable();
        translated.dedup();
        if translated.is_empty() {
            translated.push(observed.clone());
        }
        translated
    }
}

/// Whether both addresses are TCP, or both QUIC v1.
fn same_transport(a: &Multiaddr, b: &Multiaddr) -> bool {
    let kind = |address: &Multiaddr| {
        let mut protocols = address.iter().skip(1);
        match (protocols.next(), protocols.next()) {
            (Some(Protocol::Tcp(_)), _) => Some(0),
            (Some(Protocol::Udp(_)), Some(Protocol::QuicV1)) => Some(1),
            _ => None,
        }
    };
    kind(a).is_some() && kind(a) == kind(b)
}

/// Whether `address` ends in no peer id, or in `peer`'s (a relayed address names its relay
/// before `/p2p-circuit`: that one is not the peer's).
fn names_peer(address: &Multiaddr, peer: &PeerId) -> bool {
    match address.iter().last() {
        Some(Protocol::P2p(id)) => id == *peer,
        _ => true,
    }
}

impl NetworkBehaviour for Identify {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(self.shared.clone(), remote.clone()))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        remote: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(self.shared.clone(), remote.clone()))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(established) => {
                *self.connected.entry(established.peer_id).or_default() += 1;
            }
            FromSwarm::ConnectionClosed(closed) => {
                if let Some(count) = self.connected.get_mut(&closed.peer_id) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.connected.remove(&closed.peer_id);
                    }
                }
            }
            FromSwarm::NewListenAddr(new) if !self.listen.contains(new.addr) => {
                self.listen.push(new.addr.clone());
                self.addresses_changed();
            }
            FromSwarm::ExpiredListenAddr(expired) => {
                let before = self.listen.len();
                self.listen.retain(|a| a != expired.addr);
                if self.listen.len() != before {
                    self.addresses_changed();
                }
            }
            FromSwarm::ExternalAddrConfirmed(confirmed)
                if !self.external.contains(confirmed.addr) =>
            {
                self.external.push(confirmed.addr.clone());
                self.addresses_changed();
            }
            FromSwarm::ExternalAddrExpired(expired) => {
                let before = self.external.len();
                self.external.retain(|a| a != expired.addr);
                if self.external.len() != before {
                    self.addresses_changed();
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        report: THandlerOutEvent<Self>,
    ) {
        let event = match report {
            Report::Identified { info, .. } if info.public_key.to_peer_id() != peer_id => {
                Event::Error {
                    peer_id,
                    connection_id,
                    error: IdentifyError::Malformed("another peer's public key"),
                }
            }
            Report::Identified {
                mut info,
                pushed,
                remote,
            } => {
                info.listen_addrs.retain(|a| names_peer(a, &peer_id));
                // Candidates come from a connection's first identify only: pushes cannot
                // feed the node's address guesses.
                if !pushed && !info.observed_addr.is_empty() {
                    for candidate in self.candidates(&info.observed_addr) {
                        self.events
                            .push_back(ToSwarm::NewExternalAddrCandidate(candidate));
                    }
                }
                Event::Received {
                    peer_id,
                    connection_id,
                    info,
                    pushed,
                    remote,
                }
            }
            Report::Sent => Event::Sent {
                peer_id,
                connection_id,
            },
            Report::Failed(error) => Event::Error {
                peer_id,
                connection_id,
                error,
            },
        };
        self.events.push_back(ToSwarm::GenerateEvent(event));
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        match self.events.pop_front() {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_address_ending_in_another_peer_is_left_out() {
        let (peer, other) = (PeerId::random(), PeerId::random());
        let tcp: Multiaddr = "/ip4/203.0.113.1/tcp/4001".parse().unwrap();
        assert!(names_peer(&tcp, &peer));
        assert!(names_peer(&tcp.clone().with(Protocol::P2p(peer)), &peer));
        assert!(!names_peer(&tcp.clone().with(Protocol::P2p(other)), &peer));
        let circuit = tcp.with(Protocol::P2p(other)).with(Protocol::P2pCircuit);
        assert!(
            names_peer(&circuit, &peer),
            "a relayed address names its relay"
        );
        assert!(names_peer(
            &circuit.clone().with(Protocol::P2p(peer)),
            &peer
        ));
    }

    #[test]
    fn a_message_with_another_peers_key_is_refused_and_addresses_of_others_left_out() {
        let mut identify = Identify::new(
            &libp2p::identity::Keypair::generate_ed25519().public(),
            IdentifyConfig::new("/x", "y"),
            Arc::default(),
        );
        let key = libp2p::identity::Keypair::generate_ed25519().public();
        let peer = key.to_peer_id();
        let address: Multiaddr = "/ip4/203.0.113.1/tcp/4001".parse().unwrap();
        let info = |public_key: libp2p::identity::PublicKey| Info {
            public_key,
            protocol_version: String::new(),
            agent_version: String::new(),
            listen_addrs: vec![
                address.clone(),
                address.clone().with(Protocol::P2p(PeerId::random())),
            ],
            protocols: vec![],
            observed_addr: Multiaddr::empty(),
            signed_peer_record: None,
        };
        let report = |info| Report::Identified {
            info: Box::new(info),
            pushed: true,
            remote: address.clone(),
        };
        let other = libp2p::identity::Keypair::generate_ed25519().public();
        identify.on_connection_handler_event(
            peer,
            ConnectionId::new_unchecked(1),
            report(info(other)),
        );
        identify.on_connection_handler_event(
            peer,
            ConnectionId::new_unchecked(1),
            report(info(key)),
        );
        let events: Vec<_> = identify.events.drain(..).collect();
        assert!(matches!(
            &events[0],
            ToSwarm::GenerateEvent(Event::Error {
                error: IdentifyError::Malformed(_),
                ..
            })
        ));
        let ToSwarm::GenerateEvent(Event::Received { info, .. }) = &events[1] else {
            panic!("{:?}", events[1]);
        };
        assert_eq!(info.listen_addrs, [address]);
    }

    #[test]
    fn candidates_keep_a_reused_port_and_translate_an_ephemeral_one() {
        let mut identify = Identify::new(
            &libp2p::identity::Keypair::generate_ed25519().public(),
            IdentifyConfig::new("/x", "y"),
            Arc::default(),
        );
        identify.listen = vec![
            "/ip4/10.0.0.2/tcp/4001".parse().unwrap(),
            "/ip4/10.0.0.2/udp/4001/quic-v1".parse().unwrap(),
        ];
        let reused: Multiaddr = "/ip4/203.0.113.7/tcp/4001".parse().unwrap();
        assert_eq!(identify.candidates(&reused), [reused]);
        let ephemeral: Multiaddr = "/ip4/203.0.113.7/tcp/51234".parse().unwrap();
        let translated: Multiaddr = "/ip4/203.0.113.7/tcp/4001".parse().unwrap();
        assert_eq!(identify.candidates(&ephemeral), [translated]);
        let quic: Multiaddr = "/ip4/203.0.113.7/udp/50000/quic-v1".parse().unwrap();
        let translated: Multiaddr = "/ip4/203.0.113.7/udp/4001/quic-v1".parse().unwrap();
        assert_eq!(identify.candidates(&quic), [translated]);
    }
}
