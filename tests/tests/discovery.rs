//! Discovery: mDNS in private namespaces, bootstrap peers and the Kademlia DHT on loopback.

// Test code: a failed expectation panics and fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashSet, time::Duration};

use codio_network::{NetworkConfig, NetworkEvent, NetworkManager, PeerId, discovery::KadMode};
use codio_tests::{
    ConfigExt, EVENT_TIMEOUT, TempDir, init_tracing, loopback_node,
    netns::{self, NetLab},
    network, node_binary,
    process::NodeProcess,
    started_node, wait_for_event,
};
use libp2p::kad::KBucketKey;

/// The seed's peer discovery test: three nodes with mDNS only and no addresses find each other.
/// Runs inside a fresh private network namespace (never on the host's interfaces).
#[tokio::test]
async fn test_peer_discovery() {
    if !netns::is_netns_child() {
        netns::in_fresh_netns("test_peer_discovery", Duration::from_secs(60)).await;
        return;
    }
    netns::setup_fresh_netns();
    init_tracing();
    let mut nodes = Vec::new();
    let mut events = Vec::new();
    for _ in 0..3 {
        let config = NetworkConfig::default().with_relay(false).with_mdns(true);
        let node = NetworkManager::new(config).await.expect("node");
        events.push(node.subscribe());
        node.start().await.expect("start");
        nodes.push(node);
    }
    // Every node sees both others connect; each first connection runs over the namespace's
    // bridge, not loopback (mDNS never announces loopback addresses).
    for events in &mut events {
        let mut seen = HashSet::new();
        while seen.len() < 2 {
            if let NetworkEvent::PeerConnected {
                peer_id, address, ..
            } = wait_for_event(events, Duration::from_secs(20), "two peers connect", |e| {
                matches!(e, NetworkEvent::PeerConnected { .. })
            })
            .await
            {
                assert!(
                    address.to_string().contains(netns::FRESH_NETNS_ADDR),
                    "connected over {address}"
                );
                seen.insert(peer_id);
            }
        }
    }
    let ids: HashSet<PeerId> = nodes.iter().map(|n| n.local_peer_id()).collect();
    for node in &nodes {
        let peers: HashSet<PeerId> = node.connected_peers().iter().map(|p| p.peer_id).collect();
        let expected: HashSet<PeerId> = ids
            .iter()
            .copied()
            .filter(|p| *p != node.local_peer_id())
            .collect();
        assert_eq!(peers, expected, "exactly the two other nodes");
    }
    for node in &nodes {
        node.shutdown().await;
    }
}

/// codio's mDNS and libp2p's (libp2p-mdns) find each other: a stock libp2p swarm with mDNS
/// learns the codio node, and the codio node finds and dials the stock one. In a fresh
/// namespace.
#[tokio::test]
async fn mdns_interoperates_with_libp2p_mdns() {
    use futures::StreamExt;
    use libp2p::{mdns, swarm::SwarmEvent};
    if !netns::is_netns_child() {
        netns::in_fresh_netns(
            "mdns_interoperates_with_libp2p_mdns",
            Duration::from_secs(60),
        )
        .await;
        return;
    }
    netns::setup_fresh_netns();
    init_tracing();
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let stock_id = keypair.public().to_peer_id();
    let transport =
        codio_transport::build_transport(&keypair, &codio_transport::TransportConfig::default())
            .expect("transport");
    let behaviour = mdns::tokio::Behaviour::new(mdns::Config::default(), stock_id).expect("mdns");
    let mut stock = libp2p::Swarm::new(
        transport,
        behaviour,
        stock_id,
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(Duration::from_secs(30)),
    );
    stock
        .listen_on("/ip4/0.0.0.0/tcp/0".parse().expect("address"))
        .expect("listen");
    let codio = NetworkManager::new(NetworkConfig::default().with_relay(false).with_mdns(true))
        .await
        .expect("node");
    let mut events = codio.subscribe();
    codio.start().await.expect("start");
    let codio_id = codio.local_peer_id();
    let (mut stock_found_codio, mut codio_connected_stock) = (false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(stock_found_codio && codio_connected_stock) {
        tokio::select! {
            event = stock.select_next_some() => {
                if let SwarmEvent::Behaviour(mdns::Event::Discovered(found)) = event {
                    stock_found_codio |= found.iter().any(|(peer, _)| *peer == codio_id);
                }
            }
            Ok(event) = events.recv() => {
                if let NetworkEvent::PeerConnected { peer_id, .. } = event {
                    codio_connected_stock |= peer_id == stock_id;
                }
            }
            () = tokio::time::sleep_until(deadline) => panic!(
                "stock found codio: {stock_found_codio}, codio connected stock: {codio_connected_stock}"
            ),
        }
    }
}

/// Three hosts (namespaces on a bridge), each a `codio-node` process with mDNS only.
#[tokio::test]
async fn mdns_across_three_hosts() {
    let lab = match NetLab::new(3) {
        Ok(lab) => lab,
        Err(reason) => {
            netns::skip_or_fail("mdns_across_three_hosts", &reason);
            return;
        }
    };
    let binary = node_binary();
    let mut nodes: Vec<NodeProcess> = lab
        .hosts()
        .iter()
        .map(|host| {
            NodeProcess::spawn_command(
                lab.command(host, &binary),
                ["--listen-ip", "0.0.0.0", "--listen-port", "4001"],
            )
        })
        .collect();
    for (node, host) in nodes.iter_mut().zip(lab.hosts()) {
        let line = node
            .wait_for_line(
                Duration::from_secs(30),
                &format!("{} has 2 peers", host.ip),
                |l| l.contains("peer connected") && l.contains("connected=2"),
            )
            .await;
        assert!(
            line.contains("10.77.1."),
            "connected over the lab bridge: {line}"
        );
    }
    for node in &mut nodes {
        node.signal("TERM");
        let status = node.wait_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "node exited with {status}");
    }
}

/// The "Run a private swarm" walkthrough of docs/operations.md, on four hosts: a key from
/// `codio-node key generate`, three nodes started with it find each other through mDNS and
/// connect; a fourth host without the key finds none of them through mDNS (they announce
/// under the key's service name) and cannot connect when it dials one directly.
#[tokio::test]
async fn a_private_swarm_finds_its_members_and_keeps_an_outsider_out() {
    let lab = match NetLab::new(4) {
        Ok(lab) => lab,
        Err(reason) => {
            netns::skip_or_fail("a_private_swarm_finds_its_members", &reason);
            return;
        }
    };
    let binary = node_binary();
    let dir = TempDir::new("private-swarm");
    let key = dir.arg("swarm.key");
    let generated = std::process::Command::new(&binary)
        .args(["key", "generate", &key])
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let (members, outsider) = lab.hosts().split_at(3);
    let mut nodes: Vec<NodeProcess> = members
        .iter()
        .map(|host| {
            NodeProcess::spawn_command(
                lab.command(host, &binary),
                ["--listen-port", "4001", "--swarm-key", &key],
            )
        })
        .collect();
    let member_addr = format!("/ip4/{}/tcp/4001", members[0].ip);
    let mut stranger = NodeProcess::spawn_command(
        lab.command(&outsider[0], &binary),
        ["--listen-port", "4001", "--dial", &member_addr],
    );
    for (node, host) in nodes.iter_mut().zip(members) {
        node.wait_for_line(
            Duration::from_secs(30),
            &format!("{} has its 2 fellow members", host.ip),
            |l| l.contains("peer connected") && l.contains("connected=2"),
        )
        .await;
    }
    stranger
        .wait_for_line(Duration::from_secs(30), "the outsider's dial fails", |l| {
            l.contains("dial failed")
        })
        .await;
    let seen = stranger.lines_so_far().join("\n");
    assert!(
        !seen.contains("peer discovered") && !seen.contains("peer connected"),
        "the outsider found or reached no member:\n{seen}"
    );
    for node in &mut nodes {
        let lines = node.lines_so_far().join("\n");
        assert!(!lines.contains("connected=3"), "members only:\n{lines}");
        assert!(
            !lines.contains(&outsider[0].ip.to_string()),
            "the outsider never shows up:\n{lines}"
        );
        node.signal("TERM");
        let status = node.wait_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "node exited with {status}");
    }
    stranger.signal("TERM");
    stranger.wait_exit(Duration::from_secs(20)).await;
}

/// The seed's bootstrap test: a peer given only the bootstrap address connects to it.
#[tokio::test]
async fn test_bootstrap_nodes() {
    init_tracing();
    let bootstrap = started_node(NetworkConfig::loopback().with_kad_mode(KadMode::Server)).await;
    let mut bootstrap_events = bootstrap.subscribe();
    let peer = NetworkManager::new(
        NetworkConfig::loopback().with_bootstrap_peers(vec![bootstrap.dial_addr().unwrap()]),
    )
    .await
    .unwrap();
    let mut peer_events = peer.subscribe();
    peer.start().await.unwrap();
    wait_for_event(&mut peer_events, EVENT_TIMEOUT, "peer: connected to bootstrap", |e| {
        matches!(e, NetworkEvent::PeerConnected { peer_id, .. } if *peer_id == bootstrap.local_peer_id())
    })
    .await;
    wait_for_event(&mut bootstrap_events, EVENT_TIMEOUT, "bootstrap: peer connected", |e| {
        matches!(e, NetworkEvent::PeerConnected { peer_id, .. } if *peer_id == peer.local_peer_id())
    })
    .await;
    assert_eq!(peer.connected_peers().len(), 1);
}

/// A lost bootstrap peer is dialed again: the bootstrap node restarts with the same identity
/// and port and the peer reconnects by itself.
#[tokio::test]
async fn bootstrap_peer_is_redialed_after_restart() {
    init_tracing();
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let bootstrap = started_node(NetworkConfig::loopback().with_keypair(keypair.clone())).await;
    let address = bootstrap.dial_addr().unwrap();
    let port = bootstrap.listen_addrs()[0]
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    let peer = started_node(
        NetworkConfig::loopback()
            .with_bootstrap_peers(vec![address])
            .with_backoff(
                codio_network::policy::BackoffConfig::default()
                    .with_min(Duration::from_millis(200))
                    .with_max(Duration::from_secs(1)),
            ),
    )
    .await;
    let mut events = peer.subscribe();
    wait_for_event(&mut events, EVENT_TIMEOUT, "connected to bootstrap", |e| {
        matches!(e, NetworkEvent::PeerConnected { peer_id, .. } if *peer_id == bootstrap.local_peer_id())
    })
    .await;
    bootstrap.shutdown().await;
    wait_for_event(&mut events, EVENT_TIMEOUT, "bootstrap lost", |e| {
        matches!(e, NetworkEvent::PeerDisconnected { .. })
    })
    .await;
    let restarted = started_node(
        NetworkConfig::loopback()
            .with_keypair(keypair)
            .with_listen_port(port),
    )
    .await;
    wait_for_event(&mut events, EVENT_TIMEOUT, "reconnected to the restarted bootstrap", |e| {
        matches!(e, NetworkEvent::PeerConnected { peer_id, .. } if *peer_id == restarted.local_peer_id())
    })
    .await;
}

/// Global discovery with mDNS off: ten peers bootstrap from one node; every peer finds every
/// other through the DHT, closest-peer queries return the right peers, and provider records
/// round-trip.
#[tokio::test]
async fn global_discovery_ten_peers() {
    init_tracing();
    let config = || NetworkConfig::loopback().with_kad_mode(KadMode::Server);
    // The bootstrap node (the first) has identified all nine before lookups route through it.
    let nodes = network(10, |_| config()).await;

    for (i, node) in nodes.iter().enumerate() {
        for (j, target) in nodes.iter().enumerate() {
            if i == j {
                continue;
            }
            // Disconnect first (except from the bootstrap node) so the lookup really dials.
            if j != 0 && node.peer_info(&target.local_peer_id()).is_some() {
                node.disconnect_peer(target.local_peer_id()).await.unwrap();
            }
            let addresses = node
                .find_peer(target.local_peer_id())
                .await
                .unwrap_or_else(|e| panic!("node {i} find_peer(node {j}): {e}"));
            assert!(
                addresses.iter().any(|a| target.listen_addrs().contains(a)),
                "node {i} found {addresses:?} for node {j}, which listens on {:?}",
                target.listen_addrs()
            );
            assert!(
                node.peer_info(&target.local_peer_id()).is_some(),
                "node {i} not connected to {j}"
            );
        }
    }

    // Closest peers: the network is smaller than k = 20, so a lookup returns every other peer,
    // sorted by XOR distance to the key.
    let key = b"codio-closest-key".to_vec();
    let closest = nodes[5].closest_peers(key.clone()).await.unwrap();
    let mut expected: Vec<PeerId> = nodes
        .iter()
        .map(|n| n.local_peer_id())
        .filter(|p| *p != nodes[5].local_peer_id())
        .collect();
    let target = KBucketKey::new(key);
    expected.sort_by_key(|p| target.distance(&KBucketKey::from(*p)));
    assert_eq!(closest, expected);

    // Content routing.
    nodes[3]
        .provide(b"codio-content-42".to_vec())
        .await
        .unwrap();
    let providers = nodes[7]
        .find_providers(b"codio-content-42".to_vec())
        .await
        .unwrap();
    let ids: HashSet<_> = providers.iter().map(|p| p.peer_id).collect();
    assert_eq!(ids, HashSet::from([nodes[3].local_peer_id()]));
    assert!(!providers[0].addresses.is_empty(), "{providers:?}");
    let none = nodes[7]
        .find_providers(b"nobody-has-this".to_vec())
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");

    for node in &nodes {
        node.shutdown().await;
    }
}

/// A node that knows no DHT peer says so (`NoKnownPeers`) instead of running a lookup with
/// nobody to ask.
#[tokio::test]
async fn lookups_without_dht_peers_fail_with_no_known_peers() {
    init_tracing();
    let node = loopback_node().await;
    let err = node.closest_peers(b"key".to_vec()).await.unwrap_err();
    assert_eq!(err, codio_network::discovery::DhtError::NoKnownPeers);
    let err = node.find_peer(PeerId::random()).await.unwrap_err();
    assert_eq!(
        err,
        codio_network::FindPeerError::Dht(codio_network::discovery::DhtError::NoKnownPeers)
    );
}

/// Looking up a peer that does not exist fails with NotFound, not a hang.
#[tokio::test]
async fn find_peer_of_unknown_peer_is_not_found() {
    init_tracing();
    let config = || NetworkConfig::loopback().with_kad_mode(KadMode::Server);
    let a = started_node(config()).await;
    let b = started_node(config().with_bootstrap_peers(vec![a.dial_addr().unwrap()])).await;
    let mut events = b.subscribe();
    wait_for_event(&mut events, EVENT_TIMEOUT, "b identifies a", |e| {
        matches!(e, NetworkEvent::PeerIdentified { .. })
    })
    .await;
    let ghost = PeerId::random();
    let err = b.find_peer(ghost).await.unwrap_err();
    assert_eq!(
        err,
        codio_network::FindPeerError::Dht(codio_network::discovery::DhtError::NotFound(ghost))
    );
}
