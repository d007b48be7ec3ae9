//! The connection set-up bound, on tokio's timer, and the inbound [`InboundGate`].
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

use futures::{
    FutureExt,
    future::{AbortHandle, Abortable, Aborted, BoxFuture},
};

use crate::gate::InboundGate;
use libp2p::{
    Multiaddr, Transport,
    core::transport::{DialOpts, ListenerId, TransportError, TransportEvent},
};

/// Fails dials of `T` that do not finish within `timeout` and inbound upgrades that do not
/// finish within the gate's handshake timeout, with [`io::ErrorKind::TimedOut`]; inbound
/// upgrades pass through the [`InboundGate`], which may abort them (shed) with
/// [`io::ErrorKind::ConnectionAborted`].
#[derive(Debug)]
pub(crate) struct SetupTimeout<T> {
    inner: T,
    timeout: Duration,
    gate: InboundGate,
}

impl<T> SetupTimeout<T> {
    pub(crate) fn new(inner: T, timeout: Duration, gate: InboundGate) -> Self {
        Self {
            inner,
            timeout,
            gate,
        }
    }
}

/// An inbound upgrade within the gate: aborted when shed, bounded by the handshake timeout.
fn gated<F, O, E>(
    future: F,
    gate: &InboundGate,
    remote: &Multiaddr,
) -> BoxFuture<'static, Result<O, io::Error>>
where
    F: Future<Output = Result<O, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
    O: Send + 'static,
{
    let (abort, registration) = AbortHandle::new_pair();
    let admission = gate.admit(remote, abort);
    let timeout = gate.limits().handshake_timeout();
    let gate = gate.clone();
    async move {
        let _admission = admission;
        match Abortable::new(bounded(future, timeout), registration).await {
            Ok(Err(error)) if error.kind() == io::ErrorKind::TimedOut => {
                gate.record_timeout();
                Err(error)
            }
            Ok(result) => result,
            Err(Aborted) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "inbound handshake shed: too many pending from its source or in total",
            )),
        }
    }
    .boxed()
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
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = self.get_mut();
        let event = match Pin::new(&mut this.inner).poll(cx) {
            Poll::Ready(event) => event,
            Poll::Pending => return Poll::Pending,
        };
        let remote = match &event {
            TransportEvent::Incoming { send_back_addr, .. } => send_back_addr.clone(),
            _ => Multiaddr::empty(),
        };
        let gate = &this.gate;
        Poll::Ready(
            event
                .map_upgrade(|upgrade| gated(upgrade, gate, &remote))
                .map_err(io::Error::other),
        )
    }
}
