//! Two nodes on loopback: one serves requests, the other connects and asks.
//! Run: `cargo run -p codio-network --example request_response`.

// An example program reports what it did on stdout.
#![allow(clippy::print_stdout)]

use codio_network::{prelude::*, protocol::ErrorCode};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server answers every App request with its payload reversed.
    let server = NetworkManager::builder(NetworkConfig::loopback())
        .serve_requests(|peer, request| async move {
            println!("server: request from {peer}");
            let Request::App { mut payload, .. } = request else {
                return Response::error(ErrorCode::NotFound, "only App requests");
            };
            payload.reverse();
            Response::App { payload }
        })
        .build()
        .await?;
    server.start().await?;

    let client = NetworkManager::new(NetworkConfig::loopback()).await?;
    let peer = client
        .connect_peer(server.dial_addr().ok_or("no address")?)
        .await?;
    let (topic, payload) = ("reverse".into(), b"hello codio".to_vec());
    let response = client
        .send_request(peer, Request::App { topic, payload })
        .await?;
    println!("client: {response:?}");
    let expected = b"oidoc olleh".to_vec();
    assert_eq!(response, Response::App { payload: expected });
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
