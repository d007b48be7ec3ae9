//! A handle's call into its event loop: send a command carrying a reply channel, then wait for
//! the answer, bounded. The event loop enforces the operation's own timeout; the caller waits
//! that long plus [`REPLY_GRACE`], so a stalled loop cannot hang it, and a loop that stopped is
//! told apart from one that is slow.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// How much longer than an operation's own limit a caller waits for its answer.
pub const REPLY_GRACE: Duration = Duration::from_secs(2);

/// Why a call got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The event loop is gone (shut down).
    #[error("the event loop has shut down")]
    ShutDown,
    /// No answer within the operation's limit plus [`REPLY_GRACE`].
    #[error("no answer in time")]
    Timeout,
}

/// Sends the command `make` builds around a reply channel, then waits up to `limit` plus
/// [`REPLY_GRACE`] for the reply.
///
/// # Errors
///
/// [`CallError::ShutDown`] when the loop is gone (the send fails or the reply is dropped),
/// [`CallError::Timeout`] when no reply came in time.
pub async fn call<C, T>(
    commands: &mpsc::Sender<C>,
    make: impl FnOnce(oneshot::Sender<T>) -> C,
    limit: Duration,
) -> Result<T, CallError> {
    let (reply, rx) = oneshot::channel();
    commands
        .send(make(reply))
        .await
        .map_err(|_| CallError::ShutDown)?;
    match tokio::time::timeout(limit + REPLY_GRACE, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(CallError::ShutDown),
        Err(_) => Err(CallError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn answers_timeouts_and_shut_down_loops() {
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<u32>>(1);
        let answering = tokio::spawn(async move {
            let reply = rx.recv().await.unwrap();
            reply.send(7).unwrap();
            // The second call is never answered; the third finds the reply dropped.
            let _kept = rx.recv().await.unwrap();
            drop(rx.recv().await.unwrap());
            _kept
        });
        let limit = Duration::from_secs(1);
        assert_eq!(call(&tx, |reply| reply, limit).await, Ok(7));
        assert_eq!(
            call(&tx, |reply| reply, limit).await,
            Err(CallError::Timeout)
        );
        assert_eq!(
            call(&tx, |reply| reply, limit).await,
            Err(CallError::ShutDown)
        );
        drop(answering.await.unwrap());
        assert_eq!(
            call(&tx, |reply| reply, limit).await,
            Err(CallError::ShutDown)
        );
    }
}
