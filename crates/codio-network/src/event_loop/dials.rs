//! Connecting and disconnecting: dials the handles asked for, their outcomes, and the peer
//! table as connections come and go.

use std::collections::HashMap;

use libp2p::{
    Multiaddr, PeerId,
    core::ConnectedPoint,
    swarm::{
        ConnectionId, DialError, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::sync::oneshot;

use super::EventLoop;
use crate::{
    ConnectError, NetworkError, NetworkEvent, behaviour::BehaviourEvent, event::Direction,
};
use codio_base::addr::{peer_id_of, without_p2p};

type DialReply = oneshot::Sender<Result<PeerId, ConnectError>>;

/// A dial a caller waits for; once connected, the peer is watched at `addresses`.
struct PendingDial {
    address: Multiaddr,
    expected: Option<PeerId>,
    addresses: Vec<Multiaddr>,
    reply: DialReply,
}

impl PendingDial {
    fn error(&self, error: DialError, after: std::time::Duration) -> ConnectError {
        ConnectError::from_dial_error(error, self.address.clone(), self.expected, after)
    }
}

/// Dials and connections the loop keeps track of.
#[derive(Default)]
pub(super) struct Dials {
    pending: HashMap<ConnectionId, PendingDial>,
    disconnects: HashMap<PeerId, Vec<oneshot::Sender<Result<(), NetworkError>>>>,
}

impl EventLoop {
    pub(super) fn dial(&mut self, address: Multiaddr, reply: DialReply) {
        let expected = peer_id_of(&address);
        let opts = match expected {
            Some(peer_id) if peer_id == *self.swarm.local_peer_id() => {
                let _ = reply.send(Err(ConnectError::LocalPeerId { address }));
                return;
            }
            Some(peer_id) if self.swarm.is_connected(&peer_id) => {
                self.swarm
                    .behaviour_mut()
                    .policy
                    .watch(peer_id, vec![without_p2p(address)], true);
                let _ = reply.send(Ok(peer_id));
                return;
            }
            Some(peer_id) => {
                // The application asks for this peer: an earlier explicit disconnect no
                // longer applies.
                self.swarm.behaviour_mut().policy.allow_dials(&peer_id);
                DialOpts::peer_id(peer_id)
                    .addresses(vec![address.clone()])
                    .condition(PeerCondition::Always)
                    .build()
            }
            None => DialOpts::unknown_peer_id().address(address.clone()).build(),
        };
        let addresses = vec![without_p2p(address.clone())];
        let pending = PendingDial {
            address,
            expected,
            addresses,
            reply,
        };
        self.dial_with(opts, pending);
    }

    /// Connects to `peer_id` at `addresses` (a DHT lookup found them).
    pub(super) fn dial_peer(
        &mut self,
        peer_id: PeerId,
        addresses: Vec<Multiaddr>,
        reply: DialReply,
    ) {
        self.swarm.behaviour_mut().policy.allow_dials(&peer_id);
        if self.swarm.is_connected(&peer_id) {
            let _ = reply.send(Ok(peer_id));
            return;
        }
        let Some(address) = addresses.first().cloned() else {
            let reason = "no address".to_owned();
            let _ = reply.send(Err(ConnectError::Unreachable {
                address: Multiaddr::empty(),
                reason,
            }));
            return;
        };
        let opts = DialOpts::peer_id(peer_id)
            .addresses(addresses.clone())
            .condition(PeerCondition::Always)
            .build();
        let pending = PendingDial {
            address,
            expected: Some(peer_id),
            addresses,
            reply,
        };
        self.dial_with(opts, pending);
    }

    fn dial_with(&mut self, opts: DialOpts, pending: PendingDial) {
        let connection_id = opts.connection_id();
        tracing::debug!(address = %pending.address, ?connection_id, "dialing");
        if let Err(error) = self.swarm.dial(opts) {
            let error = pending.error(error, self.timeouts.connect);
            let _ = pending.reply.send(Err(error));
            return;
        }
        self.dials.pending.insert(connection_id, pending);
    }

    pub(super) fn disconnect(
        &mut self,
        peer_id: PeerId,
        reply: oneshot::Sender<Result<(), NetworkError>>,
    ) {
        // An explicit disconnect is never undone by reconnection.
        let was_watched = self.swarm.behaviour().policy.is_watched(&peer_id);
        self.swarm.behaviour_mut().policy.unwatch(&peer_id);
        self.swarm.behaviour_mut().discovery.remove_peer(&peer_id);
        if self.swarm.disconnect_peer_id(peer_id).is_ok() {
            tracing::debug!(%peer_id, "disconnecting");
            self.dials
                .disconnects
                .entry(peer_id)
                .or_default()
                .push(reply);
        } else if was_watched {
            // Not connected, but a reconnection was pending: cancelling it is the disconnect.
            let _ = reply.send(Ok(()));
        } else {
            let _ = reply.send(Err(NetworkError::NotConnected(peer_id)));
        }
    }

    /// Handles the connection events of the swarm.
    pub(super) fn on_connection_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.on_established(peer_id, connection_id, endpoint, num_established.get());
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => self.on_closed(peer_id, num_established, cause.map(|c| c.to_string())),
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => self.on_dial_failed(connection_id, peer_id, error),
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => tracing::debug!(%send_back_addr, %error, "incoming connection failed"),
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    fn on_dial_failed(
        &mut self,
        connection_id: ConnectionId,
        peer_id: Option<PeerId>,
        error: DialError,
    ) {
        tracing::debug!(?peer_id, %error, "outgoing connection failed");
        let message = error.to_string();
        if let Some(pending) = self.dials.pending.remove(&connection_id) {
            let error = pending.error(error, self.timeouts.connect);
            let _ = pending.reply.send(Err(error));
        }
        self.emit(NetworkEvent::DialFailed {
            peer_id,
            error: message,
        });
    }

    fn on_established(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        endpoint: ConnectedPoint,
        num_established: u32,
    ) {
        let relayed = endpoint.is_relayed();
        let (address, direction) = match endpoint {
            ConnectedPoint::Dialer { address, .. } => (address, Direction::Outbound),
            ConnectedPoint::Listener { send_back_addr, .. } => (send_back_addr, Direction::Inbound),
        };
        if let Some(pending) = self.dials.pending.remove(&connection_id) {
            // Peers the application asked for are protected and reconnected.
            self.swarm
                .behaviour_mut()
                .policy
                .watch(peer_id, pending.addresses, true);
            let _ = pending.reply.send(Ok(peer_id));
        }
        if num_established == 1 {
            tracing::debug!(%peer_id, %address, ?direction, relayed, "peer connected");
            self.emit(NetworkEvent::PeerConnected {
                peer_id,
                address,
                direction,
                relayed,
            });
        } else if !relayed {
            tracing::info!(%peer_id, %address, ?direction, "direct connection added");
        }
    }

    fn on_closed(&mut self, peer_id: PeerId, remaining: u32, cause: Option<String>) {
        if remaining > 0 {
            return;
        }
        tracing::debug!(%peer_id, ?cause, "peer disconnected");
        for reply in self.dials.disconnects.remove(&peer_id).unwrap_or_default() {
            let _ = reply.send(Ok(()));
        }
        self.emit(NetworkEvent::PeerDisconnected { peer_id, cause });
    }
}
