//! The stock rust-libp2p baseline: `SwarmBuilder::with_tcp` with libp2p's default TCP, Noise
//! and Yamux configurations, `request_response::cbor` for requests and `libp2p-stream` for
//! bulk streams, driven by a swarm task the way an application would.

use std::{collections::HashMap, time::Duration};

use anyhow::Context as _;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, identify, noise, ping,
    request_response::{self, ProtocolSupport, cbor},
    swarm::{ConnectionId, NetworkBehaviour, SwarmEvent, dial_opts::DialOpts},
    tcp, tls, yamux,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    drive::{RequestRun, drive},
    stats::{BulkClock, BulkRun, Samples},
};

const RR_PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/rr/1.0.0");
const STREAM_PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/stream/1.0.0");
const CHUNK: usize = 64 * 1024;

/// The stock node's behaviour.
#[derive(NetworkBehaviour)]
pub(crate) struct StockBehaviour {
    rr: cbor::Behaviour<Vec<u8>, Vec<u8>>,
    stream: libp2p_stream::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

impl std::fmt::Debug for StockBehaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StockBehaviour")
    }
}

/// The security protocol of a stock swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Security {
    /// libp2p's default in `SwarmBuilder` examples: Noise (ChaCha20-Poly1305).
    Noise,
    /// libp2p-tls: TLS 1.3, which lists ChaCha20-Poly1305 first (codio's TLS prefers AES-GCM).
    Tls,
    /// libp2p-quic alone (QUIC v1 with libp2p-tls's certificates), no TCP.
    Quic,
}

/// A stock swarm with libp2p's defaults (idle connections kept for the benchmark's length).
pub(crate) fn swarm(security: Security) -> anyhow::Result<Swarm<StockBehaviour>> {
    let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
    let tcp = tcp::Config::default().nodelay(true);
    let behaviour = |key: &libp2p::identity::Keypair| StockBehaviour {
        rr: cbor::Behaviour::new(
            [(RR_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default(),
        ),
        stream: libp2p_stream::Behaviour::new(),
        identify: identify::Behaviour::new(identify::Config::new(
            "/bench/1.0.0".into(),
            key.public(),
        )),
        ping: ping::Behaviour::default(),
    };
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(3600));
    Ok(match security {
        Security::Noise => builder
            .with_tcp(tcp, noise::Config::new, yamux::Config::default)?
            .with_behaviour(behaviour)?
            .with_swarm_config(idle)
            .build(),
        Security::Tls => builder
            .with_tcp(tcp, tls::Config::new, yamux::Config::default)?
            .with_behaviour(behaviour)?
            .with_swarm_config(idle)
            .build(),
        Security::Quic => builder
            .with_quic()
            .with_behaviour(behaviour)?
            .with_swarm_config(idle)
            .build(),
    })
}

enum Command {
    Dial(Multiaddr, oneshot::Sender<anyhow::Result<PeerId>>),
    Disconnect(PeerId, oneshot::Sender<()>),
    Request(PeerId, Vec<u8>, oneshot::Sender<anyhow::Result<Vec<u8>>>),
}

/// A handle on a stock swarm running in its own task.
#[derive(Clone)]
pub(crate) struct Node {
    pub(crate) peer_id: PeerId,
    pub(crate) addr: Multiaddr,
    commands: mpsc::Sender<Command>,
    pub(crate) control: libp2p_stream::Control,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Node {
    /// Starts a node listening on 127.0.0.1 that echoes requests.
    pub(crate) async fn start(security: Security) -> anyhow::Result<Self> {
        Self::spawn(security, Some(std::net::Ipv4Addr::LOCALHOST.into())).await
    }

    /// Starts a node listening on `ip` that echoes requests.
    pub(crate) async fn start_on(security: Security, ip: std::net::IpAddr) -> anyhow::Result<Self> {
        Self::spawn(security, Some(ip)).await
    }

    /// Starts a node that only dials (no listener).
    pub(crate) async fn client(security: Security) -> anyhow::Result<Self> {
        Self::spawn(security, None).await
    }

    async fn spawn(security: Security, listen: Option<std::net::IpAddr>) -> anyhow::Result<Self> {
        let mut swarm = swarm(security)?;
        let addr = if let Some(ip) = listen {
            let listen = match security {
                Security::Quic => codio_transport::addr::quic(ip, 0),
                Security::Noise | Security::Tls => codio_transport::addr::tcp(ip, 0),
            };
            swarm.listen_on(listen)?;
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    break address;
                }
            }
        } else {
            Multiaddr::empty()
        };
        let peer_id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let (commands, rx) = mpsc::channel(1024);
        tokio::spawn(run(swarm, rx));
        Ok(Self {
            peer_id,
            addr,
            commands,
            control,
        })
    }

    pub(crate) fn dial_addr(&self) -> Multiaddr {
        codio_network::with_p2p(self.addr.clone(), self.peer_id)
    }

    pub(crate) async fn dial(&self, addr: Multiaddr) -> anyhow::Result<PeerId> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Dial(addr, reply)).await?;
        rx.await?
    }

    pub(crate) async fn disconnect(&self, peer: PeerId) -> anyhow::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Disconnect(peer, reply)).await?;
        Ok(rx.await?)
    }

    pub(crate) async fn request(&self, peer: PeerId, payload: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Request(peer, payload, reply))
            .await?;
        rx.await?
    }
}

async fn run(mut swarm: Swarm<StockBehaviour>, mut commands: mpsc::Receiver<Command>) {
    let mut dials: HashMap<ConnectionId, oneshot::Sender<anyhow::Result<PeerId>>> = HashMap::new();
    let mut disconnects: HashMap<PeerId, oneshot::Sender<()>> = HashMap::new();
    let mut requests = HashMap::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Dial(addr, reply)) => {
                    let opts = DialOpts::unknown_peer_id().address(addr).build();
                    let id = opts.connection_id();
                    match swarm.dial(opts) {
                        Ok(()) => { dials.insert(id, reply); }
                        Err(e) => { let _ = reply.send(Err(e.into())); }
                    }
                }
                Some(Command::Disconnect(peer, reply)) => {
                    if swarm.disconnect_peer_id(peer).is_ok() {
                        disconnects.insert(peer, reply);
                    } else {
                        let _ = reply.send(());
                    }
                }
                Some(Command::Request(peer, payload, reply)) => {
                    let id = swarm.behaviour_mut().rr.send_request(&peer, payload);
                    requests.insert(id, reply);
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, connection_id, .. } => {
                    if let Some(reply) = dials.remove(&connection_id) {
                        let _ = reply.send(Ok(peer_id));
                    }
                }
                SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                    if let Some(reply) = dials.remove(&connection_id) {
                        let _ = reply.send(Err(error.into()));
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    if let Some(reply) = disconnects.remove(&peer_id) {
                        let _ = reply.send(());
                    }
                }
                SwarmEvent::Behaviour(StockBehaviourEvent::Rr(event)) => match event {
                    request_response::Event::Message { message, .. } => match message {
                        request_response::Message::Request { request, channel, .. } => {
                            let _ = swarm.behaviour_mut().rr.send_response(channel, request);
                        }
                        request_response::Message::Response { request_id, response } => {
                            if let Some(reply) = requests.remove(&request_id) {
                                let _ = reply.send(Ok(response));
                            }
                        }
                    },
                    request_response::Event::OutboundFailure { request_id, error, .. } => {
                        if let Some(reply) = requests.remove(&request_id) {
                            let _ = reply.send(Err(error.into()));
                        }
                    }
                    _ => {}
                },
                _ => {}
            },
        }
    }
}

/// Receives every inbound bench stream to its end and acknowledges the byte count.
pub(crate) fn serve_streams(node: &Node) -> anyhow::Result<()> {
    let mut incoming = node
        .control
        .clone()
        .accept(STREAM_PROTOCOL)
        .context("accept streams")?;
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            tokio::spawn(async move {
                // Tell the opener the stream was taken (see `bulk`).
                stream.write_all(&[1]).await?;
                stream.flush().await?;
                let mut buf = vec![0u8; CHUNK];
                let mut total = 0u64;
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                stream.write_all(&total.to_be_bytes()).await?;
                stream.close().await?;
                anyhow::Ok(())
            });
        }
    });
    Ok(())
}

/// A connected pair: `client` dialed `server`.
async fn pair(security: Security) -> anyhow::Result<(Node, Node)> {
    let server = Node::start(security).await?;
    let client = Node::start(security).await?;
    client.dial(server.dial_addr()).await?;
    Ok((client, server))
}

/// `streams` concurrent streams of `bytes_each` bytes on one connection; bytes/s.
pub(crate) async fn bulk(
    security: Security,
    streams: usize,
    bytes_each: u64,
) -> anyhow::Result<BulkRun> {
    let (client, server) = pair(security).await?;
    serve_streams(&server)?;
    send_streams(&client, server.peer_id, streams, bytes_each).await
}

/// `streams` concurrent streams of `bytes_each` bytes from `client` to `peer` (a node that
/// runs [`serve_streams`]); bytes/s until every stream was confirmed.
pub(crate) async fn send_streams(
    client: &Node,
    peer: PeerId,
    streams: usize,
    bytes_each: u64,
) -> anyhow::Result<BulkRun> {
    // libp2p-stream 0.5 holds one waiting inbound stream and resets the rest of a burst, so
    // the streams are opened one after the other, each confirmed, before the clock starts.
    let mut opened = Vec::with_capacity(streams);
    for _ in 0..streams {
        let mut stream = client
            .control
            .clone()
            .open_stream(peer, STREAM_PROTOCOL)
            .await?;
        let mut ready = [0u8; 1];
        stream.read_exact(&mut ready).await?;
        opened.push(stream);
    }
    let clock = BulkClock::start();
    let mut senders = Vec::with_capacity(streams);
    for mut stream in opened {
        senders.push(tokio::spawn(async move {
            let buf = vec![0u8; CHUNK];
            let mut left = bytes_each;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                stream.write_all(&buf[..n]).await?;
                left -= n as u64;
            }
            stream.close().await?;
            let mut ack = [0u8; 8];
            stream.read_exact(&mut ack).await?;
            anyhow::ensure!(u64::from_be_bytes(ack) == bytes_each, "short transfer");
            anyhow::Ok(())
        }));
    }
    for sender in senders {
        sender.await??;
    }
    Ok(clock.finish(bytes_each * streams as u64))
}

/// `count` cbor echo requests of `size` bytes, `in_flight` at a time.
pub(crate) async fn requests(
    security: Security,
    count: usize,
    in_flight: usize,
    size: usize,
) -> anyhow::Result<RequestRun> {
    let (client, server) = pair(security).await?;
    let peer = server.peer_id;
    drive(count, in_flight, count / 10, move || {
        let client = client.clone();
        async move {
            let answer = client.request(peer, vec![7u8; size]).await?;
            anyhow::ensure!(answer.len() == size, "wrong echo");
            Ok(())
        }
    })
    .await
}

/// `count` sequential connection set-ups (dial until established), each closed before the
/// next.
pub(crate) async fn setup(security: Security, count: usize) -> anyhow::Result<Samples> {
    let server = Node::start(security).await?;
    let client = Node::start(security).await?;
    let addr = server.dial_addr();
    let mut samples = Samples::with_capacity(count);
    for _ in 0..count {
        let t = std::time::Instant::now();
        let peer = client.dial(addr.clone()).await?;
        samples.push(t.elapsed());
        client.disconnect(peer).await?;
    }
    Ok(samples)
}
