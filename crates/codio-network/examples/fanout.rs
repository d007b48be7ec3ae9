//! CDN fan-out: three nodes on loopback join `cdn/announce`; two seeders provide the same
//! content id in the DHT and one announces it; the edge reads the announcement, then finds
//! the providers with their addresses, nearest first (it is connected to one of them), and
//! streams them as the lookup finds them. A validator drops announcements that do not start
//! with "new " or "purge ".
//!
//! ```sh
//! cargo run -p codio-network --example fanout
//! ```

// An example program reports what it did on stdout.
#![allow(clippy::print_stdout)]

use std::{sync::Arc, time::Duration};

use codio_network::{
    NetworkConfig, NetworkManager, discovery::KadMode, pubsub::Acceptance, pubsub::Message,
    pubsub::PubsubConfig, pubsub::Validator,
};

/// Loopback DHT servers (no mDNS, no relay client) with a quick gossipsub heartbeat.
fn config() -> NetworkConfig {
    let mut config = NetworkConfig::loopback()
        .with_pubsub(PubsubConfig::default().with_heartbeat(Duration::from_millis(200)));
    config.discovery = config.discovery.with_kad_mode(KadMode::Server);
    config
}

async fn started(config: NetworkConfig) -> Result<NetworkManager, Box<dyn std::error::Error>> {
    let node = NetworkManager::new(config).await?;
    node.start().await?;
    Ok(node)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let edge = started(config()).await?;
    let bootstrap = vec![edge.dial_addr().ok_or("the edge is not listening")?];
    let seeders = [
        started(config().with_bootstrap_peers(bootstrap.clone())).await?,
        started(config().with_bootstrap_peers(bootstrap)).await?,
    ];
    // Each side's DHT knows the other's addresses once identify ran.
    let wait = Duration::from_secs(10);
    for seeder in &seeders {
        edge.identified(seeder.local_peer_id(), wait).await?;
        seeder.identified(edge.local_peer_id(), wait).await?;
    }

    // Every agent judges the control messages it relays.
    let validator: Validator = Arc::new(|message: &Message| {
        let known = [&b"new "[..], b"purge "];
        match known.iter().any(|prefix| message.data.starts_with(prefix)) {
            true => Acceptance::Accept,
            false => Acceptance::Reject,
        }
    });
    let mut announcements = edge
        .pubsub()
        .join_with("cdn/announce", validator.clone())
        .await?;
    let mut announce = seeders[0]
        .pubsub()
        .join_with("cdn/announce", validator)
        .await?;
    // Publish once the edge's subscription has arrived.
    let subscribed = async {
        while announce.subscribers().await?.is_empty() {
            announce.next().await.ok_or("the seeder shut down")?;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    tokio::time::timeout(Duration::from_secs(10), subscribed).await??;

    // The seeders provide the content; the first announces it.
    let content = b"/videos/42".to_vec();
    for seeder in &seeders {
        seeder.provide(content.clone()).await?;
    }
    announce.publish("new /videos/42").await?;
    let message = tokio::time::timeout(Duration::from_secs(10), announcements.next_message())
        .await?
        .ok_or("the edge shut down")?;
    println!(
        "edge got {:?} from {}",
        String::from_utf8_lossy(&message.data),
        message.from
    );

    // Nearest first: the edge is connected to both seeders; each provider has addresses.
    let providers = edge.find_providers(content.clone()).await?;
    for provider in &providers {
        println!(
            "provider {} connected={} rtt={:?} at {:?}",
            provider.peer_id, provider.connected, provider.rtt, provider.addresses
        );
    }
    if providers.len() != 2 || providers.iter().any(|p| p.addresses.is_empty()) {
        return Err("expected both seeders, with addresses".into());
    }
    let mut stream = edge.dht().providers_stream(content.clone()).await?;
    while let Some(provider) = stream.next().await {
        println!("streamed provider {}", provider.peer_id);
    }

    for seeder in &seeders {
        seeder.stop_providing(content.clone()).await?;
        seeder.shutdown().await;
    }
    edge.shutdown().await;
    Ok(())
}
