//! Requests over `/codio/rpc/1.0.0` ([`codio_protocol::rpc`]): one pipelined stream per
//! peer, read and written by tasks of the handle, not by the swarm's event loop.
//!
//! Outbound: [`RpcClient`] keeps a session per peer: a task that opens the stream, writes
//! every queued request (coalesced into one write while more are waiting), reads responses
//! and hands each to its caller by id. A session ends when its stream fails or after
//! [`SESSION_IDLE`] without requests; the next request opens a new one. Peers that do not
//! speak the protocol are remembered and asked over `/codio/1.0.0` instead (the caller falls
//! back).
//!
//! Inbound: [`accept_loop`] serves each inbound stream with a reader that turns frames into
//! [`InboundRequest`]s for the application's queue (the same queue as `/codio/1.0.0`, with
//! the same `NotFound` / `Overloaded` refusals) and a writer for the responses. At most
//! [`MAX_IN_FLIGHT`] requests per stream wait for answers; then the reader stops reading.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use codio_protocol::{
    CodecStats, ErrorCode, ProtocolError, Request, Response,
    rpc::{
        MAX_IN_FLIGHT, MAX_RPC_REQUEST_FRAME, MAX_RPC_RESPONSE_FRAME, RpcRequest, RpcResponse,
        decode_request, decode_response, encode_request, encode_response,
    },
    streams::{Control, IncomingStreams, OpenStreamError},
};
use futures::{AsyncReadExt, AsyncWriteExt, io::ReadHalf, io::WriteHalf};
use libp2p::{PeerId, Stream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::{
    InboundRequest, RequestError,
    event_loop::{Responder, Shared, enqueue, response_result},
    metrics::CodioMetrics,
};

/// A client session closes its stream after this long without requests.
pub(crate) const SESSION_IDLE: Duration = Duration::from_secs(60);
/// Requests queued to one session's writer.
const SESSION_QUEUE: usize = 256;
/// Bytes of requests or responses written in one go before a flush.
const COALESCE: usize = 64 * 1024;
/// A session records activity in the peer's `PeerInfo::last_seen` at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(1);

/// Updates `last_seen` of a session's peer, at most every [`TOUCH_EVERY`].
#[derive(Debug)]
struct Toucher {
    shared: Arc<Shared>,
    peer: PeerId,
    last: Option<Instant>,
}

impl Toucher {
    fn new(shared: Arc<Shared>, peer: PeerId) -> Self {
        Self {
            shared,
            peer,
            last: None,
        }
    }

    fn touch(&mut self) {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|last| now.duration_since(last) >= TOUCH_EVERY)
        {
            self.last = Some(now);
            self.shared.touch(&self.peer, now);
        }
    }
}

/// Peers remembered as not speaking the protocol (forgotten all at once beyond this).
const MAX_LEGACY_PEERS: usize = 4096;

type Reply = oneshot::Sender<Result<Response, RpcFailure>>;

/// Why a request could not go over RPC.
#[derive(Debug)]
pub(crate) enum RpcFailure {
    /// The peer does not speak `/codio/rpc/1.0.0`: send the request (given back) over
    /// `/codio/1.0.0`.
    Unsupported(Request),
    /// A definite answer for the caller.
    Failed(RequestError),
}

struct Outgoing {
    request: Request,
    reply: Reply,
}

/// Kill switches of running sessions, by peer: dropping a peer's senders ends its sessions
/// (their stream died with the peer's last connection; a dead Yamux stream is not guaranteed
/// to wake a reader).
#[derive(Debug, Default)]
pub(crate) struct KillSwitches(Mutex<HashMap<PeerId, Vec<oneshot::Sender<()>>>>);

impl KillSwitches {
    /// A switch for a new session of `peer`.
    fn arm(&self, peer: PeerId) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let switches = map.entry(peer).or_default();
        // Sessions that ended by themselves dropped their receivers.
        switches.retain(|s| !s.is_closed());
        switches.push(tx);
        rx
    }

    /// Ends every session of `peer`.
    fn trip(&self, peer: &PeerId) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(peer);
    }
}

/// Outbound sessions, one per peer.
#[derive(Debug)]
pub(crate) struct RpcClient {
    control: Control,
    shared: Arc<Shared>,
    sessions: Mutex<HashMap<PeerId, mpsc::Sender<Outgoing>>>,
    /// Of outbound and inbound sessions alike.
    pub(crate) switches: Arc<KillSwitches>,
    legacy: Mutex<HashSet<PeerId>>,
}

impl RpcClient {
    pub(crate) fn new(control: Control, shared: Arc<Shared>) -> Self {
        Self {
            control,
            shared,
            sessions: Mutex::new(HashMap::new()),
            switches: Arc::default(),
            legacy: Mutex::new(HashSet::new()),
        }
    }

    fn is_legacy(&self, peer: &PeerId) -> bool {
        self.legacy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(peer)
    }

    /// Drops the session of `peer` (its task ends with its stream); the next request opens
    /// a new one.
    pub(crate) fn forget(&self, peer: &PeerId) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(peer);
    }

    /// The last connection to `peer` closed: its sessions, outbound and inbound, end now.
    pub(crate) fn peer_gone(&self, peer: &PeerId) {
        self.forget(peer);
        self.switches.trip(peer);
    }

    /// The session of `peer`, opened if there is none (or it ended).
    fn session(self: &Arc<Self>, peer: PeerId) -> mpsc::Sender<Outgoing> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = sessions.get(&peer)
            && !tx.is_closed()
        {
            return tx.clone();
        }
        sessions.retain(|_, tx| !tx.is_closed());
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        sessions.insert(peer, tx.clone());
        let kill = self.switches.arm(peer);
        tokio::spawn(run_session(self.clone(), peer, rx, kill));
        tx
    }

    /// Sends `request` to `peer` and waits up to `timeout` for the response.
    pub(crate) async fn request(
        self: &Arc<Self>,
        peer: PeerId,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, RpcFailure> {
        if self.is_legacy(&peer) {
            return Err(RpcFailure::Unsupported(request));
        }
        let (reply, rx) = oneshot::channel();
        let mut outgoing = Outgoing { request, reply };
        // A session may end between lookup and send: retry once on a fresh one.
        for _ in 0..2 {
            match self.session(peer).send(outgoing).await {
                Ok(()) => {
                    return match tokio::time::timeout(timeout, rx).await {
                        Ok(Ok(result)) => result,
                        Ok(Err(_)) => Err(unreachable("the request stream closed")),
                        Err(_) => Err(RpcFailure::Failed(RequestError::Timeout)),
                    };
                }
                Err(mpsc::error::SendError(back)) => outgoing = back,
            }
        }
        Err(unreachable("could not open a request stream"))
    }
}

/// Pending replies of one session, by request id.
type Pending = Arc<Mutex<HashMap<u64, Reply>>>;

fn fail_all(pending: &Pending, error: &str) {
    let replies: Vec<Reply> = pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .map(|(_, reply)| reply)
        .collect();
    for reply in replies {
        let _ = reply.send(Err(unreachable(error)));
    }
}

fn unreachable(why: &str) -> RpcFailure {
    RpcFailure::Failed(RequestError::PeerUnreachable(why.to_owned()))
}

async fn run_session(
    client: Arc<RpcClient>,
    peer: PeerId,
    mut rx: mpsc::Receiver<Outgoing>,
    mut kill: oneshot::Receiver<()>,
) {
    let stream = match client.control.open_stream(peer).await {
        Ok(stream) => stream,
        Err(error) => {
            let unsupported = matches!(error, OpenStreamError::UnsupportedProtocol(_));
            if unsupported {
                let mut legacy = client.legacy.lock().unwrap_or_else(PoisonError::into_inner);
                if legacy.len() >= MAX_LEGACY_PEERS {
                    legacy.clear();
                }
                legacy.insert(peer);
            }
            tracing::debug!(%peer, %error, unsupported, "no request stream");
            rx.close();
            while let Some(Outgoing { request, reply }) = rx.recv().await {
                let answer = match &error {
                    OpenStreamError::UnsupportedProtocol(_) => RpcFailure::Unsupported(request),
                    OpenStreamError::ShutDown => RpcFailure::Failed(RequestError::ShutDown),
                    other => unreachable(&other.to_string()),
                };
                let _ = reply.send(Err(answer));
            }
            return;
        }
    };
    let (reader, writer) = stream.split();
    let pending: Pending = Arc::default();
    let toucher = Toucher::new(client.shared.clone(), peer);
    let why = {
        let read = read_responses(reader, pending.clone(), toucher);
        let write = write_requests(writer, &mut rx, pending.clone());
        tokio::select! {
            why = read => why,
            why = write => why,
            _ = &mut kill => "connection closed",
        }
    };
    tracing::debug!(%peer, why, "request stream ended");
    rx.close();
    fail_all(&pending, why);
    // Requests queued but never written: after an idle close they go to a new session (they
    // raced the close); after a failure they fail.
    while let Some(outgoing) = rx.recv().await {
        if why == IDLE {
            let session = client.session(peer);
            tokio::spawn(async move {
                if let Err(mpsc::error::SendError(outgoing)) = session.send(outgoing).await {
                    let _ = outgoing.reply.send(Err(unreachable("session closed")));
                }
            });
        } else {
            let _ = outgoing.reply.send(Err(unreachable(why)));
        }
    }
}

const IDLE: &str = "idle";

async fn write_requests(
    mut writer: WriteHalf<Stream>,
    rx: &mut mpsc::Receiver<Outgoing>,
    pending: Pending,
) -> &'static str {
    let mut next_id = 0u64;
    let mut buffer = Vec::new();
    loop {
        let first = match tokio::time::timeout(SESSION_IDLE, rx.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => return "client gone",
            Err(_) => {
                let _ = writer.close().await;
                return IDLE;
            }
        };
        reuse(&mut buffer);
        let mut next = Some(first);
        while let Some(Outgoing { request, reply }) = next.take() {
            next_id += 1;
            let frame = match encode_request(&RpcRequest {
                id: next_id,
                request,
            }) {
                Ok(frame) => frame,
                Err(error) => {
                    let _ = reply.send(Err(RpcFailure::Failed(RequestError::TooLarge(
                        error.to_string(),
                    ))));
                    next = rx.try_recv().ok();
                    continue;
                }
            };
            {
                let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
                // Callers that gave up (timed out) leave closed replies behind.
                if pending.len() >= MAX_IN_FLIGHT * 4 {
                    pending.retain(|_, reply| !reply.is_closed());
                }
                pending.insert(next_id, reply);
            }
            buffer.extend_from_slice(&frame);
            if buffer.len() < COALESCE {
                next = rx.try_recv().ok();
            }
        }
        if buffer.is_empty() {
            continue;
        }
        if writer.write_all(&buffer).await.is_err() || writer.flush().await.is_err() {
            return "write failed";
        }
    }
}

async fn read_responses(
    mut reader: ReadHalf<Stream>,
    pending: Pending,
    mut toucher: Toucher,
) -> &'static str {
    loop {
        let body = match codio_protocol::read_frame(&mut reader, MAX_RPC_RESPONSE_FRAME).await {
            Ok(body) => body,
            Err(ProtocolError::Io(_)) => return "stream closed",
            Err(_) => return "malformed response frame",
        };
        let RpcResponse { id, response } = match decode_response(&body) {
            Ok(response) => response,
            Err(_) => return "malformed response",
        };
        toucher.touch();
        let reply = pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(reply) = reply {
            let _ = reply.send(response_result(response).map_err(RpcFailure::Failed));
        }
    }
}

/// Empties a write buffer for the next batch; one that grew past [`KEEP`] (a burst, a large
/// response) is shrunk, so an idle session holds little memory.
fn reuse(buffer: &mut Vec<u8>) {
    buffer.clear();
    if buffer.capacity() > KEEP {
        buffer.shrink_to(KEEP);
    }
}

/// Write buffer capacity a session keeps between batches.
const KEEP: usize = 16 * 1024;

/// What inbound sessions need from the node.
#[derive(Debug, Clone)]
pub(crate) struct ServerContext {
    pub(crate) inbound: mpsc::Sender<InboundRequest>,
    pub(crate) installed: Arc<AtomicBool>,
    pub(crate) stats: Arc<CodecStats>,
    pub(crate) metrics: Option<Arc<CodioMetrics>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) switches: Arc<KillSwitches>,
    /// Once a frame has begun, the rest must arrive within this (slow senders are cut off),
    /// the request timeout of `/codio/1.0.0`.
    pub(crate) frame_timeout: Duration,
}

/// An inbound session with no request for this long is closed (the opener closes its own
/// after [`SESSION_IDLE`]; this bounds sessions of openers that never do).
const SERVER_IDLE: Duration = Duration::from_secs(300);

/// Serves inbound RPC streams until the node stops.
pub(crate) async fn accept_loop(
    mut incoming: IncomingStreams,
    context: ServerContext,
    mut alive: watch::Receiver<()>,
) {
    loop {
        let next = tokio::select! {
            next = incoming.next() => next,
            _ = alive.changed() => None,
        };
        let Some((peer, stream)) = next else {
            break;
        };
        let kill = context.switches.arm(peer);
        let mut alive = alive.clone();
        let context = context.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = serve_session(peer, stream, context) => {}
                _ = kill => tracing::debug!(%peer, "inbound request stream ended with the connection"),
                _ = alive.changed() => {}
            }
        });
    }
    tracing::debug!("rpc accept loop stopped");
}

/// A response on its way to a session's writer; `permit` frees the slot once written.
pub(crate) struct Answer {
    id: u64,
    response: Response,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Where an RPC responder sends its answer.
#[derive(Debug)]
pub(crate) struct RpcReply {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<Answer>,
    pub(crate) permit: OwnedSemaphorePermit,
}

impl RpcReply {
    pub(crate) fn answer(self, response: Response) -> Answer {
        Answer {
            id: self.id,
            response,
            _permit: self.permit,
        }
    }
}

async fn serve_session(peer: PeerId, stream: Stream, context: ServerContext) {
    let (reader, writer) = stream.split();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // Every answer holds a slot, so the queue never holds more than MAX_IN_FLIGHT.
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    // The writer outlives the reader: requests read before the opener closed its side are
    // still answered (the writer ends once every responder answered or was dropped).
    let read = read_requests(peer, reader, &context, slots, tx);
    let write = write_responses(writer, rx);
    let (why, _) = futures::join!(read, write);
    tracing::debug!(%peer, why, "inbound request stream ended");
}

async fn read_requests(
    peer: PeerId,
    mut reader: ReadHalf<Stream>,
    context: &ServerContext,
    slots: Arc<Semaphore>,
    tx: mpsc::Sender<Answer>,
) -> &'static str {
    let mut toucher = Toucher::new(context.shared.clone(), peer);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return "closed";
        };
        let body = match read_request_frame(&mut reader, context.frame_timeout).await {
            Ok(Some(body)) => body,
            Ok(None) => return "closed by peer",
            Err(error) => {
                context.stats.record_rejected();
                tracing::debug!(%peer, %error, "bad request frame; closing the stream");
                return "bad request frame";
            }
        };
        let RpcRequest { id, request } = match decode_request(&body) {
            Ok(request) => request,
            Err(error) => {
                context.stats.record_rejected();
                tracing::debug!(%peer, %error, "malformed request; closing the stream");
                return "malformed request";
            }
        };
        toucher.touch();
        if let Some(metrics) = &context.metrics {
            metrics.on_inbound_request();
        }
        let reply = RpcReply {
            id,
            tx: tx.clone(),
            permit,
        };
        if !context.installed.load(Ordering::Acquire) {
            let _ = tx
                .send(reply.answer(Response::error(ErrorCode::NotFound, "no request handler")))
                .await;
            continue;
        }
        let inbound = InboundRequest {
            peer_id: peer,
            request,
            responder: Responder::rpc(reply),
        };
        enqueue(&context.inbound, inbound);
    }
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
    let rest = codio_protocol::read_frame_rest(reader, first[0], MAX_RPC_REQUEST_FRAME);
    match tokio::time::timeout(frame_timeout, rest).await {
        Ok(body) => body.map(Some),
        Err(_) => Err(ProtocolError::Io(std::io::ErrorKind::TimedOut.into())),
    }
}

async fn write_responses(
    mut writer: WriteHalf<Stream>,
    mut rx: mpsc::Receiver<Answer>,
) -> &'static str {
    let mut buffer = Vec::new();
    while let Some(first) = rx.recv().await {
        reuse(&mut buffer);
        let mut next = Some(first);
        while let Some(answer) = next.take() {
            let frame = encode_response(&RpcResponse {
                id: answer.id,
                response: answer.response,
            })
            .or_else(|error| {
                encode_response(&RpcResponse {
                    id: answer.id,
                    response: Response::error(ErrorCode::TooLarge, error.to_string()),
                })
            });
            if let Ok(frame) = frame {
                buffer.extend_from_slice(&frame);
            }
            if buffer.len() < COALESCE {
                next = rx.try_recv().ok();
            }
        }
        if writer.write_all(&buffer).await.is_err() || writer.flush().await.is_err() {
            return "write failed";
        }
    }
    "reader gone"
}
