//! WAN rows: bulk throughput and the time to a new peer's first answer over a path with a real
//! round trip ([`path`]: two namespaces, a userspace relay delaying every packet, `tbf` for
//! the rate), for raw TCP, stock, codio and both QUIC stacks; raw UDP blasting through the
//! same path is the path's own ceiling.

mod path;

use std::{
    net::SocketAddr,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use libp2p::{Multiaddr, PeerId};

pub(crate) use path::{Path, Shape};

use crate::{Kind, codio, raw, stats::BulkClock, stock};

/// What is measured on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stack {
    /// Kernel TCP, no encryption: the reference.
    RawTcp,
    /// UDP datagrams sent as fast as the socket takes them: the path's ceiling.
    RawUdp,
    /// Stock rust-libp2p, TCP + Noise + Yamux.
    Stock,
    /// Stock rust-libp2p over QUIC.
    StockQuic,
    /// codio over TCP.
    Codio,
    /// codio over QUIC.
    CodioQuic,
}

impl Stack {
    /// The stack of the loopback rows this one is (raw UDP rides with raw TCP): its stock
    /// security protocol and codio transport come from there.
    pub(crate) fn kind(self) -> Kind {
        match self {
            Stack::RawTcp | Stack::RawUdp => Kind::Raw,
            Stack::Stock => Kind::Stock,
            Stack::StockQuic => Kind::StockQuic,
            Stack::Codio => Kind::Codio,
            Stack::CodioQuic => Kind::CodioQuic,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Stack::RawTcp => "raw",
            Stack::RawUdp => "raw-udp",
            Stack::Stock => "stock",
            Stack::StockQuic => "stock-quic",
            Stack::Codio => "codio",
            Stack::CodioQuic => "codio-quic",
        }
    }
}

/// What a server end tells its client.
#[derive(Debug, Clone)]
enum Address {
    /// Raw TCP: the bulk and the echo listener.
    Raw { bulk: SocketAddr, echo: SocketAddr },
    /// Raw UDP: the counting socket.
    Udp(SocketAddr),
    /// A libp2p node's dial address and peer id.
    Node(Multiaddr, PeerId),
}

/// What a server end keeps alive until it is told to stop.
enum Kept {
    Tasks(Vec<tokio::task::JoinHandle<()>>),
    Stock(stock::Node),
    Codio(codio_network::NetworkManager),
}

impl Kept {
    async fn close(self) {
        match self {
            Kept::Tasks(tasks) => tasks.iter().for_each(tokio::task::JoinHandle::abort),
            Kept::Stock(node) => drop(node),
            Kept::Codio(node) => node.shutdown().await,
        }
    }
}

/// What the UDP counter saw.
#[derive(Debug, Clone, Copy)]
struct Counted {
    bytes: u64,
    span: Duration,
}

/// UDP datagram payload (fits a 1,500-byte MTU with IPv4 and UDP headers).
const DATAGRAM: usize = 1_400;
/// The UDP counter stops after this long without a datagram.
const UDP_QUIET: Duration = Duration::from_millis(300);

/// Starts `stack`'s server inside the server end; returns its address, the handle that stops
/// it, and (UDP only) where its count arrives.
async fn serve(
    path: &Path,
    stack: Stack,
) -> anyhow::Result<(
    Address,
    tokio::sync::oneshot::Sender<()>,
    Option<tokio::sync::oneshot::Receiver<Counted>>,
)> {
    let (address_tx, address_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (count_tx, count_rx) = tokio::sync::oneshot::channel();
    let ip = path.server_ip();
    path.server(async move {
        let started = async {
            anyhow::Ok(match stack {
                Stack::RawTcp => {
                    let (bulk_listener, bulk) = raw::listener_on(ip).await?;
                    let (echo_listener, echo) = raw::listener_on(ip).await?;
                    let tasks = vec![
                        tokio::spawn(raw::serve_bulk(bulk_listener)),
                        tokio::spawn(raw::serve_echo(echo_listener)),
                    ];
                    (Address::Raw { bulk, echo }, Kept::Tasks(tasks))
                }
                Stack::RawUdp => {
                    let socket = tokio::net::UdpSocket::bind((ip, 0)).await?;
                    // Room for the datagrams that arrive while the counter is scheduled out:
                    // the ceiling is the path's, not the default 208 KiB buffer's.
                    socket2::SockRef::from(&socket).set_recv_buffer_size(16 << 20)?;
                    let addr = socket.local_addr()?;
                    let task = tokio::spawn(async move {
                        if let Ok(counted) = count_udp(socket).await {
                            let _ = count_tx.send(counted);
                        }
                    });
                    (Address::Udp(addr), Kept::Tasks(vec![task]))
                }
                Stack::Stock | Stack::StockQuic => {
                    let security = stack.kind().stock_security();
                    let node = stock::Node::start_on(security, ip).await?;
                    stock::serve_streams(&node)?;
                    (
                        Address::Node(node.dial_addr(), node.peer_id),
                        Kept::Stock(node),
                    )
                }
                Stack::Codio | Stack::CodioQuic => {
                    let node =
                        codio::server(codio::config_on(stack.kind().codio_transport(), ip)).await?;
                    let addr = codio::dial_addr(&node)?;
                    (Address::Node(addr, node.local_peer_id()), Kept::Codio(node))
                }
            })
        }
        .await;
        match started {
            Ok((address, kept)) => {
                let _ = address_tx.send(Ok(address));
                let _ = stop_rx.await;
                kept.close().await;
            }
            Err(error) => {
                let _ = address_tx.send(Err(error));
            }
        }
    });
    let address = address_rx.await.context("server end stopped")??;
    let count = (stack == Stack::RawUdp).then_some(count_rx);
    Ok((address, stop_tx, count))
}

/// Counts datagrams until none came for [`UDP_QUIET`] after the first.
async fn count_udp(socket: tokio::net::UdpSocket) -> anyhow::Result<Counted> {
    let mut buf = vec![0u8; 65_536];
    let n = socket.recv(&mut buf).await?;
    let first = Instant::now();
    let (mut bytes, mut last) = (n as u64, first);
    while let Ok(received) = tokio::time::timeout(UDP_QUIET, socket.recv(&mut buf)).await {
        bytes += received? as u64;
        last = Instant::now();
    }
    Ok(Counted {
        bytes,
        span: last - first,
    })
}

/// Bytes per second of one `bytes`-byte transfer over `stack` from the client end to the
/// server end (for raw UDP: the bytes that arrived, over the time they took to arrive).
pub(crate) async fn bulk(path: &Path, stack: Stack, bytes: u64) -> anyhow::Result<f64> {
    let (address, stop, count) = serve(path, stack).await?;
    let client_ip = path.client_ip();
    let sent = path.client(async move {
        anyhow::Ok(match (stack, address) {
            (Stack::RawTcp, Address::Raw { bulk, .. }) => {
                let socket = raw::connect(bulk, 1).await?.pop().context("connected")?;
                let clock = BulkClock::start();
                raw::send_counted(socket, bytes).await?;
                Some(clock.finish(bytes).bytes_per_s)
            }
            (Stack::RawUdp, Address::Udp(to)) => {
                let socket = tokio::net::UdpSocket::bind((client_ip, 0)).await?;
                socket.connect(to).await?;
                let datagram = [0u8; DATAGRAM];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(DATAGRAM as u64) as usize;
                    // The socket's send buffer paces the sender to the path's rate.
                    socket.send(&datagram[..n]).await?;
                    left -= n as u64;
                }
                None
            }
            (Stack::Stock | Stack::StockQuic, Address::Node(addr, peer)) => {
                let security = stack.kind().stock_security();
                let client = stock::Node::client(security).await?;
                client.dial(addr).await?;
                Some(
                    stock::send_streams(&client, peer, 1, bytes)
                        .await?
                        .bytes_per_s,
                )
            }
            (Stack::Codio | Stack::CodioQuic, Address::Node(addr, peer)) => {
                let client =
                    codio::node(codio::config_on(stack.kind().codio_transport(), client_ip))
                        .await?;
                client.connect_peer(addr).await?;
                let run = codio::send(&client, peer, 1, bytes).await;
                client.shutdown().await;
                Some(run?.bytes_per_s)
            }
            (stack, address) => anyhow::bail!("{stack:?} cannot use {address:?}"),
        })
    });
    let sent = sent.await.context("client end stopped")??;
    let rate = match (sent, count) {
        (Some(rate), _) => rate,
        (None, Some(count)) => {
            let counted = count.await.context("the UDP counter stopped")?;
            anyhow::ensure!(counted.bytes > 0, "no datagram arrived");
            counted.bytes as f64 / counted.span.as_secs_f64().max(1e-3)
        }
        (None, None) => anyhow::bail!("nothing measured"),
    };
    let _ = stop.send(());
    Ok(rate)
}

/// The round trip of the path as TCP sees it: the median of `count` connects (a connect
/// returns when the SYN-ACK arrives: one round trip).
pub(crate) async fn round_trip(path: &Path, count: usize) -> anyhow::Result<Duration> {
    let (address, stop, _) = serve(path, Stack::RawTcp).await?;
    let Address::Raw { echo, .. } = address else {
        anyhow::bail!("a raw server has raw addresses");
    };
    let samples = path.client(async move {
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count.max(1) {
            let t = Instant::now();
            let socket = tokio::net::TcpStream::connect(echo).await?;
            samples.push(t.elapsed());
            drop(socket);
        }
        anyhow::Ok(samples)
    });
    let mut samples = samples.await.context("client end stopped")??;
    let _ = stop.send(());
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// The time from dialing a peer never met to its answer to a 64-byte request (connection
/// set-up included; the client node itself is made before the clock starts): the median of
/// `count` tries, each with a new client.
pub(crate) async fn first_answer(
    path: &Path,
    stack: Stack,
    count: usize,
) -> anyhow::Result<Duration> {
    const SIZE: usize = 64;
    let (address, stop, _) = serve(path, stack).await?;
    let client_ip = path.client_ip();
    let samples = path.client(async move {
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count.max(1) {
            let elapsed = match (stack, &address) {
                (Stack::RawTcp, Address::Raw { echo, .. }) => {
                    let t = Instant::now();
                    let client = raw::Client::connect(*echo).await?;
                    let answer = client.request(vec![7u8; SIZE]).await?;
                    anyhow::ensure!(answer.len() == SIZE, "wrong echo");
                    t.elapsed()
                }
                (Stack::Stock | Stack::StockQuic, Address::Node(addr, peer)) => {
                    let security = stack.kind().stock_security();
                    let client = stock::Node::client(security).await?;
                    let t = Instant::now();
                    client.dial(addr.clone()).await?;
                    let answer = client.request(*peer, vec![7u8; SIZE]).await?;
                    anyhow::ensure!(answer.len() == SIZE, "wrong echo");
                    t.elapsed()
                }
                (Stack::Codio | Stack::CodioQuic, Address::Node(addr, peer)) => {
                    let config = codio::config_on(stack.kind().codio_transport(), client_ip);
                    let client = codio::node(config).await?;
                    let t = Instant::now();
                    client.connect_peer(addr.clone()).await?;
                    codio::echo(&client, *peer, SIZE).await?;
                    let elapsed = t.elapsed();
                    client.shutdown().await;
                    elapsed
                }
                (stack, address) => anyhow::bail!("{stack:?} cannot use {address:?}"),
            };
            samples.push(elapsed);
        }
        anyhow::Ok(samples)
    });
    let mut samples = samples.await.context("client end stopped")??;
    let _ = stop.send(());
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// The relay's counts so far: forwarded, lost at random, dropped at a full relay.
pub(crate) fn relay_counts(path: &Path) -> (u64, u64, u64) {
    let c = &path.counters;
    (
        c.forwarded.load(Ordering::Relaxed),
        c.lost.load(Ordering::Relaxed),
        c.overflowed.load(Ordering::Relaxed),
    )
}
