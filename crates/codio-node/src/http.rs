//! The opt-in Prometheus endpoint: `GET /metrics` on `metrics_addr`, nothing else.
//!
//! A deliberately small HTTP/1.1 responder (one request per connection, request head at most
//! 8 KiB read within 5 s, at most 16 scrapes at once) instead of a web framework: a scrape
//! endpoint needs no more, and it keeps the binary's dependencies to what it uses.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use codio_network::metrics::{Registry, encode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONCURRENT: usize = 16;

/// Serves `registry` on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, registry: Arc<Mutex<Registry>>) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                // Accept errors (e.g. out of file descriptors) are transient; do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("metrics endpoint: too many scrapes at once; closing one");
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(socket, &registry).await {
                tracing::debug!(%error, "metrics endpoint: request failed");
            }
            drop(permit);
        });
    }
}

async fn answer(mut socket: TcpStream, registry: &Mutex<Registry>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        std::io::Result::Ok(())
    };
    tokio::time::timeout(READ_TIMEOUT, read_head)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            let mut text = String::new();
            let encoded = encode(
                &mut text,
                &registry.lock().unwrap_or_else(PoisonError::into_inner),
            );
            match encoded {
                Ok(()) => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "encoding failed\n".into(),
                ),
            }
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "metrics are at /metrics\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}
