//! The [`NetworkBehaviour`] routing open requests to connections.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId, Stream,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, DialError, FromSwarm, NetworkBehaviour, NotifyHandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::sync::mpsc;

use super::{
    Control, Counters, IncomingStreams, OpenRequest, OpenStreamError, Pending, Returned,
    StreamsConfig, handler::Handler,
};

/// Opens and accepts streams of one protocol; see the [module docs](super).
#[derive(Debug)]
pub struct Behaviour {
    config: StreamsConfig,
    inbound: mpsc::Sender<(PeerId, Stream)>,
    requests: mpsc::Receiver<OpenRequest>,
    counters: Arc<Counters>,
    /// Established connections per peer; streams go to the first.
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// Open requests waiting for a dial to finish. Bounded: requests come from the bounded
    /// request queue, and each waiting caller holds one.
    dialing: HashMap<PeerId, Vec<Pending>>,
    events: VecDeque<ToSwarm<(), Pending>>,
    /// Opens their connection dropped unanswered (see [`Pending`]); bounded like the
    /// request queue, whose callers they are.
    returned: (mpsc::Sender<Returned>, mpsc::Receiver<Returned>),
}

impl Behaviour {
    /// The behaviour, the control that opens streams and the inbound streams.
    pub fn new(config: StreamsConfig) -> (Self, Control, IncomingStreams) {
        let (inbound, receiver) = mpsc::channel(config.inbound_capacity);
        let (request_tx, requests) = mpsc::channel(config.open_capacity);
        let returned = mpsc::channel(config.open_capacity);
        let counters = Arc::new(Counters::default());
        let control = Control {
            requests: request_tx,
            counters: counters.clone(),
        };
        let behaviour = Self {
            config,
            inbound,
            requests,
            counters,
            connections: HashMap::new(),
            dialing: HashMap::new(),
            events: VecDeque::new(),
            returned,
        };
        (behaviour, control, IncomingStreams { receiver })
    }

    fn handler(&self, peer: PeerId) -> Handler {
        Handler::new(
            peer,
            self.config.protocol.clone(),
            self.inbound.clone(),
            self.counters.clone(),
        )
    }

    /// Sends `open` to the peer's first connection, or dials the peer. The dial is skipped
    /// only while another dial to the peer is under way: a connection this behaviour no longer
    /// counts (lost while a stream was negotiated on it) may not be closed yet.
    fn route(&mut self, peer: PeerId, mut open: Pending) {
        if let Some(connection) = self.connections.get(&peer).and_then(|c| c.first()) {
            if !open.rerouted {
                open.back = Some((self.returned.0.clone(), peer, *connection));
            }
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(*connection),
                event: open,
            });
            return;
        }
        let waiting = self.dialing.entry(peer).or_default();
        waiting.push(open);
        if waiting.len() == 1 {
            self.events.push_back(ToSwarm::Dial {
                opts: DialOpts::peer_id(peer)
                    .condition(PeerCondition::NotDialing)
                    .build(),
            });
        }
    }

    /// Forgets `connection` of `peer` (closed, or lost under a stream).
    fn forget(&mut self, peer: &PeerId, connection: ConnectionId) {
        if let Some(connections) = self.connections.get_mut(peer) {
            connections.retain(|c| *c != connection);
            if connections.is_empty() {
                self.connections.remove(peer);
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = ();

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<Handler, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<Handler, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(established) => {
                let peer = established.peer_id;
                self.connections
                    .entry(peer)
                    .or_default()
                    .push(established.connection_id);
                for reply in self.dialing.remove(&peer).unwrap_or_default() {
                    self.route(peer, reply);
                }
            }
            FromSwarm::ConnectionClosed(closed) => {
                self.forget(&closed.peer_id, closed.connection_id);
            }
            FromSwarm::DialFailure(failure) => {
                let Some(peer) = failure.peer_id else {
                    return;
                };
                // A dial skipped because the peer is already being dialed (ours or another
                // behaviour's) says nothing: the dial under way decides.
                if self.connections.contains_key(&peer)
                    || matches!(failure.error, DialError::DialPeerConditionFalse(_))
                {
                    return;
                }
                for open in self.dialing.remove(&peer).unwrap_or_default() {
                    let error = OpenStreamError::Dial(failure.error.to_string());
                    open.send(Err(error));
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

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<(), THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            if let Poll::Ready(Some(Returned {
                peer,
                connection,
                open,
            })) = self.returned.1.poll_recv(cx)
            {
                // The connection dropped an open unanswered: it is closing, or lost.
                self.forget(&peer, connection);
                self.route(peer, open);
                continue;
            }
            match self.requests.poll_recv(cx) {
                Poll::Ready(Some(OpenRequest { peer, reply })) => {
                    self.route(peer, Pending::new(reply));
                }
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use libp2p::{StreamProtocol, swarm::DialFailure};
    use tokio::sync::oneshot;

    use super::*;

    fn failure(behaviour: &mut Behaviour, peer: PeerId, error: &DialError) {
        behaviour.on_swarm_event(FromSwarm::DialFailure(DialFailure {
            peer_id: Some(peer),
            error,
            connection_id: ConnectionId::new_unchecked(1),
        }));
    }

    /// Only a real dial failure fails the opens waiting for the peer; a dial skipped because
    /// another is under way does not.
    #[test]
    fn opens_wait_through_skipped_dials_and_fail_with_real_ones() {
        let (mut behaviour, _control, _incoming) =
            Behaviour::new(StreamsConfig::new(StreamProtocol::new("/t/1")));
        let peer = PeerId::random();
        let (reply, mut rx) = oneshot::channel();
        behaviour.route(peer, Pending::new(reply));
        failure(
            &mut behaviour,
            peer,
            &DialError::DialPeerConditionFalse(PeerCondition::DisconnectedAndNotDialing),
        );
        assert!(rx.try_recv().is_err(), "still waiting");
        failure(&mut behaviour, peer, &DialError::NoAddresses);
        assert!(matches!(rx.try_recv(), Ok(Err(OpenStreamError::Dial(_)))));
    }

    fn established(behaviour: &mut Behaviour, peer: PeerId, id: usize) -> ConnectionId {
        let connection_id = ConnectionId::new_unchecked(id);
        let endpoint = libp2p::core::ConnectedPoint::Dialer {
            address: "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        };
        behaviour.on_swarm_event(FromSwarm::ConnectionEstablished(
            libp2p::swarm::behaviour::ConnectionEstablished {
                peer_id: peer,
                connection_id,
                endpoint: &endpoint,
                failed_addresses: &[],
                other_established: 0,
            },
        ));
        connection_id
    }

    /// An open its connection drops unanswered (closing, or lost while negotiating) goes to
    /// the peer's other connection; with none left, the peer is dialed even though the lost
    /// connection may not be closed yet; dropped a second time, the caller is told.
    #[test]
    fn an_open_its_connection_drops_is_routed_again() {
        let (mut behaviour, _control, _incoming) =
            Behaviour::new(StreamsConfig::new(StreamProtocol::new("/t/1")));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let peer = PeerId::random();
        let (first, second) = (
            established(&mut behaviour, peer, 1),
            established(&mut behaviour, peer, 2),
        );
        let (reply, mut rx) = oneshot::channel();
        behaviour.route(peer, Pending::new(reply));
        let sent_to = |event: Poll<ToSwarm<(), Pending>>| match event {
            Poll::Ready(ToSwarm::NotifyHandler {
                handler: NotifyHandler::One(c),
                event,
                ..
            }) => (c, event),
            _ => panic!("not sent to a connection"),
        };
        let (to, open) = sent_to(behaviour.poll(&mut cx));
        assert_eq!(to, first);
        drop(open); // The first connection closes with the open queued.
        let (to, open) = sent_to(behaviour.poll(&mut cx));
        assert_eq!(to, second, "routed again, to the other connection");
        assert!(rx.try_recv().is_err(), "the caller still waits");
        drop(open); // Dropped again: the caller is told.
        assert!(behaviour.poll(&mut cx).is_pending());
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        // With no connection left, a returned open dials.
        let (reply, _rx) = oneshot::channel();
        behaviour.forget(&peer, second);
        let third = established(&mut behaviour, peer, 3);
        behaviour.route(peer, Pending::new(reply));
        let (to, open) = sent_to(behaviour.poll(&mut cx));
        assert_eq!(to, third);
        drop(open);
        assert!(matches!(
            behaviour.poll(&mut cx),
            Poll::Ready(ToSwarm::Dial { .. })
        ));
        assert_eq!(behaviour.dialing.get(&peer).map(Vec::len), Some(1));
    }
}
