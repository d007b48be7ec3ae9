//! Addresses: the node's listeners, and what identify tells about peers.

use codio_discovery::identify::Event as IdentifyEvent;
use codio_transport::listen::{Listening, Need};
use libp2p::{Multiaddr, core::transport::ListenerId, swarm::SwarmEvent};
use tokio::sync::oneshot;

use super::EventLoop;
use crate::{NetworkError, NetworkEvent, behaviour::BehaviourEvent};

type ListenReply = oneshot::Sender<Result<Vec<Multiaddr>, NetworkError>>;

/// The node's listeners and the caller waiting for them to start.
#[derive(Default)]
pub(super) struct Listens {
    starting: Option<(Listening, ListenReply)>,
    listeners: Vec<ListenerId>,
}

impl EventLoop {
    /// Listens on `addresses`, then starts discovery and dials the peers the policy keeps.
    pub(super) fn start(&mut self, addresses: Vec<(Multiaddr, Need)>, reply: ListenReply) {
        let mut listening = Listening::default();
        for (address, need) in addresses {
            match self.swarm.listen_on(address.clone()) {
                Ok(id) => {
                    self.listens.listeners.push(id);
                    listening.expect(id, address, need);
                }
                Err(error) => listening.refused(address, need, error.to_string()),
            }
        }
        if !self.listens.listeners.is_empty() {
            self.swarm.behaviour_mut().discovery.start();
            self.swarm.behaviour_mut().policy.dial_watched();
        }
        self.listens.starting = Some((listening, reply));
        self.answer_start();
    }

    /// Answers the start once every listener reported an address or failed.
    fn answer_start(&mut self) {
        let Some(Some(outcome)) = self.listens.starting.as_ref().map(|(l, _)| l.outcome()) else {
            return;
        };
        let Some((listening, reply)) = self.listens.starting.take() else {
            return;
        };
        for failure in listening.failures() {
            tracing::warn!(address = %failure.address, reason = %failure.reason, need = ?failure.need, "cannot listen");
        }
        let outcome = outcome.map_err(|f| NetworkError::Listen {
            address: f.address,
            reason: f.reason,
        });
        let _ = reply.send(outcome);
    }

    pub(super) fn remove_listeners(&mut self) {
        for id in std::mem::take(&mut self.listens.listeners) {
            self.swarm.remove_listener(id);
        }
    }

    /// Handles the listener events of the swarm (and logs the rest).
    pub(super) fn on_listen_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::debug!(%address, "listening");
                self.listen_addrs.added(&address);
                if let Some((listening, _)) = &mut self.listens.starting {
                    listening.bound(listener_id, address.clone());
                    self.answer_start();
                }
                self.emit(NetworkEvent::Listening { address });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::debug!(%address, "no longer listening");
                self.listen_addrs.removed(std::slice::from_ref(&address));
                self.emit(NetworkEvent::ListenAddressExpired { address });
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => self.on_listener_closed(listener_id, &addresses, reason),
            SwarmEvent::ListenerError { listener_id, error } => {
                tracing::warn!(?listener_id, %error, "listener error");
            }
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    fn on_listener_closed(
        &mut self,
        listener_id: ListenerId,
        addresses: &[Multiaddr],
        reason: Result<(), std::io::Error>,
    ) {
        tracing::info!(?addresses, ?reason, "listener closed");
        self.listens.listeners.retain(|id| *id != listener_id);
        self.listen_addrs.removed(addresses);
        if let Some((listening, _)) = &mut self.listens.starting {
            let reason = reason.map_or_else(|e| e.to_string(), |()| "listener closed".into());
            listening.closed(listener_id, reason);
            self.answer_start();
        }
    }

    /// Identify results: the peer table, the DHT's addresses and relay candidates.
    pub(super) fn on_identify_event(&mut self, event: IdentifyEvent) {
        let IdentifyEvent::Received {
            peer_id,
            connection_id,
            info,
            pushed,
            remote,
        } = event
        else {
            if let IdentifyEvent::Error { peer_id, error, .. } = &event {
                tracing::debug!(%peer_id, %error, "identify failed");
            }
            return;
        };
        // A push that left the addresses out (they did not change) changes none.
        if pushed && info.listen_addrs.is_empty() {
            return;
        }
        // Rate-limited and capped by discovery: a flood of identify pushes stops here.
        let discovery = &mut self.swarm.behaviour_mut().discovery;
        let Some(addresses) = discovery.on_identify(peer_id, &info, &remote) else {
            return;
        };
        if let Some(metrics) = &self.metrics {
            metrics.on_identify(connection_id, peer_id, &info);
        }
        tracing::debug!(%peer_id, agent = %info.agent_version, "identified");
        for address in addresses {
            self.swarm.add_peer_address(peer_id, address);
        }
        let behaviour = self.swarm.behaviour_mut();
        behaviour.policy.on_identify(&peer_id, &info);
        behaviour.nat.on_identify(peer_id, &info);
        self.emit(NetworkEvent::PeerIdentified {
            peer_id,
            agent_version: info.agent_version,
            listen_addrs: info.listen_addrs,
        });
    }
}
