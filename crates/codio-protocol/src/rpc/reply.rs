//! Where an RPC session's answers go: a responder's [`RpcReply`] hands its [`Answer`] to the
//! session's writer, within the session's and the node's answer budgets. Apart from the
//! server so that the inbound queue (which holds replies) and the server (which reads the
//! queue) do not import each other.

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::{
    Response,
    budget::{self, Budget, Taken},
};

/// A response on its way to a session's writer; `permit` frees the slot and `bytes` the
/// budget once written.
pub(crate) struct Answer {
    pub(super) id: u64,
    pub(super) response: Response,
    pub(super) _permit: OwnedSemaphorePermit,
    pub(super) bytes: Taken,
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
    pub(super) id: u64,
    pub(super) tx: mpsc::Sender<Answer>,
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) session: Budget,
    pub(super) total: Budget,
}

impl RpcReply {
    fn answer(self, response: Response, bytes: Taken) -> (mpsc::Sender<Answer>, Answer) {
        let answer = Answer {
            id: self.id,
            response,
            _permit: self.permit,
            bytes,
        };
        (self.tx, answer)
    }

    /// Waits for room in the session's and the node's answer budgets, then hands over.
    pub(crate) async fn send(self, response: Response) -> Result<(), ()> {
        let size = budget::encoded_len(&response);
        let bytes = budget::take(Some(&self.session), &self.total, size).await;
        let (tx, answer) = self.answer(response, bytes);
        tx.send(answer).await.map_err(drop)
    }

    /// Never waits: the queue has a slot for every permit, and the reply holds one. For the
    /// small error answers of refusals, outside the byte budgets.
    pub(crate) fn send_now(self, response: Response) {
        let (tx, answer) = self.answer(response, Taken::default());
        let _ = tx.try_send(answer);
    }
}
