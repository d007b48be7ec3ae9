//! File transfers over `/codio/bulk/1.0.0`: `codio-node send` and the `--inbox`.
//!
//! A file travels under its SHA-256 as content id; the inbox writes it to an exclusive
//! temporary file, checks the digest, syncs it, and only then links it to
//! `<inbox>/<hex digest>` (never replacing a file there); the sender is confirmed after that.
//! Progress is reported at most once a second per transfer (log line, and a JSON line with
//! `--json`).

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use codio_network::{
    NetworkManager, PeerId, protocol::BulkHeader, protocol::ContentId, protocol::ErrorCode,
    protocol::IncomingBulk,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use crate::{
    inbox::{Ledger, MAX_TRANSFERS, Refusal, Rules, Senders, report_rate},
    output::{Output, Progress},
};

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
    while topic.len() > codio_network::protocol::MAX_TOPIC_LEN {
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

/// How long a sender has to send its transfer's header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Refusals written at once; beyond it a refused stream is dropped (reset) unanswered.
const MAX_REFUSALS: usize = 16;

/// The inbox: its directory, its ledger, and what it counts.
#[derive(Debug, Clone)]
pub(crate) struct Inbox {
    dir: PathBuf,
    ledger: Arc<Mutex<Ledger>>,
    refused: Arc<[AtomicU64; Refusal::ALL.len()]>,
    reports: Arc<Mutex<codio_base::Throttle>>,
    output: Output,
}

/// Locks `mutex`; its state stays consistent after a panic elsewhere (every change of the
/// ledger and the report rate is a few additions).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a transfer ended.
enum Outcome {
    Stored(u64),
    /// The same content was already stored (by an earlier or a parallel transfer).
    Duplicate(u64),
}

impl Inbox {
    /// Opens the inbox in `dir` (created if missing): removes the partial files a crash left
    /// and counts the bytes stored toward the quota.
    pub(crate) fn open(dir: &Path, rules: Rules, output: Output) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the inbox {}", dir.display()))?;
        let removed = crate::files::remove_temps(dir);
        let stored = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok()?.path().symlink_metadata().ok())
            .filter(std::fs::Metadata::is_file)
            .fold(0u64, |sum, meta| sum.saturating_add(meta.len()));
        if removed > 0 {
            tracing::info!(
                removed,
                "inbox: removed partial files of interrupted transfers"
            );
        }
        if let Senders::Only(peers) = &rules.senders
            && peers.is_empty()
        {
            tracing::warn!(
                "inbox: no sender is allowed (see --inbox-allow); every file is refused"
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
            ledger: Arc::new(Mutex::new(Ledger::new(rules, stored))),
            refused: Arc::new(Default::default()),
            reports: Arc::new(Mutex::new(report_rate(Instant::now()))),
            output,
        })
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    /// Transfers refused for `reason` so far.
    pub(crate) fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].load(Relaxed)
    }

    /// Bytes stored in the inbox.
    pub(crate) fn stored(&self) -> u64 {
        self.ledger().stored()
    }

    /// Counts and reports a refusal; answers the sender when few answers are pending.
    fn refuse(
        &self,
        bulk: IncomingBulk,
        reason: Refusal,
        detail: String,
        answering: &Arc<Semaphore>,
    ) {
        self.refused[reason as usize].fetch_add(1, Relaxed);
        let peer = bulk.peer_id;
        let report = lock(&self.reports).report(Instant::now());
        if let Some(suppressed) = report {
            let reason = reason.as_str();
            tracing::info!(%peer, reason, detail, suppressed, "inbox: transfer refused");
            self.output.json(
                "transfer_refused",
                json!({ "peer_id": peer.to_string(), "reason": reason, "detail": detail, "suppressed": suppressed }),
            );
        }
        let code = match reason {
            Refusal::NotAllowed => ErrorCode::BadRequest,
            Refusal::Busy => ErrorCode::Overloaded,
            Refusal::TooLarge | Refusal::Quota | Refusal::DiskSpace => ErrorCode::TooLarge,
        };
        if let Ok(permit) = answering.clone().try_acquire_owned() {
            tokio::spawn(async move {
                let _ = bulk.reject(code, &detail).await;
                drop(permit);
            });
        }
    }

    /// Accepts inbound transfers until the node stops.
    pub(crate) async fn run(self, mut incoming: mpsc::Receiver<IncomingBulk>) {
        let slots = Arc::new(Semaphore::new(MAX_TRANSFERS));
        let answering = Arc::new(Semaphore::new(MAX_REFUSALS));
        while let Some(bulk) = incoming.recv().await {
            let peer = bulk.peer_id;
            if let Err(reason) = self.ledger().begin(&peer) {
                self.refuse(
                    bulk,
                    reason,
                    format!("{} from {peer}", reason.as_str()),
                    &answering,
                );
                continue;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                self.ledger().end(&peer);
                let detail = format!("{MAX_TRANSFERS} transfers in progress");
                self.refuse(bulk, Refusal::Busy, detail, &answering);
                continue;
            };
            let inbox = self.clone();
            let answering = answering.clone();
            tokio::spawn(async move {
                if let Err(error) = inbox.receive(bulk, &answering).await {
                    tracing::warn!(%peer, error = format!("{error:#}"), "inbound transfer failed");
                    inbox.output.json(
                        "transfer_failed",
                        json!({ "direction": "receive", "peer_id": peer.to_string(), "error": format!("{error:#}") }),
                    );
                }
                inbox.ledger().end(&peer);
                drop(slot);
            });
        }
    }

    /// One transfer from an admitted sender.
    async fn receive(
        &self,
        mut bulk: IncomingBulk,
        answering: &Arc<Semaphore>,
    ) -> anyhow::Result<()> {
        let peer = bulk.peer_id;
        let header = tokio::time::timeout(HEADER_TIMEOUT, bulk.header())
            .await
            .map_err(|_| anyhow::anyhow!("no header within {HEADER_TIMEOUT:?}"))??;
        let free = free_space(&self.dir)?;
        if let Err(reason) = self.ledger().reserve(header.size, free) {
            let detail = format!("{} bytes: {}", header.size, reason.as_str());
            self.refuse(bulk, reason, detail, answering);
            return Ok(());
        }
        let deadline = self.ledger().deadline(header.size);
        let committing = AtomicBool::new(false);
        let store = self.store(bulk, &header, &committing);
        tokio::pin!(store);
        let result = match tokio::time::timeout(deadline, &mut store).await {
            Ok(result) => result,
            // Every byte arrived and was verified: the local sync and link finish (bounded
            // disk work), so the ledger learns whether the file was stored.
            Err(_) if committing.load(Relaxed) => store.await,
            Err(_) => Err(anyhow::anyhow!(
                "not complete within its deadline of {deadline:?}: cut off"
            )),
        };
        self.ledger()
            .settle(header.size, matches!(result, Ok(Outcome::Stored(_))));
        let content = hex(&header.content.0);
        let (bytes, duplicate) = match result? {
            Outcome::Stored(bytes) => (bytes, false),
            Outcome::Duplicate(bytes) => (bytes, true),
        };
        let path = self.dir.join(&content);
        tracing::info!(%peer, content, bytes, duplicate, path = %path.display(), "received");
        self.output.json(
            "transfer_complete",
            json!({
                "direction": "receive",
                "peer_id": peer.to_string(),
                "content": content,
                "bytes": bytes,
                "duplicate": duplicate,
                "path": path.display().to_string(),
            }),
        );
        Ok(())
    }

    /// Receives into an exclusive partial file, verifies, syncs and links it into place; the
    /// sender is confirmed only then. The partial file is removed in every case.
    /// `committing` is set once every byte arrived and the content verified.
    async fn store(
        &self,
        bulk: IncomingBulk,
        header: &BulkHeader,
        committing: &AtomicBool,
    ) -> anyhow::Result<Outcome> {
        let peer = bulk.peer_id;
        let content = hex(&header.content.0);
        let target = self.dir.join(&content);
        let partial = crate::files::temp_path(&target)?;
        let file = crate::files::create_new(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let _cleanup = RemoveOnDrop(partial.clone());
        let to_sync = file.try_clone()?;
        let mut sink = Hashing {
            inner: tokio::fs::File::from_std(file).compat_write(),
            hasher: Sha256::new(),
        };
        let mut progress = Progress::new(
            self.output,
            "receive",
            peer.to_string(),
            content.clone(),
            header.size,
        );
        progress.update(0);
        let expected = header.content.0;
        let commit = |sink: &mut Hashing<Compat<tokio::fs::File>>| {
            let digest: [u8; 32] = std::mem::take(&mut sink.hasher).finalize().into();
            let partial = partial.clone();
            async move {
                if digest != expected {
                    let detail = format!("arrived with digest {}: discarded", hex(&digest));
                    return Err((ErrorCode::BadRequest, detail));
                }
                committing.store(true, Relaxed);
                let stored = tokio::task::spawn_blocking(move || {
                    to_sync.sync_all()?;
                    link_into_place(&partial, &target)
                })
                .await
                .map_err(std::io::Error::other)
                .and_then(|linked| linked);
                stored.map_err(|e| (ErrorCode::Internal, format!("storing: {e}")))
            }
        };
        let (received, duplicate) = bulk
            .receive_committed(header, &mut sink, |n| progress.update(n), commit)
            .await?;
        Ok(if duplicate {
            Outcome::Duplicate(received)
        } else {
            Outcome::Stored(received)
        })
    }
}

/// Links the verified `partial` file to `target` without ever replacing a file there;
/// `Ok(true)` when the content was already stored (the partial file is then discarded).
fn link_into_place(partial: &Path, target: &Path) -> std::io::Result<bool> {
    match crate::files::link_new(partial, target) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(true),
        Err(e) => Err(e),
    }
}

/// Removes a file when dropped (a transfer's partial file, however the transfer ended).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Bytes available to this process on the file system of `dir`.
fn free_space(dir: &Path) -> anyhow::Result<u64> {
    let stat = rustix::fs::statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
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

/// The inbox's metrics, read at each scrape: `codio_inbox_refused_total{reason}` and
/// `codio_inbox_stored_bytes`.
#[derive(Debug)]
struct InboxMetrics(Inbox);

impl Inbox {
    /// Registers the inbox's metrics in `registry`.
    pub(crate) fn register(&self, registry: &mut codio_network::metrics::Registry) {
        registry
            .sub_registry_with_prefix("codio")
            .register_collector(Box::new(InboxMetrics(self.clone())));
    }
}

impl prometheus_client::collector::Collector for InboxMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use codio_base::metrics::{encode_counter_family, encode_gauges};
        encode_counter_family(
            &mut encoder,
            ("inbox_refused", "Files the inbox refused, by reason"),
            "reason",
            Refusal::ALL.map(|reason| (reason.as_str(), self.0.refused(reason))),
        )?;
        encode_gauges(
            &mut encoder,
            [(
                "inbox_stored_bytes",
                "Bytes of files stored in the inbox",
                self.0.stored(),
            )],
        )
    }
}
