//! NAT traversal settings: what runs, the relay server's limits, AutoNAT's schedule.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId, autonat, multiaddr::Protocol, relay};

use crate::InvalidConfig;

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

    pub(crate) fn static_relays(&self) -> Result<Vec<(PeerId, Multiaddr)>, InvalidConfig> {
        self.relays
            .iter()
            .map(|address| {
                let mut address = address.clone();
                match address.pop() {
                    Some(Protocol::P2p(peer)) => Ok((peer, address)),
                    _ => Err(InvalidConfig::new(
                        "nat",
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
    pub(crate) fn relay_config(&self) -> relay::Config {
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
    pub(crate) fn autonat_config(&self) -> autonat::v1::Config {
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
