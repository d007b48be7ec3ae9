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

/// Attack tests saturate the machine on purpose (a victim, an attacker and a good peer in one
/// process); run in parallel on a small machine they would measure the machine rather than
/// the defence. Each holds this for its whole run.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// A running attack; dropping it stops the attack and frees what it holds.
#[derive(Debug)]
pub struct Attack {
    task: JoinHandle<()>,
    opened: Arc<AtomicU64>,
}

impl Attack {
    /// Runs the attack `f` makes, given the counter it reports to.
    fn run<F>(f: impl FnOnce(Arc<AtomicU64>) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let opened = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(f(opened.clone()));
        Self { task, opened }
    }

    /// Runs `count` copies of the attacker `f` makes, side by side, reporting to one counter.
    fn many<F>(count: usize, f: impl Fn(Arc<AtomicU64>) -> F + Send + 'static) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Self::run(move |counter| async move {
            let mut attackers = tokio::task::JoinSet::new();
            for _ in 0..count {
                attackers.spawn(f(counter.clone()));
            }
            // Each runs until aborted with the attack.
            while attackers.join_next().await.is_some() {}
        })
    }

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

/// A neighbour at `from` that multicasts mDNS answers every `every`, each announcing
/// `per_packet` fresh peer ids at `from` (a closed port) with the longest TTL DNS allows; the
/// attack's `opened` counts the peers announced.
pub fn mdns_spoofer(from: std::net::Ipv4Addr, every: Duration, per_packet: usize) -> Attack {
    Attack::run(move |announced| async move {
        let socket = mdns_socket(from).expect("spoofer socket");
        let group = SocketAddr::from((std::net::Ipv4Addr::new(224, 0, 0, 251), 5353));
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let packet = spoofed_answer(from, per_packet);
            if socket.send_to(&packet, group).await.is_ok() {
                announced.fetch_add(per_packet as u64, Relaxed);
            }
        }
    })
}

/// A UDP socket sending to the mDNS group from `from`.
fn mdns_socket(from: std::net::Ipv4Addr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.bind(&SocketAddr::from((from, 0)).into())?;
    socket.set_multicast_if_v4(&from)?;
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// An mDNS answer for `count` fresh peers at `from`, TTL `u32::MAX`.
fn spoofed_answer(from: std::net::Ipv4Addr, count: usize) -> Vec<u8> {
    use hickory_proto::{
        op::{Message, MessageType, OpCode},
        rr::{Name, RData, Record, rdata},
    };
    let service = Name::from_ascii("_p2p._udp.local.").expect("name");
    let mut message = Message::new(0, MessageType::Response, OpCode::Query);
    for n in 0..count {
        let peer = libp2p::PeerId::random();
        let instance = Name::from_ascii(format!("spoof{n}._p2p._udp.local.")).expect("name");
        let pointer = RData::PTR(rdata::PTR(instance.clone()));
        message.add_answer(Record::from_rdata(service.clone(), u32::MAX, pointer));
        let text = format!("dnsaddr=/ip4/{from}/tcp/9/p2p/{peer}");
        let txt = RData::TXT(rdata::TXT::new(vec![text]));
        message.add_additional(Record::from_rdata(instance, u32::MAX, txt));
    }
    message.to_vec().expect("packet")
}

/// The socket address of a `/ip4/…/tcp/…` or `/ip4/…/udp/…/quic-v1` multiaddress.
pub fn socket_addr(address: &Multiaddr) -> SocketAddr {
    let mut ip = None;
    let mut port = None;
    for protocol in address {
        match protocol {
            Protocol::Ip4(v4) => ip = Some(IpAddr::V4(v4)),
            Protocol::Ip6(v6) => ip = Some(IpAddr::V6(v6)),
            Protocol::Tcp(p) | Protocol::Udp(p) => port = Some(p),
            _ => {}
        }
    }
    SocketAddr::new(ip.expect("an IP address"), port.expect("a TCP or UDP port"))
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
    Attack::many(count, move |counter| {
        hold_one(target, from, prefix, counter)
    })
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

/// QUIC handshakes from `from` to the QUIC listener at `target` that never finish: each is a
/// real client's first flight (its Initial packet, with a fresh connection id, caught on a
/// socket of our own) sent from a fresh UDP socket at `from`, which then never answers. One
/// every `every`; the last 256 sockets are kept open (so the victim's replies meet no ICMP).
pub fn stalled_quic_handshakes(target: SocketAddr, from: IpAddr, every: Duration) -> Attack {
    Attack::run(move |sent| async move {
        let Ok(catcher) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
            return;
        };
        let Ok(caught_at) = catcher.local_addr() else {
            return;
        };
        let caught: Multiaddr = format!("/ip4/127.0.0.1/udp/{}/quic-v1", caught_at.port())
            .parse()
            .expect("a QUIC address");
        let keypair = Keypair::generate_ed25519();
        let mut client = libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(&keypair));
        let mut held = std::collections::VecDeque::new();
        let mut buf = vec![0u8; 2048];
        // Bounded: the test drops the attack well before 100,000 handshakes.
        for _ in 0..100_000 {
            let opts = libp2p::core::transport::DialOpts {
                role: libp2p::core::Endpoint::Dialer,
                port_use: libp2p::core::transport::PortUse::New,
            };
            let Ok(dial) = libp2p::Transport::dial(&mut client, caught.clone(), opts) else {
                return;
            };
            // The dial sends its Initial when polled; it is dropped once the packet is caught.
            let dialing = tokio::spawn(dial);
            let first_flight =
                tokio::time::timeout(Duration::from_secs(2), catcher.recv_from(&mut buf)).await;
            dialing.abort();
            let Ok(Ok((len, _))) = first_flight else {
                continue;
            };
            if let Ok(socket) = tokio::net::UdpSocket::bind(SocketAddr::new(from, 0)).await
                && socket.send_to(&buf[..len], target).await.is_ok()
            {
                sent.fetch_add(1, Relaxed);
                held.push_back(socket);
                if held.len() > 256 {
                    held.pop_front();
                }
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// `count` libp2p peers, each with a fresh identity, connecting from `from` to `target` and
/// staying connected (re-dialing when dropped, every 200 ms). They run codio's transport and
/// keep their connections open; they speak no protocol.
pub fn mint_peers(target: Multiaddr, from: IpAddr, count: usize) -> Attack {
    Attack::many(count, move |counter| {
        run_minted(target.clone(), from, counter)
    })
}

/// Swarm settings for attackers: connections stay open while idle.
fn idle_forever() -> swarm::Config {
    swarm::Config::with_tokio_executor().with_idle_connection_timeout(Duration::MAX)
}

/// A swarm for `keypair` on codio's transport whose dials come from `from`.
fn bound_swarm<B: swarm::NetworkBehaviour>(
    keypair: &Keypair,
    from: IpAddr,
    behaviour: B,
) -> Swarm<B> {
    let config = codio_transport::TransportConfig::default();
    let transport =
        codio_transport::upgrade(BoundTcp { from }, keypair, &config).expect("transport");
    Swarm::new(
        transport,
        behaviour,
        keypair.public().to_peer_id(),
        idle_forever(),
    )
}

/// Dials `target` until a connection is established (5 s per attempt); the peer's id.
async fn connect<B: swarm::NetworkBehaviour>(
    swarm: &mut Swarm<B>,
    target: &Multiaddr,
) -> libp2p::PeerId {
    loop {
        let _ = swarm.dial(target.clone());
        let connected = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let swarm::SwarmEvent::ConnectionEstablished { peer_id, .. } =
                    swarm.select_next_some().await
                {
                    return peer_id;
                }
            }
        });
        if let Ok(peer_id) = connected.await {
            return peer_id;
        }
    }
}

/// Runs `swarm` in its own task until the returned guard is dropped.
fn drive<B>(mut swarm: Swarm<B>) -> DropAbort
where
    B: swarm::NetworkBehaviour + Send + 'static,
{
    DropAbort(tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    }))
}

async fn run_minted(target: Multiaddr, from: IpAddr, opened: Arc<AtomicU64>) {
    let mut swarm = bound_swarm(&Keypair::generate_ed25519(), from, swarm::dummy::Behaviour);
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

/// A peer from `from` that connects to `target` (speaking identify and Kademlia) and pushes
/// identify every `every` with `per_push` fresh listen addresses each time; the attack's
/// `opened` counts the pushes.
pub fn identify_flood(target: Multiaddr, from: IpAddr, per_push: u16, every: Duration) -> Attack {
    Attack::run(|pushes| run_identify_flood(target, from, per_push, every, pushes))
}

#[derive(libp2p::swarm::NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Liar {
    // Answers the victim's identify request (a push before it is ignored).
    identify: libp2p::identify::Behaviour,
    // Opens the push streams, written by hand: libp2p's identify pushes at most 20 addresses.
    streams: libp2p_stream::Behaviour,
}

/// A [`Liar`] from `from` connected to `target`, its swarm driven by a task of its own: its
/// key, the control to open streams with, the victim's peer id and the task's guard.
async fn connected_liar(
    target: &Multiaddr,
    from: IpAddr,
) -> (Keypair, libp2p_stream::Control, libp2p::PeerId, DropAbort) {
    let keypair = Keypair::generate_ed25519();
    let identify = libp2p::identify::Behaviour::new(libp2p::identify::Config::new(
        "/codio/1.0.0".into(),
        keypair.public(),
    ));
    let streams = libp2p_stream::Behaviour::new();
    let control = streams.new_control();
    let mut swarm = bound_swarm(&keypair, from, Liar { identify, streams });
    let victim = connect(&mut swarm, target).await;
    (keypair, control, victim, drive(swarm))
}

async fn run_identify_flood(
    target: Multiaddr,
    from: IpAddr,
    per_push: u16,
    every: Duration,
    pushes: Arc<AtomicU64>,
) {
    let (keypair, mut control, victim, _driver) = connected_liar(&target, from).await;
    let protocol = libp2p::StreamProtocol::new("/ipfs/id/push/1.0.0");
    let mut tick = tokio::time::interval(every);
    for round in 0u32.. {
        tick.tick().await;
        let message = identify_push(&keypair, round, per_push);
        if let Ok(mut stream) = control.open_stream(victim, protocol.clone()).await {
            use futures::AsyncWriteExt;
            if stream.write_all(&message).await.is_ok() && stream.close().await.is_ok() {
                pushes.fetch_add(1, Relaxed);
            }
        }
    }
}

/// A peer from `from` that connects to `target` and opens an identify push stream every
/// `every`, writing nothing and keeping each open; the attack's `opened` counts streams the
/// victim accepted (negotiated).
pub fn identify_stream_hoard(target: Multiaddr, from: IpAddr, every: Duration) -> Attack {
    Attack::run(|opened| run_identify_stream_hoard(target, from, every, opened))
}

async fn run_identify_stream_hoard(
    target: Multiaddr,
    from: IpAddr,
    every: Duration,
    opened: Arc<AtomicU64>,
) {
    let (_, mut control, victim, _driver) = connected_liar(&target, from).await;
    let protocol = libp2p::StreamProtocol::new("/ipfs/id/push/1.0.0");
    let mut held = Vec::new();
    let mut tick = tokio::time::interval(every);
    // Bounded: 2,000 streams at most (the test stops it long before).
    for _ in 0..2000 {
        tick.tick().await;
        if let Ok(stream) = control.open_stream(victim, protocol.clone()).await {
            held.push(stream);
            opened.fetch_add(1, Relaxed);
        }
    }
}

/// A peer from `from` that connects to `target` and announces itself as the provider of
/// `keys` random keys (at most 32 announcements at once), so the victim stores a provider
/// record for each; the attack's `opened` counts announcements that finished.
pub fn provider_flood(
    target: Multiaddr,
    victim: libp2p::PeerId,
    from: IpAddr,
    keys: usize,
) -> Attack {
    Attack::run(|done| run_provider_flood(target, victim, from, keys, done))
}

async fn run_provider_flood(
    target: Multiaddr,
    victim: libp2p::PeerId,
    from: IpAddr,
    keys: usize,
    done: Arc<AtomicU64>,
) {
    use libp2p::kad;
    let keypair = Keypair::generate_ed25519();
    let local = keypair.public().to_peer_id();
    // Its own store must hold every key it announces.
    let store = kad::store::MemoryStoreConfig {
        max_provided_keys: keys + 1,
        ..Default::default()
    };
    let mut kad = kad::Behaviour::new(local, kad::store::MemoryStore::with_config(local, store));
    kad.set_mode(Some(kad::Mode::Client));
    let mut swarm = bound_swarm(&keypair, from, kad);
    swarm.behaviour_mut().add_address(&victim, target);
    let (mut started, mut in_flight) = (0usize, 0usize);
    loop {
        while in_flight < 32 && started < keys {
            let key = kad::RecordKey::new(&rand_key(started));
            if swarm.behaviour_mut().start_providing(key).is_ok() {
                in_flight += 1;
            }
            started += 1;
        }
        if let swarm::SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
            result: kad::QueryResult::StartProviding(_),
            step,
            ..
        }) = swarm.select_next_some().await
            && step.last
        {
            in_flight -= 1;
            done.fetch_add(1, Relaxed);
        }
    }
}

/// A key unlike any other test's.
fn rand_key(n: usize) -> Vec<u8> {
    let mut key = b"flood-".to_vec();
    key.extend_from_slice(&n.to_be_bytes());
    key.extend_from_slice(&std::process::id().to_be_bytes());
    key
}

/// A peer from `from` that opens `sessions` `/codio/rpc/1.0.0` sessions to `target`, sends
/// `requests` echo requests of `payload` bytes on each, and never reads an answer; the
/// attack's `opened` counts the sessions it opened.
pub fn rpc_never_read(
    target: Multiaddr,
    victim: libp2p::PeerId,
    from: IpAddr,
    sessions: usize,
    requests: u64,
    payload: usize,
) -> Attack {
    Attack::run(move |counter| async move {
        let (mut control, _driver) = stream_peer(target, from).await;
        // Open every session first, then flood them all at once.
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..sessions {
            let Ok(stream) = control
                .open_stream(victim, codio_protocol::rpc::RPC_PROTOCOL)
                .await
            else {
                continue;
            };
            counter.fetch_add(1, Relaxed);
            writers.spawn(flood_session(stream, requests, payload));
        }
        while writers.join_next().await.is_some() {}
        std::future::pending::<()>().await;
    })
}

/// Sends `requests` echo requests on `stream`, never reads, and holds it open.
async fn flood_session(mut stream: libp2p::Stream, requests: u64, payload: usize) {
    use futures::AsyncWriteExt;
    for id in 0..requests {
        let request = codio_protocol::rpc::RpcRequest {
            id,
            request: codio_protocol::Request::App {
                topic: "echo".into(),
                payload: vec![7; payload],
            },
        };
        let frame = codio_protocol::rpc::encode_request(&request).expect("frame");
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
    std::future::pending::<()>().await;
}

/// A peer from `from` that opens `streams` `/codio/1.0.0` streams to `target` at once, sends
/// an echo request with `payload` on each and never reads an answer, holding every stream
/// open; the attack's `opened` counts the requests it wrote.
pub fn request_streams_never_read(
    target: Multiaddr,
    victim: libp2p::PeerId,
    from: IpAddr,
    streams: usize,
    payload: Vec<u8>,
) -> Attack {
    Attack::run(move |written| async move {
        let (control, _driver) = stream_peer(target, from).await;
        let request = codio_protocol::Request::App {
            topic: "echo".into(),
            payload,
        };
        let frame =
            codio_protocol::encode(&request, codio_protocol::MAX_REQUEST_FRAME).expect("frame");
        let mut held = tokio::task::JoinSet::new();
        for _ in 0..streams {
            let (mut control, frame, written) = (control.clone(), frame.clone(), written.clone());
            held.spawn(async move {
                use futures::AsyncWriteExt;
                let Ok(mut stream) = control.open_stream(victim, codio_protocol::PROTOCOL).await
                else {
                    return;
                };
                if stream.write_all(&frame).await.is_ok() && stream.flush().await.is_ok() {
                    written.fetch_add(1, Relaxed);
                }
                // Never read; hold the stream until the attack is dropped.
                std::future::pending::<()>().await;
            });
        }
        while held.join_next().await.is_some() {}
    })
}

/// A connected peer from `from` whose streams are opened through the returned control; the
/// swarm runs until the returned guard is dropped.
async fn stream_peer(target: Multiaddr, from: IpAddr) -> (libp2p_stream::Control, DropAbort) {
    let streams = libp2p_stream::Behaviour::new();
    let control = streams.new_control();
    let mut swarm = bound_swarm(&Keypair::generate_ed25519(), from, streams);
    connect(&mut swarm, &target).await;
    (control, drive(swarm))
}

/// A swarm for `keypair` listening on 127.0.0.1 (codio's transport, no DNS), and its
/// address with `/p2p` once it listens.
async fn listening_swarm<B: swarm::NetworkBehaviour>(
    keypair: &Keypair,
    behaviour: B,
) -> (Swarm<B>, Multiaddr) {
    let local = keypair.public().to_peer_id();
    let config = codio_transport::TransportConfig::default().with_dns(false);
    let transport = codio_transport::build_transport(keypair, &config).expect("transport");
    let mut swarm = Swarm::new(transport, behaviour, local, idle_forever());
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("address"))
        .expect("listen");
    loop {
        if let swarm::SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return (swarm, codio_network::with_p2p(address, local));
        }
    }
}

/// A peer listening on 127.0.0.1 that serves `/codio/rpc/1.0.0` badly on its first stream
/// (it reads one request, sends the first byte of an answer frame and then nothing) and well
/// on the next ones (it echoes `App` payloads). Returns its address (with `/p2p`) once it
/// listens; the attack's `opened` counts the streams it accepted.
pub async fn stalling_responder() -> (Multiaddr, Attack) {
    use futures::{AsyncWriteExt, StreamExt as _};
    let streams = libp2p_stream::Behaviour::new();
    let mut incoming = streams
        .new_control()
        .accept(codio_protocol::rpc::RPC_PROTOCOL)
        .expect("accept");
    let (swarm, address) = listening_swarm(&Keypair::generate_ed25519(), streams).await;
    let attack = Attack::run(move |counter| async move {
        let _driver = drive(swarm);
        let mut held = Vec::new();
        while let Some((_, mut stream)) = incoming.next().await {
            let first = counter.fetch_add(1, Relaxed) == 0;
            let Ok(body) = codio_protocol::read_frame(&mut stream, 1 << 20).await else {
                continue;
            };
            let Ok(request) = codio_protocol::rpc::decode_request(&body) else {
                continue;
            };
            if first {
                // The first byte of a frame, then silence.
                let _ = stream.write_all(&[0x80]).await;
                let _ = stream.flush().await;
                held.push(stream);
                continue;
            }
            let response = echo_answer(request.request);
            let frame = codio_protocol::rpc::encode_response(&codio_protocol::rpc::RpcResponse {
                id: request.id,
                response,
            })
            .expect("frame");
            let _ = stream.write_all(&frame).await;
            let _ = stream.flush().await;
            held.push(stream);
        }
    });
    (address, attack)
}

/// A peer listening on 127.0.0.1 that speaks Kademlia (`/ipfs/kad/1.0.0`) badly: it reads
/// each request and answers with a frame announcing `answer_bytes` bytes, and sends them (a
/// DHT answer far beyond any sane size). Returns its address (with `/p2p`) once it listens;
/// the attack's `opened` counts the requests it was asked.
pub async fn oversized_kad_responder(answer_bytes: usize) -> (Multiaddr, Attack) {
    use futures::{AsyncReadExt as _, AsyncWriteExt, StreamExt as _};
    let keypair = Keypair::generate_ed25519();
    let streams = libp2p_stream::Behaviour::new();
    let kad = libp2p::StreamProtocol::new("/ipfs/kad/1.0.0");
    let mut incoming = streams.new_control().accept(kad).expect("accept");
    // Identify tells the victim where it listens and that it speaks Kademlia.
    let identify = libp2p::identify::Behaviour::new(libp2p::identify::Config::new(
        "/codio/1.0.0".into(),
        keypair.public(),
    ));
    let (swarm, address) = listening_swarm(&keypair, Liar { identify, streams }).await;
    let attack = Attack::run(move |asked| async move {
        let _driver = drive(swarm);
        let mut answers = tokio::task::JoinSet::new();
        while let Some((_, mut stream)) = incoming.next().await {
            let asked = asked.clone();
            answers.spawn(async move {
                let mut request = [0u8; 1024];
                if !matches!(stream.read(&mut request).await, Ok(n) if n > 0) {
                    return;
                }
                asked.fetch_add(1, Relaxed);
                let mut frame = Vec::with_capacity(answer_bytes + 10);
                let mut n = answer_bytes;
                while n >= 0x80 {
                    frame.push((n & 0x7f) as u8 | 0x80);
                    n >>= 7;
                }
                frame.push(n as u8);
                frame.resize(frame.len() + answer_bytes, 0x0a);
                // The victim drops the stream at its message bound: the write fails there.
                let _ = stream.write_all(&frame).await;
            });
        }
    });
    (address, attack)
}

/// The answer of the harness's echo responders: an `App` request's own payload.
pub fn echo_answer(request: codio_protocol::Request) -> codio_protocol::Response {
    match request {
        codio_protocol::Request::App { payload, .. } => codio_protocol::Response::App { payload },
        _ => codio_protocol::Response::error(codio_protocol::ErrorCode::NotFound, "echo only"),
    }
}

/// Aborts a task when dropped (with the attack).
struct DropAbort(JoinHandle<()>);

impl Drop for DropAbort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An identify message (length-prefixed protobuf, written by hand) listing `count` fresh
/// addresses and the Kademlia protocol, so the victim would put them in its routing table.
fn identify_push(keypair: &Keypair, round: u32, count: u16) -> Vec<u8> {
    fn varint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n & 0x7f) as u8 | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    fn field(number: usize, bytes: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(bytes.len(), out);
        out.extend_from_slice(bytes);
    }
    let mut message = Vec::new();
    field(1, &keypair.public().encode_protobuf(), &mut message);
    for port in 0..count {
        let [_, _, a, b] = round.to_be_bytes();
        let address: Multiaddr = format!("/ip4/203.0.{a}.{b}/tcp/{port}")
            .parse()
            .expect("address");
        field(2, &address.to_vec(), &mut message);
    }
    field(3, b"/ipfs/kad/1.0.0", &mut message);
    field(5, b"/codio/1.0.0", &mut message);
    field(6, b"liar", &mut message);
    let mut framed = Vec::new();
    varint(message.len(), &mut framed);
    framed.extend(message);
    framed
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

/// A gossipsub peer from `from` that connects to `target`, joins `topic` and publishes an
/// unsigned message (`unsigned N`, no author, no signature) every `every`; the attack's
/// `opened` counts the messages sent.
pub fn unsigned_publisher(target: Multiaddr, from: IpAddr, topic: &str, every: Duration) -> Attack {
    let topic = libp2p::gossipsub::IdentTopic::new(topic);
    Attack::run(move |sent| run_unsigned_publisher(target, from, topic, every, sent))
}

async fn run_unsigned_publisher(
    target: Multiaddr,
    from: IpAddr,
    topic: libp2p::gossipsub::IdentTopic,
    every: Duration,
    sent: Arc<AtomicU64>,
) {
    use libp2p::gossipsub;
    let keypair = Keypair::generate_ed25519();
    let config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(200))
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        // Without author and sequence number, the default id would make them all one.
        .message_id_fn(|message| gossipsub::MessageId::new(&message.data))
        .build()
        .expect("gossipsub config");
    let mut behaviour: gossipsub::Behaviour =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, config)
            .expect("gossipsub");
    behaviour.subscribe(&topic).expect("subscribe");
    let mut swarm = bound_swarm(&keypair, from, behaviour);
    connect(&mut swarm, &target).await;
    let mut tick = tokio::time::interval(every);
    for round in 0u64.. {
        tokio::select! {
            _ = tick.tick() => {
                let data = format!("unsigned {round}").into_bytes();
                if swarm.behaviour_mut().publish(topic.clone(), data).is_ok() {
                    sent.fetch_add(1, Relaxed);
                }
            }
            _ = swarm.select_next_some() => {}
        }
    }
}
