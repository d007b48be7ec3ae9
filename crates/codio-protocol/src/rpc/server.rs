//! Inbound `/codio/rpc/1.0.0` sessions: a reader that turns frames into
//! [`InboundRequest`]s for the application's queue (the queue of `/codio/1.0.0` too, with the
//! same `NotFound` / `Overloaded` refusals) and a writer for the answers. At most
//! [`MAX_IN_FLIGHT`] requests per stream wait for answers; then the reader stops reading.

use std::{sync::Arc, time::Duration};

use futures::{AsyncReadExt, AsyncWriteExt, io::ReadHalf, io::WriteHalf};
use libp2p::{PeerId, Stream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::reply::{Answer, RpcReply};
use super::{
    MAX_IN_FLIGHT, MAX_RPC_REQUEST_FRAME, RpcRequest, RpcResponse, decode_request, encode_response,
    session::{COALESCE, SessionEnd, reuse},
};
use crate::{
    ErrorCode, InboundRequest, ProtocolError, Responder, Response, Stats,
    activity::{Activity, Toucher},
    budget::{Budget, Taken},
    inbound::RequestQueue,
};

/// An inbound session with no request for this long is closed (the opener closes its own
/// after its idle time; this bounds sessions of openers that never do).
const SERVER_IDLE: Duration = Duration::from_secs(300);

/// What inbound sessions need from the node.
#[derive(Debug, Clone)]
pub(crate) struct ServerContext {
    pub(crate) queue: RequestQueue,
    pub(crate) stats: Arc<Stats>,
    pub(crate) activity: Arc<Activity>,
    /// Once a frame has begun, the rest must arrive within this (slow senders are cut off).
    pub(crate) frame_timeout: Duration,
    /// An answer must be written within this (peers that do not read are cut off).
    pub(crate) write_timeout: Duration,
    /// Bytes of answers waiting to be written, shared by every session.
    pub(crate) total_budget: Budget,
    /// The same per session.
    pub(crate) session_budget: usize,
}

/// Serves one inbound stream in its own task until it ends or `kill` fires.
pub(crate) fn spawn_session(
    peer: PeerId,
    stream: Stream,
    context: ServerContext,
    kill: oneshot::Receiver<()>,
) {
    tokio::spawn(async move {
        let stats = context.stats.clone();
        stats.session_opened();
        tokio::select! {
            () = serve_session(peer, stream, context) => {}
            _ = kill => tracing::debug!(%peer, "inbound request stream ended (connection closed or shed)"),
        }
        stats.session_closed();
    });
}

async fn serve_session(peer: PeerId, stream: Stream, context: ServerContext) {
    let (reader, writer) = stream.split();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // Every answer holds a slot, so the queue never holds more than MAX_IN_FLIGHT.
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    // The writer outlives the reader: requests read before the opener closed its side are
    // still answered (the writer ends once every responder answered or was dropped).
    let budgets = (
        Budget::new(context.session_budget),
        context.total_budget.clone(),
    );
    let read = std::pin::pin!(read_requests(peer, reader, &context, slots, tx, budgets));
    let write = std::pin::pin!(write_responses(writer, rx, context.write_timeout));
    // The writer outlives the reader, but a writer that is stuck ends the whole session.
    let why = match futures::future::select(read, write).await {
        futures::future::Either::Left((why, write)) => {
            let _ = write.await;
            why
        }
        futures::future::Either::Right((Ok(()), read)) => read.await,
        futures::future::Either::Right((Err(why), _)) => why,
    };
    if why == SessionEnd::WriteStalled {
        context.stats.record_stalled_session();
    }
    tracing::debug!(%peer, why = why.as_str(), "inbound request stream ended");
}

async fn read_requests(
    peer: PeerId,
    mut reader: ReadHalf<Stream>,
    context: &ServerContext,
    slots: Arc<Semaphore>,
    tx: mpsc::Sender<Answer>,
    (session, total): (Budget, Budget),
) -> SessionEnd {
    let mut toucher = Toucher::new(context.activity.clone(), peer);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return SessionEnd::ConnectionClosed;
        };
        let (id, request) = match read_request(&mut reader, context.frame_timeout).await {
            Ok(Some(request)) => request,
            Ok(None) => return SessionEnd::ClosedByPeer,
            Err(why) => {
                context.stats.record_rejected();
                tracing::debug!(%peer, why = why.as_str(), "bad request; closing the stream");
                return why;
            }
        };
        toucher.touch();
        let reply = RpcReply {
            id,
            tx: tx.clone(),
            permit,
            session: session.clone(),
            total: total.clone(),
        };
        context.queue.enqueue(InboundRequest {
            peer_id: peer,
            request,
            responder: Responder::rpc(reply),
        });
    }
}

/// Reads and checks one request; `None` when the stream ends cleanly between frames.
async fn read_request(
    reader: &mut ReadHalf<Stream>,
    frame_timeout: Duration,
) -> Result<Option<(u64, crate::Request)>, SessionEnd> {
    let body = match read_request_frame(reader, frame_timeout).await {
        Ok(Some(body)) => body,
        Ok(None) => return Ok(None),
        Err(_) => return Err(SessionEnd::BadFrame),
    };
    let RpcRequest { id, request } = decode_request(&body).map_err(|_| SessionEnd::Malformed)?;
    request.validate().map_err(|_| SessionEnd::Malformed)?;
    Ok(Some((id, request)))
}

/// Reads a request frame; `None` when the stream ends cleanly between frames.
async fn read_request_frame(
    reader: &mut ReadHalf<Stream>,
    frame_timeout: Duration,
) -> Result<Option<Vec<u8>>, ProtocolError> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(SERVER_IDLE, reader.read(&mut first)).await {
        Ok(Ok(0)) | Err(_) => return Ok(None),
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(error.into()),
    }
    let rest = crate::codec::read_frame_rest(reader, first[0], MAX_RPC_REQUEST_FRAME);
    match tokio::time::timeout(frame_timeout, rest).await {
        Ok(body) => body.map(Some),
        Err(_) => Err(ProtocolError::Io(std::io::ErrorKind::TimedOut.into())),
    }
}

/// Writes answers until every responder is done; a write that fails or does not finish
/// within `timeout` ends it with the reason.
async fn write_responses(
    mut writer: WriteHalf<Stream>,
    mut rx: mpsc::Receiver<Answer>,
    timeout: Duration,
) -> Result<(), SessionEnd> {
    let mut buffer = Vec::new();
    // The budget the batch's answers took, given back once the batch is written.
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        reuse(&mut buffer);
        batch.clear();
        let mut next = Some(first);
        while let Some(answer) = next.take() {
            batch.push(append_response(&mut buffer, answer));
            if buffer.len() < COALESCE {
                next = rx.try_recv().ok();
            }
        }
        let write = async {
            writer.write_all(&buffer).await?;
            writer.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(SessionEnd::WriteFailed),
            Err(_) => return Err(SessionEnd::WriteStalled),
        }
    }
    Ok(())
}

/// Appends the frame of `answer`, or a `TooLarge` error in its place when it does not fit;
/// returns the budget it holds.
fn append_response(buffer: &mut Vec<u8>, answer: Answer) -> Taken {
    let Answer {
        id,
        response,
        bytes,
        ..
    } = answer;
    let frame = encode_response(&RpcResponse { id, response }).or_else(|error| {
        encode_response(&RpcResponse {
            id,
            response: Response::error(ErrorCode::TooLarge, error.to_string()),
        })
    });
    if let Ok(frame) = frame {
        buffer.extend_from_slice(&frame);
    }
    bytes
}
