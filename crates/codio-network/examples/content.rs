//! Content routing and bulk transfer: a seeder announces a file in the DHT, a fetcher finds
//! it through `find_providers` and asks for it; the seeder streams the file over a bulk
//! stream and the fetcher checks its SHA-256.
//!
//! ```sh
//! cargo run -p codio-network --example content
//! ```

// An example program reports what it did on stdout.
#![allow(clippy::print_stdout)]

use std::sync::{Arc, OnceLock};

use codio_network::{
    NetworkConfig, NetworkEvent, NetworkManager, discovery::KadMode, protocol::BulkHeader,
    protocol::ContentId, protocol::ErrorCode, protocol::Request, protocol::Response,
};
use futures::io::AllowStdIo;
use libp2p::multiaddr::Protocol;
use sha2::{Digest, Sha256};

/// Loopback DHT servers: no mDNS, no relay client.
fn config() -> NetworkConfig {
    let mut config = NetworkConfig::default()
        .with_listen_ip(std::net::Ipv4Addr::LOCALHOST.into())
        .with_mdns(false)
        .with_relay(false);
    config.discovery = config.discovery.with_kad_mode(KadMode::Server);
    config
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The file to share: 4 MiB in a temporary directory.
    let dir = std::env::temp_dir().join(format!("codio-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("shared.bin");
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(&path, &data)?;
    let content = ContentId(Sha256::digest(&data).into());

    // The fetcher receives bulk transfers; the seeder serves "send me" requests.
    let mut builder = NetworkManager::builder(config());
    let mut incoming = builder.bulk_queue();
    let fetcher = builder.build().await?;
    let fetcher_address = fetcher.start().await?[0]
        .clone()
        .with(Protocol::P2p(fetcher.local_peer_id()));

    // The seeder answers "send" by streaming the file back to whoever asked. The handler is
    // registered before the node exists, so it reaches its node through a cell set after.
    let handle: Arc<OnceLock<NetworkManager>> = Arc::default();
    let (seeder_file, seeder_handle) = (path.clone(), handle.clone());
    let seeder = NetworkManager::builder(config().with_bootstrap_peers(vec![fetcher_address]))
        .serve_requests(move |peer, request: Request| {
            let (path, node) = (seeder_file.clone(), seeder_handle.get().cloned());
            async move {
                let (Request::App { topic, .. }, Some(node)) = (request, node) else {
                    return Response::error(ErrorCode::BadRequest, "unknown request");
                };
                if topic != "send" {
                    return Response::error(ErrorCode::BadRequest, "unknown topic");
                }
                tokio::spawn(async move {
                    let header = BulkHeader {
                        content,
                        size: std::fs::metadata(&path)?.len(),
                        topic: "file".into(),
                    };
                    let mut file = AllowStdIo::new(std::fs::File::open(&path)?);
                    node.send_bulk(peer, header, &mut file, |_| {}).await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                });
                Response::App { payload: vec![] }
            }
        })
        .build()
        .await?;
    let _ = handle.set(seeder.clone());
    let mut seeder_events = seeder.subscribe();
    seeder.start().await?;

    // Announce, then find: the DHT (two nodes here) knows the seeder provides it. The seeder's
    // DHT learns the fetcher's addresses from identify: announce after that.
    wait_until_identified(&mut seeder_events, fetcher.local_peer_id()).await?;
    seeder.provide(content.0.to_vec()).await?;
    let providers = fetcher.find_providers(content.0.to_vec()).await?;
    println!("providers of the file: {providers:?}");
    // Nearest first: connected providers, then the lowest ping RTT.
    let provider = providers
        .iter()
        .map(|p| p.peer_id)
        .find(|p| *p == seeder.local_peer_id())
        .ok_or("the seeder is not among the providers")?;
    let ask = Request::App {
        topic: "send".into(),
        payload: vec![],
    };
    fetcher.send_request(provider, ask).await?;

    // The fetcher receives the file into memory and checks it.
    let mut bulk = incoming.recv().await.ok_or("no transfer arrived")?;
    let header = bulk.header().await?;
    let mut sink = AllowStdIo::new(Vec::new());
    let received = bulk.receive(&header, &mut sink, |_| {}).await?;
    let bytes = sink.into_inner();
    println!("received {received} bytes from {provider}");
    assert_eq!(Sha256::digest(&bytes).as_slice(), header.content.0);
    assert_eq!(bytes, data);

    fetcher.shutdown().await;
    seeder.shutdown().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Waits (bounded, 10 s) until `events` report that `peer` was identified: its bootstrap dial
/// and identify exchange are asynchronous, and the DHT takes the addresses identify reports.
async fn wait_until_identified(
    events: &mut tokio::sync::broadcast::Receiver<NetworkEvent>,
    peer: codio_network::PeerId,
) -> Result<(), Box<dyn std::error::Error>> {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(NetworkEvent::PeerIdentified { peer_id, .. }) if peer_id == peer => {
                    return Ok(());
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(error) => return Err(error),
            }
        }
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), wait).await {
        Ok(result) => Ok(result?),
        Err(_) => Err("the bootstrap peer was not identified within 10 s".into()),
    }
}
