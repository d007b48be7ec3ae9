//! [`NetworkConfig`]: the seed's five settings plus the layers' own configurations.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::Duration,
};

use codio_base::Edit;
use codio_discovery::DiscoveryConfig;
use codio_nat::NatConfig;
use codio_policy::{LimitsConfig, PolicyConfig};
use codio_protocol::ProtocolConfig;
use codio_pubsub::PubsubConfig;
use codio_transport::TransportConfig;
use libp2p::{Multiaddr, identity::Keypair};

use crate::NetworkError;

/// Configuration of a codio network node.
///
/// The first five fields and their defaults are the seed API (`listen_port: 0`, `max_peers: 50`,
/// `bootstrap_peers: vec![]`, `enable_mdns: true`, `enable_relay: true`). Each layer brings its own
/// configuration, with its defaults and validation written once, in the layer:
/// [`transport`](Self::transport), [`discovery`](Self::discovery), [`policy`](Self::policy),
/// [`nat`](Self::nat), [`protocol`](Self::protocol), [`pubsub`](Self::pubsub).
///
/// Three seed fields name a layer setting: `max_peers` is the policy's `max_established`,
/// `enable_mdns` the discovery's mDNS switch, `enable_relay` the NAT client. Their defaults
/// *are* the layers' defaults, and the two cannot disagree: the one set away from the default
/// is what runs, whichever it is, and setting both to different values is refused by
/// [`NetworkManager::new`](crate::NetworkManager::new) ([`NetworkError::InvalidConfig`] naming
/// both). `bootstrap_peers` adds to the discovery's bootstrap peers (both lists are dialed,
/// kept connected by the policy and used for the DHT bootstrap).
///
/// ```
/// use codio_network::{Edit, NetworkConfig, policy::PolicyConfig};
/// use std::time::Duration;
///
/// let mut config = NetworkConfig {
///     listen_port: 4001,
///     ..NetworkConfig::default()
/// }
/// .with_listen_ip("127.0.0.1".parse().unwrap());
/// config.policy = PolicyConfig::default()
///     .with_liveness(Duration::from_secs(5), Duration::from_secs(10), 3);
/// assert_eq!(config.max_peers, 50);
/// // A layer's setting is edited in place; the seed field left at its default yields to it.
/// config.policy.limits_mut().edit(|limits| limits.with_max_established(20));
/// config.discovery.edit(|discovery| discovery.with_mdns(false));
/// ```
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Port to listen on (TCP, and UDP for QUIC); `0` lets the OS pick. Default `0`.
    pub listen_port: u16,
    /// Maximum number of established connections (the policy's `max_established`). Default `50`.
    pub max_peers: usize,
    /// Peers to join the network through (`/ip4/…/tcp/…/p2p/…`): the DHT's bootstrap peers, dialed
    /// at start, protected and reconnected with backoff. Default empty.
    pub bootstrap_peers: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS and dial them. Default `true`.
    pub enable_mdns: bool,
    /// NAT traversal for this node as a client: the relay v2 client transport (so `/p2p-circuit`
    /// addresses can be dialed and listened on), automatic reservations on relays when AutoNAT
    /// finds the node private, and DCUtR hole punching to upgrade relayed connections to direct
    /// ones. Default `true`.
    pub enable_relay: bool,
    /// IP address to listen on. Default `0.0.0.0`: every interface, IPv4 and IPv6 (`::` too).
    pub listen_ip: IpAddr,
    /// Addresses to listen on, each required (`/ip4/…/tcp/…`, `/ip6/…/udp/…/quic-v1`, …);
    /// when set, `listen_ip` and `listen_port` are not used. Default empty: TCP and QUIC on
    /// `listen_ip:listen_port` (see [`listen_plan`](Self::listen_plan)).
    pub listen_addrs: Vec<Multiaddr>,
    /// The node's identity. Default `None`: a fresh Ed25519 keypair is generated.
    pub keypair: Option<Keypair>,
    /// How long a connection the policy does not keep alive stays open while no protocol uses
    /// it: a *surplus* connection (a second connection to a peer: simultaneous dials, AutoNAT
    /// dial-backs, a relayed connection once a direct one exists), and, above the low
    /// watermark, the connections of unprotected peers beyond it (the ones DHT lookups open).
    /// Below the low watermark every peer's primary connection is kept alive whatever this
    /// says, so quiet peers stay connected (libp2p's own default closes every quiet
    /// connection after 10 s). Default 30 s; `None`: such connections are never closed.
    pub idle_timeout: Option<Duration>,
    /// Peers to keep connected like bootstrap peers (dialed at start, protected, reconnected with
    /// backoff), without using them for the DHT bootstrap. Default empty.
    pub reserved_peers: Vec<Multiaddr>,
    /// Transport settings (timeouts, Yamux, TCP). Default [`TransportConfig::default`].
    pub transport: TransportConfig,
    /// Discovery settings (mDNS, Kademlia). Default [`DiscoveryConfig::default`].
    pub discovery: DiscoveryConfig,
    /// Connection policy (limits, watermarks, reconnection, liveness). Default
    /// [`PolicyConfig::default`].
    pub policy: PolicyConfig,
    /// NAT traversal (relay, AutoNAT, hole punching). Default [`NatConfig::default`].
    pub nat: NatConfig,
    /// Requests and bulk transfers. Default [`ProtocolConfig::default`].
    pub protocol: ProtocolConfig,
    /// Publish/subscribe (gossipsub). Default [`PubsubConfig::default`].
    pub pubsub: PubsubConfig,
    /// Capacity of the event broadcast channel; a subscriber that falls further behind misses
    /// events and is told how many. Default 1024.
    pub event_buffer: usize,
    /// Capacity of the command queue between handles and the event loop. Default 64.
    pub command_buffer: usize,
    /// How long [`NetworkManager::shutdown`](crate::NetworkManager::shutdown) waits for connections
    /// to close gracefully. Default 5 s.
    pub shutdown_timeout: Duration,
    /// Registry to record Prometheus metrics in (libp2p's and codio's; see
    /// [`metrics`](crate::metrics)). Default `None`: no metrics are kept.
    pub metrics: Option<Arc<Mutex<libp2p::metrics::Registry>>>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen_port: 0,
            // The seed's defaults are the layers' own (50, true, true), written once there.
            max_peers: LimitsConfig::default().max_established(),
            bootstrap_peers: vec![],
            enable_mdns: DiscoveryConfig::default().mdns_enabled(),
            enable_relay: NatConfig::default().client,
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            listen_addrs: vec![],
            keypair: None,
            idle_timeout: Some(Duration::from_secs(30)),
            reserved_peers: vec![],
            transport: TransportConfig::default(),
            discovery: DiscoveryConfig::default(),
            policy: PolicyConfig::default(),
            nat: NatConfig::default(),
            protocol: ProtocolConfig::default(),
            pubsub: PubsubConfig::default(),
            event_buffer: 1024,
            command_buffer: 64,
            shutdown_timeout: Duration::from_secs(5),
            metrics: None,
        }
    }
}

/// The layers' configurations with the seed fields applied: what the node is built from.
#[derive(Debug)]
pub(crate) struct Layers {
    /// The peers to keep connected: the seed's and the discovery's bootstrap peers, then the
    /// reserved ones (each `/…/p2p/<id>`).
    pub(crate) kept: Vec<Multiaddr>,
    pub(crate) discovery: DiscoveryConfig,
    pub(crate) policy: PolicyConfig,
    pub(crate) nat: NatConfig,
    pub(crate) pubsub: PubsubConfig,
}

/// The value of a setting the seed and a layer both name: the one set away from the layer's
/// `default` (the seed's default is the same), or either when they agree; both set to
/// different values cannot both run.
fn settle<T: PartialEq + std::fmt::Debug>(
    (seed_name, seed): (&'static str, T),
    (layer_name, layer): (&'static str, T),
    default: T,
) -> Result<T, NetworkError> {
    if seed == layer || seed == default {
        Ok(layer)
    } else if layer == default {
        Ok(seed)
    } else {
        Err(invalid(
            seed_name,
            format!("{seed:?} disagrees with {layer_name} = {layer:?}: set one of the two"),
        ))
    }
}

pub(crate) fn invalid(field: &'static str, reason: impl std::fmt::Display) -> NetworkError {
    codio_base::InvalidConfig::new("network", field, reason.to_string()).into()
}

/// `with_*` setters that set one field each and return the configuration.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($field:ident: $ty:ty);)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, $field: $ty) -> Self {
            self.$field = $field;
            self
        }
    )*};
}

impl NetworkConfig {
    /// A node for this host only (examples, tests, a local lab): listens on `127.0.0.1`, no
    /// mDNS (it would announce the node to the LAN) and no relay client; the rest as
    /// [`default`](Self::default).
    pub fn loopback() -> Self {
        Self {
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            enable_mdns: false,
            enable_relay: false,
            ..Self::default()
        }
    }

    setters! {
        /// Sets the listen port.
        with_listen_port(listen_port: u16);
        /// Sets the listen IP address.
        with_listen_ip(listen_ip: IpAddr);
        /// Sets the addresses to listen on (replacing `listen_ip` and `listen_port`).
        with_listen_addrs(listen_addrs: Vec<Multiaddr>);
        /// Sets the maximum number of established connections.
        with_max_peers(max_peers: usize);
        /// Sets the bootstrap peers.
        with_bootstrap_peers(bootstrap_peers: Vec<Multiaddr>);
        /// Enables or disables mDNS.
        with_mdns(enable_mdns: bool);
        /// Enables or disables the NAT traversal client (relay client, AutoRelay, DCUtR).
        with_relay(enable_relay: bool);
        /// Sets the idle timeout of connections not kept alive (`None`: never close them).
        with_idle_timeout(idle_timeout: Option<Duration>);
        /// Sets the reserved peers.
        with_reserved_peers(reserved_peers: Vec<Multiaddr>);
        /// Sets the transport configuration.
        with_transport(transport: TransportConfig);
        /// Sets the discovery configuration (its mDNS switch and bootstrap peers are the seed fields').
        with_discovery(discovery: DiscoveryConfig);
        /// Sets the policy configuration (its connection ceiling is `max_peers`).
        with_policy(policy: PolicyConfig);
        /// Sets the NAT traversal configuration (its client switch is `enable_relay`).
        with_nat(nat: NatConfig);
        /// Sets the protocol configuration.
        with_protocol(protocol: ProtocolConfig);
        /// Sets the pub/sub configuration.
        with_pubsub(pubsub: PubsubConfig);
        /// Sets the graceful shutdown timeout.
        with_shutdown_timeout(shutdown_timeout: Duration);
    }

    /// Uses `keypair` as the node identity.
    pub fn with_keypair(mut self, keypair: Keypair) -> Self {
        self.keypair = Some(keypair);
        self
    }

    /// Records metrics into `registry` (see [`metrics`](crate::metrics)).
    pub fn with_metrics(mut self, registry: Arc<Mutex<libp2p::metrics::Registry>>) -> Self {
        self.metrics = Some(registry);
        self
    }

    /// The addresses the node listens on and whether it can start without each:
    /// `listen_addrs` when set (all required), else TCP and QUIC (unless off) on `listen_ip`
    /// and `listen_port`, with `0.0.0.0` also on `::` (optional: the host may lack IPv6).
    pub fn listen_plan(&self) -> Vec<(Multiaddr, codio_transport::listen::Need)> {
        let quic = self.transport.quic_enabled();
        codio_transport::listen::plan(&self.listen_addrs, self.listen_ip, self.listen_port, quic)
    }

    /// The layers' configurations with the seed fields applied, each validated by its layer.
    pub(crate) fn layers(&self) -> Result<Layers, NetworkError> {
        self.validate_own()?;
        let mdns = settle(
            ("enable_mdns", self.enable_mdns),
            ("discovery.mdns", self.discovery.mdns_enabled()),
            DiscoveryConfig::default().mdns_enabled(),
        )?;
        let max_peers = settle(
            ("max_peers", self.max_peers),
            (
                "policy.limits.max_established",
                self.policy.limits().max_established(),
            ),
            LimitsConfig::default().max_established(),
        )?;
        let relay_client = settle(
            ("enable_relay", self.enable_relay),
            ("nat.client", self.nat.client),
            NatConfig::default().client,
        )?;
        let layer_bootstrap = self.discovery.bootstrap_addresses();
        let bootstrap: Vec<Multiaddr> = layer_bootstrap
            .iter()
            .chain(
                self.bootstrap_peers
                    .iter()
                    .filter(|a| !layer_bootstrap.contains(a)),
            )
            .cloned()
            .collect();
        let discovery = self
            .discovery
            .clone()
            .with_mdns(mdns)
            .with_bootstrap_peers(bootstrap.iter().cloned())
            .map_err(|e| invalid("bootstrap_peers", e))?;
        discovery.validate().map_err(|e| match e {
            codio_discovery::DiscoveryError::InvalidConfig(invalid) => invalid.into(),
            other => invalid("discovery", other),
        })?;
        let mut policy = self.policy.clone();
        policy
            .limits_mut()
            .edit(|limits| limits.with_max_established(max_peers));
        // The peers this node is told to keep connected are admitted by an allow list too.
        let kept: Vec<Multiaddr> = bootstrap
            .into_iter()
            .chain(self.reserved_peers.iter().cloned())
            .collect();
        let reserved = kept.iter().filter_map(codio_base::addr::peer_id_of);
        policy
            .access_mut()
            .edit(|access| access.with_reserved(reserved));
        policy.validate()?;
        let nat = self.nat.clone().with_client(relay_client);
        nat.validate()?;
        self.protocol.validate()?;
        self.pubsub.validate().map_err(|e| match e {
            codio_pubsub::PubsubError::InvalidConfig(invalid) => invalid.into(),
            other => invalid("pubsub", other),
        })?;
        let pubsub = self.pubsub.clone();
        Ok(Layers {
            kept,
            discovery,
            policy,
            nat,
            pubsub,
        })
    }

    /// Checks the settings the facade itself owns.
    fn validate_own(&self) -> Result<(), NetworkError> {
        if self.max_peers == 0 {
            return Err(invalid("max_peers", "must be at least 1"));
        }
        if self.event_buffer == 0 || self.command_buffer == 0 {
            return Err(invalid("event_buffer/command_buffer", "must be at least 1"));
        }
        let lists = [
            ("bootstrap_peers", &self.bootstrap_peers),
            ("reserved_peers", &self.reserved_peers),
        ];
        for (field, list) in lists {
            if let Some(addr) = list
                .iter()
                .find(|addr| codio_base::addr::peer_id_of(addr).is_none())
            {
                return Err(invalid(
                    field,
                    format!("{addr} has no /p2p/<peer id> suffix"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codio_policy::LimitsConfig;

    /// The composition itself (public behaviour is tested in `tests/tests/config.rs`).
    #[test]
    fn the_setting_changed_from_its_default_runs_whichever_names_it() {
        // Through the seed field.
        let c = NetworkConfig::default()
            .with_max_peers(10)
            .with_relay(false);
        let layers = c.layers().unwrap();
        assert_eq!(layers.policy.limits().max_established(), 10);
        assert_eq!(layers.policy.limits().watermarks(), (6, 8));
        assert!(!layers.nat.client);
        // Through the layer's configuration, the seed fields left at their defaults.
        let c = NetworkConfig {
            policy: PolicyConfig::default().with_limits(LimitsConfig::new(99)),
            nat: NatConfig::default().with_client(false),
            ..NetworkConfig::default()
        };
        let layers = c.layers().unwrap();
        assert_eq!(layers.policy.limits().max_established(), 99);
        assert!(!layers.nat.client);
    }

    #[test]
    fn mdns_turned_off_in_the_discovery_config_stays_off() {
        let c = NetworkConfig {
            discovery: DiscoveryConfig::default().with_mdns(false),
            ..NetworkConfig::default()
        };
        assert!(c.enable_mdns, "the seed field is at its default");
        assert!(!c.layers().unwrap().discovery.mdns_enabled());
        let mut c = NetworkConfig::default().with_mdns(false);
        c.discovery
            .edit(|d| d.with_query_timeout(Duration::from_secs(3)));
        assert!(!c.layers().unwrap().discovery.mdns_enabled());
        assert!(
            NetworkConfig::default()
                .layers()
                .unwrap()
                .discovery
                .mdns_enabled()
        );
    }

    #[test]
    fn a_seed_field_and_its_layer_setting_set_apart_are_refused_by_name() {
        let mut c = NetworkConfig::default().with_max_peers(10);
        c.policy.limits_mut().edit(|l| l.with_max_established(20));
        let error = c.layers().unwrap_err().to_string();
        assert!(error.contains("max_peers"), "{error}");
        assert!(error.contains("policy.limits.max_established"), "{error}");
        // Set to the same value: no conflict.
        c.max_peers = 20;
        assert_eq!(c.layers().unwrap().policy.limits().max_established(), 20);
    }

    #[test]
    fn bootstrap_peers_of_the_seed_and_of_discovery_are_both_used() {
        let a: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{}", libp2p::PeerId::random())
            .parse()
            .unwrap();
        let b: Multiaddr = format!("/ip4/127.0.0.1/tcp/2/p2p/{}", libp2p::PeerId::random())
            .parse()
            .unwrap();
        let mut c = NetworkConfig::default().with_bootstrap_peers(vec![a.clone()]);
        c.discovery = DiscoveryConfig::default()
            .with_bootstrap_peers([b.clone()])
            .unwrap();
        let layers = c.layers().unwrap();
        assert_eq!(
            layers.discovery.bootstrap_addresses(),
            vec![b.clone(), a.clone()]
        );
        assert_eq!(layers.kept, vec![b, a], "both kept connected");
    }
}
