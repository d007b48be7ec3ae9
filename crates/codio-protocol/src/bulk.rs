//! Bulk transfers on `/codio/bulk/1.0.0`: one payload of any size (GiB) per stream, streamed
//! in bounded chunks with back-pressure and progress, never held in memory.
//!
//! ```text
//! sender → receiver:  frame(BulkHeader) ‖ exactly header.size raw bytes ‖ (write side closed)
//! receiver → sender:  frame(BulkOutcome)
//! ```
//!
//! The receiver may answer [`BulkOutcome::Rejected`] right after the header (too large, no
//! taker) instead of reading the payload. Every read and write must make progress within the
//! idle timeout; a stalled peer fails the transfer, whatever its size.

use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::{
    ContentId, ErrorCode, MAX_REQUEST_FRAME, ProtocolError, activity::Toucher, decode, encode,
    read_frame,
};

/// The bulk protocol id.
pub const BULK_PROTOCOL: StreamProtocol = StreamProtocol::new("/codio/bulk/1.0.0");
/// Size of the chunks the payload is copied in.
pub const BULK_CHUNK: usize = 64 * 1024;

/// What is being sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkHeader {
    /// The content the payload belongs to.
    pub content: ContentId,
    /// Exact payload size in bytes.
    pub size: u64,
    /// Application label (at most [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN) bytes).
    pub topic: String,
}

/// The receiver's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BulkOutcome {
    /// All bytes arrived and were stored.
    Complete {
        /// Bytes received.
        received: u64,
    },
    /// The transfer was refused or failed on the receiver.
    Rejected {
        /// Why.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
}

/// Why a bulk transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BulkError {
    /// No progress within the idle timeout.
    #[error("no progress within {0:?}")]
    Timeout(Duration),
    /// The receiver refused or failed the transfer.
    #[error("rejected by the receiver ({code}): {message}")]
    Rejected {
        /// Why.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// The local source ended before `expected` bytes.
    #[error("the source ended after {got} of {expected} bytes")]
    SourceEnded {
        /// Bytes announced.
        expected: u64,
        /// Bytes available.
        got: u64,
    },
    /// The peer broke the protocol or the stream failed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl From<std::io::Error> for BulkError {
    fn from(error: std::io::Error) -> Self {
        BulkError::Protocol(ProtocolError::Io(error))
    }
}

async fn within<T, E>(
    idle: Duration,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, BulkError>
where
    BulkError: From<E>,
{
    match tokio::time::timeout(idle, future).await {
        Ok(result) => result.map_err(BulkError::from),
        Err(_) => Err(BulkError::Timeout(idle)),
    }
}

/// Sends `header` and then exactly `header.size` bytes from `source` on `stream`, calling
/// `progress` with the running total after every chunk, and waits for the receiver's verdict.
///
/// # Errors
///
/// A [`BulkError`]; the stream should be dropped afterwards.
pub async fn send_bulk<S, R>(
    stream: &mut S,
    header: &BulkHeader,
    source: &mut R,
    idle: Duration,
    mut progress: impl FnMut(u64),
) -> Result<u64, BulkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let frame = encode(header, MAX_REQUEST_FRAME)?;
    within(idle, stream.write_all(&frame)).await?;
    // The receiver may refuse at any point: listen for its verdict while the payload flows,
    // so a refusal ends the transfer at once instead of after the idle timeout.
    let (mut reader, mut writer) = stream.split();
    let body = {
        let copy = copy_payload(&mut writer, header, source, idle, &mut progress);
        let verdict = read_frame(&mut reader, MAX_REQUEST_FRAME);
        futures::pin_mut!(copy, verdict);
        match futures::future::select(copy, verdict).await {
            futures::future::Either::Left((copied, verdict)) => {
                copied?;
                within(idle, verdict).await?
            }
            futures::future::Either::Right((early, _)) => {
                return match decode::<BulkOutcome>(&early?)? {
                    BulkOutcome::Rejected { code, message } => {
                        Err(BulkError::Rejected { code, message })
                    }
                    BulkOutcome::Complete { received } => {
                        Err(BulkError::Protocol(ProtocolError::Malformed(format!(
                            "receiver reported completion ({received} bytes) before the end"
                        ))))
                    }
                };
            }
        }
    };
    match decode::<BulkOutcome>(&body)? {
        BulkOutcome::Complete { received } if received == header.size => {
            let _ = within(idle, writer.close()).await;
            Ok(received)
        }
        BulkOutcome::Complete { received } => Err(BulkError::Protocol(ProtocolError::Malformed(
            format!("receiver reports {received} of {} bytes", header.size),
        ))),
        BulkOutcome::Rejected { code, message } => Err(BulkError::Rejected { code, message }),
    }
}

async fn copy_payload<S, R>(
    stream: &mut S,
    header: &BulkHeader,
    source: &mut R,
    idle: Duration,
    progress: &mut impl FnMut(u64),
) -> Result<(), BulkError>
where
    S: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let mut buffer = vec![0u8; BULK_CHUNK];
    let mut sent = 0u64;
    while sent < header.size {
        let want = next_chunk(header.size, sent);
        let n = within(idle, source.read(&mut buffer[..want])).await?;
        if n == 0 {
            return Err(BulkError::SourceEnded {
                expected: header.size,
                got: sent,
            });
        }
        within(idle, stream.write_all(&buffer[..n])).await?;
        sent += n as u64;
        progress(sent);
    }
    within(idle, stream.flush()).await
}

/// Bytes to move next: a full chunk, or what is left of `size` after `done`.
fn next_chunk(size: u64, done: u64) -> usize {
    usize::try_from(size.saturating_sub(done).min(BULK_CHUNK as u64)).unwrap_or(BULK_CHUNK)
}

/// Reads the header of an inbound bulk stream.
///
/// # Errors
///
/// A [`BulkError`] for a stalled, malformed or oversized header.
pub async fn read_bulk_header<S>(stream: &mut S, idle: Duration) -> Result<BulkHeader, BulkError>
where
    S: AsyncRead + Unpin,
{
    let body = within(idle, read_frame(stream, MAX_REQUEST_FRAME)).await?;
    let header: BulkHeader = decode(&body)?;
    if header.topic.len() > crate::MAX_TOPIC_LEN {
        return Err(
            ProtocolError::Malformed(format!("topic of {} bytes", header.topic.len())).into(),
        );
    }
    Ok(header)
}

/// Receives the payload announced by `header` into `sink`, calling `progress` with the
/// running total, then tells the sender it is complete.
///
/// # Errors
///
/// A [`BulkError`]: stalled or truncated stream, failing sink (the sender is told).
pub async fn receive_bulk<S, W>(
    stream: &mut S,
    header: &BulkHeader,
    sink: &mut W,
    idle: Duration,
    progress: impl FnMut(u64),
) -> Result<u64, BulkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    W: AsyncWrite + Unpin,
{
    let received = receive_payload(stream, header, sink, idle, progress).await?;
    confirm_bulk(stream, received, idle).await?;
    Ok(received)
}

/// Tells the sender that all `received` bytes are stored.
async fn confirm_bulk<S>(stream: &mut S, received: u64, idle: Duration) -> Result<(), BulkError>
where
    S: AsyncWrite + Unpin,
{
    let frame = encode(&BulkOutcome::Complete { received }, MAX_REQUEST_FRAME)?;
    within(idle, stream.write_all(&frame)).await?;
    within(idle, stream.flush()).await?;
    let _ = within(idle, stream.close()).await;
    Ok(())
}

/// Receives the payload into `sink` and flushes it; confirms nothing.
async fn receive_payload<S, W>(
    stream: &mut S,
    header: &BulkHeader,
    sink: &mut W,
    idle: Duration,
    mut progress: impl FnMut(u64),
) -> Result<u64, BulkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; BULK_CHUNK];
    let mut received = 0u64;
    while received < header.size {
        let want = next_chunk(header.size, received);
        let n = within(idle, stream.read(&mut buffer[..want])).await?;
        if n == 0 {
            return Err(ProtocolError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("stream ended after {received} of {} bytes", header.size),
            ))
            .into());
        }
        if let Err(error) = within(idle, sink.write_all(&buffer[..n])).await {
            let _ = reject_bulk(
                stream,
                ErrorCode::Internal,
                "the receiver could not store the data",
                idle,
            )
            .await;
            return Err(error);
        }
        received += n as u64;
        progress(received);
    }
    within(idle, sink.flush()).await?;
    Ok(received)
}

/// Refuses an inbound bulk transfer.
///
/// # Errors
///
/// A [`BulkError`] when the verdict cannot be written.
pub async fn reject_bulk<S>(
    stream: &mut S,
    code: ErrorCode,
    message: &str,
    idle: Duration,
) -> Result<(), BulkError>
where
    S: AsyncWrite + Unpin,
{
    let frame = encode(
        &BulkOutcome::Rejected {
            code,
            message: message.to_owned(),
        },
        MAX_REQUEST_FRAME,
    )?;
    within(idle, stream.write_all(&frame)).await?;
    within(idle, stream.flush()).await?;
    let _ = within(idle, stream.close()).await;
    Ok(())
}

/// An inbound bulk transfer: read its header, then receive it into a sink or reject it.
#[derive(Debug)]
pub struct IncomingBulk {
    /// The sender.
    pub peer_id: libp2p::PeerId,
    stream: libp2p::Stream,
    idle: Duration,
    stats: std::sync::Arc<crate::Stats>,
    /// Marks the peer busy while its payload arrives (see [`crate::ActivitySource`]).
    toucher: Toucher,
}

impl IncomingBulk {
    pub(crate) fn new(
        peer_id: libp2p::PeerId,
        stream: libp2p::Stream,
        idle: Duration,
        stats: std::sync::Arc<crate::Stats>,
        toucher: Toucher,
    ) -> Self {
        Self {
            peer_id,
            stream,
            idle,
            stats,
            toucher,
        }
    }

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
        W: AsyncWrite + Unpin,
    {
        let progress = self.toucher.on_progress(progress);
        let received = receive_bulk(&mut self.stream, header, sink, self.idle, progress).await?;
        self.stats.record_bulk(true, received);
        Ok(received)
    }

    /// Like [`receive`](Self::receive), but the sender is told the transfer is complete only
    /// once `commit` (given the sink, after the last byte was flushed) succeeded: an
    /// application that verifies and stores the data durably there confirms only what it
    /// kept. Returns the bytes received and what `commit` returned. When `commit` fails, the
    /// sender gets its error code and message instead.
    ///
    /// # Errors
    ///
    /// A [`BulkError`]: stalled or truncated stream, failing sink, [`BulkError::Rejected`]
    /// with `commit`'s refusal.
    pub async fn receive_committed<W, F, Fut, T>(
        mut self,
        header: &BulkHeader,
        sink: &mut W,
        progress: impl FnMut(u64),
        commit: F,
    ) -> Result<(u64, T), BulkError>
    where
        W: AsyncWrite + Unpin,
        F: FnOnce(&mut W) -> Fut,
        Fut: std::future::Future<Output = Result<T, (ErrorCode, String)>>,
    {
        let progress = self.toucher.on_progress(progress);
        let received = receive_payload(&mut self.stream, header, sink, self.idle, progress).await?;
        let kept = match commit(sink).await {
            Ok(kept) => kept,
            Err((code, message)) => {
                reject_bulk(&mut self.stream, code, &message, self.idle).await?;
                return Err(BulkError::Rejected { code, message });
            }
        };
        confirm_bulk(&mut self.stream, received, self.idle).await?;
        self.stats.record_bulk(true, received);
        Ok((received, kept))
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

/// What handles each inbound bulk transfer: reads its header, then receives or rejects it.
/// Implemented for every `Fn(IncomingBulk) -> impl Future<Output = ()>`.
///
/// ```
/// use codio_protocol::bulk::{BulkHandler, IncomingBulk};
///
/// fn check(_: impl BulkHandler) {}
/// check(|mut bulk: IncomingBulk| async move {
///     let Ok(header) = bulk.header().await else { return };
///     let mut sink = futures::io::sink();
///     let _ = bulk.receive(&header, &mut sink, |_| {}).await;
/// });
/// ```
pub trait BulkHandler: Send + Sync + 'static {
    /// Handles `bulk` (dropping it unanswered resets its stream).
    fn handle(&self, bulk: IncomingBulk) -> impl Future<Output = ()> + Send;
}

impl<F, Fut> BulkHandler for F
where
    F: Fn(IncomingBulk) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    fn handle(&self, bulk: IncomingBulk) -> impl Future<Output = ()> + Send {
        self(bulk)
    }
}

/// Runs `handler` on every transfer from `queue`, at most `concurrency` at once (each in its
/// own task; while all are busy, transfers wait in the queue and, once it is full, are
/// refused). Ends when the queue closes (the node stopped).
pub async fn serve_bulk<H: BulkHandler>(
    queue: tokio::sync::mpsc::Receiver<IncomingBulk>,
    handler: H,
    concurrency: usize,
) {
    crate::inbound::serve_each(queue, handler, concurrency, |handler, bulk| async move {
        handler.handle(bulk).await;
    })
    .await;
}
