//! The connection set-up bound, on tokio's timer.
//!
//! libp2p's `TransportTimeout` arms a `futures-timer` delay, whose timers live on a helper
//! thread: every connection set-up (dial or accept) wakes that thread to register and again
//! to cancel. tokio's timer wheel is driven by the runtime's own workers, so the same bound
//! costs no extra thread hand-off (measured: ~20-40 us less per connection set-up on the
//! project machines, `docs/performance.md`).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use libp2p::{
    Multiaddr, Transport,
    core::transport::{DialOpts, ListenerId, TransportError, TransportEvent},
};

/// Fails dials and inbound upgrades of `T` that do not finish within a bound, with
/// [`io::ErrorKind::TimedOut`].
#[derive(Debug)]
pub(crate) struct SetupTimeout<T> {
    inner: T,
    timeout: Duration,
}

impl<T> SetupTimeout<T> {
    pub(crate) fn new(inner: T, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

fn bounded<F, O, E>(future: F, timeout: Duration) -> BoxFuture<'static, Result<O, io::Error>>
where
    F: Future<Output = Result<O, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    async move {
        match tokio::time::timeout(timeout, future).await {
            Ok(result) => result.map_err(io::Error::other),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connection set-up did not finish within {timeout:?}"),
            )),
        }
    }
    .boxed()
}

impl<T> Transport for SetupTimeout<T>
where
    T: Transport + Unpin,
    T::Output: Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    type Output = T::Output;
    type Error = io::Error;
    type ListenerUpgrade = BoxFuture<'static, Result<T::Output, io::Error>>;
    type Dial = BoxFuture<'static, Result<T::Output, io::Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner
            .listen_on(id, addr)
            .map_err(|e| e.map(io::Error::other))
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let dial = self
            .inner
            .dial(addr, opts)
            .map_err(|e| e.map(io::Error::other))?;
        Ok(bounded(dial, self.timeout))
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let timeout = self.timeout;
        Pin::new(&mut self.inner).poll(cx).map(|event| {
            event
                .map_upgrade(move |upgrade| bounded(upgrade, timeout))
                .map_err(io::Error::other)
        })
    }
}
