//! [`DiscoveryConfig`].

use std::time::Duration;

use libp2p::{Multiaddr, PeerId, StreamProtocol, kad, multiaddr::Protocol};

use crate::DiscoveryError;

/// Which Kademlia mode the node runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KadMode {
    /// Client until the node has a confirmed external address, then server (libp2p's automatic
    /// mode: only publicly reachable nodes answer DHT queries).
    #[default]
    Auto,
    /// Always answer DHT queries (for nodes known to be reachable, e.g. on a LAN or a server).
    Server,
    /// Never answer DHT queries.
    Client,
}

/// Configuration of the discovery behaviour.
///
/// | setting | default |
/// |---|---|
/// | [`mdns`](Self::with_mdns) | `true` |
/// | [`mdns_config`](Self::with_mdns_config) | [`MdnsConfig::default`](crate::mdns::MdnsConfig): libp2p's service name, queries every 5 min, at most 128 peers, 8 per sender address, TTLs cut to 6 min, dials and answers rate-limited |
/// | [`dial_discovered`](Self::with_dial_discovered) | `true`: peers found by mDNS are dialed |
/// | [`kad_protocol`](Self::with_kad_protocol) | `/ipfs/kad/1.0.0` (interoperates with other libp2p DHTs) |
/// | [`kad_mode`](Self::with_kad_mode) | [`KadMode::Auto`] |
/// | [`bootstrap_peers`](Self::with_bootstrap_peers) | none |
/// | [`bootstrap_interval`](Self::with_bootstrap_interval) | 5 min; `None` disables periodic bootstrap |
/// | [`query_timeout`](Self::with_query_timeout) | 30 s per DHT query |
/// | [`max_addresses_per_peer`](Self::with_max_addresses_per_peer) | 8 identify addresses per peer in the routing table, replaced on each identify (libp2p-kad keeps any number) |
/// | [`identify_interval`](Self::with_identify_interval) | 8 identifies (results or pushes) per peer at once, then one per 2 s; the rest are dropped and counted |
/// | [`store`](Self::with_store_limits) | [`StoreLimits::default`](crate::StoreLimits): remote records and providers bounded apart from this node's own provides |
/// | [`provider_ttl`](Self::with_provider_ttl) | 48 h (libp2p's): how long peers keep a provider record of ours; remote records older than that are dropped |
/// | [`reprovide`](Self::with_reprovide) | every 12 h (a quarter of the TTL, so three reprovides may fail before a record expires), at most 16 keys a second and 32 announcements in flight |
/// | [`provider_stream_buffer`](Self::with_provider_stream_buffer) | 64 providers waiting for a slow reader of a provider stream; more are dropped and counted |
/// | [`private_addresses`](Self::with_private_addresses) | `false`: private and link-local addresses are taken only from peers that reached us over a non-global address, loopback ones only from peers on this host (always), relayed ones always |
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    pub(crate) mdns: bool,
    pub(crate) mdns_config: crate::mdns::MdnsConfig,
    pub(crate) dial_discovered: bool,
    pub(crate) kad_protocol: StreamProtocol,
    pub(crate) kad_mode: KadMode,
    pub(crate) bootstrap_peers: Vec<(PeerId, Multiaddr)>,
    pub(crate) bootstrap_interval: Option<Duration>,
    pub(crate) query_timeout: Duration,
    pub(crate) max_addresses_per_peer: usize,
    pub(crate) identify_interval: Duration,
    pub(crate) identify_burst: u32,
    pub(crate) private_addresses: bool,
    pub(crate) store: crate::StoreLimits,
    pub(crate) provider_ttl: Duration,
    pub(crate) reprovide: crate::providers::ReprovideConfig,
    pub(crate) provider_stream_buffer: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            mdns: true,
            mdns_config: crate::mdns::MdnsConfig::default(),
            dial_discovered: true,
            kad_protocol: kad::PROTOCOL_NAME,
            kad_mode: KadMode::Auto,
            bootstrap_peers: Vec::new(),
            bootstrap_interval: Some(Duration::from_secs(5 * 60)),
            query_timeout: Duration::from_secs(30),
            max_addresses_per_peer: 8,
            identify_interval: Duration::from_secs(2),
            identify_burst: 8,
            private_addresses: false,
            store: crate::StoreLimits::default(),
            provider_ttl: Duration::from_secs(48 * 60 * 60),
            reprovide: crate::providers::ReprovideConfig::default(),
            provider_stream_buffer: 64,
        }
    }
}

impl DiscoveryConfig {
    /// Sets how many identify addresses of one peer the routing table holds (at least 1).
    pub fn with_max_addresses_per_peer(mut self, max: usize) -> Self {
        self.max_addresses_per_peer = max.max(1);
        self
    }

    /// Sets how many identify updates of one peer are processed at once (`burst`) and how
    /// often one more is (`interval`).
    pub fn with_identify_interval(mut self, interval: Duration, burst: u32) -> Self {
        self.identify_interval = interval;
        self.identify_burst = burst;
        self
    }

    /// Whether non-global addresses from identify are taken from every peer (for private
    /// deployments whose peers reach each other through NAT or tunnels).
    pub fn with_private_addresses(mut self, accept: bool) -> Self {
        self.private_addresses = accept;
        self
    }

    /// Sets the limits of the Kademlia record store.
    pub fn with_store_limits(mut self, limits: crate::StoreLimits) -> Self {
        self.store = limits;
        self
    }

    /// Sets how long peers keep a provider record of ours (and we theirs).
    pub fn with_provider_ttl(mut self, ttl: Duration) -> Self {
        self.provider_ttl = ttl;
        self
    }

    /// Sets how often this node announces its provides again (`interval`, below the provider
    /// TTL), how many keys a second at most (`per_second`) and how many announcements may be in
    /// flight at once (`in_flight`).
    pub fn with_reprovide(
        mut self,
        interval: Duration,
        per_second: usize,
        in_flight: usize,
    ) -> Self {
        self.reprovide = crate::providers::ReprovideConfig {
            interval,
            per_second,
            in_flight,
        };
        self
    }

    /// Sets how many providers a provider stream buffers for a slow reader.
    pub fn with_provider_stream_buffer(mut self, providers: usize) -> Self {
        self.provider_stream_buffer = providers.max(1);
        self
    }

    /// Enables or disables mDNS.
    pub fn with_mdns(mut self, enable: bool) -> Self {
        self.mdns = enable;
        self
    }

    /// Sets how often mDNS queries the network.
    pub fn with_mdns_query_interval(mut self, interval: Duration) -> Self {
        self.mdns_config = self.mdns_config.with_query_interval(interval);
        self
    }

    /// Sets mDNS's service name, bounds and rates.
    pub fn with_mdns_config(mut self, config: crate::mdns::MdnsConfig) -> Self {
        self.mdns_config = config;
        self
    }

    /// Whether peers found by mDNS are dialed.
    pub fn with_dial_discovered(mut self, dial: bool) -> Self {
        self.dial_discovered = dial;
        self
    }

    /// Sets the Kademlia protocol id.
    pub fn with_kad_protocol(mut self, protocol: StreamProtocol) -> Self {
        self.kad_protocol = protocol;
        self
    }

    /// Sets the Kademlia mode.
    pub fn with_kad_mode(mut self, mode: KadMode) -> Self {
        self.kad_mode = mode;
        self
    }

    /// Sets the bootstrap peers from `/…/p2p/<peer id>` addresses.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::MissingPeerId`] for an address without a `/p2p/` suffix.
    pub fn with_bootstrap_peers(
        mut self,
        peers: impl IntoIterator<Item = Multiaddr>,
    ) -> Result<Self, DiscoveryError> {
        self.bootstrap_peers = peers
            .into_iter()
            .map(split_peer_id)
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// Sets the periodic bootstrap interval (`None`: bootstrap only at start).
    pub fn with_bootstrap_interval(mut self, interval: Option<Duration>) -> Self {
        self.bootstrap_interval = interval;
        self
    }

    /// Sets the timeout of each DHT query.
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// The DHT query timeout.
    pub fn query_timeout(&self) -> Duration {
        self.query_timeout
    }

    /// The Kademlia protocol id.
    pub fn kad_protocol(&self) -> &StreamProtocol {
        &self.kad_protocol
    }

    /// Whether mDNS runs.
    pub fn mdns_enabled(&self) -> bool {
        self.mdns
    }

    /// The mDNS settings.
    pub fn mdns_config(&self) -> &crate::mdns::MdnsConfig {
        &self.mdns_config
    }

    /// The bootstrap peers.
    pub fn bootstrap_peers(&self) -> &[(PeerId, Multiaddr)] {
        &self.bootstrap_peers
    }

    /// The bootstrap peers as `/…/p2p/<id>` addresses.
    pub fn bootstrap_addresses(&self) -> Vec<Multiaddr> {
        self.bootstrap_peers
            .iter()
            .map(|(peer, address)| codio_base::addr::with_p2p(address.clone(), *peer))
            .collect()
    }

    /// Checks for values that cannot work.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::InvalidConfig`] naming the setting.
    pub fn validate(&self) -> Result<(), DiscoveryError> {
        let invalid = |field, reason: &str| {
            Err(DiscoveryError::InvalidConfig(
                codio_base::InvalidConfig::new("discovery", field, reason),
            ))
        };
        if self.query_timeout.is_zero() {
            return invalid("query_timeout", "must be greater than zero");
        }
        if self.reprovide.interval.is_zero() || self.reprovide.interval >= self.provider_ttl {
            return invalid(
                "reprovide",
                "the interval must be positive and below the provider TTL",
            );
        }
        if self.reprovide.per_second == 0 || self.reprovide.in_flight == 0 {
            return invalid(
                "reprovide",
                "the rate and the announcements in flight must be at least 1",
            );
        }
        if let Some((field, reason)) = self.mdns_config.invalid() {
            return invalid(field, reason);
        }
        let mut seen = std::collections::HashSet::new();
        if let Some((peer, _)) = self
            .bootstrap_peers
            .iter()
            .find(|entry| !seen.insert(*entry))
        {
            return invalid("bootstrap_peers", &format!("{peer} is listed twice"));
        }
        Ok(())
    }
}

/// Splits `/…/p2p/<id>` into the peer id and the address before it.
///
/// # Errors
///
/// [`DiscoveryError::MissingPeerId`] when the address does not end in `/p2p/<id>`.
pub fn split_peer_id(mut address: Multiaddr) -> Result<(PeerId, Multiaddr), DiscoveryError> {
    match address.pop() {
        Some(Protocol::P2p(peer_id)) => Ok((peer_id, address)),
        Some(other) => Err(DiscoveryError::MissingPeerId(address.with(other))),
        None => Err(DiscoveryError::MissingPeerId(address)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_peer_id_requires_the_suffix() {
        let peer = PeerId::random();
        let with: Multiaddr = format!("/ip4/10.0.0.1/tcp/4001/p2p/{peer}")
            .parse()
            .unwrap();
        let (id, addr) = split_peer_id(with).unwrap();
        assert_eq!(id, peer);
        assert_eq!(addr.to_string(), "/ip4/10.0.0.1/tcp/4001");
        let without: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
        let err = split_peer_id(without.clone()).unwrap_err();
        assert!(matches!(err, DiscoveryError::MissingPeerId(a) if a == without));
        assert!(split_peer_id(Multiaddr::empty()).is_err());
    }

    #[test]
    fn defaults_interoperate_with_other_libp2p_dhts() {
        let config = DiscoveryConfig::default();
        assert_eq!(config.kad_protocol.as_ref(), "/ipfs/kad/1.0.0");
        assert_eq!(config.kad_mode, KadMode::Auto);
        assert!(config.mdns);
        assert_eq!(config.query_timeout(), Duration::from_secs(30));
        assert!(config.bootstrap_peers().is_empty());
    }
}
