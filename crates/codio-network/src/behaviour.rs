//! The composed [`NetworkBehaviour`] the facade's swarm runs.
//!
//! The connection-limiting behaviour comes first: the derive macro asks the fields in
//! declaration order whether a connection may be established, so a denied connection costs
//! the later behaviours nothing.

use libp2p::{
    autonat, dcutr, identify, identity, ping, relay,
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
};

use crate::{NetworkConfig, peer_id_of, without_p2p};

/// Protocol version announced through identify.
pub(crate) const IDENTIFY_PROTOCOL_VERSION: &str = "/codio/1.0.0";

/// The behaviours of a codio node.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) policy: codio_policy::Behaviour,
    pub(crate) discovery: codio_discovery::Behaviour,
    pub(crate) relay_client: Toggle<relay::client::Behaviour>,
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    pub(crate) autonat: autonat::v1::Behaviour,
    pub(crate) dcutr: Toggle<dcutr::Behaviour>,
    pub(crate) autorelay: Toggle<codio_policy::autorelay::Behaviour>,
    pub(crate) protocol: codio_protocol::Behaviour,
    pub(crate) rpc: codio_protocol::streams::Behaviour,
    pub(crate) bulk: codio_protocol::streams::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
}

impl Behaviour {
    /// Builds the behaviours; `relay_client` is the behaviour half of the relay client
    /// transport, present when `enable_relay` is on.
    pub(crate) fn new(
        keypair: &identity::Keypair,
        config: &NetworkConfig,
        relay_client: Option<relay::client::Behaviour>,
        codec_stats: std::sync::Arc<codio_protocol::CodecStats>,
        bulk: codio_protocol::streams::Behaviour,
        rpc: codio_protocol::streams::Behaviour,
    ) -> Result<Self, crate::NetworkError> {
        let local_peer_id = keypair.public().to_peer_id();
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_owned(), keypair.public())
                .with_agent_version(format!("codio-network/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true),
        );
        let ping = ping::Behaviour::new(
            ping::Config::new()
                .with_interval(config.ping_interval)
                .with_timeout(config.ping_timeout),
        );
        let discovery = codio_discovery::Behaviour::new(local_peer_id, config.discovery_config()?)
            .map_err(crate::NetworkError::Discovery)?;
        let nat = config.enable_relay;
        let static_relays = config
            .relays
            .iter()
            .filter_map(|a| Some((peer_id_of(a)?, without_p2p(a.clone()))))
            .collect();
        Ok(Self {
            policy: codio_policy::Behaviour::new(config.policy_config()),
            discovery,
            relay_client: relay_client.into(),
            relay_server: config
                .relay_server
                .then(|| relay::Behaviour::new(local_peer_id, config.relay_limits.relay_config()))
                .into(),
            autonat: autonat::v1::Behaviour::new(local_peer_id, config.autonat.autonat_config()),
            dcutr: nat.then(|| dcutr::Behaviour::new(local_peer_id)).into(),
            autorelay: nat
                .then(|| {
                    codio_policy::autorelay::Behaviour::new(
                        config.max_relay_reservations,
                        static_relays,
                    )
                })
                .into(),
            protocol: codio_protocol::behaviour(&config.protocol, codec_stats),
            rpc,
            bulk,
            identify,
            ping,
        })
    }
}
