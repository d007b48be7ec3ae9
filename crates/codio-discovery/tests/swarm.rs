//! The discovery behaviour on its own in plain libp2p swarms (no facade), on loopback.

// Test code: a failed expectation panics and fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use codio_discovery::{Behaviour, DiscoveryConfig, Event, KadMode};
use futures::StreamExt;
use libp2p::{Multiaddr, Swarm, identity, multiaddr::Protocol, swarm::SwarmEvent};

fn swarm(config: DiscoveryConfig) -> Swarm<Behaviour> {
    let keypair = identity::Keypair::generate_ed25519();
    let peer_id = keypair.public().to_peer_id();
    Swarm::new(
        codio_transport::build_transport(&keypair, &Default::default()).unwrap(),
        Behaviour::new(peer_id, config).unwrap(),
        peer_id,
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(Duration::from_secs(60)),
    )
}

fn config() -> DiscoveryConfig {
    DiscoveryConfig::default()
        .with_mdns(false)
        .with_kad_mode(KadMode::Server)
}

async fn listen(swarm: &mut Swarm<Behaviour>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// `start` dials the bootstrap peer and the dialer's routing table then holds it; a closest
/// peers query through it finds the bootstrap node.
#[tokio::test]
async fn start_dials_bootstrap_peers_and_queries_work() {
    let mut a = swarm(config());
    let a_addr = listen(&mut a).await;
    let a_id = *a.local_peer_id();
    let bootstrap = a_addr.with(Protocol::P2p(a_id));
    let mut b = swarm(config().with_bootstrap_peers([bootstrap]).unwrap());
    b.behaviour_mut().start();
    let query = b.behaviour_mut().closest_peers(b"key".to_vec());
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::select! {
                _ = a.select_next_some() => {}
                event = b.select_next_some() => {
                    if let SwarmEvent::Behaviour(Event::ClosestPeers { query_id, result, .. }) = event
                        && query_id == query
                    {
                        return result;
                    }
                }
            }
        }
    })
    .await
    .expect("query finishes");
    let peers = outcome.expect("query succeeds");
    assert!(peers.iter().any(|p| p.peer_id == a_id), "{peers:?}");
    assert!(b.is_connected(&a_id));
    assert_eq!(b.behaviour_mut().addresses_of(&a_id).len(), 1);
}

/// Without known peers a bootstrap is refused with a clear error instead of hanging.
#[tokio::test]
async fn bootstrap_without_peers_is_an_error() {
    let mut lonely = swarm(config());
    let err = lonely.behaviour_mut().bootstrap().unwrap_err();
    assert!(
        matches!(err, codio_discovery::DiscoveryError::NoKnownPeers),
        "{err}"
    );
}
