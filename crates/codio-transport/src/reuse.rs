//! Dials that reuse the listen port fall back to a fresh port when the kernel refuses the
//! reused one.
//!
//! libp2p-tcp binds a dial to the listen port (needed for hole punching). When this node
//! closed a connection to the same remote address within the last minute, the connection's
//! 4-tuple is still in `TIME_WAIT` and `connect` fails with `EADDRINUSE`; libp2p-tcp retries
//! only `EADDRNOTAVAIL`. Reconnecting to a peer soon after a disconnect is routine (the
//! reconnection policy does it), so such a dial is retried once from a fresh port.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{FutureExt, future::BoxFuture};
use libp2p::{
    Multiaddr, Transport,
    core::transport::{DialOpts, ListenerId, PortUse, TransportError, TransportEvent},
};

/// A transport whose port-reusing dials are retried from a fresh port on `EADDRINUSE`.
#[derive(Debug)]
pub(crate) struct ReuseFallback<T> {
    inner: T,
}

impl<T> ReuseFallback<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self { inner }
    }
}

impl<T> Transport for ReuseFallback<T>
where
    T: Transport<Error = io::Error> + Unpin,
    T::Dial: Send + 'static,
    T::Output: Send + 'static,
{
    type Output = T::Output;
    type Error = io::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = BoxFuture<'static, Result<T::Output, io::Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<io::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<io::Error>> {
        let first = self.inner.dial(addr.clone(), opts)?;
        // The fallback socket is created now (a dial future may not borrow the transport);
        // it is closed unused when the first attempt does not hit `EADDRINUSE`.
        let fallback = (opts.port_use == PortUse::Reuse)
            .then(|| {
                let fresh = DialOpts {
                    port_use: PortUse::New,
                    ..opts
                };
                self.inner.dial(addr, fresh).ok()
            })
            .flatten();
        Ok(async move {
            match (first.await, fallback) {
                (Err(error), Some(fallback)) if error.kind() == io::ErrorKind::AddrInUse => {
                    tracing::debug!("listen port busy for this remote; dialing from a fresh port");
                    fallback.await
                }
                (result, _) => result,
            }
        }
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Dials fail with `EADDRINUSE` when they reuse the port; records the port use of each.
    #[derive(Default)]
    struct Busy(Arc<Mutex<Vec<PortUse>>>);

    impl Transport for Busy {
        type Output = PortUse;
        type Error = io::Error;
        type ListenerUpgrade = futures::future::Pending<io::Result<PortUse>>;
        type Dial = futures::future::Ready<io::Result<PortUse>>;

        fn listen_on(
            &mut self,
            _: ListenerId,
            a: Multiaddr,
        ) -> Result<(), TransportError<io::Error>> {
            Err(TransportError::MultiaddrNotSupported(a))
        }

        fn remove_listener(&mut self, _: ListenerId) -> bool {
            false
        }

        fn dial(
            &mut self,
            _: Multiaddr,
            opts: DialOpts,
        ) -> Result<Self::Dial, TransportError<io::Error>> {
            self.0.lock().unwrap().push(opts.port_use);
            Ok(futures::future::ready(match opts.port_use {
                PortUse::Reuse => Err(io::ErrorKind::AddrInUse.into()),
                PortUse::New => Ok(PortUse::New),
            }))
        }

        fn poll(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_busy_reused_port_is_retried_from_a_fresh_one() {
        let busy = Busy::default();
        let dials = busy.0.clone();
        let mut transport = ReuseFallback::new(busy);
        let opts = |port_use| DialOpts {
            role: libp2p::core::Endpoint::Dialer,
            port_use,
        };
        let address: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let dial = transport
            .dial(address.clone(), opts(PortUse::Reuse))
            .unwrap();
        assert_eq!(dial.await.unwrap(), PortUse::New);
        assert_eq!(*dials.lock().unwrap(), vec![PortUse::Reuse, PortUse::New]);
        let dial = transport.dial(address, opts(PortUse::New)).unwrap();
        assert_eq!(dial.await.unwrap(), PortUse::New);
        assert_eq!(
            dials.lock().unwrap().len(),
            3,
            "no second socket without reuse"
        );
    }
}
