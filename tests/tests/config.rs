//! `NetworkConfig`: the seed's defaults, and settings that cannot work refused by name — the
//! facade's own and every layer's, surfaced through `NetworkManager::new`.

// Test code: a failed expectation panics and fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use codio_network::{
    LimitsConfig, Multiaddr, NetworkConfig, NetworkManager, PeerId, PolicyConfig, ProtocolConfig,
};

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
    let v6 = c
        .with_listen_ip("::1".parse().unwrap())
        .with_listen_port(4001);
    assert_eq!(v6.listen_multiaddr().to_string(), "/ip6/::1/tcp/4001");
}

/// The error `NetworkManager::new` gives for `config`.
async fn refusal(config: NetworkConfig) -> String {
    let config = config.with_mdns(false);
    NetworkManager::new(config).await.unwrap_err().to_string()
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_by_name() {
    let err = refusal(NetworkConfig::default().with_max_peers(0)).await;
    assert!(err.contains("max_peers"), "{err}");
    let unnamed: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    let err = refusal(NetworkConfig::default().with_bootstrap_peers(vec![unnamed])).await;
    assert!(err.contains("bootstrap_peers"), "{err}");
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{}", PeerId::random())
        .parse()
        .unwrap();
    let err =
        refusal(NetworkConfig::default().with_bootstrap_peers(vec![addr.clone(), addr])).await;
    assert!(err.contains("listed twice"), "{err}");
    let marks = LimitsConfig::new(50).with_watermarks(10, 5);
    let err =
        refusal(NetworkConfig::default().with_policy(PolicyConfig::default().with_limits(marks)))
            .await;
    assert!(err.contains("watermarks"), "{err}");
    let protocol = ProtocolConfig::default().with_inbound_request_buffer(0);
    let err = refusal(NetworkConfig::default().with_protocol(protocol.clone())).await;
    assert!(err.contains("inbound_request_buffer"), "{err}");
    // Taking the queue of an invalid configuration does not panic; `build` refuses it.
    let mut builder = NetworkManager::builder(NetworkConfig::default().with_protocol(protocol));
    let _requests = builder.request_queue();
    let err = builder.build().await.unwrap_err().to_string();
    assert!(err.contains("inbound_request_buffer"), "{err}");
    let mut relays = NetworkConfig::default();
    relays.nat = relays
        .nat
        .with_relays(vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()]);
    let err = refusal(relays).await;
    assert!(err.contains("relays"), "{err}");
}
