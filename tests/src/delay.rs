//! A TCP proxy on loopback that delays every byte by a fixed time in each direction: a link
//! with a known round-trip time, to count round trips by the clock.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
    sync::mpsc,
    task::JoinHandle,
};

/// Chunks in flight per direction before the reader waits (bounded memory).
const IN_FLIGHT: usize = 256;

/// The proxy; its tasks end when it is dropped.
#[derive(Debug)]
pub struct DelayProxy {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl DelayProxy {
    /// Listens on loopback and forwards each connection to `target`, delaying every chunk by
    /// `one_way` in each direction (the round trip grows by twice that).
    ///
    /// # Panics
    ///
    /// When it cannot listen.
    pub async fn start(target: SocketAddr, one_way: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address");
        let task = tokio::spawn(async move {
            let mut links = Vec::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                links.push(Link::start(client_read, server_write, one_way));
                links.push(Link::start(server_read, client_write, one_way));
            }
        });
        Self { address, task }
    }

    /// The address to dial instead of the target.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One direction of one connection: a reader stamping chunks, a writer releasing them.
struct Link(JoinHandle<()>, JoinHandle<()>);

impl Link {
    fn start(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = from.read(&mut buf).await {
                if n == 0
                    || tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .await
                        .is_err()
                {
                    break;
                }
            }
        });
        let writer = tokio::spawn(async move {
            while let Some((due, bytes)) = rx.recv().await {
                tokio::time::sleep_until(due.into()).await;
                if to.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            let _ = to.shutdown().await;
        });
        Self(reader, writer)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.0.abort();
        self.1.abort();
    }
}
