//! Two nodes on loopback: one serves requests, the other connects and asks.
//!
//! ```sh
//! cargo run -p codio-network --example request_response
//! ```

// An example program reports what it did on stdout.
#![allow(clippy::print_stdout)]

use codio_network::{NetworkConfig, NetworkManager, protocol::Request, protocol::Response};
use libp2p::multiaddr::Protocol;

/// A loopback node: no mDNS (it would reach the LAN), no relay client.
fn config() -> NetworkConfig {
    NetworkConfig::default()
        .with_listen_ip(std::net::Ipv4Addr::LOCALHOST.into())
        .with_mdns(false)
        .with_relay(false)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server answers every App request with its payload reversed.
    let server = NetworkManager::builder(config())
        .serve_requests(|peer, request: Request| async move {
            println!("server: request from {peer}");
            match request {
                Request::App { mut payload, .. } => {
                    payload.reverse();
                    Response::App { payload }
                }
                _ => Response::error(
                    codio_network::protocol::ErrorCode::NotFound,
                    "only App requests",
                ),
            }
        })
        .build()
        .await?;
    let address = server.start().await?[0]
        .clone()
        .with(Protocol::P2p(server.local_peer_id()));

    let client = NetworkManager::new(config()).await?;
    let peer = client.connect_peer(address).await?;
    let request = Request::App {
        topic: "reverse".into(),
        payload: b"hello codio".to_vec(),
    };
    let response = client.send_request(peer, request).await?;
    println!("client: {response:?}");
    assert_eq!(
        response,
        Response::App {
            payload: b"oidoc olleh".to_vec()
        }
    );
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
