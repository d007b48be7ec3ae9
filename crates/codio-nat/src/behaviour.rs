//! The NAT behaviour: relay client and server, AutoNAT, DCUtR and AutoRelay driven as one (see
//! the crate documentation).

use std::{
    collections::VecDeque,
    sync::{Arc, PoisonError, RwLock},
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId, autonat, dcutr, identify, relay,
    swarm::{
        ConnectionHandlerSelect, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, ToSwarm, behaviour::toggle::Toggle,
    },
};

use crate::{
    InvalidConfig, NatConfig, Stats,
    autorelay::{self, Reachability},
};

/// Whether the node is reachable from outside, as AutoNAT found out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "status", rename_all = "lowercase"))]
#[non_exhaustive]
pub enum NatStatus {
    /// Not known yet.
    #[default]
    Unknown,
    /// Publicly reachable at `address`.
    Public {
        /// The address peers dialed back successfully.
        address: Multiaddr,
    },
    /// Behind a NAT or firewall: reachable through relays only.
    Private,
}

/// The current [`NatStatus`], readable from any task: a clone of the one the
/// [`Behaviour`] writes (see [`Behaviour::status`]).
#[derive(Debug, Clone, Default)]
pub struct SharedStatus(Arc<RwLock<NatStatus>>);

impl SharedStatus {
    /// AutoNAT's current verdict.
    pub fn get(&self) -> NatStatus {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, status: NatStatus) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = status;
    }
}

/// What NAT traversal reports.
///
/// With the `serde` feature, serialized as an object tagged by `event` (`nat_status` with the
/// status's fields, `relay_reservation`, `hole_punch_succeeded`, `hole_punch_failed`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "event", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Event {
    /// AutoNAT's verdict on this node's reachability changed.
    #[cfg_attr(feature = "serde", serde(rename = "nat_status"))]
    StatusChanged(NatStatus),
    /// A relay accepted (or renewed) this node's reservation.
    #[cfg_attr(feature = "serde", serde(rename = "relay_reservation"))]
    ReservationAccepted {
        /// The relay.
        relay: PeerId,
        /// Whether this renewed an existing reservation.
        renewal: bool,
    },
    /// Hole punching upgraded a relayed connection to a direct one.
    HolePunchSucceeded {
        /// The peer.
        peer_id: PeerId,
    },
    /// Hole punching failed; the connection stays relayed.
    HolePunchFailed {
        /// The peer.
        peer_id: PeerId,
        /// Why.
        error: String,
    },
}

/// The behaviours this one drives.
#[derive(libp2p::swarm::NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub(crate) struct Inner {
    relay_client: Toggle<relay::client::Behaviour>,
    relay_server: Toggle<relay::Behaviour>,
    autonat: autonat::v1::Behaviour,
    dcutr: Toggle<dcutr::Behaviour>,
    autorelay: Toggle<autorelay::Behaviour>,
}

/// NAT traversal in one behaviour: relay client and server, AutoNAT, DCUtR and AutoRelay,
/// with the glue between them (see the [crate] documentation).
#[derive(Debug)]
pub struct Behaviour {
    inner: Inner,
    stats: Stats,
    status: SharedStatus,
    /// Configured external addresses, confirmed on the first poll.
    external: VecDeque<Multiaddr>,
    events: VecDeque<Event>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("relay_client", &self.relay_client.is_enabled())
            .field("relay_server", &self.relay_server.is_enabled())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// NAT traversal for `local_peer_id`. `relay_client` is the behaviour half of the relay
    /// client transport; the client side (AutoRelay, DCUtR) runs only with it and
    /// [`NatConfig::client`] on.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] for a relay address without `/p2p/<id>`.
    pub fn new(
        local_peer_id: PeerId,
        config: &NatConfig,
        relay_client: Option<relay::client::Behaviour>,
    ) -> Result<Self, InvalidConfig> {
        let static_relays = config.static_relays()?;
        let relay_client = relay_client.filter(|_| config.client);
        let client = relay_client.is_some();
        let inner = Inner {
            relay_client: relay_client.into(),
            relay_server: config
                .relay_server
                .then(|| relay::Behaviour::new(local_peer_id, config.relay_limits.relay_config()))
                .into(),
            autonat: autonat::v1::Behaviour::new(local_peer_id, config.autonat.autonat_config()),
            dcutr: client.then(|| dcutr::Behaviour::new(local_peer_id)).into(),
            autorelay: client
                .then(|| autorelay::Behaviour::new(config.max_relay_reservations, static_relays))
                .into(),
        };
        Ok(Self {
            inner,
            stats: Stats::default(),
            status: SharedStatus::default(),
            external: config.external_addrs.iter().cloned().collect(),
            events: VecDeque::new(),
        })
    }

    /// What this behaviour counted (clones share the counters).
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// A handle to AutoNAT's current verdict (updated before [`Event::StatusChanged`]).
    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// Feeds an identify result: relays advertising HOP become reservation candidates.
    pub fn on_identify(&mut self, peer: PeerId, info: &identify::Info) {
        if let Some(autorelay) = self.inner.autorelay.as_mut() {
            autorelay.on_identify(peer, info);
        }
    }

    fn on_inner_event(&mut self, event: InnerEvent) {
        let event = match event {
            InnerEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            }) => {
                tracing::debug!(relay = %relay_peer_id, renewal, "relay reservation accepted");
                if let Some(autorelay) = self.inner.autorelay.as_mut() {
                    autorelay.on_accepted(&relay_peer_id);
                }
                Event::ReservationAccepted {
                    relay: relay_peer_id,
                    renewal,
                }
            }
            InnerEvent::Autonat(autonat::v1::Event::StatusChanged { new, .. }) => {
                self.on_status(new)
            }
            InnerEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => {
                self.stats.record_hole_punch(result.is_ok());
                hole_punch_event(remote_peer_id, result)
            }
            other => {
                tracing::debug!(?other, "nat traversal");
                return;
            }
        };
        self.events.push_back(event);
    }

    fn on_status(&mut self, new: autonat::v1::NatStatus) -> Event {
        let (status, reachability) = match new {
            autonat::v1::NatStatus::Public(address) => {
                (NatStatus::Public { address }, Reachability::Public)
            }
            autonat::v1::NatStatus::Private => (NatStatus::Private, Reachability::Private),
            autonat::v1::NatStatus::Unknown => (NatStatus::Unknown, Reachability::Unknown),
        };
        tracing::debug!(?status, "NAT status");
        self.status.set(status.clone());
        if let Some(autorelay) = self.inner.autorelay.as_mut() {
            autorelay.set_reachability(reachability);
        }
        Event::StatusChanged(status)
    }
}

fn hole_punch_event(peer_id: PeerId, result: Result<ConnectionId, dcutr::Error>) -> Event {
    match result {
        Ok(_) => {
            tracing::debug!(%peer_id, "hole punch succeeded: direct connection");
            Event::HolePunchSucceeded { peer_id }
        }
        Err(error) => {
            tracing::debug!(%peer_id, %error, "hole punch failed");
            Event::HolePunchFailed {
                peer_id,
                error: error.to_string(),
            }
        }
    }
}

// What the derive builds for the private `Inner`, spelled out.
type NatHandler = ConnectionHandlerSelect<
    ConnectionHandlerSelect<
        ConnectionHandlerSelect<
            ConnectionHandlerSelect<
                THandler<Toggle<relay::client::Behaviour>>,
                THandler<Toggle<relay::Behaviour>>,
            >,
            THandler<autonat::v1::Behaviour>,
        >,
        THandler<Toggle<dcutr::Behaviour>>,
    >,
    THandler<Toggle<autorelay::Behaviour>>,
>;

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = NatHandler;
    type ToSwarm = Event;

    codio_base::delegate_to!(inner);

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.inner.on_swarm_event(event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let Some(address) = self.external.pop_front() {
            tracing::info!(%address, "external address (configured)");
            return Poll::Ready(ToSwarm::ExternalAddrConfirmed(address));
        }
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(event));
            }
            match self.inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(ToSwarm::GenerateEvent(event)) => self.on_inner_event(event),
                Poll::Ready(action) => {
                    // Invariant: only `GenerateEvent` carries an event, matched above.
                    return Poll::Ready(action.map_out(|_| unreachable!("matched above")));
                }
            }
        }
    }
}
