//! The composed [`NetworkBehaviour`] the facade's swarm runs.
//!
//! Connection-limiting behaviours come first: the derive macro asks the fields in declaration
//! order whether a connection may be established, so a denied connection costs the later
//! behaviours nothing.

use libp2p::{identify, identity, ping, swarm::NetworkBehaviour};

use crate::NetworkConfig;

/// Protocol version announced through identify.
pub(crate) const IDENTIFY_PROTOCOL_VERSION: &str = "/codio/1.0.0";

/// The behaviours of a codio node.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) policy: codio_policy::Behaviour,
    pub(crate) discovery: codio_discovery::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
}

impl Behaviour {
    pub(crate) fn new(
        keypair: &identity::Keypair,
        config: &NetworkConfig,
    ) -> Result<Self, crate::NetworkError> {
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
        let discovery = codio_discovery::Behaviour::new(
            keypair.public().to_peer_id(),
            config.discovery_config()?,
        )
        .map_err(crate::NetworkError::Discovery)?;
        Ok(Self {
            policy: codio_policy::Behaviour::new(config.policy_config()),
            discovery,
            identify,
            ping,
        })
    }
}
