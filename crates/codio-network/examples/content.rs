//! Content routing and bulk transfer: a seeder announces a file in the DHT, a fetcher finds
//! it through `find_providers` and asks for it; the seeder's request handler streams the file
//! back over a bulk stream (reaching its own node through the handle the builder gives it),
//! and the fetcher's bulk handler receives it and checks its SHA-256.
//!
//! ```sh
//! cargo run -p codio-network --example content
//! ```

// An example program reports what it did on stdout.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use codio_network::{
    discovery::KadMode,
    prelude::*,
    protocol::{BulkHeader, ContentId, ErrorCode, IncomingBulk},
};
use futures::io::AllowStdIo;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Loopback DHT servers.
fn config() -> NetworkConfig {
    let mut config = NetworkConfig::loopback();
    config.discovery.edit(|d| d.with_kad_mode(KadMode::Server));
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

    // The fetcher receives each transfer into memory and hands the bytes over.
    let (files, mut received) = mpsc::channel(1);
    let fetcher = NetworkManager::builder(config())
        .serve_bulk(move |mut bulk: IncomingBulk| {
            let files = files.clone();
            async move {
                let Ok(header) = bulk.header().await else {
                    return;
                };
                let mut sink = AllowStdIo::new(Vec::new());
                if bulk.receive(&header, &mut sink, |_| {}).await.is_ok() {
                    let _ = files.send((header, sink.into_inner())).await;
                }
            }
        })
        .build()
        .await?;
    fetcher.start().await?;

    // The seeder answers "send" by streaming the file back to whoever asked.
    let bootstrap = vec![fetcher.dial_addr().ok_or("the fetcher is not listening")?];
    let seeder = NetworkManager::builder(config().with_bootstrap_peers(bootstrap))
        .serve_requests_with(move |node| {
            move |peer, request| {
                let (node, path) = (node.clone(), path.clone());
                async move {
                    if !matches!(&request, Request::App { topic, .. } if topic == "send") {
                        return Response::error(ErrorCode::BadRequest, "unknown request");
                    }
                    tokio::spawn(async move {
                        let size = std::fs::metadata(&path)?.len();
                        let header = BulkHeader {
                            content,
                            size,
                            topic: "file".into(),
                        };
                        let mut file = AllowStdIo::new(std::fs::File::open(&path)?);
                        node.send_bulk(peer, header, &mut file, |_| {}).await?;
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                    });
                    Response::App { payload: vec![] }
                }
            }
        })
        .build()
        .await?;
    seeder.start().await?;

    // Announce once the seeder's DHT knows the fetcher's addresses (identify), then find.
    seeder
        .identified(fetcher.local_peer_id(), Duration::from_secs(10))
        .await?;
    seeder.provide(content.0.to_vec()).await?;
    let providers = fetcher.find_providers(content.0.to_vec()).await?;
    println!("providers of the file: {providers:?}");
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

    let wait = tokio::time::timeout(Duration::from_secs(30), received.recv());
    let (header, bytes) = wait.await?.ok_or("no transfer arrived")?;
    println!("received {} bytes from {provider}", bytes.len());
    assert_eq!(Sha256::digest(&bytes).as_slice(), header.content.0);
    assert_eq!(bytes, data);

    fetcher.shutdown().await;
    seeder.shutdown().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
