//! Outbound `/codio/rpc/1.0.0` sessions: one per peer, a task that opens the stream, writes
//! every queued request (coalesced into one write while more are waiting), reads responses
//! and hands each to its caller by id. A session ends when its stream fails, its peer's last
//! connection closes, or after [`SESSION_IDLE`] without requests; the next request opens a
//! new one. Peers that do not speak the protocol are remembered and asked over
//! `/codio/1.0.0` instead (the caller falls back).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::{AsyncReadExt, AsyncWriteExt, io::ReadHalf, io::WriteHalf};
use libp2p::{PeerId, Stream};
use tokio::sync::{mpsc, oneshot};

use super::{
    MAX_IN_FLIGHT, MAX_RPC_RESPONSE_FRAME, RpcRequest, RpcResponse, decode_response,
    encode_request,
    session::{COALESCE, KillSwitches, SessionEnd, reuse},
};
use crate::{
    ProtocolError, Request, RequestError, Response,
    activity::{Activity, Toucher},
    error::response_result,
    streams::{Control, OpenStreamError},
};

/// A client session closes its stream after this long without requests.
const SESSION_IDLE: Duration = Duration::from_secs(60);
/// Requests queued to one session's writer.
const SESSION_QUEUE: usize = 256;
/// How long a session whose first writes failed waits for the peer's refusal of the protocol
/// (which arrives before the reset that failed the write, when there is one).
const REFUSAL_WAIT: Duration = Duration::from_secs(2);
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

/// Outbound sessions, one per peer.
#[derive(Debug)]
pub(crate) struct RpcClient {
    control: Control,
    activity: Arc<Activity>,
    sessions: Mutex<HashMap<PeerId, mpsc::Sender<Outgoing>>>,
    switches: Arc<KillSwitches>,
    legacy: Mutex<HashSet<PeerId>>,
    /// A response frame once begun, or a batch of requests, must be through within this.
    frame_timeout: Duration,
}

impl RpcClient {
    pub(crate) fn new(
        control: Control,
        activity: Arc<Activity>,
        switches: Arc<KillSwitches>,
        frame_timeout: Duration,
    ) -> Self {
        Self {
            frame_timeout,
            control,
            activity,
            sessions: Mutex::new(HashMap::new()),
            switches,
            legacy: Mutex::new(HashSet::new()),
        }
    }

    fn is_legacy(&self, peer: &PeerId) -> bool {
        lock(&self.legacy).contains(peer)
    }

    /// Drops the session of `peer` (its task ends with its stream); the next request opens
    /// a new one rather than race a stream that may run on a dying connection.
    pub(crate) fn forget(&self, peer: &PeerId) {
        lock(&self.sessions).remove(peer);
    }

    /// The session of `peer`, opened if there is none (or it ended).
    fn session(self: &Arc<Self>, peer: PeerId) -> mpsc::Sender<Outgoing> {
        let mut sessions = lock(&self.sessions);
        if let Some(tx) = sessions.get(&peer)
            && !tx.is_closed()
        {
            return tx.clone();
        }
        sessions.retain(|_, tx| !tx.is_closed());
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        sessions.insert(peer, tx.clone());
        tokio::spawn(run_session(self.clone(), peer, rx));
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

    fn remember_legacy(&self, peer: PeerId) {
        let mut legacy = lock(&self.legacy);
        if legacy.len() >= MAX_LEGACY_PEERS {
            legacy.clear();
        }
        legacy.insert(peer);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each update is one insert or remove: a panic elsewhere cannot leave it half-done.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request written and waiting for its response. Until the peer's first response confirms
/// the protocol, the request itself is kept: when streams are opened lazily (their protocol
/// proposal goes with the first requests), a peer that does not speak the protocol says so
/// only after they were sent, and they are then handed back for `/codio/1.0.0`.
struct Waiting {
    reply: Reply,
    request: Option<Request>,
}

/// Pending replies of one session, by request id, and whether the peer confirmed the
/// protocol (answered once).
#[derive(Default)]
struct Session {
    waiting: HashMap<u64, Waiting>,
    confirmed: bool,
}

type Pending = Arc<Mutex<Session>>;

fn fail_all(pending: &Pending, why: SessionEnd) {
    let waiting: Vec<Waiting> = lock(pending).waiting.drain().map(|(_, w)| w).collect();
    for Waiting { reply, request } in waiting {
        let answer = match (why, request) {
            (SessionEnd::Refused, Some(request)) => Err(RpcFailure::Unsupported(request)),
            _ => Err(unreachable(why.as_str())),
        };
        let _ = reply.send(answer);
    }
}

fn unreachable(why: &str) -> RpcFailure {
    RpcFailure::Failed(RequestError::PeerUnreachable(why.to_owned()))
}

async fn run_session(client: Arc<RpcClient>, peer: PeerId, mut rx: mpsc::Receiver<Outgoing>) {
    let stream = match client.control.open_stream(peer).await {
        Ok(stream) => stream,
        Err(error) => return refuse_all(&client, peer, rx, &error).await,
    };
    // Armed once the stream is open: a connection that closed while the stream was being
    // opened (on another connection, or a new one) says nothing about this session.
    let (mut kill, _) = client.switches.arm(peer, usize::MAX);
    let (reader, writer) = stream.split();
    let pending: Pending = Arc::default();
    let toucher = Toucher::new(client.activity.clone(), peer);
    let why = {
        let timeout = client.frame_timeout;
        let read = read_responses(reader, pending.clone(), toucher, timeout);
        let write = write_requests(writer, &mut rx, pending.clone(), timeout);
        tokio::pin!(read);
        tokio::select! {
            why = &mut read => why,
            why = write => {
                // A peer refusing the lazily proposed protocol may reset the stream before
                // its refusal was read: a session not yet confirmed that failed to write
                // looks for the refusal before it gives up.
                let confirmed = lock(&pending).confirmed;
                match why {
                    SessionEnd::WriteFailed if !confirmed => {
                        match tokio::time::timeout(REFUSAL_WAIT, &mut read).await {
                            Ok(SessionEnd::Refused) => SessionEnd::Refused,
                            _ => why,
                        }
                    }
                    why => why,
                }
            }
            _ = &mut kill => SessionEnd::ConnectionClosed,
        }
    };
    tracing::debug!(%peer, why = why.as_str(), "request stream ended");
    if why == SessionEnd::Refused {
        client.remember_legacy(peer);
    }
    rx.close();
    fail_all(&pending, why);
    // Requests queued but never written: after an idle close they go to a new session (they
    // raced the close); to a peer without the protocol they go back for `/codio/1.0.0`;
    // after a failure they fail.
    while let Some(outgoing) = rx.recv().await {
        match why {
            SessionEnd::Idle => requeue(client.session(peer), outgoing),
            SessionEnd::Refused => {
                let _ = outgoing
                    .reply
                    .send(Err(RpcFailure::Unsupported(outgoing.request)));
            }
            _ => {
                let _ = outgoing.reply.send(Err(unreachable(why.as_str())));
            }
        }
    }
}

fn requeue(session: mpsc::Sender<Outgoing>, outgoing: Outgoing) {
    tokio::spawn(async move {
        if let Err(mpsc::error::SendError(outgoing)) = session.send(outgoing).await {
            let _ = outgoing.reply.send(Err(unreachable("session closed")));
        }
    });
}

/// No stream could be opened: every queued request fails, or falls back to `/codio/1.0.0`
/// when the peer does not speak the protocol.
async fn refuse_all(
    client: &RpcClient,
    peer: PeerId,
    mut rx: mpsc::Receiver<Outgoing>,
    error: &OpenStreamError,
) {
    let unsupported = matches!(error, OpenStreamError::UnsupportedProtocol(_));
    if unsupported {
        client.remember_legacy(peer);
    }
    tracing::debug!(%peer, %error, unsupported, "no request stream");
    rx.close();
    while let Some(Outgoing { request, reply }) = rx.recv().await {
        let answer = match error {
            OpenStreamError::UnsupportedProtocol(_) => RpcFailure::Unsupported(request),
            OpenStreamError::ShutDown => RpcFailure::Failed(RequestError::ShutDown),
            other => unreachable(&other.to_string()),
        };
        let _ = reply.send(Err(answer));
    }
}

async fn write_requests(
    mut writer: WriteHalf<Stream>,
    rx: &mut mpsc::Receiver<Outgoing>,
    pending: Pending,
    timeout: Duration,
) -> SessionEnd {
    let mut next_id = 0u64;
    let mut buffer = Vec::new();
    loop {
        let first = match tokio::time::timeout(SESSION_IDLE, rx.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => return SessionEnd::ClientGone,
            Err(_) => {
                let _ = writer.close().await;
                return SessionEnd::Idle;
            }
        };
        reuse(&mut buffer);
        let mut next = Some(first);
        while let Some(outgoing) = next.take() {
            next_id += 1;
            append_request(&mut buffer, &pending, next_id, outgoing);
            if buffer.len() < COALESCE {
                next = rx.try_recv().ok();
            }
        }
        if buffer.is_empty() {
            continue;
        }
        let write = async {
            writer.write_all(&buffer).await?;
            writer.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return SessionEnd::WriteFailed,
            // The responder does not read: the session ends, its requests fail.
            Err(_) => return SessionEnd::WriteStalled,
        }
    }
}

/// Appends the frame of request `id` and registers its reply; a request that does not
/// encode is answered at once.
fn append_request(buffer: &mut Vec<u8>, pending: &Pending, id: u64, outgoing: Outgoing) {
    let Outgoing { request, reply } = outgoing;
    let rpc = RpcRequest { id, request };
    let frame = match encode_request(&rpc) {
        Ok(frame) => frame,
        Err(error) => {
            let error = RequestError::TooLarge(error.to_string());
            let _ = reply.send(Err(RpcFailure::Failed(error)));
            return;
        }
    };
    {
        let mut pending = lock(pending);
        // Callers that gave up (timed out) leave closed replies behind.
        if pending.waiting.len() >= MAX_IN_FLIGHT * 4 {
            pending.waiting.retain(|_, w| !w.reply.is_closed());
        }
        let request = (!pending.confirmed).then_some(rpc.request);
        pending.waiting.insert(id, Waiting { reply, request });
    }
    buffer.extend_from_slice(&frame);
}

async fn read_responses(
    mut reader: ReadHalf<Stream>,
    pending: Pending,
    mut toucher: Toucher,
    frame_timeout: Duration,
) -> SessionEnd {
    loop {
        // Between frames the responder may be quiet; once a frame began, it must finish in
        // time (a responder dripping a frame would hold the session and its requests).
        let mut first = [0u8; 1];
        match reader.read(&mut first).await {
            // The lazily proposed protocol was refused (the first read learns it).
            Err(error) if codio_base::protocol_refused(&error) => return SessionEnd::Refused,
            Ok(0) | Err(_) => return SessionEnd::ReadFailed,
            Ok(_) => {}
        }
        let rest = crate::codec::read_frame_rest(&mut reader, first[0], MAX_RPC_RESPONSE_FRAME);
        let body = match tokio::time::timeout(frame_timeout, rest).await {
            Ok(Ok(body)) => body,
            Ok(Err(ProtocolError::Io(_))) => return SessionEnd::ReadFailed,
            Ok(Err(_)) => return SessionEnd::BadFrame,
            Err(_) => return SessionEnd::ReadStalled,
        };
        let Ok(RpcResponse { id, response }) = decode_response(&body) else {
            return SessionEnd::Malformed;
        };
        toucher.touch();
        let waiting = {
            let mut pending = lock(&pending);
            if !pending.confirmed {
                // The protocol is confirmed: requests need not be kept any more.
                pending.confirmed = true;
                pending.waiting.values_mut().for_each(|w| w.request = None);
            }
            pending.waiting.remove(&id)
        };
        if let Some(Waiting { reply, .. }) = waiting {
            let _ = reply.send(response_result(response).map_err(RpcFailure::Failed));
        }
    }
}
