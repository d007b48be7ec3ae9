//! A 100-node Kademlia network on loopback: every lookup succeeds.
//!
//! Prints the median lookup time and RPC count; `docs/performance.md` records them from a
//! release run: `cargo test --release -p codio-tests --test kad_network -- --nocapture`.

// Test code: a failed expectation panics and fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use codio_network::{NetworkConfig, discovery::KadMode};
use codio_tests::{ConfigExt, init_tracing, network};

const NODES: usize = 100;

/// The `q`-quantile (0.0..=1.0) of `values`, nearest rank.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[rank]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_node_kademlia_network_every_lookup_succeeds() {
    init_tracing();
    let t0 = std::time::Instant::now();
    let config = || {
        NetworkConfig::loopback()
            .with_kad_mode(KadMode::Server)
            .with_max_peers(4 * NODES)
            // A 100-node join storm: the bootstrap node takes 99 handshakes at once.
            .with_pending_limits(4 * NODES, 4 * NODES)
            .with_query_timeout(Duration::from_secs(60))
    };
    // Every node joins through the first; the first has identified all of them.
    let nodes = network(NODES, |_| config()).await;

    let joined = t0.elapsed();
    // Node i looks up a node far away in the list; the target is distance 0 from its own key,
    // so a successful lookup returns it first.
    let mut millis = Vec::with_capacity(NODES);
    let mut requests = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let target = nodes[(i * 37 + 11) % NODES].local_peer_id();
        if target == nodes[i].local_peer_id() {
            continue;
        }
        let lookup = nodes[i]
            .lookup(target.to_bytes())
            .await
            .unwrap_or_else(|e| panic!("node {i}: lookup of {target} failed: {e}"));
        assert_eq!(
            lookup.peers.first(),
            Some(&target),
            "node {i}: lookup of {target} did not find it"
        );
        millis.push(lookup.duration.as_secs_f64() * 1e3);
        requests.push(f64::from(lookup.requests));
    }
    let lookups = millis.len();
    println!(
        "kad_network: {NODES} nodes joined in {joined:?}; {lookups} lookups, all found; \
         lookup time p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms; RPCs per lookup p50 {} max {}",
        quantile(&mut millis, 0.5),
        quantile(&mut millis, 0.9),
        quantile(&mut millis, 1.0),
        quantile(&mut requests, 0.5),
        quantile(&mut requests, 1.0),
    );
    for node in &nodes {
        node.shutdown().await;
    }
}
