//! The adversary harness: hostile peers built from raw sockets and libp2p parts, for tests
//! that show a victim node keeps serving good peers while it is attacked.
//!
//! Everything an attack creates lives in a task owned by the returned [`Attack`]: dropping it
//! (also when a test fails) aborts the task and closes every socket and swarm. Attacks run on
//! loopback from an address of the test's choosing in 127.0.0.0/8, so the victim sees one
//! hostile source apart from the good peer's 127.0.0.1.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use futures::StreamExt;
use libp2p::{Multiaddr, Swarm, identity::Keypair, multiaddr::Protocol, swarm};

use tokio::{io::AsyncReadExt, net::TcpSocket, task::JoinHandle};

/// A running attack; dropping it stops the attack and frees what it holds.
#[derive(Debug)]
pub struct Attack {
    task: JoinHandle<()>,
    opened: Arc<AtomicU64>,
}

impl Attack {
    /// Connections (sockets or libp2p connections) the attack opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Relaxed)
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The TCP socket address of a `/ip4/…/tcp/…` multiaddress.
pub fn socket_addr(address: &Multiaddr) -> SocketAddr {
    let mut ip = None;
    let mut port = None;
    for protocol in address {
        match protocol {
            Protocol::Ip4(v4) => ip = Some(IpAddr::V4(v4)),
            Protocol::Ip6(v6) => ip = Some(IpAddr::V6(v6)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    SocketAddr::new(ip.expect("an IP address"), port.expect("a TCP port"))
}

/// Keeps `count` TCP connections from `from` to `target` open, re-opening each one the victim
/// closes. With `prefix`, each socket sends it first and then stalls (a handshake started and
/// never finished); without, it sends nothing at all.
pub fn hold_sockets(
    target: SocketAddr,
    from: IpAddr,
    count: usize,
    prefix: &'static [u8],
) -> Attack {
    let opened = Arc::new(AtomicU64::new(0));
    let counter = opened.clone();
    let task = tokio::spawn(async move {
        let mut holders = tokio::task::JoinSet::new();
        for _ in 0..count {
            holders.spawn(hold_one(target, from, prefix, counter.clone()));
        }
        // Each holder runs until aborted with the attack.
        while holders.join_next().await.is_some() {}
    });
    Attack { task, opened }
}

/// One socket slot: connect, (send the prefix,) wait until the victim closes it, again. Paced
/// by the victim: a refused or closed socket is re-opened after 20 ms.
async fn hold_one(target: SocketAddr, from: IpAddr, prefix: &[u8], opened: Arc<AtomicU64>) {
    loop {
        if let Ok(mut stream) = connect_from(target, from).await {
            opened.fetch_add(1, Relaxed);
            if !prefix.is_empty() {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, prefix).await;
            }
            // Read (and drop) whatever the victim says until it closes the socket.
            let mut buf = [0u8; 1024];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect_from(target: SocketAddr, from: IpAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(target).await
}

/// `count` libp2p peers, each with a fresh identity, connecting from `from` to `target` and
/// staying connected (re-dialing when dropped, every 200 ms). They run codio's transport and
/// keep their connections open; they speak no protocol.
pub fn mint_peers(target: Multiaddr, from: IpAddr, count: usize) -> Attack {
    let opened = Arc::new(AtomicU64::new(0));
    let counter = opened.clone();
    let task = tokio::spawn(async move {
        let mut peers = tokio::task::JoinSet::new();
        for _ in 0..count {
            peers.spawn(run_minted(target.clone(), from, counter.clone()));
        }
        while peers.join_next().await.is_some() {}
    });
    Attack { task, opened }
}

async fn run_minted(target: Multiaddr, from: IpAddr, opened: Arc<AtomicU64>) {
    let keypair = Keypair::generate_ed25519();
    let config = codio_transport::TransportConfig::default();
    let transport =
        codio_transport::upgrade(BoundTcp { from }, &keypair, &config).expect("transport");
    let mut swarm = Swarm::new(
        transport,
        swarm::dummy::Behaviour,
        keypair.public().to_peer_id(),
        swarm::Config::with_tokio_executor().with_idle_connection_timeout(Duration::MAX),
    );
    let mut redial = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = redial.tick() => {
                if swarm.connected_peers().next().is_none() && swarm.dial(target.clone()).is_ok() {
                    opened.fetch_add(1, Relaxed);
                }
            }
            _ = swarm.select_next_some() => {}
        }
    }
}

/// A dial-only TCP transport whose sockets are bound to `from` (libp2p-tcp binds reused
/// ports to the unspecified address, so on loopback every dial would come from 127.0.0.1).
#[derive(Debug)]
struct BoundTcp {
    from: IpAddr,
}

impl libp2p::Transport for BoundTcp {
    type Output = libp2p::tcp::tokio::TcpStream;
    type Error = std::io::Error;
    type ListenerUpgrade = futures::future::Pending<Result<Self::Output, Self::Error>>;
    type Dial = futures::future::BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn listen_on(
        &mut self,
        _: libp2p::core::transport::ListenerId,
        addr: Multiaddr,
    ) -> Result<(), libp2p::TransportError<Self::Error>> {
        Err(libp2p::TransportError::MultiaddrNotSupported(addr))
    }

    fn remove_listener(&mut self, _: libp2p::core::transport::ListenerId) -> bool {
        false
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _: libp2p::core::transport::DialOpts,
    ) -> Result<Self::Dial, libp2p::TransportError<Self::Error>> {
        let target = socket_addr(&addr);
        let from = self.from;
        Ok(Box::pin(async move {
            connect_from(target, from)
                .await
                .map(libp2p::tcp::tokio::TcpStream)
        }))
    }

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<libp2p::core::transport::TransportEvent<Self::ListenerUpgrade, Self::Error>>
    {
        std::task::Poll::Pending
    }
}

/// The value of the first sample of `metric` (a name with its labels, as printed) in the
/// Prometheus text of `registry`.
pub fn metric(registry: &std::sync::Mutex<codio_network::metrics::Registry>, metric: &str) -> f64 {
    let mut text = String::new();
    codio_network::metrics::encode(&mut text, &registry.lock().unwrap()).unwrap();
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == metric).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no sample {metric} in:\n{text}"))
}
