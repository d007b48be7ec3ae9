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
    Control, Counters, IncomingStreams, OpenReply, OpenRequest, OpenStreamError, StreamsConfig,
    handler::Handler,
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
    dialing: HashMap<PeerId, Vec<OpenReply>>,
    events: VecDeque<ToSwarm<(), OpenReply>>,
}

impl Behaviour {
    /// The behaviour, the control that opens streams and the inbound streams.
    pub fn new(config: StreamsConfig) -> (Self, Control, IncomingStreams) {
        let (inbound, receiver) = mpsc::channel(config.inbound_capacity);
        let (request_tx, requests) = mpsc::channel(config.open_capacity);
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

    fn route(&mut self, peer: PeerId, reply: OpenReply) {
        if let Some(connection) = self.connections.get(&peer).and_then(|c| c.first()) {
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(*connection),
                event: reply,
            });
            return;
        }
        let waiting = self.dialing.entry(peer).or_default();
        waiting.push(reply);
        if waiting.len() == 1 {
            self.events.push_back(ToSwarm::Dial {
                opts: DialOpts::peer_id(peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
            });
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
                if let Some(connections) = self.connections.get_mut(&closed.peer_id) {
                    connections.retain(|c| *c != closed.connection_id);
                    if connections.is_empty() {
                        self.connections.remove(&closed.peer_id);
                    }
                }
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
                for reply in self.dialing.remove(&peer).unwrap_or_default() {
                    let _ = reply.send(Err(OpenStreamError::Dial(failure.error.to_string())));
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
            match self.requests.poll_recv(cx) {
                Poll::Ready(Some(OpenRequest { peer, reply })) => self.route(peer, reply),
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
        behaviour.route(peer, reply);
        failure(
            &mut behaviour,
            peer,
            &DialError::DialPeerConditionFalse(PeerCondition::DisconnectedAndNotDialing),
        );
        assert!(rx.try_recv().is_err(), "still waiting");
        failure(&mut behaviour, peer, &DialError::NoAddresses);
        assert!(matches!(rx.try_recv(), Ok(Err(OpenStreamError::Dial(_)))));
    }
}
