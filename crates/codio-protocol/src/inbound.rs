//! Inbound requests: one [`InboundRequest`] type and one [`Responder`] for both `/codio/1.0.0`
//! (a stream per request, answered through the swarm) and `/codio/rpc/1.0.0` (answered by the
//! session's writer), the bounded queue they wait in, and [`RequestHandler`]s that serve it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use libp2p::{
    PeerId,
    request_response::{InboundRequestId, ResponseChannel},
};
use tokio::sync::{Semaphore, mpsc};

use crate::{
    ErrorCode, Request, Response, Stats,
    budget::{self, Budget, Taken},
    rpc::reply::RpcReply,
};

/// A request from a peer, for the application to answer through its [`Responder`].
#[derive(Debug)]
pub struct InboundRequest {
    /// Who asked.
    pub peer_id: PeerId,
    /// What.
    pub request: Request,
    /// Where the answer goes.
    pub responder: Responder,
}

/// Answers one [`InboundRequest`]. Dropping it unanswered answers `Internal` so the requester
/// does not wait for its timeout.
#[derive(Debug)]
pub struct Responder {
    inner: Option<ReplyPath>,
    /// The requester's place in its share of the queue, given back as the answer is sent.
    share: Option<ShareGuard>,
}

/// A `/codio/1.0.0` response on its way to the behaviour, which owns the swarm side; `bytes`
/// is the budget it holds until written.
#[derive(Debug)]
pub(crate) struct SwarmAnswer {
    pub(crate) request_id: InboundRequestId,
    pub(crate) channel: ResponseChannel<Response>,
    pub(crate) response: Response,
    pub(crate) bytes: Taken,
}

/// How the response travels back.
#[derive(Debug)]
enum ReplyPath {
    Swarm {
        request_id: InboundRequestId,
        channel: ResponseChannel<Response>,
        answers: mpsc::Sender<SwarmAnswer>,
        budget: Budget,
    },
    Rpc(RpcReply),
}

/// Why a [`Responder`] could not deliver its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the requester's stream or the node is gone")]
#[non_exhaustive]
pub struct RespondError;

impl Responder {
    pub(crate) fn swarm(
        request_id: InboundRequestId,
        channel: ResponseChannel<Response>,
        answers: mpsc::Sender<SwarmAnswer>,
        budget: Budget,
    ) -> Self {
        let path = ReplyPath::Swarm {
            request_id,
            channel,
            answers,
            budget,
        };
        Self {
            inner: Some(path),
            share: None,
        }
    }

    pub(crate) fn rpc(reply: RpcReply) -> Self {
        Self {
            inner: Some(ReplyPath::Rpc(reply)),
            share: None,
        }
    }

    /// Sends `response`, waiting while the answer queue is full or the answer budget spent
    /// (back-pressure).
    ///
    /// # Errors
    ///
    /// [`RespondError`] when the node has shut down or the requester's stream is gone.
    pub async fn respond(mut self, response: Response) -> Result<(), RespondError> {
        // The place goes back before the answer leaves: a requester that sends its next
        // request on receiving this answer must find it free.
        drop(self.share.take());
        match self.inner.take() {
            None => Ok(()),
            Some(ReplyPath::Swarm {
                request_id,
                channel,
                answers,
                budget,
            }) => {
                let size = budget::encoded_len(&response);
                let bytes = budget::take(None, &budget, size).await;
                let answer = SwarmAnswer {
                    request_id,
                    channel,
                    response,
                    bytes,
                };
                answers.send(answer).await.map_err(|_| RespondError)
            }
            Some(ReplyPath::Rpc(reply)) => reply.send(response).await.map_err(|_| RespondError),
        }
    }

    /// Answers at once with an error, without waiting (best effort).
    pub(crate) fn refuse(mut self, code: ErrorCode, message: &str) {
        self.send_now(Response::error(code, message));
    }

    fn send_now(&mut self, response: Response) {
        drop(self.share.take());
        match self.inner.take() {
            None => {}
            // Best effort: with a full queue the requester times out instead.
            Some(ReplyPath::Swarm {
                request_id,
                channel,
                answers,
                ..
            }) => {
                let bytes = Taken::default();
                let answer = SwarmAnswer {
                    request_id,
                    channel,
                    response,
                    bytes,
                };
                let _ = answers.try_send(answer);
            }
            Some(ReplyPath::Rpc(reply)) => reply.send_now(response),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.send_now(Response::error(
            ErrorCode::Internal,
            "the handler dropped the request",
        ));
    }
}

/// Each peer's requests queued for or held by the application: pure counts, bounded by the
/// connected peers (an entry goes with the peer's last outstanding request).
#[derive(Debug, Default)]
struct Shares(Mutex<HashMap<PeerId, usize>>);

impl Shares {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, usize>> {
        // Each update is one increment or decrement: poisoning cannot leave it half-done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place for `peer` unless it holds `max` already; returns it with the places
    /// the peer holds now.
    fn take(self: &Arc<Self>, peer: PeerId, max: usize) -> Option<(ShareGuard, usize)> {
        let mut shares = self.lock();
        let held = shares.entry(peer).or_default();
        if *held >= max {
            return None;
        }
        *held += 1;
        let now = *held;
        let guard = ShareGuard {
            shares: self.clone(),
            peer,
        };
        Some((guard, now))
    }
}

/// A place in a peer's share, given back when dropped.
#[derive(Debug)]
struct ShareGuard {
    shares: Arc<Shares>,
    peer: PeerId,
}

impl Drop for ShareGuard {
    fn drop(&mut self) {
        let mut shares = self.shares.lock();
        if let Some(held) = shares.get_mut(&self.peer) {
            *held -= 1;
            if *held == 0 {
                shares.remove(&self.peer);
            }
        }
    }
}

/// Where inbound requests go: the application's bounded queue, of which each peer may hold
/// `max_per_peer` places, or nowhere (no handler was registered: every request is answered
/// `NotFound`).
#[derive(Debug, Clone)]
pub(crate) struct RequestQueue {
    queue: Option<mpsc::Sender<InboundRequest>>,
    stats: Arc<Stats>,
    shares: Arc<Shares>,
    max_per_peer: usize,
}

impl RequestQueue {
    pub(crate) fn new(
        queue: Option<mpsc::Sender<InboundRequest>>,
        stats: Arc<Stats>,
        max_per_peer: usize,
    ) -> Self {
        Self {
            queue,
            stats,
            shares: Arc::default(),
            max_per_peer,
        }
    }

    /// Hands `request` to the application, or answers `Overloaded` (its peer has its share,
    /// or the queue is full) or `NotFound` (no handler, or it is gone) at once; never waits.
    pub(crate) fn enqueue(&self, mut request: InboundRequest) {
        self.stats.record_inbound();
        let Some(queue) = &self.queue else {
            self.stats.record_refused();
            request
                .responder
                .refuse(ErrorCode::NotFound, "no request handler");
            return;
        };
        let Some((share, held)) = self.shares.take(request.peer_id, self.max_per_peer) else {
            tracing::debug!(peer_id = %request.peer_id, "peer has its share of the request queue");
            self.stats.record_refused();
            self.stats.record_refused_over_share();
            request
                .responder
                .refuse(ErrorCode::Overloaded, "too many requests from this peer");
            return;
        };
        self.stats.record_peer_share(held);
        request.responder.share = Some(share);
        let (request, code, why) = match queue.try_send(request) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(r)) => {
                (r, ErrorCode::Overloaded, "request queue full")
            }
            Err(mpsc::error::TrySendError::Closed(r)) => {
                (r, ErrorCode::NotFound, "request handler gone")
            }
        };
        tracing::debug!(peer_id = %request.peer_id, why, "refusing an inbound request");
        self.stats.record_refused();
        request.responder.refuse(code, why);
    }
}

/// Serves inbound requests: called once per request, concurrently (see [`serve`]).
///
/// Any `async` closure or function `Fn(PeerId, Request) -> Response` is a handler:
///
/// ```
/// use codio_protocol::{Request, RequestHandler, Response};
/// use libp2p::PeerId;
///
/// fn check(_: impl RequestHandler) {}
/// check(|_peer: PeerId, request: Request| async move {
///     match request {
///         Request::App { payload, .. } => Response::App { payload },
///         _ => Response::error(codio_protocol::ErrorCode::NotFound, "no such content"),
///     }
/// });
/// ```
pub trait RequestHandler: Send + Sync + 'static {
    /// The answer to `request` from `peer`.
    fn handle(&self, peer: PeerId, request: Request) -> impl Future<Output = Response> + Send;
}

impl<F, Fut> RequestHandler for F
where
    F: Fn(PeerId, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send,
{
    fn handle(&self, peer: PeerId, request: Request) -> impl Future<Output = Response> + Send {
        self(peer, request)
    }
}

/// Runs `handler` on every request from `queue`, at most `concurrency` at once (each in its
/// own task; while all are busy, requests wait in the queue and, once it is full, are
/// answered `Overloaded`). Ends when the queue closes (the node stopped).
pub async fn serve<H: RequestHandler>(
    queue: mpsc::Receiver<InboundRequest>,
    handler: H,
    concurrency: usize,
) {
    serve_each(queue, handler, concurrency, |handler, inbound| async move {
        let InboundRequest {
            peer_id,
            request,
            responder,
        } = inbound;
        let response = handler.handle(peer_id, request).await;
        let _ = responder.respond(response).await;
    })
    .await;
}

/// Takes each item of `queue` and runs `work(handler, item)` in a task of its own, at most
/// `concurrency` at once (the rest wait in the queue). Ends when the queue closes.
pub(crate) async fn serve_each<T, H, W, Fut>(
    mut queue: mpsc::Receiver<T>,
    handler: H,
    concurrency: usize,
    work: W,
) where
    T: Send + 'static,
    H: Send + Sync + 'static,
    W: Fn(Arc<H>, T) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    while let Some(item) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let job = work(handler.clone(), item);
        tokio::spawn(async move {
            job.await;
            drop(slot);
        });
    }
}
