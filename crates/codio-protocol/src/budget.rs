//! Byte budgets for answers on their way out: what a responder has handed over but the
//! stream has not written yet. A peer that asks for large answers and never reads them can
//! otherwise pin up to 256 answers of 4 MiB per session; with a budget, responders wait
//! (back-pressure on the handler) once a session, or the node, has that many bytes queued,
//! and the write timeout frees them.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A budget of bytes; [`take`](Self::take) waits for room.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    bytes: Arc<Semaphore>,
    size: u32,
}

/// Bytes taken from one or two budgets, given back when dropped (once written).
#[derive(Debug, Default)]
pub(crate) struct Taken(Vec<OwnedSemaphorePermit>);

impl Budget {
    /// A budget of `size` bytes (at most 4 GiB - 1, at least 1).
    pub(crate) fn new(size: usize) -> Self {
        let size = u32::try_from(size).unwrap_or(u32::MAX).max(1);
        Self {
            bytes: Arc::new(Semaphore::new(size as usize)),
            size,
        }
    }

    /// The budget's size.
    pub(crate) fn size(&self) -> usize {
        self.size as usize
    }

    /// Bytes free now.
    pub(crate) fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Takes `bytes` (an answer larger than the whole budget takes all of it), waiting for
    /// room; `None` once the budget is closed (never: budgets live as long as their owners).
    async fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let wanted = u32::try_from(bytes).unwrap_or(u32::MAX).clamp(1, self.size);
        self.bytes.clone().acquire_many_owned(wanted).await.ok()
    }
}

/// Takes `bytes` from `session` (when given) and from `total`, in that order, so a session
/// at its own bound waits without holding any of the node's budget.
pub(crate) async fn take(session: Option<&Budget>, total: &Budget, bytes: usize) -> Taken {
    let mut taken = Taken::default();
    if let Some(session) = session {
        taken.0.extend(session.take(bytes).await);
    }
    taken.0.extend(total.take(bytes).await);
    taken
}

/// The size of `message` encoded (postcard), plus framing; 0 when it cannot be encoded (its
/// error answer is small).
pub(crate) fn encoded_len<M: Serialize>(message: &M) -> usize {
    postcard::serialize_with_flavor(message, postcard::ser_flavors::Size::default())
        .map_or(0, |len| len + 16)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn answers_wait_for_room_and_give_it_back_when_written() {
        let total = Budget::new(1000);
        let session = Budget::new(600);
        let first = take(Some(&session), &total, 500).await;
        assert_eq!((session.available(), total.available()), (100, 500));
        // The session is at its bound: the next answer waits, holding nothing of the total.
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), take(Some(&session), &total, 200))
                .await;
        assert!(waiting.is_err());
        assert_eq!(total.available(), 500);
        drop(first);
        let second = take(Some(&session), &total, 200).await;
        assert_eq!((session.available(), total.available()), (400, 800));
        drop(second);
        // Larger than the whole budget: it takes all of it rather than never fitting.
        let huge = take(None, &total, 10_000).await;
        assert_eq!(total.available(), 0);
        drop(huge);
        assert_eq!(total.available(), 1000);
    }
}
