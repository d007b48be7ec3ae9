//! CDN fan-out and content routing on 20 loopback nodes (issue 17): a published message
//! reaches every subscriber exactly once; a peer that forwards invalid messages is scored
//! down and pruned while valid traffic keeps flowing; provide → find_providers (with
//! addresses, nearest first, and as a stream) → stop_providing → gone after the record's TTL;
//! the reprovide keeps a record alive past its TTL.

// Test code: a failed expectation panics and fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use codio_network::{
    NetworkConfig, NetworkManager, PeerId, discovery::KadMode, metrics::Registry,
    pubsub::Acceptance, pubsub::PubsubConfig, pubsub::PubsubError, pubsub::Topic,
    pubsub::TopicEvent,
};
use codio_tests::{
    ConfigExt, EVENT_TIMEOUT, TestNode, adversary::metric, connect, eventually, init_tracing,
    network, started_node,
};

const NODES: usize = 20;
const TOPIC: &str = "cdn/announce";

/// A loopback node with a fast gossipsub heartbeat; loopback is exempt from the IP
/// colocation penalty (20 peers share 127.0.0.1 here).
fn config() -> NetworkConfig {
    let pubsub = PubsubConfig::default()
        .with_heartbeat(Duration::from_millis(200))
        .with_colocation_whitelist([std::net::Ipv4Addr::LOCALHOST.into()]);
    NetworkConfig::loopback()
        .with_kad_mode(KadMode::Server)
        .with_pubsub(pubsub)
}

/// Starts `NODES` nodes joined through node 0, then connects each to two earlier ones (a
/// connected graph where most nodes have 3+ peers).
async fn mesh_network(config: impl Fn(usize) -> NetworkConfig) -> Vec<TestNode> {
    let nodes = network(NODES, config).await;
    for i in 1..NODES {
        for j in [i / 2, i - 1] {
            if j != 0 {
                connect(&nodes[i], &nodes[j]).await;
            }
        }
    }
    nodes
}

/// Waits until every topic handle has a mesh peer.
async fn meshes_formed(topics: &[Topic]) {
    for (i, topic) in topics.iter().enumerate() {
        assert!(
            eventually(EVENT_TIMEOUT, || async {
                !topic.mesh_peers().await.unwrap().is_empty()
            })
            .await,
            "node {i} has no mesh peer"
        );
    }
}

/// Reads `topic` until it has `wanted` distinct messages (counting every copy of each), or
/// the timeout; then reads on for `quiet` to catch late duplicates.
async fn collect(
    topic: &mut Topic,
    wanted: usize,
    timeout: Duration,
    quiet: Duration,
) -> HashMap<Vec<u8>, usize> {
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let deadline = Instant::now() + timeout;
    while seen.len() < wanted {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, topic.next_message()).await {
            Ok(Some(message)) => *seen.entry(message.data.to_vec()).or_default() += 1,
            Ok(None) | Err(_) => return seen,
        }
    }
    while let Ok(Some(message)) = tokio::time::timeout(quiet, topic.next_message()).await {
        *seen.entry(message.data.to_vec()).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_message_reaches_every_subscriber_exactly_once() {
    init_tracing();
    let nodes = mesh_network(|_| config()).await;
    let mut topics = Vec::new();
    for node in &nodes {
        topics.push(node.join(TOPIC).await.unwrap());
    }
    meshes_formed(&topics).await;
    let publisher = 7;
    let messages: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("new /video/{i}").into_bytes())
        .collect();
    for message in &messages {
        topics[publisher].publish(message.clone()).await.unwrap();
    }
    // One byte over the 64 KiB bound is refused at the publisher (and, below, never arrives).
    let too_large = topics[publisher].publish(vec![0; 64 * 1024 + 1]).await;
    assert!(
        matches!(too_large, Err(PubsubError::TooLarge { .. })),
        "{too_large:?}"
    );
    let mut readers = Vec::new();
    for (i, mut topic) in topics.into_iter().enumerate() {
        readers.push(tokio::spawn(async move {
            if i == publisher {
                return (i, HashMap::new(), topic);
            }
            let seen = collect(&mut topic, 20, EVENT_TIMEOUT, Duration::from_secs(1)).await;
            (i, seen, topic)
        }));
    }
    for reader in readers {
        let (i, seen, _topic) = reader.await.unwrap();
        if i == publisher {
            continue;
        }
        for message in &messages {
            assert_eq!(
                seen.get(message),
                Some(&1),
                "node {i} got {:?} {:?} times",
                String::from_utf8_lossy(message),
                seen.get(message)
            );
        }
        assert_eq!(seen.len(), messages.len(), "node {i}: {seen:?}");
    }
}

/// Node 19 publishes messages every node's validator rejects (with flood publishing, to
/// every node it is connected to); the nodes whose mesh it was in score it below zero and
/// prune it (each victim's own score and refusal count are read), and valid messages
/// published meanwhile reach every other node exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_publisher_is_scored_down_and_pruned_while_valid_traffic_continues() {
    init_tracing();
    let registries: Vec<Arc<Mutex<Registry>>> = (0..NODES)
        .map(|_| Arc::new(Mutex::new(Registry::default())))
        .collect();
    let metrics = registries.clone();
    let nodes = mesh_network(move |i| config().with_metrics(metrics[i].clone())).await;
    let attacker = NODES - 1;
    let validator: codio_network::pubsub::Validator =
        Arc::new(|message: &codio_network::pubsub::Message| {
            if message.data.starts_with(b"bad") {
                Acceptance::Reject
            } else {
                Acceptance::Accept
            }
        });
    let mut topics = Vec::new();
    for node in &nodes {
        topics.push(
            node.pubsub()
                .join_with(TOPIC, validator.clone())
                .await
                .unwrap(),
        );
    }
    meshes_formed(&topics).await;
    let attacker_id = nodes[attacker].local_peer_id();
    // The victims: the nodes with the attacker in their mesh (meshes change at each
    // heartbeat; wait until it is in one).
    let mut victims = Vec::new();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while victims.is_empty() && Instant::now() < deadline {
        for (i, topic) in topics.iter().enumerate().take(attacker) {
            if topic.mesh_peers().await.unwrap().contains(&attacker_id) {
                victims.push(i);
            }
        }
        if victims.is_empty() {
            // Bounded by the deadline; mesh changes have no event outside the topic handles.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(!victims.is_empty(), "the attacker is in no mesh");

    let publisher = 9;
    let good: Vec<Vec<u8>> = (0..10).map(|i| format!("good {i}").into_bytes()).collect();
    for (i, message) in good.iter().enumerate() {
        topics[attacker]
            .publish(format!("bad {i}").into_bytes())
            .await
            .unwrap();
        topics[publisher].publish(message.clone()).await.unwrap();
    }
    for &victim in &victims {
        let pubsub = nodes[victim].pubsub().clone();
        assert!(
            eventually(EVENT_TIMEOUT, || async {
                pubsub
                    .peer_score(attacker_id)
                    .await
                    .unwrap()
                    .is_some_and(|score| score < 0.0)
            })
            .await,
            "victim {victim} did not score the attacker down: {:?}",
            pubsub.peer_score(attacker_id).await
        );
        let topic = &topics[victim];
        assert!(
            eventually(EVENT_TIMEOUT, || async {
                !topic.mesh_peers().await.unwrap().contains(&attacker_id)
            })
            .await,
            "victim {victim} still has the attacker in its mesh"
        );
        let rejected = "codio_pubsub_refused_messages_total{reason=\"rejected\"}";
        assert!(
            metric(&registries[victim], rejected) > 0.0,
            "victim {victim}"
        );
        assert!(
            !topic.mesh_peers().await.unwrap().is_empty(),
            "victim {victim} mesh empty"
        );
    }
    let mut readers = Vec::new();
    for (i, mut topic) in topics.into_iter().enumerate() {
        readers.push(tokio::spawn(async move {
            if i == publisher || i == attacker {
                return (i, HashMap::new());
            }
            (
                i,
                collect(&mut topic, 10, EVENT_TIMEOUT, Duration::from_secs(1)).await,
            )
        }));
    }
    for reader in readers {
        let (i, seen) = reader.await.unwrap();
        if i == publisher || i == attacker {
            continue;
        }
        assert!(
            good.iter().all(|m| seen.get(m) == Some(&1)) && seen.len() == good.len(),
            "node {i}: {seen:?}"
        );
    }
}

/// Provider records with a 3 s TTL, reprovided every second by nodes that provide.
fn routing_config() -> NetworkConfig {
    let mut config = config();
    config.discovery = config
        .discovery
        .with_provider_ttl(Duration::from_secs(3))
        .with_reprovide(Duration::from_secs(1), 16, 32);
    config
}

async fn providers_of(node: &NetworkManager, key: &[u8]) -> Vec<PeerId> {
    let providers = node.find_providers(key.to_vec()).await.unwrap_or_default();
    providers.iter().map(|p| p.peer_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_are_found_with_addresses_reprovided_and_gone_after_stop() {
    init_tracing();
    let nodes = mesh_network(|_| routing_config()).await;
    let key = b"/videos/42".to_vec();
    let (provider, seeker) = (&nodes[3], &nodes[15]);
    provider.provide(key.clone()).await.unwrap();

    // Found, with an address the provider listens on.
    let found = seeker.find_providers(key.clone()).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].peer_id, provider.local_peer_id());
    assert!(
        found[0]
            .addresses
            .iter()
            .any(|a| provider.listen_addrs().contains(a)),
        "{found:?} vs {:?}",
        provider.listen_addrs()
    );

    // Reprovided: still found after three TTLs.
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(9) {
        let found = providers_of(seeker, &key).await;
        assert_eq!(
            found,
            vec![provider.local_peer_id()],
            "lost after {:?}",
            since.elapsed()
        );
    }

    // Several providers, nearest first: a connected one before the rest.
    for node in [&nodes[5], &nodes[11]] {
        node.provide(key.clone()).await.unwrap();
    }
    connect(seeker, &nodes[11]).await;
    let found = seeker.find_providers(key.clone()).await.unwrap();
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].connected, "{found:?}");
    assert!(found.iter().all(|p| !p.addresses.is_empty()), "{found:?}");

    // The streaming variant yields the same three, then ends.
    let mut stream = seeker.dht().providers_stream(key.clone()).await.unwrap();
    let mut streamed = HashSet::new();
    while let Some(found) = tokio::time::timeout(EVENT_TIMEOUT, stream.next())
        .await
        .unwrap()
    {
        streamed.insert(found.peer_id);
    }
    let expected: HashSet<PeerId> = [3, 5, 11]
        .iter()
        .map(|&i| nodes[i].local_peer_id())
        .collect();
    assert_eq!(streamed, expected);

    // Stopped: gone once the records expire (within the TTL plus a lookup), not before the
    // others.
    for i in [3, 5, 11] {
        nodes[i].stop_providing(key.clone()).await.unwrap();
    }
    let stopped = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || async {
            providers_of(seeker, &key).await.is_empty()
        })
        .await,
        "still provided {:?} after stop_providing",
        stopped.elapsed()
    );
}

/// Reads `topic` until a mesh change satisfies `done` (given the mesh's peers so far, built
/// from the changes read); other events read meanwhile are dropped.
async fn wait_for_mesh(
    topic: &mut Topic,
    mesh: &mut HashSet<PeerId>,
    what: &str,
    done: impl Fn(&HashSet<PeerId>) -> bool,
) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while !done(mesh) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, topic.next()).await {
            Ok(Some(TopicEvent::MeshChanged(change))) => {
                mesh.extend(change.added.iter().copied());
                for peer in &change.removed {
                    mesh.remove(peer);
                }
                assert_eq!(mesh.len(), change.size, "{what}: changes add up");
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("{what}: no such mesh change (mesh {mesh:?})"),
        }
    }
}

/// A victim allowing 20 messages a second per forwarding peer (burst 20) is flooded with 300
/// messages by one peer while another publishes 10 at 10 a second: the flood is held to the
/// rate (the victim delivers at most the burst plus the rate over the time, and counts the
/// rest as `peer_rate` refusals), and every message of the good publisher arrives exactly
/// once. Mesh changes are read as events: the victim's mesh gains both peers, and loses the
/// good one when it leaves the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_publisher_is_held_to_its_rate_and_mesh_changes_are_events() {
    init_tracing();
    let registry = Arc::new(Mutex::new(Registry::default()));
    let mut victim_config = config().with_metrics(registry.clone());
    victim_config.pubsub = victim_config.pubsub.clone().with_peer_rate(20, 20);
    let victim = started_node(victim_config).await;
    // The flooder and the good publisher know the victim only, not each other: nothing the
    // flooder sends reaches the victim through the good peer.
    let flooder = started_node(config()).await;
    let good = started_node(config()).await;
    for peer in [&flooder, &good] {
        connect(peer, &victim).await;
    }
    let mut victim_topic = victim.join(TOPIC).await.unwrap();
    let mut flooder_topic = flooder.join(TOPIC).await.unwrap();
    let mut good_topic = good.join(TOPIC).await.unwrap();
    let (flooder_id, good_id) = (flooder.local_peer_id(), good.local_peer_id());
    let mut mesh = HashSet::new();
    wait_for_mesh(&mut victim_topic, &mut mesh, "victim meshes both", |m| {
        m.contains(&flooder_id) && m.contains(&good_id)
    })
    .await;
    let victim_id = victim.local_peer_id();
    for (topic, name) in [(&mut flooder_topic, "flooder"), (&mut good_topic, "good")] {
        wait_for_mesh(topic, &mut HashSet::new(), name, |m| m.contains(&victim_id)).await;
    }

    let started = Instant::now();
    let flood = tokio::spawn(async move {
        for i in 0..300 {
            flooder_topic
                .publish(format!("flood {i}").into_bytes())
                .await
                .unwrap();
        }
        flooder_topic
    });
    let sent: Vec<Vec<u8>> = (0..10).map(|i| format!("good {i}").into_bytes()).collect();
    let publish = tokio::spawn({
        let sent = sent.clone();
        async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            for message in sent {
                ticks.tick().await;
                good_topic.publish(message).await.unwrap();
            }
            good_topic
        }
    });
    let seen = collect(&mut victim_topic, 10, EVENT_TIMEOUT, Duration::ZERO).await;
    let _flooder_topic = flood.await.unwrap();
    let good_topic = publish.await.unwrap();
    // Late copies of anything, then the tally.
    let mut seen = seen;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_secs(1), victim_topic.next_message()).await
    {
        *seen.entry(message.data.to_vec()).or_default() += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    for message in &sent {
        assert_eq!(seen.get(message), Some(&1), "{seen:?}");
    }
    let flooded: usize = seen
        .iter()
        .filter(|(data, _)| data.starts_with(b"flood"))
        .map(|(_, copies)| *copies)
        .sum();
    let allowed = 20.0 + 20.0 * elapsed;
    assert!(
        (flooded as f64) <= allowed,
        "{flooded} flood messages delivered in {elapsed:.1} s (at most {allowed:.0})"
    );
    let refused = metric(
        &registry,
        "codio_pubsub_refused_messages_total{reason=\"peer_rate\"}",
    );
    assert!(
        refused >= (300 - flooded) as f64,
        "{refused} refused, {flooded} delivered of 300"
    );

    // The good peer leaves: the victim's mesh loses it.
    drop(good_topic);
    wait_for_mesh(&mut victim_topic, &mut mesh, "good peer pruned", |m| {
        !m.contains(&good_id)
    })
    .await;
    for node in [victim, flooder, good] {
        node.shutdown().await;
    }
}

/// A peer publishing unsigned messages (libp2p gossipsub in anonymous mode) to a victim
/// while a codio peer publishes signed ones: the victim delivers every signed message exactly
/// once and none of the unsigned ones (its delivered counter holds the signed ones only),
/// though the attacker's gossipsub handed it 10 or more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_messages_never_reach_the_application() {
    init_tracing();
    let registry = Arc::new(Mutex::new(Registry::default()));
    let victim = started_node(config().with_metrics(registry.clone())).await;
    let good = started_node(config()).await;
    connect(&good, &victim).await;
    let mut victim_topic = victim.join(TOPIC).await.unwrap();
    let mut good_topic = good.join(TOPIC).await.unwrap();
    let victim_id = victim.local_peer_id();
    wait_for_mesh(&mut good_topic, &mut HashSet::new(), "good", |m| {
        m.contains(&victim_id)
    })
    .await;
    let attacker = std::net::Ipv4Addr::new(127, 0, 5, 1).into();
    let unsigned = codio_tests::adversary::unsigned_publisher(
        victim.listen_addrs()[0].clone(),
        attacker,
        TOPIC,
        Duration::from_millis(20),
    );
    assert!(
        eventually(EVENT_TIMEOUT, || async { unsigned.opened() >= 10 }).await,
        "the attacker published {}",
        unsigned.opened()
    );
    let sent: Vec<Vec<u8>> = (0..5).map(|i| format!("signed {i}").into_bytes()).collect();
    for message in &sent {
        good_topic.publish(message.clone()).await.unwrap();
    }
    let seen = collect(&mut victim_topic, 5, EVENT_TIMEOUT, Duration::from_secs(1)).await;
    assert!(unsigned.opened() >= 10);
    drop(unsigned);
    for message in &sent {
        assert_eq!(seen.get(message), Some(&1), "{seen:?}");
    }
    assert_eq!(seen.len(), sent.len(), "only the signed ones: {seen:?}");
    let delivered = metric(&registry, "codio_pubsub_delivered_messages_total");
    assert_eq!(delivered, sent.len() as f64);
    for node in [victim, good] {
        node.shutdown().await;
    }
}
