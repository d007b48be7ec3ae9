//! codio: the `codio-network` facade with its defaults (mDNS off: benchmarks never multicast
//! on the host's network), bulk transfers on `/codio/bulk/1.0.0` and requests on
//! `/codio/1.0.0`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use codio_network::{
    NetworkConfig, NetworkManager, discovery::KadMode, policy::LimitsConfig, protocol::BulkHeader,
    protocol::ContentId, protocol::Request, protocol::Response,
};
use futures::AsyncReadExt as _;

use crate::{
    drive::{RequestRun, drive},
    stats::{BulkClock, BulkRun, Samples},
};

/// Overrides of codio's transport defaults, for tuning experiments (`--yamux-frame-size`).
pub(crate) static YAMUX_FRAME_SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Override of the security protocols codio offers (`--codio-security`).
pub(crate) static SECURITY: std::sync::OnceLock<Vec<codio_transport::SecurityProtocol>> =
    std::sync::OnceLock::new();

/// The transport a codio stack listens on (both are in every node's transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// TCP + TLS 1.3 (or Noise) + Yamux.
    Tcp,
    /// QUIC v1.
    Quic,
}

/// The benchmark's node configuration, listening on 127.0.0.1 over `transport`.
pub(crate) fn config(transport: Transport) -> NetworkConfig {
    config_on(transport, std::net::Ipv4Addr::LOCALHOST.into())
}

/// The benchmark's node configuration, listening on `ip` over `transport`.
pub(crate) fn config_on(transport: Transport, ip: std::net::IpAddr) -> NetworkConfig {
    let listen = vec![match transport {
        Transport::Tcp => codio_transport::addr::tcp(ip, 0),
        Transport::Quic => codio_transport::addr::quic(ip, 0),
    }];
    let mut config = codio_network::transport::TransportConfig::default();
    if let Some(order) = SECURITY.get() {
        config = config.with_security(order.clone());
    }
    if let Some(size) = YAMUX_FRAME_SIZE.get() {
        config = config.with_yamux_frame_size(*size);
    }
    NetworkConfig::default()
        .with_listen_addrs(listen)
        .with_mdns(false)
        .with_transport(config)
}

/// A started node.
pub(crate) async fn node(config: NetworkConfig) -> anyhow::Result<NetworkManager> {
    let node = NetworkManager::new(config).await?;
    node.start().await?;
    Ok(node)
}

/// `node`'s first dial address (listen address with `/p2p/`).
pub(crate) fn dial_addr(node: &NetworkManager) -> anyhow::Result<libp2p::Multiaddr> {
    node.dial_addr().context("node is not listening")
}

/// A started node built from `config` that answers every `App` request with its payload and
/// receives every bulk transfer to its end.
pub(crate) async fn server(config: NetworkConfig) -> anyhow::Result<NetworkManager> {
    let mut builder = NetworkManager::builder(config);
    let mut inbound = builder.request_queue();
    let mut incoming = builder.bulk_queue();
    let server = builder.build().await?;
    server.start().await?;
    tokio::spawn(async move {
        while let Some(request) = inbound.recv().await {
            let payload = match request.request {
                Request::App { payload, .. } => payload,
                _ => Vec::new(),
            };
            let _ = request.responder.respond(Response::App { payload }).await;
        }
    });
    tokio::spawn(async move {
        while let Some(mut bulk) = incoming.recv().await {
            tokio::spawn(async move {
                let received = async {
                    let header = bulk.header().await?;
                    bulk.receive(&header, &mut futures::io::sink(), |_| {})
                        .await
                }
                .await;
                if let Err(error) = received {
                    tracing::error!(%error, "bulk receiver failed");
                }
            });
        }
    });
    Ok(server)
}

/// A client connected to a [`server`].
async fn pair(transport: Transport) -> anyhow::Result<(NetworkManager, NetworkManager)> {
    let server = server(config(transport)).await?;
    let client = node(config(transport)).await?;
    client.connect_peer(dial_addr(&server)?).await?;
    Ok((client, server))
}

async fn close(nodes: [NetworkManager; 2]) {
    for node in nodes {
        node.shutdown().await;
    }
}

/// `streams` concurrent bulk transfers of `bytes_each` bytes; bytes/s until every receiver
/// confirmed.
pub(crate) async fn bulk(
    transport: Transport,
    streams: usize,
    bytes_each: u64,
) -> anyhow::Result<BulkRun> {
    let (client, server) = pair(transport).await?;
    let run = send(&client, server.local_peer_id(), streams, bytes_each).await?;
    close([client, server]).await;
    Ok(run)
}

/// `streams` concurrent bulk transfers of `bytes_each` bytes from `client` to `peer` (a
/// [`server`]); bytes/s until every receiver confirmed.
pub(crate) async fn send(
    client: &NetworkManager,
    peer: libp2p::PeerId,
    streams: usize,
    bytes_each: u64,
) -> anyhow::Result<BulkRun> {
    let clock = BulkClock::start();
    let mut senders = Vec::with_capacity(streams);
    for i in 0..streams {
        let client = client.clone();
        senders.push(tokio::spawn(async move {
            let header = BulkHeader {
                content: ContentId([i as u8; 32]),
                size: bytes_each,
                topic: "bench".into(),
            };
            let mut source = futures::io::repeat(0).take(bytes_each);
            let sent = client.send_bulk(peer, header, &mut source, |_| {}).await?;
            anyhow::ensure!(sent == bytes_each, "short transfer");
            anyhow::Ok(())
        }));
    }
    for sender in senders {
        sender.await??;
    }
    Ok(clock.finish(bytes_each * streams as u64))
}

/// One `App` request of `size` bytes from `client` to `peer` (a [`server`]), checked.
pub(crate) async fn echo(
    client: &NetworkManager,
    peer: libp2p::PeerId,
    size: usize,
) -> anyhow::Result<()> {
    let response = client
        .send_request(
            peer,
            Request::App {
                topic: "bench".into(),
                payload: vec![7u8; size],
            },
        )
        .await?;
    match response {
        Response::App { payload } if payload.len() == size => Ok(()),
        other => anyhow::bail!("unexpected response {other:?}"),
    }
}

/// `count` `App` requests of `size` bytes answered with the same payload, `in_flight` at a
/// time.
pub(crate) async fn requests(
    transport: Transport,
    count: usize,
    in_flight: usize,
    size: usize,
) -> anyhow::Result<RequestRun> {
    let (client, server) = pair(transport).await?;
    let peer = server.local_peer_id();
    let caller = client.clone();
    let run = drive(count, in_flight, count / 10, move || {
        let client = caller.clone();
        async move { echo(&client, peer, size).await }
    })
    .await?;
    close([client, server]).await;
    Ok(run)
}

/// `count` sequential `connect_peer` calls, each disconnected before the next.
pub(crate) async fn setup(transport: Transport, count: usize) -> anyhow::Result<Samples> {
    let server = node(config(transport)).await?;
    let client = node(config(transport)).await?;
    let addr = dial_addr(&server)?;
    let mut samples = Samples::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        let peer = client.connect_peer(addr.clone()).await?;
        samples.push(t.elapsed());
        client.disconnect_peer(peer).await?;
    }
    close([client, server]).await;
    Ok(samples)
}

/// What a Kademlia run measured.
#[derive(Debug)]
pub(crate) struct KadRun {
    pub(crate) joined: Duration,
    pub(crate) lookups: Samples,
    pub(crate) rpcs: Samples,
}

/// `nodes` DHT servers bootstrapped from the first; every node looks up another one.
pub(crate) async fn kad(nodes: usize) -> anyhow::Result<KadRun> {
    let start = Instant::now();
    let server = || {
        let mut config = config(Transport::Tcp).with_max_peers(4 * nodes);
        config.discovery = config
            .discovery
            .with_kad_mode(KadMode::Server)
            .with_query_timeout(Duration::from_secs(60));
        config.policy = config.policy.with_limits(
            LimitsConfig::new(4 * nodes)
                .with_max_pending_incoming(4 * nodes)
                .with_max_pending_outgoing(4 * nodes),
        );
        config
    };
    let bootstrap = node(server()).await?;
    let mut all = vec![bootstrap.clone()];
    let boot_addr = dial_addr(&bootstrap)?;
    for _ in 1..nodes {
        all.push(node(server().with_bootstrap_peers(vec![boot_addr.clone()])).await?);
    }
    // Joined: the bootstrap node has identified everyone (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(120);
    for node in &all[1..] {
        let left = deadline.saturating_duration_since(Instant::now());
        bootstrap
            .identified(node.local_peer_id(), left)
            .await
            .context("network did not join in 120 s")?;
    }
    let joined = start.elapsed();
    let mut lookups = Samples::with_capacity(nodes);
    let mut rpcs = Samples::with_capacity(nodes);
    for i in 0..nodes {
        let target = all[(i * 37 + 11) % nodes].local_peer_id();
        if target == all[i].local_peer_id() {
            continue;
        }
        let lookup = all[i].lookup(target.to_bytes()).await?;
        anyhow::ensure!(
            lookup.peers.first() == Some(&target),
            "lookup of {target} did not find it"
        );
        lookups.push(lookup.duration);
        // RPC counts ride in the microsecond samples as plain numbers.
        rpcs.push(Duration::from_micros(u64::from(lookup.requests)));
    }
    for node in all {
        node.shutdown().await;
    }
    Ok(KadRun {
        joined,
        lookups,
        rpcs,
    })
}
