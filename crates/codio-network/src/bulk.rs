//! Inbound bulk transfers: the accept loop and [`IncomingBulk`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use codio_protocol::{
    ErrorCode,
    bulk::{BulkError, BulkHeader, read_bulk_header, receive_bulk, reject_bulk},
};
use libp2p::{PeerId, Stream};
use tokio::sync::{mpsc, watch};

/// An inbound bulk transfer: read its header, then receive it into a sink or reject it.
#[derive(Debug)]
pub struct IncomingBulk {
    /// The sender.
    pub peer_id: PeerId,
    stream: Stream,
    idle: Duration,
    metrics: Option<Arc<crate::metrics::CodioMetrics>>,
}

impl IncomingBulk {
    /// Reads what the sender announces.
    ///
    /// # Errors
    ///
    /// A [`BulkError`] for a stalled, malformed or oversized header.
    pub async fn header(&mut self) -> Result<BulkHeader, BulkError> {
        read_bulk_header(&mut self.stream, self.idle).await
    }

    /// Receives the payload announced by `header` into `sink`, calling `progress` with the
    /// bytes received so far, and confirms it to the sender.
    ///
    /// # Errors
    ///
    /// A [`BulkError`]: stalled or truncated stream, failing sink.
    pub async fn receive<W>(
        mut self,
        header: &BulkHeader,
        sink: &mut W,
        progress: impl FnMut(u64),
    ) -> Result<u64, BulkError>
    where
        W: futures::AsyncWrite + Unpin,
    {
        let received = receive_bulk(&mut self.stream, header, sink, self.idle, progress).await?;
        if let Some(metrics) = &self.metrics {
            metrics.on_bulk(true, received);
        }
        Ok(received)
    }

    /// Refuses the transfer, telling the sender why.
    ///
    /// # Errors
    ///
    /// A [`BulkError`] when the answer cannot be written.
    pub async fn reject(mut self, code: ErrorCode, message: &str) -> Result<(), BulkError> {
        reject_bulk(&mut self.stream, code, message, self.idle).await
    }
}

/// Moves inbound bulk streams from libp2p to the application's bounded queue at once (the
/// stream crate keeps a single waiting stream and would drop the rest of a burst). Streams
/// beyond the queue, or while no consumer is installed, are refused.
pub(crate) async fn accept_loop(
    mut incoming: codio_protocol::streams::IncomingStreams,
    queue: mpsc::Sender<IncomingBulk>,
    installed: Arc<AtomicBool>,
    mut alive: watch::Receiver<()>,
    idle: Duration,
    metrics: Option<Arc<crate::metrics::CodioMetrics>>,
) {
    loop {
        let next = tokio::select! {
            next = incoming.next() => next,
            _ = alive.changed() => None,
        };
        let Some((peer_id, stream)) = next else {
            break;
        };
        let bulk = IncomingBulk {
            peer_id,
            stream,
            idle,
            metrics: metrics.clone(),
        };
        let refused = if !installed.load(Ordering::Acquire) {
            Some((bulk, "no bulk receiver"))
        } else {
            match queue.try_send(bulk) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(bulk)) => Some((bulk, "bulk queue full")),
                Err(mpsc::error::TrySendError::Closed(bulk)) => Some((bulk, "bulk receiver gone")),
            }
        };
        if let Some((bulk, why)) = refused {
            tracing::debug!(peer_id = %bulk.peer_id, why, "refusing a bulk stream");
            // Answer without blocking the loop on a slow peer.
            tokio::spawn(async move {
                let _ = bulk.reject(ErrorCode::Overloaded, why).await;
            });
        }
    }
    tracing::debug!("bulk accept loop stopped");
}
