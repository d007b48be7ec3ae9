//! [`Client`]: the handle that sends requests and bulk transfers; cheap to clone.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use libp2p::PeerId;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{
    MAX_REQUEST_FRAME, ProtocolConfig, ProtocolError, Request, RequestError, Response, Stats,
    activity::{Activity, Toucher},
    bulk::{BulkError, BulkHeader},
    rpc::client::{RpcClient, RpcFailure},
    streams::{Control, OpenStreamError},
};

/// A `/codio/1.0.0` request for the behaviour to send through the swarm.
#[derive(Debug)]
pub(crate) struct OutboundRequest {
    pub(crate) peer: PeerId,
    pub(crate) request: Request,
    pub(crate) reply: oneshot::Sender<Result<Response, RequestError>>,
}

/// Sends requests and bulk transfers for the node whose swarm runs the
/// [`Behaviour`](crate::Behaviour) it came with.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    rpc: Arc<RpcClient>,
    per_stream: mpsc::Sender<OutboundRequest>,
    permits: Semaphore,
    bulk: Control,
    config: ProtocolConfig,
    stats: Arc<Stats>,
    activity: Arc<Activity>,
}

/// What a [`Client`] is made of (built by the behaviour).
pub(crate) struct Parts {
    pub(crate) rpc: Arc<RpcClient>,
    pub(crate) per_stream: mpsc::Sender<OutboundRequest>,
    pub(crate) bulk: Control,
    pub(crate) config: ProtocolConfig,
    pub(crate) stats: Arc<Stats>,
    pub(crate) activity: Arc<Activity>,
}

impl Client {
    pub(crate) fn new(parts: Parts) -> Self {
        let permits = Semaphore::new(parts.config.max_outbound_requests);
        Self {
            inner: Arc::new(Inner {
                rpc: parts.rpc,
                per_stream: parts.per_stream,
                permits,
                bulk: parts.bulk,
                config: parts.config,
                stats: parts.stats,
                activity: parts.activity,
            }),
        }
    }

    /// Sends `request` to `peer` and waits for its response: on the peer's pipelined
    /// `/codio/rpc/1.0.0` stream, or one `/codio/1.0.0` stream per request for peers that do
    /// not speak it. At most `max_outbound_requests` are in flight; further calls wait for a
    /// slot (back-pressure). The peer is dialed if needed.
    ///
    /// # Errors
    ///
    /// A [`RequestError`]: invalid or too large, timeout, peer unreachable, protocol
    /// violation, remote error, shut down.
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Response, RequestError> {
        let started = std::time::Instant::now();
        let result = self.request_once(peer, request).await;
        self.inner
            .stats
            .record_request(started.elapsed(), result.is_ok());
        result
    }

    async fn request_once(&self, peer: PeerId, request: Request) -> Result<Response, RequestError> {
        request
            .validate()
            .map_err(|e| RequestError::Invalid(e.to_string()))?;
        // Refuse oversized requests before a round trip (sized, not encoded: the request
        // path encodes once).
        crate::check_size(&request, MAX_REQUEST_FRAME)
            .map_err(|e| RequestError::TooLarge(e.to_string()))?;
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| RequestError::ShutDown)?;
        let limit = self.inner.config.request_timeout + self.inner.config.open_timeout;
        match self.inner.rpc.request(peer, request, limit).await {
            Ok(response) => Ok(response),
            Err(RpcFailure::Failed(error)) => Err(error),
            Err(RpcFailure::Unsupported(request)) => self.per_stream(peer, request, limit).await,
        }
    }

    /// `/codio/1.0.0`: one stream per request, through the behaviour.
    async fn per_stream(
        &self,
        peer: PeerId,
        request: Request,
        limit: Duration,
    ) -> Result<Response, RequestError> {
        let command = |reply| OutboundRequest {
            peer,
            request,
            reply,
        };
        // libp2p's own timeout answers first; this only guards against a stalled swarm.
        match codio_base::call::call(&self.inner.per_stream, command, limit).await {
            Ok(result) => result,
            Err(codio_base::call::CallError::Timeout) => Err(RequestError::Timeout),
            Err(_) => Err(RequestError::ShutDown),
        }
    }

    /// Streams `header.size` bytes from `source` to `peer` on one `/codio/bulk/1.0.0` stream,
    /// in 64 KiB chunks with back-pressure, calling `progress` with the bytes sent so far;
    /// returns once the receiver confirmed every byte. Memory use does not depend on the
    /// size. Fails when a read or write makes no progress for `bulk_idle_timeout`.
    ///
    /// # Errors
    ///
    /// A [`BulkError`]: stalled peer, rejected by the receiver, source too short, stream
    /// failure.
    pub async fn send_bulk<R>(
        &self,
        peer: PeerId,
        header: BulkHeader,
        source: &mut R,
        progress: impl FnMut(u64),
    ) -> Result<u64, BulkError>
    where
        R: futures::AsyncRead + Unpin,
    {
        // The peer is busy while the payload flows (eviction at a peer cap spares it).
        let mut toucher = Toucher::new(self.inner.activity.clone(), peer);
        let progress = toucher.on_progress(progress);
        let idle = self.inner.config.bulk_idle_timeout;
        let open = self.inner.bulk.open_stream(peer);
        let mut stream = match tokio::time::timeout(idle, open).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(open_failure(error)),
            Err(_) => return Err(BulkError::Timeout(idle)),
        };
        let sent = crate::bulk::send_bulk(&mut stream, &header, source, idle, progress)
            .await
            .map_err(refused_bulk)?;
        self.inner.stats.record_bulk(false, sent);
        Ok(sent)
    }

    /// What the protocol layer counted so far.
    pub fn stats(&self) -> Arc<Stats> {
        self.inner.stats.clone()
    }

    /// When `peer` (connected) last exchanged a request, a response or bulk data with us.
    pub fn last_activity(&self, peer: &PeerId) -> Option<Instant> {
        self.inner.activity.last(peer)
    }
}

/// A bulk stream the peer refused, when streams open lazily (the header goes with the
/// protocol proposal, so the refusal arrives as an I/O error on the stream).
fn refused_bulk(error: BulkError) -> BulkError {
    match error {
        BulkError::Protocol(ProtocolError::Io(e)) if codio_base::protocol_refused(&e) => {
            BulkError::Protocol(ProtocolError::Malformed(format!(
                "peer does not speak {}",
                crate::bulk::BULK_PROTOCOL
            )))
        }
        other => other,
    }
}

fn open_failure(error: OpenStreamError) -> BulkError {
    match error {
        OpenStreamError::UnsupportedProtocol(protocol) => BulkError::Protocol(
            ProtocolError::Malformed(format!("peer does not speak {protocol}")),
        ),
        other => BulkError::Protocol(ProtocolError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            other.to_string(),
        ))),
    }
}
