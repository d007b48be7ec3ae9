//! Happy eyeballs between QUIC and TCP: a TCP dial to a peer waits a short while for a QUIC
//! dial to the same peer, and starts at once when that fails.
//!
//! The swarm dials a peer's addresses concurrently and keeps the first connection that
//! succeeds (dropping the other dials). Left alone, TCP and QUIC race from the same instant
//! and TCP often wins on a fast path, though QUIC is the better connection. Like RFC 8305 and
//! go-libp2p's dial ranker, a TCP dial to a peer with a QUIC dial in flight waits: up to
//! 250 ms to a public address, 30 ms to a private one ([`QuicConfig::with_tcp_delay`]),
//! or until every QUIC dial to that peer ended. When QUIC connects first, the swarm drops the
//! waiting TCP dial before it sent a packet; when QUIC is blocked (UDP filtered), TCP starts
//! after the delay, not after QUIC's handshake timeout.
//!
//! Only direct outbound dials that name their peer (`/p2p/<id>`) take part; hole-punching
//! dials (dialer as listener) never wait. The race wraps the DNS layer, so that every address
//! of a peer is classified when the swarm asks for its dials, before any is polled (the DNS
//! layer dials its inner transport only once polled).
//!
//! [`QuicConfig::with_tcp_delay`]: crate::QuicConfig::with_tcp_delay

use std::{
    collections::HashMap,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use libp2p::{
    Multiaddr, PeerId, Transport,
    core::{
        Endpoint,
        transport::{DialOpts, ListenerId, TransportError, TransportEvent},
    },
    multiaddr::Protocol,
};
use tokio::sync::Notify;

/// The QUIC dials in flight, per peer.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    peers: Mutex<HashMap<PeerId, PeerDials>>,
}

/// One peer's QUIC dials in flight, and the signal that one ended.
#[derive(Debug, Default)]
struct PeerDials {
    count: usize,
    ended: Arc<Notify>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, PeerDials>> {
        // A panic while holding this lock leaves a map of counters that is still consistent.
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a QUIC dial to `peer` until the returned guard is dropped.
    fn start(self: &Arc<Self>, peer: PeerId) -> QuicDial {
        self.lock().entry(peer).or_default().count += 1;
        QuicDial {
            in_flight: self.clone(),
            peer,
        }
    }

    /// Ends one QUIC dial to `peer`, waking the TCP dials that wait for it.
    fn end(&self, peer: &PeerId) {
        let mut peers = self.lock();
        let Some(dials) = peers.get_mut(peer) else {
            return;
        };
        dials.count = dials.count.saturating_sub(1);
        dials.ended.notify_waiters();
        if dials.count == 0 {
            peers.remove(peer);
        }
    }

    /// The signal of `peer`'s QUIC dials, while any is in flight.
    fn ended(&self, peer: &PeerId) -> Option<Arc<Notify>> {
        self.lock().get(peer).map(|dials| dials.ended.clone())
    }

    /// Waits until no QUIC dial to `peer` is in flight, or `delay` passed.
    async fn wait(&self, peer: &PeerId, delay: Duration) {
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        // Bounded by `deadline`; each turn waits for one QUIC dial to end.
        while let Some(ended) = self.ended(peer) {
            // Registered before the check, so an end between the two is not missed.
            let signal = ended.notified();
            if !self
                .ended(peer)
                .is_some_and(|now| Arc::ptr_eq(&now, &ended))
            {
                continue;
            }
            tokio::select! {
                () = signal => {}
                () = &mut deadline => return,
            }
        }
    }

    /// The number of peers with QUIC dials in flight.
    #[cfg(test)]
    fn peers(&self) -> usize {
        self.lock().len()
    }
}

/// A QUIC dial in flight: ends (and wakes waiting TCP dials) when dropped.
#[derive(Debug)]
struct QuicDial {
    in_flight: Arc<InFlight>,
    peer: PeerId,
}

impl Drop for QuicDial {
    fn drop(&mut self) {
        self.in_flight.end(&self.peer);
    }
}

/// The TCP dials' waits for QUIC dials to the same peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delays {
    /// The wait before dialing a public address (or a DNS name).
    pub(crate) public: Duration,
    /// The wait before dialing a loopback, private or link-local address.
    pub(crate) private: Duration,
}

/// `inner` (TCP and QUIC, possibly behind DNS) with its dials raced: QUIC dials counted, TCP
/// dials waiting for them. Dials are classified when the swarm asks for them, all of a
/// peer's addresses at once, before any is polled.
#[derive(Debug)]
pub(crate) struct Eyeballs<T> {
    inner: T,
    delays: Delays,
    in_flight: Arc<InFlight>,
}

impl<T> Eyeballs<T> {
    pub(crate) fn new(inner: T, delays: Delays) -> Self {
        Self {
            inner,
            delays,
            in_flight: Arc::default(),
        }
    }
}

/// What a dial is in the race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entrant {
    /// A QUIC dial to this peer: counted.
    Quic(PeerId),
    /// A TCP dial to this peer: waits this long at most.
    Tcp(PeerId, Duration),
}

impl Delays {
    /// What an outbound dial to `addr` is in the race: only direct dials that name their peer
    /// take part, hole-punching dials (dialer as listener) never.
    fn entrant(&self, addr: &Multiaddr, opts: &DialOpts) -> Option<Entrant> {
        if opts.role != Endpoint::Dialer {
            return None;
        }
        let peer = codio_base::addr::peer_id_of(addr)?;
        let (mut ip, mut tcp, mut quic) = (None, false, false);
        for protocol in addr {
            match protocol {
                Protocol::Ip4(v4) => ip = Some(IpAddr::V4(v4)),
                Protocol::Ip6(v6) => ip = Some(IpAddr::V6(v6)),
                Protocol::Tcp(_) => tcp = true,
                Protocol::QuicV1 => quic = true,
                Protocol::P2pCircuit => return None,
                _ => {}
            }
        }
        let delay = match ip {
            Some(ip) if codio_base::addr::is_non_global(ip) => self.private,
            _ => self.public,
        };
        match (tcp, quic) {
            (false, true) => Some(Entrant::Quic(peer)),
            (true, false) => Some(Entrant::Tcp(peer, delay)),
            _ => None,
        }
    }
}

impl<T> Transport for Eyeballs<T>
where
    T: Transport + Unpin,
    T::Dial: Send + 'static,
    T::Output: Send + 'static,
    T::Error: Send + 'static,
{
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = BoxFuture<'static, Result<T::Output, T::Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let entrant = self.delays.entrant(&addr, &opts);
        let dial = self.inner.dial(addr, opts)?;
        match entrant {
            None => Ok(dial.boxed()),
            Some(Entrant::Quic(peer)) => {
                let counted = self.in_flight.start(peer);
                Ok(async move {
                    let _counted = counted;
                    dial.await
                }
                .boxed())
            }
            Some(Entrant::Tcp(peer, delay)) => {
                let in_flight = self.in_flight.clone();
                Ok(async move {
                    in_flight.wait(&peer, delay).await;
                    dial.await
                }
                .boxed())
            }
        }
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn tcp_waits_for_a_quic_dial_in_flight_until_the_delay() {
        let in_flight = Arc::new(InFlight::default());
        let peer = PeerId::random();
        let _quic = in_flight.start(peer);
        let started = Instant::now();
        in_flight.wait(&peer, Duration::from_millis(250)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        // Another peer's TCP dial does not wait.
        let started = Instant::now();
        in_flight
            .wait(&PeerId::random(), Duration::from_millis(250))
            .await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn tcp_starts_when_the_last_quic_dial_ends() {
        let in_flight = Arc::new(InFlight::default());
        let peer = PeerId::random();
        let (first, second) = (in_flight.start(peer), in_flight.start(peer));
        let started = Instant::now();
        let waiting = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.wait(&peer, Duration::from_secs(1)).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished(), "one QUIC dial is still in flight");
        drop(second);
        waiting.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(20));
        assert_eq!(in_flight.peers(), 0, "nothing kept once the dials ended");
    }

    #[test]
    fn only_named_direct_outbound_dials_take_part() {
        let peer = PeerId::random();
        let delays = Delays {
            public: Duration::from_millis(250),
            private: Duration::from_millis(30),
        };
        let dialer = DialOpts {
            role: Endpoint::Dialer,
            port_use: libp2p::core::transport::PortUse::Reuse,
        };
        let punch = DialOpts {
            role: Endpoint::Listener,
            ..dialer
        };
        let entrant = |addr: String, opts| delays.entrant(&addr.parse().unwrap(), &opts);
        let quic = format!("/ip4/1.2.3.4/udp/1/quic-v1/p2p/{peer}");
        assert_eq!(entrant(quic.clone(), dialer), Some(Entrant::Quic(peer)));
        assert_eq!(entrant(quic, punch), None);
        assert_eq!(
            entrant(format!("/ip4/1.2.3.4/tcp/1/p2p/{peer}"), dialer),
            Some(Entrant::Tcp(peer, delays.public))
        );
        assert_eq!(
            entrant(format!("/ip6/::1/tcp/1/p2p/{peer}"), dialer),
            Some(Entrant::Tcp(peer, delays.private))
        );
        assert_eq!(
            entrant(format!("/dns4/example.com/tcp/1/p2p/{peer}"), dialer),
            Some(Entrant::Tcp(peer, delays.public))
        );
        assert_eq!(entrant("/ip4/1.2.3.4/tcp/1".into(), dialer), None);
        let relayed = format!(
            "/ip4/1.2.3.4/tcp/1/p2p/{}/p2p-circuit/p2p/{peer}",
            PeerId::random()
        );
        assert_eq!(entrant(relayed, dialer), None);
    }
}
