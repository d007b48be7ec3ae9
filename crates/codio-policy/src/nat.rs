//! NAT traversal as one behaviour: the relay v2 client (reach and be reached through relays),
//! an optional relay server, AutoNAT (am I reachable?), DCUtR (hole punching that upgrades
//! relayed connections to direct ones) and [`autorelay`] (reserve relay
//! slots when private), with the glue between them: AutoNAT's verdict drives AutoRelay,
//! accepted reservations are recorded, configured external addresses are confirmed.
//!
//! The relay client's transport half must be part of the swarm's transport
//! (`codio_transport::build_with_relay` builds both); pass its behaviour half to
//! [`Behaviour::new`]. Feed identify results to [`Behaviour::on_identify`] so relays that
//! advertise the HOP protocol become candidates.
//!
//! ```
//! use codio_policy::nat::{Behaviour, NatConfig};
//! use libp2p::PeerId;
//!
//! // Without the relay client: AutoNAT only (and a relay server if configured).
//! let nat = Behaviour::new(PeerId::random(), &NatConfig::default(), None).unwrap();
//! # let _ = nat;
//! ```

use std::{
    collections::VecDeque,
    sync::{Arc, PoisonError, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use libp2p::{
    Multiaddr, PeerId, autonat,
    core::{Endpoint, transport::PortUse},
    dcutr, identify,
    multiaddr::Protocol,
    relay,
    swarm::{
        ConnectionDenied, ConnectionHandlerSelect, ConnectionId, FromSwarm, NetworkBehaviour,
        THandler, THandlerInEvent, THandlerOutEvent, ToSwarm, behaviour::toggle::Toggle,
    },
};

use crate::{
    InvalidConfig,
    autorelay::{self, Reachability},
};

/// NAT traversal settings.
///
/// | setting | default |
/// |---|---|
/// | `client` | `true`: relay client, automatic reservations when private, DCUtR hole punching |
/// | `relay_server` | `false`: serve as a relay v2 for others (advertised only with a confirmed external address) |
/// | `relay_limits` | [`RelayServerLimits::default`] |
/// | `relays` | none: relays (`/…/p2p/<id>`) to reserve on when private, besides peers that advertise HOP |
/// | `max_relay_reservations` | 2 reservations at once when private |
/// | `external_addrs` | none: addresses known to reach this node, confirmed at once without AutoNAT |
/// | `autonat` | [`AutonatSettings::default`] |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// See the table above.
    pub client: bool,
    /// See the table above.
    pub relay_server: bool,
    /// See the table above.
    pub relay_limits: RelayServerLimits,
    /// See the table above.
    pub relays: Vec<Multiaddr>,
    /// See the table above.
    pub max_relay_reservations: usize,
    /// See the table above.
    pub external_addrs: Vec<Multiaddr>,
    /// See the table above.
    pub autonat: AutonatSettings,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            client: true,
            relay_server: false,
            relay_limits: RelayServerLimits::default(),
            relays: Vec::new(),
            max_relay_reservations: 2,
            external_addrs: Vec::new(),
            autonat: AutonatSettings::default(),
        }
    }
}

impl NatConfig {
    /// Turns the client side (relay client, AutoRelay, DCUtR) on or off.
    pub fn with_client(mut self, enable: bool) -> Self {
        self.client = enable;
        self
    }

    /// Turns the relay server on or off.
    pub fn with_relay_server(mut self, enable: bool) -> Self {
        self.relay_server = enable;
        self
    }

    /// Sets the relays to reserve on when private.
    pub fn with_relays(mut self, relays: Vec<Multiaddr>) -> Self {
        self.relays = relays;
        self
    }

    /// Sets the addresses known to reach this node.
    pub fn with_external_addrs(mut self, addrs: Vec<Multiaddr>) -> Self {
        self.external_addrs = addrs;
        self
    }

    /// Sets the AutoNAT settings.
    pub fn with_autonat(mut self, autonat: AutonatSettings) -> Self {
        self.autonat = autonat;
        self
    }

    /// Checks for values that cannot work.
    ///
    /// # Errors
    ///
    /// The first [`InvalidConfig`] found.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.static_relays().map(drop)
    }

    fn static_relays(&self) -> Result<Vec<(PeerId, Multiaddr)>, InvalidConfig> {
        self.relays
            .iter()
            .map(|address| {
                let mut address = address.clone();
                match address.pop() {
                    Some(Protocol::P2p(peer)) => Ok((peer, address)),
                    _ => Err(crate::invalid(
                        "relays",
                        format!("{address} has no /p2p/<peer id> suffix"),
                    )),
                }
            })
            .collect()
    }
}

/// Resource limits of the relay server (defaults are libp2p's).
///
/// | limit | default |
/// |---|---|
/// | `max_reservations` | 128 reservations in total |
/// | `max_reservations_per_peer` | 4 |
/// | `reservation_duration` | 1 h (clients renew before expiry) |
/// | `max_circuits` | 16 relayed connections at once |
/// | `max_circuits_per_peer` | 4 |
/// | `max_circuit_duration` | 2 min per relayed connection |
/// | `max_circuit_bytes` | 128 KiB per relayed connection (enough for hole punching) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayServerLimits {
    /// Reservations in total.
    pub max_reservations: usize,
    /// Reservations per peer.
    pub max_reservations_per_peer: usize,
    /// How long a reservation lasts unless renewed.
    pub reservation_duration: Duration,
    /// Relayed connections at once.
    pub max_circuits: usize,
    /// Relayed connections per peer.
    pub max_circuits_per_peer: usize,
    /// Lifetime of a relayed connection.
    pub max_circuit_duration: Duration,
    /// Bytes a relayed connection may carry.
    pub max_circuit_bytes: u64,
}

impl Default for RelayServerLimits {
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(60 * 60),
            max_circuits: 16,
            max_circuits_per_peer: 4,
            max_circuit_duration: Duration::from_secs(2 * 60),
            max_circuit_bytes: 1 << 17,
        }
    }
}

impl RelayServerLimits {
    /// The libp2p relay configuration with these limits (and libp2p's default rate limits).
    fn relay_config(&self) -> relay::Config {
        relay::Config {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            reservation_duration: self.reservation_duration,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.max_circuit_duration,
            max_circuit_bytes: self.max_circuit_bytes,
            ..relay::Config::default()
        }
    }
}

/// AutoNAT (v1) settings: how the node learns whether it is publicly reachable, by asking
/// connected peers to dial it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutonatSettings {
    /// Delay before the first probe. Default 15 s.
    pub boot_delay: Duration,
    /// Probe interval while the status is unknown or not yet confident. Default 90 s.
    pub retry_interval: Duration,
    /// Probe interval once confident. Default 15 min.
    pub refresh_interval: Duration,
    /// Only probe through peers seen at global IP addresses and only serve such peers.
    /// Default `true`; private deployments (one LAN, a lab) turn it off.
    pub only_global_ips: bool,
}

impl Default for AutonatSettings {
    fn default() -> Self {
        Self {
            boot_delay: Duration::from_secs(15),
            retry_interval: Duration::from_secs(90),
            refresh_interval: Duration::from_secs(15 * 60),
            only_global_ips: true,
        }
    }
}

impl AutonatSettings {
    fn autonat_config(&self) -> autonat::v1::Config {
        autonat::v1::Config {
            boot_delay: self.boot_delay,
            retry_interval: self.retry_interval,
            refresh_interval: self.refresh_interval,
            only_global_ips: self.only_global_ips,
            // Probes go to distinct servers; in small deployments one server is all there is.
            throttle_server_period: self.retry_interval.min(Duration::from_secs(90)),
            ..autonat::v1::Config::default()
        }
    }
}

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
/// with the glue between them (see [`nat`](crate::nat)).
#[derive(Debug)]
pub struct Behaviour {
    inner: Inner,
    stats: crate::Stats,
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
            stats: crate::Stats::default(),
            status: SharedStatus::default(),
            external: config.external_addrs.iter().cloned().collect(),
            events: VecDeque::new(),
        })
    }

    /// Counts hole punches into `stats` (the policy's, so one [`Stats`](crate::Stats) covers
    /// the layer) instead of a private one.
    pub fn with_stats(mut self, stats: crate::Stats) -> Self {
        self.stats = stats;
        self
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
                tracing::info!(relay = %relay_peer_id, renewal, "relay reservation accepted");
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
                let counter = match result {
                    Ok(_) => crate::Counter::HolePunchesOk,
                    Err(_) => crate::Counter::HolePunchesFailed,
                };
                self.stats.count(counter);
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
        tracing::info!(?status, "NAT status");
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
            tracing::info!(%peer_id, "hole punch succeeded: direct connection");
            Event::HolePunchSucceeded { peer_id }
        }
        Err(error) => {
            tracing::info!(%peer_id, %error, "hole punch failed");
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

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
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
