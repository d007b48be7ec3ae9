//! codio's QUIC transport on quinn endpoints it builds itself, so that each connection's TLS
//! is codio's (AES-128-GCM first, the verifier that keeps the peer id it checked: `tls.rs`)
//! rather than libp2p-quic's fixed ChaCha20-first configuration.
//!
//! - **Listening**: one quinn endpoint per listen address (its UDP socket is also what dials
//!   reuse, so that NATs map one port). An unspecified address announces every interface
//!   address of its family, as interfaces come and go.
//! - **Accepting**: each incoming connection gets its own rustls server configuration around
//!   a fresh verifier ([`TlsConfig::server_for_one`]), so the peer id comes from the one
//!   certificate check the handshake made.
//! - **Dialing**: from a listener's endpoint of the same address family (and loopback-ness),
//!   else from a dial-only endpoint on an ephemeral port; server name `l`, as libp2p-quic
//!   sends, so that both accept each other.
//! - **Hole punching** (a dial whose role is the listener, DCUtR's simultaneous open): the
//!   listener's socket sends random datagrams to the peer until the peer's connection
//!   arrives, which answers the dial instead of being reported as a new inbound connection.

use std::{
    collections::{HashMap, VecDeque},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use futures::{FutureExt, StreamExt, channel::oneshot, future::BoxFuture};
use if_watch::{IfEvent, tokio::IfWatcher};
use libp2p::{
    Multiaddr, PeerId, Transport,
    core::{
        Endpoint,
        muxing::StreamMuxerBox,
        transport::{DialOpts, ListenerId, PortUse, TransportError, TransportEvent},
    },
    multiaddr::Protocol,
};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use crate::tls::{OneHandshake, TlsConfig};

use super::connection::{Connection, INITIAL_STREAMS};

/// The server name a dial sends: libp2p-quic's, which it also accepts.
const SERVER_NAME: &str = "l";
/// Hole-punch dials waiting for their peer's connection at once, per listener.
const MAX_PUNCHES: usize = 64;
/// How often a hole punch sends a datagram to open the NAT's mapping (randomised a little).
const PUNCH_INTERVAL: Duration = Duration::from_millis(20);
/// Connection attempts quinn holds before they are handed over (quinn's default: 65,536).
const MAX_INCOMING: usize = 1024;
/// Bytes of early packets quinn buffers per attempt not yet handed over, and in all
/// (quinn's defaults: 10 MiB and 100 MiB).
const INCOMING_BUFFER: u64 = 64 * 1024;
const INCOMING_BUFFER_TOTAL: u64 = 8 * 1024 * 1024;

/// A QUIC transport error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// The UDP socket or the endpoint failed.
    #[error("QUIC socket: {0}")]
    Io(#[from] io::Error),
    /// The TLS configuration could not be built.
    #[error("QUIC TLS configuration: {0}")]
    Tls(String),
    /// quinn refused to start the connection.
    #[error("QUIC connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed (handshake, timeout, closed by the peer).
    #[error("QUIC connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The handshake completed without a verified peer certificate (not expected).
    #[error("QUIC handshake verified no peer")]
    NoPeer,
    /// A hole punch ended without the peer's connection.
    #[error("QUIC hole punch: the peer's connection did not arrive")]
    PunchFailed,
    /// Too many hole punches wait on this listener already.
    #[error("QUIC hole punch: too many at once")]
    TooManyPunches,
}

type Upgrade = BoxFuture<'static, Result<(PeerId, StreamMuxerBox), QuicError>>;

/// The parts every connection's set-up needs.
#[derive(Clone)]
struct Setup {
    tls: TlsConfig,
    transport: Arc<quinn::TransportConfig>,
    /// The concurrent streams a peer may open at most (it starts with fewer, see
    /// `connection.rs`).
    streams: u32,
    /// A server configuration whose crypto each connection replaces with its own.
    server: Arc<quinn::ServerConfig>,
}

impl Setup {
    fn client(&self) -> Result<(quinn::ClientConfig, OneHandshake), QuicError> {
        let (tls, verifier) = self
            .tls
            .client_for_one()
            .map_err(|e| QuicError::Tls(e.to_string()))?;
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| QuicError::Tls(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(self.transport.clone());
        Ok((client, verifier))
    }

    fn server(&self) -> Result<(Arc<quinn::ServerConfig>, OneHandshake), QuicError> {
        let (tls, verifier) = self
            .tls
            .server_for_one()
            .map_err(|e| QuicError::Tls(e.to_string()))?;
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Tls(e.to_string()))?;
        let mut server = (*self.server).clone();
        server.crypto = Arc::new(crypto);
        Ok((Arc::new(server), verifier))
    }

    /// Accepts `incoming` with a configuration of its own: the upgrade to a connection.
    fn accept(&self, incoming: quinn::Incoming) -> Upgrade {
        let server = self.server();
        let streams = self.streams;
        async move {
            let (server, verifier) = server?;
            let connecting = incoming.accept_with(server)?;
            established(connecting, verifier, streams).await
        }
        .boxed()
    }
}

/// A handshake's end: the peer id it verified and the connection as a muxer whose peer
/// may open up to `streams` streams at once.
async fn established(
    connecting: quinn::Connecting,
    verifier: OneHandshake,
    streams: u32,
) -> Result<(PeerId, StreamMuxerBox), QuicError> {
    let connection = connecting.await?;
    let peer = verifier.peer().map_err(|_| QuicError::NoPeer)?;
    Ok((
        peer,
        StreamMuxerBox::new(Connection::new(connection, streams)),
    ))
}

/// One listen address.
struct Listener {
    id: ListenerId,
    endpoint: quinn::Endpoint,
    /// The endpoint's socket, shared: hole punches send their datagrams from it.
    socket: Arc<UdpSocket>,
    /// The bound address (its port is the real one when 0 was asked for).
    local: SocketAddr,
    accept: BoxFuture<'static, Option<quinn::Incoming>>,
    /// Interface addresses, for an unspecified listen address.
    interfaces: Option<IfWatcher>,
    /// Hole-punch dials waiting for a connection from their peer.
    punches: HashMap<SocketAddr, oneshot::Sender<quinn::Incoming>>,
    events: VecDeque<TransportEvent<Upgrade, QuicError>>,
}

/// The kernel buffer asked for each QUIC socket, each way. Linux's default receive buffer
/// (208 KiB) overflows within a millisecond of a 1 Gbit/s flow, and every datagram the kernel
/// drops there is a loss to the sender's congestion control: over a 50 ms path with
/// 1 Gbit/s, codio QUIC moved 29 MiB/s with 360 such drops (`codio-bench --only wan`,
/// docs/performance.md). A buffer is a bound, not an allocation (an idle endpoint costs
/// nothing more); the kernel caps the request at `net.core.rmem_max` / `wmem_max`.
pub(crate) const SOCKET_BUFFER: usize = 7 << 20;

/// A UDP socket bound to `address`; an IPv6 one takes IPv6 only, so that `0.0.0.0:p` and
/// `[::]:p` can both be bound (Linux makes IPv6 sockets dual-stack by default, and the second
/// bind of the port would fail). Its kernel buffers are raised towards [`SOCKET_BUFFER`].
fn bind(address: SocketAddr) -> io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // A smaller buffer than asked for still works; it is only slower on fast long paths.
    if let Err(error) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(%error, "QUIC socket: receive buffer not raised");
    }
    if let Err(error) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(%error, "QUIC socket: send buffer not raised");
    }
    tracing::trace!(
        receive = socket.recv_buffer_size().unwrap_or_default(),
        send = socket.send_buffer_size().unwrap_or_default(),
        "QUIC socket buffers"
    );
    socket.bind(&address.into())?;
    Ok(socket.into())
}

fn next_incoming(endpoint: &quinn::Endpoint) -> BoxFuture<'static, Option<quinn::Incoming>> {
    let endpoint = endpoint.clone();
    async move { endpoint.accept().await }.boxed()
}

/// `/ip4|ip6/<ip>/udp/<port>/quic-v1` of `address`.
fn multiaddr(address: SocketAddr) -> Multiaddr {
    crate::addr::quic(address.ip(), address.port())
}

/// The socket address of a QUIC v1 multiaddr (a trailing `/p2p/` is allowed).
fn socket_addr(address: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = address.iter();
    let ip = match parts.next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => IpAddr::V6(ip),
        _ => return None,
    };
    let Protocol::Udp(port) = parts.next()? else {
        return None;
    };
    let Protocol::QuicV1 = parts.next()? else {
        return None;
    };
    match parts.next() {
        None | Some(Protocol::P2p(_)) => {}
        _ => return None,
    }
    parts.next().is_none().then_some(SocketAddr::new(ip, port))
}

/// codio's QUIC transport; see the module documentation.
pub(crate) struct QuicTransport {
    setup: Setup,
    endpoint_config: quinn::EndpointConfig,
    listeners: Vec<Listener>,
    /// Listeners removed or ended, whose end is still to be reported.
    closed: VecDeque<ListenerId>,
    /// Dial-only endpoints, IPv4 and IPv6, made at their first use.
    dialers: [Option<quinn::Endpoint>; 2],
    waker: Option<Waker>,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl QuicTransport {
    /// The transport for `tls`, with quinn's `transport` settings and a budget of `streams`
    /// concurrent streams per connection (granted to the peer as it uses them).
    pub(crate) fn new(
        tls: TlsConfig,
        mut transport: quinn::TransportConfig,
        streams: u32,
    ) -> Result<Self, QuicError> {
        transport.max_concurrent_bidi_streams(INITIAL_STREAMS.min(streams).into());
        let transport = Arc::new(transport);
        // The crypto here is never used: every connection is accepted with its own.
        let (tls_server, _) = tls
            .server_for_one()
            .map_err(|e| QuicError::Tls(e.to_string()))?;
        let crypto =
            QuicServerConfig::try_from(tls_server).map_err(|e| QuicError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(transport.clone());
        // A peer's address moving is not followed: libp2p identifies a connection by it.
        server
            .migration(false)
            .max_incoming(MAX_INCOMING)
            .incoming_buffer_size(INCOMING_BUFFER)
            .incoming_buffer_size_total(INCOMING_BUFFER_TOTAL);
        Ok(Self {
            setup: Setup {
                tls,
                transport,
                streams,
                server: Arc::new(server),
            },
            endpoint_config: quinn::EndpointConfig::default(),
            listeners: Vec::new(),
            closed: VecDeque::new(),
            dialers: [None, None],
            waker: None,
        })
    }

    fn endpoint(&self, socket: UdpSocket, server: bool) -> io::Result<quinn::Endpoint> {
        let server = server.then(|| (*self.setup.server).clone());
        quinn::Endpoint::new(
            self.endpoint_config.clone(),
            server,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
    }

    /// The endpoint a dial to `remote` goes out from.
    fn dialer(
        &mut self,
        remote: SocketAddr,
        port_use: PortUse,
    ) -> Result<quinn::Endpoint, QuicError> {
        if port_use == PortUse::Reuse
            && let Some(listener) = self.listener_for(remote)
        {
            return Ok(listener.endpoint.clone());
        }
        let slot = usize::from(remote.is_ipv6());
        if let Some(endpoint) = &self.dialers[slot] {
            return Ok(endpoint.clone());
        }
        let any: IpAddr = if remote.is_ipv6() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let socket = bind(SocketAddr::new(any, 0))?;
        let endpoint = self.endpoint(socket, false)?;
        self.dialers[slot] = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// A listener that can reach `remote`: same family, and bound to an unspecified address
    /// or to one as loopback as `remote` is.
    fn listener_for(&mut self, remote: SocketAddr) -> Option<&mut Listener> {
        self.listeners.iter_mut().find(|l| {
            l.local.is_ipv6() == remote.is_ipv6()
                && (l.local.ip().is_unspecified()
                    || l.local.ip().is_loopback() == remote.ip().is_loopback())
        })
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

impl Transport for QuicTransport {
    type Output = (PeerId, StreamMuxerBox);
    type Error = QuicError;
    type ListenerUpgrade = Upgrade;
    type Dial = Upgrade;

    fn listen_on(
        &mut self,
        id: ListenerId,
        address: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let Some(address_to_bind) = socket_addr(&address) else {
            return Err(TransportError::MultiaddrNotSupported(address));
        };
        let socket = bind(address_to_bind).map_err(|e| TransportError::Other(e.into()))?;
        let local = socket
            .local_addr()
            .map_err(|e| TransportError::Other(e.into()))?;
        let shared = socket
            .try_clone()
            .map_err(|e| TransportError::Other(e.into()))?;
        let endpoint = self
            .endpoint(socket, true)
            .map_err(|e| TransportError::Other(e.into()))?;
        let mut events = VecDeque::new();
        let interfaces = if local.ip().is_unspecified() {
            Some(IfWatcher::new().map_err(|e| TransportError::Other(e.into()))?)
        } else {
            events.push_back(TransportEvent::NewAddress {
                listener_id: id,
                listen_addr: multiaddr(local),
            });
            None
        };
        tracing::debug!(%local, "QUIC listening");
        self.listeners.push(Listener {
            id,
            accept: next_incoming(&endpoint),
            endpoint,
            socket: Arc::new(shared),
            local,
            interfaces,
            punches: HashMap::new(),
            events,
        });
        self.wake();
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(at) = self.listeners.iter().position(|l| l.id == id) else {
            return false;
        };
        let listener = self.listeners.swap_remove(at);
        // No new connections; those already open keep the endpoint running until they end.
        listener.endpoint.set_server_config(None);
        self.closed.push_back(id);
        self.wake();
        true
    }

    fn dial(
        &mut self,
        address: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some(remote) = socket_addr(&address) else {
            return Err(TransportError::MultiaddrNotSupported(address));
        };
        if remote.port() == 0 || remote.ip().is_unspecified() {
            return Err(TransportError::MultiaddrNotSupported(address));
        }
        if opts.role == Endpoint::Listener {
            return self.punch(remote).map_err(TransportError::Other);
        }
        let endpoint = self
            .dialer(remote, opts.port_use)
            .map_err(TransportError::Other)?;
        let (client, verifier) = self.setup.client().map_err(TransportError::Other)?;
        let connecting = endpoint
            .connect_with(client, remote, SERVER_NAME)
            .map_err(|e| TransportError::Other(e.into()))?;
        Ok(established(connecting, verifier, self.setup.streams).boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = &mut *self;
        if let Some(listener_id) = this.closed.pop_front() {
            return Poll::Ready(TransportEvent::ListenerClosed {
                listener_id,
                reason: Ok(()),
            });
        }
        for at in 0..this.listeners.len() {
            let Some(event) = this.listeners[at].poll(&this.setup, cx) else {
                continue;
            };
            if let TransportEvent::ListenerClosed { .. } = event {
                // Its endpoint stopped accepting: nothing more to poll.
                this.listeners.swap_remove(at);
            }
            return Poll::Ready(event);
        }
        this.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl QuicTransport {
    /// A hole punch as the listener of the final connection: datagrams to `remote` from the
    /// listener's socket until `remote`'s connection arrives (or the set-up timeout, which
    /// the transport's wrapper applies, ends the dial).
    fn punch(&mut self, remote: SocketAddr) -> Result<Upgrade, QuicError> {
        let setup = self.setup.clone();
        let listener = self.listener_for(remote).ok_or_else(|| {
            QuicError::Io(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "no QUIC listener to punch from",
            ))
        })?;
        listener.punches.retain(|_, waiting| !waiting.is_canceled());
        if listener.punches.len() >= MAX_PUNCHES {
            return Err(QuicError::TooManyPunches);
        }
        let (tx, rx) = oneshot::channel();
        listener.punches.insert(remote, tx);
        let socket = listener.socket.clone();
        let random = setup.tls.random();
        Ok(async move {
            let sending = async {
                let mut datagram = [0u8; 64];
                loop {
                    random(&mut datagram);
                    // Best effort: a send that fails is retried at the next interval.
                    let _ = socket.send_to(&datagram, remote);
                    let jitter = Duration::from_millis(u64::from(datagram[0] % 16));
                    tokio::time::sleep(PUNCH_INTERVAL + jitter).await;
                }
            };
            let incoming = match futures::future::select(rx, Box::pin(sending)).await {
                futures::future::Either::Left((incoming, _)) => {
                    incoming.map_err(|_| QuicError::PunchFailed)?
                }
                futures::future::Either::Right(((), _)) => return Err(QuicError::PunchFailed),
            };
            setup.accept(incoming).await
        }
        .boxed())
    }
}

impl Listener {
    /// The listener's next event: an address, an incoming connection, or none for now.
    fn poll(
        &mut self,
        setup: &Setup,
        cx: &mut Context<'_>,
    ) -> Option<TransportEvent<Upgrade, QuicError>> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        // Bounded: a poll reports the interface changes that happened since the last one.
        while let Some(interfaces) = &mut self.interfaces
            && let Poll::Ready(Some(change)) = interfaces.poll_next_unpin(cx)
        {
            let event = match change {
                Ok(change) => self.interface_event(change),
                Err(error) => Some(TransportEvent::ListenerError {
                    listener_id: self.id,
                    error: error.into(),
                }),
            };
            if event.is_some() {
                return event;
            }
        }
        // Bounded: each turn either returns or hands one connection to a waiting punch.
        loop {
            let incoming = match self.accept.poll_unpin(cx) {
                Poll::Pending => return None,
                Poll::Ready(None) => {
                    return Some(TransportEvent::ListenerClosed {
                        listener_id: self.id,
                        reason: Ok(()),
                    });
                }
                Poll::Ready(Some(incoming)) => incoming,
            };
            self.accept = next_incoming(&self.endpoint);
            let remote = incoming.remote_address();
            let incoming = match self.punches.remove(&remote) {
                Some(waiting) => match waiting.send(incoming) {
                    Ok(()) => continue,
                    // The punch gave up: an ordinary inbound connection.
                    Err(incoming) => incoming,
                },
                None => incoming,
            };
            let local = incoming
                .local_ip()
                .map_or(self.local, |ip| SocketAddr::new(ip, self.local.port()));
            return Some(TransportEvent::Incoming {
                listener_id: self.id,
                upgrade: setup.accept(incoming),
                local_addr: multiaddr(local),
                send_back_addr: multiaddr(remote),
            });
        }
    }

    fn interface_event(&mut self, change: IfEvent) -> Option<TransportEvent<Upgrade, QuicError>> {
        let (up, net) = match change {
            IfEvent::Up(net) => (true, net),
            IfEvent::Down(net) => (false, net),
        };
        if net.addr().is_ipv6() != self.local.is_ipv6() {
            return None;
        }
        let listen_addr = multiaddr(SocketAddr::new(net.addr(), self.local.port()));
        Some(if up {
            TransportEvent::NewAddress {
                listener_id: self.id,
                listen_addr,
            }
        } else {
            TransportEvent::AddressExpired {
                listener_id: self.id,
                listen_addr,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt, future::poll_fn};
    use libp2p::{
        core::{
            muxing::StreamMuxerExt,
            transport::{Boxed, ListenerId},
        },
        identity,
    };

    use super::*;
    use crate::{QuicConfig, TransportConfig};

    type Node = Boxed<(PeerId, StreamMuxerBox)>;

    fn codio(keypair: &identity::Keypair) -> Node {
        let tls = TlsConfig::new(keypair).unwrap();
        let config = QuicConfig::default().quinn_config(&TransportConfig::default());
        QuicTransport::new(tls, config, 256).unwrap().boxed()
    }

    fn stock(keypair: &identity::Keypair) -> Node {
        libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(keypair))
            .map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection)))
            .boxed()
    }

    /// Listens on 127.0.0.1 and returns the address.
    async fn listen(node: &mut Node) -> Multiaddr {
        node.listen_on(
            ListenerId::next(),
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        )
        .unwrap();
        loop {
            if let TransportEvent::NewAddress { listen_addr, .. } = node.select_next_some().await {
                return listen_addr;
            }
        }
    }

    /// `dialer` connects to `listener` (listening on 127.0.0.1): both ends, dialer's first.
    async fn connected(
        listener: &mut Node,
        dialer: &mut Node,
    ) -> ((PeerId, StreamMuxerBox), (PeerId, StreamMuxerBox)) {
        let address = listen(listener).await;
        let opts = DialOpts {
            role: Endpoint::Dialer,
            port_use: PortUse::New,
        };
        let dialing = dialer.dial(address, opts).unwrap();
        let accepting = async {
            loop {
                if let TransportEvent::Incoming { upgrade, .. } = listener.select_next_some().await
                {
                    return upgrade.await.unwrap();
                }
            }
        };
        futures::join!(async { dialing.await.unwrap() }, accepting)
    }

    /// `dialer` connects to `listener` and sends a message on a stream, closing it twice;
    /// the listener answers on the same stream; both learn the other's peer id.
    async fn exchange(
        mut listener: Node,
        listener_key: &identity::Keypair,
        mut dialer: Node,
        dialer_key: &identity::Keypair,
    ) {
        let ((to, mut out), (from, mut inb)) = connected(&mut listener, &mut dialer).await;
        assert_eq!(to, listener_key.public().to_peer_id());
        assert_eq!(from, dialer_key.public().to_peer_id());
        let client = async {
            let mut stream = poll_fn(|cx| out.poll_outbound_unpin(cx)).await.unwrap();
            stream.write_all(b"ping").await.unwrap();
            stream.close().await.unwrap();
            stream.close().await.unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            assert_eq!(answer, b"pong");
            out
        };
        let server = async {
            let mut stream = poll_fn(|cx| inb.poll_inbound_unpin(cx)).await.unwrap();
            let mut request = Vec::new();
            stream.read_to_end(&mut request).await.unwrap();
            assert_eq!(request, b"ping");
            stream.write_all(b"pong").await.unwrap();
            stream.close().await.unwrap();
            inb
        };
        let exchanged = async { futures::join!(client, server) };
        let _ = tokio::time::timeout(Duration::from_secs(10), exchanged)
            .await
            .expect("exchanged within 10 s");
    }

    #[tokio::test]
    async fn codio_nodes_connect_and_exchange_on_streams_closed_twice() {
        let (a, b) = (
            identity::Keypair::generate_ed25519(),
            identity::Keypair::generate_ed25519(),
        );
        exchange(codio(&a), &a, codio(&b), &b).await;
    }

    #[tokio::test]
    async fn a_codio_node_and_stock_libp2p_quic_reach_each_other_both_ways() {
        let (a, b) = (
            identity::Keypair::generate_ed25519(),
            identity::Keypair::generate_ed25519(),
        );
        exchange(stock(&a), &a, codio(&b), &b).await;
        exchange(codio(&a), &a, stock(&b), &b).await;
    }

    /// A connection starts by granting its peer 32 streams; a peer that opens and keeps 100
    /// streams gets them all (the grant grows as the streams are used), never more than the
    /// budget of 256.
    #[tokio::test]
    async fn the_stream_grant_grows_with_use() {
        let (a, b) = (
            identity::Keypair::generate_ed25519(),
            identity::Keypair::generate_ed25519(),
        );
        let (mut listener, mut dialer) = (codio(&a), codio(&b));
        let ((_, mut out), (_, mut inb)) = connected(&mut listener, &mut dialer).await;
        let opening = async {
            let mut streams = Vec::new();
            for _ in 0..100 {
                let mut stream = poll_fn(|cx| out.poll_outbound_unpin(cx)).await.unwrap();
                stream.write_all(b"x").await.unwrap();
                streams.push(stream);
            }
            streams
        };
        let accepting = async {
            let mut streams = Vec::new();
            for _ in 0..100 {
                streams.push(poll_fn(|cx| inb.poll_inbound_unpin(cx)).await.unwrap());
            }
            streams
        };
        let (opened, accepted) = tokio::time::timeout(Duration::from_secs(10), async {
            futures::join!(opening, accepting)
        })
        .await
        .expect("100 streams within 10 s");
        assert_eq!((opened.len(), accepted.len()), (100, 100));
    }

    /// A removed listener is reported closed (the swarm waits for it), takes no new
    /// connection, and the connections it accepted keep working.
    #[tokio::test]
    async fn a_removed_listener_is_reported_closed_and_its_connections_stay() {
        let (a, b) = (
            identity::Keypair::generate_ed25519(),
            identity::Keypair::generate_ed25519(),
        );
        let (mut listener, mut dialer) = (codio(&a), codio(&b));
        let ((_, mut out), (_, mut inb)) = connected(&mut listener, &mut dialer).await;
        let id = ListenerId::next();
        let address = "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap();
        listener.listen_on(id, address).unwrap();
        let second = loop {
            if let TransportEvent::NewAddress {
                listener_id,
                listen_addr,
            } = listener.select_next_some().await
                && listener_id == id
            {
                break listen_addr;
            }
        };
        assert!(listener.remove_listener(id));
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let TransportEvent::ListenerClosed { listener_id, .. } =
                    listener.select_next_some().await
                {
                    return listener_id;
                }
            }
        });
        assert_eq!(closed.await.expect("closed within 5 s"), id);
        let opts = DialOpts {
            role: Endpoint::Dialer,
            port_use: PortUse::New,
        };
        // A handshake on loopback takes milliseconds: two seconds without one is a refusal.
        let refused =
            tokio::time::timeout(Duration::from_secs(2), dialer.dial(second, opts).unwrap());
        assert!(
            !matches!(refused.await, Ok(Ok(_))),
            "a removed listener accepted a connection"
        );
        let mut stream = poll_fn(|cx| out.poll_outbound_unpin(cx)).await.unwrap();
        stream.write_all(b"still here").await.unwrap();
        stream.close().await.unwrap();
        let mut received = Vec::new();
        let mut inbound = poll_fn(|cx| inb.poll_inbound_unpin(cx)).await.unwrap();
        inbound.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, b"still here");
    }

    /// `0.0.0.0:p` and `[::]:p` can both be bound (IPv6 sockets are IPv6 only); with a
    /// dual-stack IPv6 socket, as `std` makes, the second bind fails. Nothing is sent.
    #[test]
    fn ipv4_and_ipv6_unspecified_sockets_share_a_port() {
        let v4 = bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
        assert!(
            UdpSocket::bind(v6).is_err(),
            "a dual-stack socket takes the port's IPv4 side too"
        );
        let v6 = bind(v6).unwrap();
        assert_eq!(v6.local_addr().unwrap().port(), port);
    }

    /// The sockets' kernel buffers are raised above Linux's default (208 KiB): the kernel
    /// grants twice the value asked for up to its cap, `net.core.rmem_max`, itself at least
    /// the default, so any raise shows as more than 256 KiB.
    #[test]
    fn sockets_get_large_kernel_buffers() {
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let socket = socket2::SockRef::from(&socket);
        let receive = socket.recv_buffer_size().unwrap();
        let send = socket.send_buffer_size().unwrap();
        assert!(receive > 256 * 1024, "receive buffer {receive}");
        assert!(send > 256 * 1024, "send buffer {send}");
    }

    #[test]
    fn only_quic_v1_addresses_are_taken() {
        let good: Multiaddr = "/ip4/1.2.3.4/udp/5/quic-v1".parse().unwrap();
        assert_eq!(socket_addr(&good), Some("1.2.3.4:5".parse().unwrap()));
        let with_peer = good.clone().with(Protocol::P2p(PeerId::random()));
        assert!(socket_addr(&with_peer).is_some());
        for bad in [
            "/ip4/1.2.3.4/udp/5/quic",
            "/ip4/1.2.3.4/tcp/5",
            "/ip4/1.2.3.4/udp/5/quic-v1/webtransport",
            "/dns4/example.com/udp/5/quic-v1",
        ] {
            assert_eq!(socket_addr(&bad.parse().unwrap()), None, "{bad}");
        }
    }
}
