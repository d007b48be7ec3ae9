//! The opt-in Prometheus endpoint: `GET /metrics` on `metrics_addr`, nothing else.
//!
//! A deliberately small HTTP/1.1 responder instead of a web framework: a scrape endpoint needs
//! no more, and it keeps the binary's dependencies to what it uses. Every client is bounded:
//! one request per connection, a request head of at most 8 KiB read within 5 s, the answer
//! written within 10 s, and at most 16 connections at once, the oldest closed to make room
//! for a new one (clients that connect and never read cannot lock a scraper out).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use codio_network::metrics::{Registry, encode};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    task::AbortHandle,
};

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONCURRENT: usize = 16;

/// The connections being answered, oldest first.
#[derive(Debug, Default)]
struct Clients(VecDeque<AbortHandle>);

impl Clients {
    /// Makes room for one more: forgets finished ones, closes the oldest when full.
    fn make_room(&mut self) {
        self.0.retain(|client| !client.is_finished());
        while self.0.len() >= MAX_CONCURRENT {
            if let Some(oldest) = self.0.pop_front() {
                tracing::debug!(
                    "metrics endpoint: {MAX_CONCURRENT} connections open; closing the oldest"
                );
                oldest.abort();
            }
        }
    }
}

/// Serves `registry` on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, registry: Arc<Mutex<Registry>>) {
    let mut clients = Clients::default();
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
        clients.make_room();
        let registry = registry.clone();
        let client = tokio::spawn(async move {
            if let Err(error) = answer(socket, &registry).await {
                tracing::debug!(%error, "metrics endpoint: request failed");
            }
        });
        clients.0.push_back(client.abort_handle());
    }
}

/// Answers one request on `socket` (a TCP stream; any byte stream in tests).
async fn answer<S>(mut socket: S, registry: &Mutex<Registry>) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
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
    let complete = head.windows(4).any(|w| w == b"\r\n\r\n");
    let (status, content_type, body) = match (method, path) {
        _ if !complete => (
            "431 Request Header Fields Too Large",
            "text/plain",
            format!("the request head must end within {MAX_HEAD} bytes\n"),
        ),
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
    let write = async {
        socket.write_all(response.as_bytes()).await?;
        socket.shutdown().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn registry() -> Mutex<Registry> {
        let mut registry = Registry::default();
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        registry.register("padding", "a metric with a long help text", counter);
        Mutex::new(registry)
    }

    /// A client that sends nothing is dropped at the head's read limit.
    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_dropped_at_the_read_limit() {
        let (server, _client) = tokio::io::duplex(64);
        let started = tokio::time::Instant::now();
        let error = answer(server, &registry()).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), READ_TIMEOUT);
    }

    /// A client that asks and never reads the answer is dropped at the write limit (the
    /// answer is larger than the 64-byte pipe, so the write cannot finish).
    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_is_dropped_at_the_write_limit() {
        let (server, mut client) = tokio::io::duplex(64);
        client
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let error = answer(server, &registry()).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), WRITE_TIMEOUT);
    }

    /// The same request, read: answered with the registry's metrics.
    #[tokio::test(start_paused = true)]
    async fn a_reading_client_gets_the_metrics() {
        let (server, mut client) = tokio::io::duplex(64);
        client
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let registry = registry();
        let (answered, text) = tokio::join!(answer(server, &registry), async {
            let mut text = String::new();
            client.read_to_string(&mut text).await.unwrap();
            text
        });
        answered.unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(text.contains("padding_total 0"), "{text}");
    }
}
