//! A node serving content chunks with a handler of its own: a type implementing
//! `RequestHandler` over an in-memory store, registered when the node is built. A client
//! fetches the metadata, then every chunk, and checks what it got.
//!
//! ```sh
//! cargo run -p codio-network --example custom_handler
//! ```

// An example program reports what it did on stdout.
#![allow(clippy::print_stdout)]

use std::{collections::HashMap, sync::Arc};

use codio_network::{
    NetworkConfig, NetworkManager, PeerId, protocol::ContentId, protocol::ErrorCode,
    protocol::Metadata, protocol::Request, protocol::RequestHandler, protocol::Response,
};

const CHUNK: usize = 1024;

/// Content by id, served in chunks of [`CHUNK`] bytes.
#[derive(Debug, Default)]
struct ChunkStore {
    content: HashMap<ContentId, Arc<Vec<u8>>>,
}

impl RequestHandler for ChunkStore {
    async fn handle(&self, _peer: PeerId, request: Request) -> Response {
        match request {
            Request::GetMetadata { content } => match self.content.get(&content) {
                Some(bytes) => Response::Metadata(Metadata {
                    content,
                    size: bytes.len() as u64,
                    chunk_size: CHUNK as u32,
                }),
                None => Response::error(ErrorCode::NotFound, "unknown content"),
            },
            Request::GetChunk { content, index } => {
                let Some(bytes) = self.content.get(&content) else {
                    return Response::error(ErrorCode::NotFound, "unknown content");
                };
                let start = usize::try_from(index)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(CHUNK);
                match bytes.get(start..) {
                    Some(rest) if !rest.is_empty() => Response::Chunk {
                        content,
                        index,
                        data: rest[..rest.len().min(CHUNK)].to_vec(),
                    },
                    _ => Response::error(ErrorCode::NotFound, "no such chunk"),
                }
            }
            _ => Response::error(ErrorCode::BadRequest, "not a content request"),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let id = ContentId([42; 32]);
    let mut store = ChunkStore::default();
    store.content.insert(id, Arc::new(data.clone()));

    let server = NetworkManager::builder(NetworkConfig::loopback())
        .serve_requests(store)
        .build()
        .await?;
    server.start().await?;
    let client = NetworkManager::new(NetworkConfig::loopback()).await?;
    let peer = client
        .connect_peer(server.dial_addr().ok_or("no address")?)
        .await?;

    let Response::Metadata(metadata) = client
        .send_request(peer, Request::GetMetadata { content: id })
        .await?
    else {
        return Err("expected metadata".into());
    };
    let chunks = metadata.size.div_ceil(u64::from(metadata.chunk_size));
    let mut fetched = Vec::new();
    for index in 0..chunks {
        match client
            .send_request(peer, Request::GetChunk { content: id, index })
            .await?
        {
            Response::Chunk { data, .. } => fetched.extend_from_slice(&data),
            other => return Err(format!("chunk {index}: {other:?}").into()),
        }
    }
    println!("fetched {} bytes in {chunks} chunks", fetched.len());
    assert_eq!(fetched, data);
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
