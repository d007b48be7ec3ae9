//! File transfers over `/codio/bulk/1.0.0`: `codio-node send` and the `--inbox`.
//!
//! A file travels under its SHA-256 as content id; the inbox writes it to a temporary file,
//! checks the digest, and only then renames it to `<inbox>/<hex digest>`. Progress is reported
//! at most once a second per transfer (log line, and a JSON line with `--json`).

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use anyhow::Context as _;
use codio_network::{BulkHeader, ContentId, ErrorCode, IncomingBulk, NetworkManager, PeerId};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use crate::output::{Output, Progress};

/// Transfers the inbox receives at once; further ones wait in the node's bulk queue.
const INBOX_CONCURRENCY: usize = 4;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of the file at `path`.
async fn digest(path: &Path) -> anyhow::Result<([u8; 32], u64)> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hasher.finalize().into(), size))
}

/// Sends the file at `path` to `peer`, reporting progress; returns the bytes sent.
pub(crate) async fn send_file(
    network: &NetworkManager,
    peer: PeerId,
    path: &Path,
    output: Output,
) -> anyhow::Result<u64> {
    let (hash, size) = digest(path).await?;
    let content = hex(&hash);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut topic = name;
    while topic.len() > codio_network::MAX_TOPIC_LEN {
        topic.pop();
    }
    let header = BulkHeader {
        content: ContentId(hash),
        size,
        topic,
    };
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let mut source = file.compat();
    let mut progress = Progress::new(output, "send", peer.to_string(), content.clone(), size);
    progress.update(0);
    let sent = network
        .send_bulk(peer, header, &mut source, |n| progress.update(n))
        .await
        .with_context(|| format!("sending {} to {peer}", path.display()))?;
    output.json(
        "transfer_complete",
        json!({ "direction": "send", "peer_id": peer.to_string(), "content": content, "bytes": sent }),
    );
    tracing::info!(%peer, content, bytes = sent, "sent");
    Ok(sent)
}

/// Accepts inbound transfers into `dir` until the node stops.
pub(crate) async fn run_inbox(
    mut incoming: mpsc::Receiver<IncomingBulk>,
    dir: PathBuf,
    max_bytes: u64,
    output: Output,
) {
    let slots = Arc::new(Semaphore::new(INBOX_CONCURRENCY));
    while let Some(bulk) = incoming.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let dir = dir.clone();
        tokio::spawn(async move {
            let peer = bulk.peer_id;
            if let Err(error) = receive_into(bulk, &dir, max_bytes, output).await {
                tracing::warn!(%peer, error = format!("{error:#}"), "inbound transfer failed");
                output.json(
                    "transfer_failed",
                    json!({ "direction": "receive", "peer_id": peer.to_string(), "error": format!("{error:#}") }),
                );
            }
            drop(slot);
        });
    }
}

async fn receive_into(
    mut bulk: IncomingBulk,
    dir: &Path,
    max_bytes: u64,
    output: Output,
) -> anyhow::Result<()> {
    let peer = bulk.peer_id;
    let header = bulk.header().await?;
    let content = hex(&header.content.0);
    if header.size > max_bytes {
        bulk.reject(
            ErrorCode::TooLarge,
            &format!("the inbox takes at most {max_bytes} bytes"),
        )
        .await?;
        anyhow::bail!(
            "refused {content}: {} bytes > inbox_max_bytes {max_bytes}",
            header.size
        );
    }
    let target = dir.join(&content);
    let partial = dir.join(format!(".partial-{content}-{peer}"));
    let file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut sink = Hashing {
        inner: file.compat_write(),
        hasher: Sha256::new(),
    };
    let mut progress = Progress::new(
        output,
        "receive",
        peer.to_string(),
        content.clone(),
        header.size,
    );
    progress.update(0);
    let received = bulk
        .receive(&header, &mut sink, |n| progress.update(n))
        .await;
    let received = match received {
        Ok(received) => received,
        Err(error) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(error.into());
        }
    };
    let digest: [u8; 32] = sink.hasher.finalize().into();
    if digest != header.content.0 {
        let _ = tokio::fs::remove_file(&partial).await;
        anyhow::bail!(
            "content {content} arrived with digest {}: discarded",
            hex(&digest)
        );
    }
    tokio::fs::rename(&partial, &target)
        .await
        .with_context(|| format!("storing {}", target.display()))?;
    tracing::info!(%peer, content, bytes = received, path = %target.display(), "received");
    output.json(
        "transfer_complete",
        json!({
            "direction": "receive",
            "peer_id": peer.to_string(),
            "content": content,
            "bytes": received,
            "path": target.display().to_string(),
        }),
    );
    Ok(())
}

/// A writer that hashes what it writes.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: futures::AsyncWrite + Unpin> futures::AsyncWrite for Hashing<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.hasher.update(&buf[..n]);
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
