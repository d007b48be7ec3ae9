//! `NetworkConfig`: the seed's defaults, and settings that cannot work refused by name — the
//! facade's own and every layer's, surfaced through `NetworkManager::new`.

// Test code: a failed expectation panics and fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use codio_network::{
    Multiaddr, NetworkConfig, NetworkManager, PeerId, policy::LimitsConfig, policy::PolicyConfig,
    protocol::ProtocolConfig,
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
    assert!(c.listen_addrs.is_empty());
    let plan = |c: &NetworkConfig| {
        c.listen_plan()
            .into_iter()
            .map(|(a, need)| format!("{a} {need:?}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        plan(&c),
        [
            "/ip4/0.0.0.0/tcp/0 Required",
            "/ip4/0.0.0.0/udp/0/quic-v1 Required",
            "/ip6/::/tcp/0 Optional",
            "/ip6/::/udp/0/quic-v1 Optional"
        ]
    );
    let v6 = c
        .clone()
        .with_listen_ip("::1".parse().unwrap())
        .with_listen_port(4001);
    assert_eq!(
        plan(&v6),
        [
            "/ip6/::1/tcp/4001 Required",
            "/ip6/::1/udp/4001/quic-v1 Required"
        ]
    );
    // A swarm key turns QUIC off (pnet cannot wrap it).
    let mut private = c.clone();
    private.transport = private
        .transport
        .with_private_network(Some(codio_network::transport::PreSharedKey::new([1; 32])));
    assert_eq!(
        plan(&private),
        ["/ip4/0.0.0.0/tcp/0 Required", "/ip6/::/tcp/0 Optional"]
    );
    let explicit: Multiaddr = "/ip6/::1/udp/9/quic-v1".parse().unwrap();
    let chosen = c.with_listen_addrs(vec![explicit.clone()]);
    assert_eq!(plan(&chosen), [format!("{explicit} Required")]);
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

/// A seed field and the layer setting it names, set apart, are refused with both names; a
/// layer setting changed alone (the seed field at its default) is what the node runs.
#[tokio::test]
async fn a_seed_field_and_its_layer_setting_cannot_disagree() {
    use codio_network::Edit;
    let mut config = NetworkConfig::loopback().with_max_peers(10);
    config
        .policy
        .limits_mut()
        .edit(|limits| limits.with_max_established(20));
    let err = NetworkManager::new(config).await.unwrap_err().to_string();
    assert!(err.contains("max_peers"), "{err}");
    assert!(err.contains("policy.limits.max_established"), "{err}");

    // mDNS turned off in the discovery configuration alone stays off: the node starts with
    // no mDNS socket (a node with mDNS on holds one, counted by the metric below).
    let registry = std::sync::Arc::new(std::sync::Mutex::new(
        codio_network::metrics::Registry::default(),
    ));
    let mut config = NetworkConfig::default()
        .with_listen_ip("127.0.0.1".parse().unwrap())
        .with_relay(false)
        .with_metrics(registry.clone());
    config.discovery.edit(|d| d.with_mdns(false));
    assert!(config.enable_mdns, "the seed field stays at its default");
    let node = NetworkManager::new(config).await.unwrap();
    node.start().await.unwrap();
    let mut text = String::new();
    codio_network::metrics::encode(&mut text, &registry.lock().unwrap()).unwrap();
    node.shutdown().await;
    assert!(
        !text.contains("codio_mdns_"),
        "a node without mDNS exports no mDNS metrics:\n{text}"
    );
}
