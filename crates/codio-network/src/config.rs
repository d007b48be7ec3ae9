//! [`NetworkConfig`]: everything a [`NetworkManager`](crate::NetworkManager) is built from.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::Duration,
};

use codio_discovery::{DiscoveryConfig, KadMode};
use codio_policy::{BackoffConfig, LimitsConfig, PolicyConfig};
use codio_protocol::ProtocolConfig;
use codio_transport::TransportConfig;
use libp2p::{Multiaddr, StreamProtocol, identity::Keypair, multiaddr::Protocol};

/// Configuration of a codio network node.
///
/// The first five fields and their defaults are the seed API (`listen_port: 0`, `max_peers: 50`,
/// `bootstrap_peers: vec![]`, `enable_mdns: true`, `enable_relay: true`); the rest are what a
/// real node needs on top. Build it with struct update syntax or the `with_*` builders:
///
/// ```
/// use codio_network::NetworkConfig;
/// use std::time::Duration;
///
/// let config = NetworkConfig {
///     listen_port: 4001,
///     ..NetworkConfig::default()
/// }
/// .with_listen_ip("127.0.0.1".parse().unwrap())
/// .with_ping(Duration::from_secs(5), Duration::from_secs(10));
/// assert_eq!(config.max_peers, 50);
/// ```
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// TCP port to listen on; `0` lets the OS pick one. Default `0`.
    pub listen_port: u16,
    /// Maximum number of established connections. Default `50`.
    pub max_peers: usize,
    /// Peers dialed at start (`/ip4/…/tcp/…/p2p/…`). Default empty.
    pub bootstrap_peers: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS and dial them. Default `true`.
    pub enable_mdns: bool,
    /// NAT traversal for this node as a client: the relay v2 client transport (so
    /// `/p2p-circuit` addresses can be dialed and listened on), automatic reservations on
    /// relays when AutoNAT finds the node private, and DCUtR hole punching to upgrade relayed
    /// connections to direct ones. Default `true`.
    pub enable_relay: bool,
    /// IP address to listen on. Default `0.0.0.0` (every IPv4 interface).
    pub listen_ip: IpAddr,
    /// The node's identity. Default `None`: a fresh Ed25519 keypair is generated.
    pub keypair: Option<Keypair>,
    /// How long a *surplus* connection (a second connection to a peer: simultaneous dials,
    /// AutoNAT dial-backs, a relayed connection once a direct one exists) stays open while no
    /// protocol uses it. A peer's primary connection is kept alive by the policy whatever
    /// this says, so quiet peers stay connected (libp2p's own default closes every quiet
    /// connection after 10 s). Default 30 s; `None`: surplus connections are never closed.
    pub idle_timeout: Option<Duration>,
    /// Interval between pings on each connection. Default 15 s.
    pub ping_interval: Duration,
    /// Time after which an unanswered ping counts as failed. Default 20 s.
    pub ping_timeout: Duration,
    /// Kademlia mode. Default [`KadMode::Auto`]: server once the node has a confirmed external
    /// address. Use [`KadMode::Server`] for nodes known to be reachable (LAN, servers).
    pub kad_mode: KadMode,
    /// Kademlia protocol id. Default `/ipfs/kad/1.0.0`, which interoperates with other libp2p
    /// DHTs; use a private id (e.g. `/codio/kad/1.0.0`) to keep a separate DHT.
    pub kad_protocol: StreamProtocol,
    /// Interval of periodic DHT bootstraps. Default 5 min; `None`: only at start.
    pub bootstrap_interval: Option<Duration>,
    /// Delay before a lost bootstrap peer is dialed again. Default 10 s.
    pub redial_delay: Duration,
    /// Timeout of each DHT query (`find_peer`, `closest_peers`, `provide`, `find_providers`).
    /// Default 30 s.
    pub query_timeout: Duration,
    /// Peers to keep connected like bootstrap peers (dialed at start, protected, reconnected
    /// with backoff), without using them for the DHT bootstrap. Default empty.
    pub reserved_peers: Vec<Multiaddr>,
    /// Watermarks `(low, high)`: above `high` connections for `grace_period`, unprotected
    /// connections are closed down to `low`. Default `None`: 60 % and 80 % of `max_peers`.
    pub watermarks: Option<(usize, usize)>,
    /// How long the node may stay above the high watermark, and how old a connection must be,
    /// before it is trimmed. Default 20 s.
    pub grace_period: Duration,
    /// How many connections beyond `max_peers` protected peers (bootstrap, reserved,
    /// explicitly connected) may use. Default 8.
    pub protected_extra: usize,
    /// Bound on inbound connections in their handshake. Default 64.
    pub max_pending_incoming: usize,
    /// Bound on outbound dials in progress (DHT queries dial several peers at once).
    /// Default 128.
    pub max_pending_outgoing: usize,
    /// Bound on connections to one peer. Default 4 (surplus connections close once idle for
    /// `idle_timeout`; the oldest direct one is kept).
    pub max_connections_per_peer: usize,
    /// Reconnect peers that matter after unexpected disconnects and failed dials. Default
    /// `true`.
    pub reconnect: bool,
    /// Reconnection backoff. Default [`BackoffConfig::default`] (500 ms doubling to 5 min,
    /// ±20 % jitter, reset after 30 s connected, never gives up).
    pub backoff: BackoffConfig,
    /// Failed pings after which a connection is closed as dead. Default 3.
    pub ping_failures: u32,
    /// Serve as a relay v2 for other peers (opt-in). The relay advertises itself only once
    /// it has a confirmed external address (see `external_addrs` and AutoNAT). Default
    /// `false`.
    pub relay_server: bool,
    /// Resource limits of the relay server. Default [`RelayServerLimits::default`].
    pub relay_limits: RelayServerLimits,
    /// Relays to reserve on when private, besides bootstrap peers that advertise the relay
    /// protocol (`/…/p2p/<relay id>`). Default empty.
    pub relays: Vec<Multiaddr>,
    /// Most relay reservations held at once when private. Default 2.
    pub max_relay_reservations: usize,
    /// Addresses this node is known to be reachable at (a server's public address): confirmed
    /// at start without waiting for AutoNAT. Default empty.
    pub external_addrs: Vec<Multiaddr>,
    /// AutoNAT settings. Default [`AutonatSettings::default`].
    pub autonat: AutonatSettings,
    /// `/codio/1.0.0` request/response settings (timeout, streams per connection). Default
    /// [`ProtocolConfig::default`].
    pub protocol: ProtocolConfig,
    /// Inbound requests queued for the application's handler; when full, requests are
    /// answered `Overloaded` at once instead of queuing without bound. Default 256.
    pub inbound_request_buffer: usize,
    /// Outbound requests in flight at once across all peers; further `send_request` calls
    /// wait for a slot. Default 1024.
    pub max_outbound_requests: usize,
    /// Inbound bulk streams queued for the application; beyond it new streams are dropped
    /// (reset). Default 16.
    pub bulk_stream_buffer: usize,
    /// A bulk transfer fails when a read or write makes no progress for this long. Default
    /// 30 s.
    pub bulk_idle_timeout: Duration,
    /// Transport settings (timeouts, Yamux, TCP). Default [`TransportConfig::default`].
    pub transport: TransportConfig,
    /// Capacity of the event broadcast channel; a subscriber that falls further behind misses
    /// events and is told how many. Default 1024.
    pub event_buffer: usize,
    /// Capacity of the command queue between handles and the event loop. Default 64.
    pub command_buffer: usize,
    /// How long [`NetworkManager::shutdown`](crate::NetworkManager::shutdown) waits for
    /// connections to close gracefully. Default 5 s.
    pub shutdown_timeout: Duration,
    /// Registry to record Prometheus metrics in (libp2p's and codio's; see
    /// [`metrics`](crate::metrics)). Default `None`: no metrics are kept.
    pub metrics: Option<Arc<Mutex<crate::metrics::Registry>>>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen_port: 0,
            max_peers: 50,
            bootstrap_peers: vec![],
            enable_mdns: true,
            enable_relay: true,
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            keypair: None,
            idle_timeout: Some(Duration::from_secs(30)),
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(20),
            kad_mode: KadMode::Auto,
            kad_protocol: libp2p::kad::PROTOCOL_NAME,
            bootstrap_interval: Some(Duration::from_secs(5 * 60)),
            redial_delay: Duration::from_secs(10),
            query_timeout: Duration::from_secs(30),
            reserved_peers: vec![],
            watermarks: None,
            grace_period: Duration::from_secs(20),
            protected_extra: 8,
            max_pending_incoming: 64,
            max_pending_outgoing: 128,
            max_connections_per_peer: 4,
            reconnect: true,
            backoff: BackoffConfig::default(),
            ping_failures: 3,
            relay_server: false,
            relay_limits: RelayServerLimits::default(),
            relays: vec![],
            max_relay_reservations: 2,
            external_addrs: vec![],
            autonat: AutonatSettings::default(),
            protocol: ProtocolConfig::default(),
            inbound_request_buffer: 256,
            max_outbound_requests: 1024,
            bulk_stream_buffer: 16,
            bulk_idle_timeout: Duration::from_secs(30),
            transport: TransportConfig::default(),
            event_buffer: 1024,
            command_buffer: 64,
            shutdown_timeout: Duration::from_secs(5),
            metrics: None,
        }
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
    pub(crate) fn relay_config(&self) -> libp2p::relay::Config {
        libp2p::relay::Config {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            reservation_duration: self.reservation_duration,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.max_circuit_duration,
            max_circuit_bytes: self.max_circuit_bytes,
            ..libp2p::relay::Config::default()
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
    pub(crate) fn autonat_config(&self) -> libp2p::autonat::v1::Config {
        libp2p::autonat::v1::Config {
            boot_delay: self.boot_delay,
            retry_interval: self.retry_interval,
            refresh_interval: self.refresh_interval,
            only_global_ips: self.only_global_ips,
            // Probes go to distinct servers; in small deployments one server is all there is.
            throttle_server_period: self.retry_interval.min(Duration::from_secs(90)),
            ..libp2p::autonat::v1::Config::default()
        }
    }
}

impl NetworkConfig {
    /// Sets the listen port.
    pub fn with_listen_port(mut self, port: u16) -> Self {
        self.listen_port = port;
        self
    }

    /// Sets the listen IP address.
    pub fn with_listen_ip(mut self, ip: IpAddr) -> Self {
        self.listen_ip = ip;
        self
    }

    /// Sets the maximum number of established connections.
    pub fn with_max_peers(mut self, max_peers: usize) -> Self {
        self.max_peers = max_peers;
        self
    }

    /// Sets the bootstrap peers.
    pub fn with_bootstrap_peers(mut self, peers: Vec<Multiaddr>) -> Self {
        self.bootstrap_peers = peers;
        self
    }

    /// Enables or disables mDNS.
    pub fn with_mdns(mut self, enable: bool) -> Self {
        self.enable_mdns = enable;
        self
    }

    /// Enables or disables relaying.
    pub fn with_relay(mut self, enable: bool) -> Self {
        self.enable_relay = enable;
        self
    }

    /// Uses `keypair` as the node identity.
    pub fn with_keypair(mut self, keypair: Keypair) -> Self {
        self.keypair = Some(keypair);
        self
    }

    /// Sets the idle connection timeout (`None`: never close idle connections).
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the ping interval and timeout.
    pub fn with_ping(mut self, interval: Duration, timeout: Duration) -> Self {
        self.ping_interval = interval;
        self.ping_timeout = timeout;
        self
    }

    /// Sets the Kademlia mode.
    pub fn with_kad_mode(mut self, mode: KadMode) -> Self {
        self.kad_mode = mode;
        self
    }

    /// Sets the DHT query timeout.
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// Sets the periodic bootstrap interval and the redial delay of lost bootstrap peers.
    pub fn with_bootstrap_timing(mut self, interval: Option<Duration>, redial: Duration) -> Self {
        self.bootstrap_interval = interval;
        self.redial_delay = redial;
        self
    }

    /// Sets the watermarks and the grace period of connection trimming.
    pub fn with_watermarks(mut self, low: usize, high: usize, grace_period: Duration) -> Self {
        self.watermarks = Some((low, high));
        self.grace_period = grace_period;
        self
    }

    /// Sets the bounds on inbound handshakes and outbound dials in progress.
    pub fn with_pending_limits(mut self, incoming: usize, outgoing: usize) -> Self {
        self.max_pending_incoming = incoming;
        self.max_pending_outgoing = outgoing;
        self
    }

    /// Sets the reserved peers.
    pub fn with_reserved_peers(mut self, peers: Vec<Multiaddr>) -> Self {
        self.reserved_peers = peers;
        self
    }

    /// Enables or disables automatic reconnection.
    pub fn with_reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Sets the reconnection backoff.
    pub fn with_backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets how many failed pings close a connection.
    pub fn with_ping_failures(mut self, failures: u32) -> Self {
        self.ping_failures = failures;
        self
    }

    /// The watermarks in force.
    pub fn effective_watermarks(&self) -> (usize, usize) {
        self.watermarks
            .unwrap_or((self.max_peers * 3 / 5, self.max_peers * 4 / 5))
    }

    /// The policy layer's configuration derived from this one.
    pub(crate) fn policy_config(&self) -> PolicyConfig {
        let (low, high) = self.effective_watermarks();
        PolicyConfig::default()
            .with_limits(
                LimitsConfig::new(self.max_peers)
                    .with_watermarks(low, high)
                    .with_grace_period(self.grace_period)
                    .with_protected_extra(self.protected_extra)
                    .with_max_pending_incoming(self.max_pending_incoming)
                    .with_max_pending_outgoing(self.max_pending_outgoing)
                    .with_max_per_peer(self.max_connections_per_peer),
            )
            .with_backoff(self.backoff.clone())
            .with_reconnect(self.reconnect)
            .with_liveness(self.ping_interval, self.ping_timeout, self.ping_failures)
    }

    /// The discovery layer's configuration derived from this one.
    pub(crate) fn discovery_config(&self) -> Result<DiscoveryConfig, crate::NetworkError> {
        DiscoveryConfig::default()
            .with_mdns(self.enable_mdns)
            .with_kad_mode(self.kad_mode)
            .with_kad_protocol(self.kad_protocol.clone())
            .with_bootstrap_interval(self.bootstrap_interval)
            .with_redial_delay(self.redial_delay)
            .with_query_timeout(self.query_timeout)
            // The policy layer keeps bootstrap peers connected, with backoff.
            .with_bootstrap_upkeep(false)
            .with_bootstrap_peers(self.bootstrap_peers.iter().cloned())
            .map_err(|e| crate::NetworkError::InvalidConfig {
                field: "bootstrap_peers",
                reason: e.to_string(),
            })
    }

    /// Sets the transport configuration.
    pub fn with_transport(mut self, transport: TransportConfig) -> Self {
        self.transport = transport;
        self
    }

    /// Records metrics into `registry` (see [`metrics`](crate::metrics)).
    pub fn with_metrics(mut self, registry: Arc<Mutex<crate::metrics::Registry>>) -> Self {
        self.metrics = Some(registry);
        self
    }

    /// Sets the graceful shutdown timeout.
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The multiaddress the node listens on, built from `listen_ip` and `listen_port`.
    pub fn listen_multiaddr(&self) -> Multiaddr {
        Multiaddr::empty()
            .with(match self.listen_ip {
                IpAddr::V4(ip) => Protocol::Ip4(ip),
                IpAddr::V6(ip) => Protocol::Ip6(ip),
            })
            .with(Protocol::Tcp(self.listen_port))
    }

    /// Checks the configuration for values that cannot work.
    pub(crate) fn validate(&self) -> Result<(), crate::NetworkError> {
        let invalid = |field: &'static str, reason: &str| {
            Err(crate::NetworkError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.max_peers == 0 {
            return invalid("max_peers", "must be at least 1");
        }
        if u32::try_from(self.max_peers).is_err() {
            return invalid("max_peers", "must fit in 32 bits");
        }
        if self.event_buffer == 0 {
            return invalid("event_buffer", "must be at least 1");
        }
        if self.command_buffer == 0 {
            return invalid("command_buffer", "must be at least 1");
        }
        if self.ping_interval.is_zero() || self.ping_timeout.is_zero() {
            return invalid("ping_interval/ping_timeout", "must be greater than zero");
        }
        let (low, high) = self.effective_watermarks();
        if low > high || high > self.max_peers {
            return invalid("watermarks", "need low <= high <= max_peers");
        }
        if self.max_connections_per_peer == 0 {
            return invalid("max_connections_per_peer", "must be at least 1");
        }
        for addr in &self.relays {
            if crate::peer_id_of(addr).is_none() {
                return Err(crate::NetworkError::InvalidConfig {
                    field: "relays",
                    reason: format!("{addr} has no /p2p/<peer id> suffix"),
                });
            }
        }
        for addr in &self.reserved_peers {
            if crate::peer_id_of(addr).is_none() {
                return Err(crate::NetworkError::InvalidConfig {
                    field: "reserved_peers",
                    reason: format!("{addr} has no /p2p/<peer id> suffix"),
                });
            }
        }
        if self.inbound_request_buffer == 0
            || self.max_outbound_requests == 0
            || self.bulk_stream_buffer == 0
        {
            return invalid(
                "inbound_request_buffer/max_outbound_requests",
                "must be at least 1",
            );
        }
        if self.query_timeout.is_zero() {
            return invalid("query_timeout", "must be greater than zero");
        }
        let mut seen = std::collections::HashSet::new();
        for addr in &self.bootstrap_peers {
            if crate::peer_id_of(addr).is_none() {
                return Err(crate::NetworkError::InvalidConfig {
                    field: "bootstrap_peers",
                    reason: format!("{addr} has no /p2p/<peer id> suffix"),
                });
            }
            if !seen.insert(addr) {
                return Err(crate::NetworkError::InvalidConfig {
                    field: "bootstrap_peers",
                    reason: format!("{addr} is listed twice"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_defaults() {
        let c = NetworkConfig::default();
        assert_eq!(c.listen_port, 0);
        assert_eq!(c.max_peers, 50);
        assert!(c.bootstrap_peers.is_empty());
        assert!(c.enable_mdns);
        assert!(c.enable_relay);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.listen_multiaddr().to_string(), "/ip4/0.0.0.0/tcp/0");
    }

    #[test]
    fn validation_names_the_field() {
        let err = NetworkConfig::default()
            .with_max_peers(0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("max_peers"), "{err}");
        let err = NetworkConfig::default()
            .with_bootstrap_peers(vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("bootstrap_peers"), "{err}");
        let peer = libp2p::PeerId::random();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}").parse().unwrap();
        let err = NetworkConfig::default()
            .with_bootstrap_peers(vec![addr.clone(), addr])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
        let err = NetworkConfig::default()
            .with_watermarks(10, 5, Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("watermarks"), "{err}");
        assert!(NetworkConfig::default().validate().is_ok());
        assert_eq!(NetworkConfig::default().effective_watermarks(), (30, 40));
    }

    #[test]
    fn ipv6_listen_addr() {
        let c = NetworkConfig::default()
            .with_listen_ip("::1".parse().unwrap())
            .with_listen_port(4001);
        assert_eq!(c.listen_multiaddr().to_string(), "/ip6/::1/tcp/4001");
    }
}
