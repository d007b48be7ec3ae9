//! The composed [`NetworkBehaviour`] the facade's swarm runs: one behaviour per layer, plus
//! identify.
//!
//! The connection policy comes first: the derive macro asks the fields in declaration order
//! whether a connection may be established, so a denied connection costs the later
//! behaviours nothing.

use std::sync::Arc;

use codio_discovery::identify::{Identify, IdentifyConfig};
use libp2p::{identity, relay, swarm::NetworkBehaviour};

use crate::{NetworkError, config::Layers};

/// Protocol version announced through identify.
pub(crate) const IDENTIFY_PROTOCOL_VERSION: &str = "/codio/1.0.0";

/// The swarm's behaviour: [`Behaviour`] with its connection handlers on the heap.
pub(crate) type Node = codio_base::boxed::Boxed<Behaviour>;

/// The behaviours of a codio node.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) policy: codio_policy::Behaviour,
    pub(crate) discovery: codio_discovery::Behaviour,
    pub(crate) nat: codio_nat::Behaviour,
    pub(crate) protocol: codio_protocol::Behaviour,
    pub(crate) pubsub: codio_pubsub::Behaviour,
    pub(crate) identify: Identify,
}

impl Behaviour {
    /// Builds the behaviours; `relay_client` is the behaviour half of the relay client
    /// transport, present when the NAT client is on.
    pub(crate) fn new(
        keypair: &identity::Keypair,
        layers: Layers,
        relay_client: Option<relay::client::Behaviour>,
        protocol: codio_protocol::Behaviour,
    ) -> Result<Self, NetworkError> {
        let local_peer_id = keypair.public().to_peer_id();
        let mut discovery = codio_discovery::Behaviour::new(local_peer_id, layers.discovery)
            .map_err(NetworkError::Discovery)?;
        let identify = Identify::new(
            &keypair.public(),
            IdentifyConfig::new(
                IDENTIFY_PROTOCOL_VERSION,
                format!("codio-network/{}", env!("CARGO_PKG_VERSION")),
            ),
            discovery.stats(),
        );
        let mut policy = codio_policy::Behaviour::new(layers.policy);
        // Providers are ranked by the liveness layer's ping RTTs; eviction at the peer cap
        // spares peers busy with requests.
        let peers = policy.peers();
        discovery.set_rtt_source(Arc::new(move |peer| peers.get(peer).and_then(|p| p.rtt)));
        policy.set_activity_source(protocol.activity_source());
        let pubsub = codio_pubsub::Behaviour::new(keypair, layers.pubsub)
            .map_err(|e| crate::config::invalid("pubsub", e))?;
        let nat = codio_nat::Behaviour::new(local_peer_id, &layers.nat, relay_client)
            .map_err(NetworkError::InvalidConfig)?;
        Ok(Self {
            policy,
            discovery,
            nat,
            protocol,
            pubsub,
            identify,
        })
    }
}
