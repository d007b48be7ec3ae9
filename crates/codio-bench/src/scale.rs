//! `scale`: a network of N codio nodes in one process, joining through a few bootstrap nodes,
//! then churn (a fraction leave, as many new ones join) while every node runs DHT lookups and
//! provider lookups for keys others provide, and one node publishes to a topic all subscribe
//! to.
//!
//! The nodes talk over libp2p's in-memory transport with codio's real stack above it
//! (`codio_transport::upgrade`: TLS 1.3 / Noise negotiation, Yamux, set-up timeouts, the
//! inbound gate) and are built from the layers themselves (policy with its peer caps,
//! discovery, pub/sub, identify), as a reuser of the layers would. Why in-process over
//! memory: 1,000 processes would not fit two cores' scheduling, and over TCP each connection
//! costs two of the 20,000 descriptors this machine allows (1,000 nodes with 50 peers each
//! need 50,000); memory channels cost none, and everything above the socket is the same code.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use codio_discovery::{
    Dht, DiscoveryConfig, KadMode,
    identify::{Event as IdentifyEvent, Identify, IdentifyConfig},
};
use codio_network::{
    policy::LimitsConfig, policy::MemoryLimit, policy::PolicyConfig, pubsub::PubsubConfig,
    pubsub::Topic,
};
use futures::{AsyncRead, AsyncWrite, StreamExt};
use libp2p::{
    Multiaddr, PeerId, Swarm, Transport,
    core::transport::MemoryTransport,
    identity,
    swarm::{self, NetworkBehaviour, SwarmEvent},
};
use serde::Serialize;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::stats::Samples;

/// The topic every node joins.
const TOPIC: &str = "cdn/control";

/// The sizes of a scale run.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Plan {
    /// Nodes at the start (bootstrap nodes included).
    pub(crate) nodes: usize,
    /// Bootstrap nodes everyone joins through (their peer cap is `nodes`: they must take
    /// every newcomer, as public bootstrap servers are provisioned to).
    pub(crate) bootstrap: usize,
    /// Every other node's peer cap (the policy's `max_established`; the seed's 50).
    pub(crate) max_peers: usize,
    /// How long a connection with no stream open stays (`NetworkConfig::idle_timeout`,
    /// default 30 s), in seconds.
    pub(crate) idle_secs: u64,
    /// Whether a newcomer at a node's ceiling displaces an older connection the node does
    /// not keep alive (the policy's default, `LimitsConfig::with_eviction_age`) or is refused.
    pub(crate) evict: bool,
    /// Nodes started per second while joining.
    pub(crate) join_rate: usize,
    /// Percent of the nodes that leave during the churn phase (as many new ones join).
    pub(crate) churn_percent: usize,
    /// Length of the churn phase, in seconds.
    pub(crate) seconds: u64,
    /// Lookups (and as many provider lookups) each node runs during the phase.
    pub(crate) queries_per_node: usize,
    /// Messages the publisher sends during the phase.
    pub(crate) messages: usize,
}

impl Plan {
    pub(crate) fn full(nodes: usize) -> Self {
        Self {
            nodes,
            bootstrap: 3,
            max_peers: 50,
            idle_secs: 30,
            evict: true,
            join_rate: 25,
            churn_percent: 20,
            seconds: 60,
            queries_per_node: 2,
            messages: 30,
        }
    }

    pub(crate) fn smoke() -> Self {
        Self {
            nodes: 40,
            bootstrap: 2,
            max_peers: 50,
            idle_secs: 30,
            evict: true,
            join_rate: 40,
            churn_percent: 20,
            seconds: 8,
            queries_per_node: 1,
            messages: 4,
        }
    }
}

/// Bytes every node received, all connections together (each byte is sent once and
/// received once, so this is the traffic).
static WIRE_BYTES: AtomicU64 = AtomicU64::new(0);

/// A memory channel that counts the bytes read from it.
struct Counted<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let read = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &read {
            WIRE_BYTES.fetch_add(*n as u64, Relaxed);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_close(cx)
    }
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Layers {
    policy: codio_policy::Behaviour,
    discovery: codio_discovery::Behaviour,
    pubsub: codio_pubsub::Behaviour,
    identify: Identify,
}

/// A running node.
struct Node {
    peer_id: PeerId,
    address: Multiaddr,
    dht: Dht,
    pubsub: codio_pubsub::Pubsub,
    topic: Option<Topic>,
    joined: oneshot::Receiver<Duration>,
    task: JoinHandle<()>,
    refusals: codio_policy::Stats,
}

/// A deterministic xorshift generator (the run's choices are reproducible with `--seed`).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Builds and starts node `index` listening on `/memory/<port>`, joined to the topic.
async fn start_node(
    index: usize,
    cap: usize,
    plan: &Plan,
    bootstrap: &[Multiaddr],
) -> anyhow::Result<Node> {
    let idle = Duration::from_secs(plan.idle_secs);
    let keypair = identity::Keypair::generate_ed25519();
    let peer_id = keypair.public().to_peer_id();
    let memory = MemoryTransport::default().map(|channel, _| Counted(channel));
    let transport = codio_transport::upgrade(memory, &keypair, &Default::default())?;
    let mut limits = LimitsConfig::new(cap).with_max_memory(MemoryLimit::Off);
    limits = limits.with_watermarks(cap * 7 / 10, cap * 9 / 10);
    if !plan.evict {
        limits = limits.with_eviction_age(None);
    }
    // Pings once a minute instead of every 15 s: 1,000 nodes' background work shares two
    // cores here, where a real deployment has a machine per node.
    let policy_config = PolicyConfig::default().with_limits(limits).with_liveness(
        Duration::from_secs(60),
        Duration::from_secs(20),
        3,
    );
    let policy = codio_policy::Behaviour::new(policy_config);
    let refusals = policy.stats();
    let discovery_config = DiscoveryConfig::default()
        .with_mdns(false)
        .with_kad_mode(KadMode::Server)
        .with_bootstrap_peers(bootstrap.iter().cloned())?;
    let discovery = codio_discovery::Behaviour::new(peer_id, discovery_config)?;
    let dht = discovery.dht();
    let pubsub = codio_pubsub::Behaviour::new(&keypair, PubsubConfig::default())?;
    let handle = pubsub.pubsub();
    let identify = Identify::new(
        &keypair.public(),
        IdentifyConfig::new("/codio/1.0.0", "codio-bench"),
        discovery.stats(),
    );
    let layers = Layers {
        policy,
        discovery,
        pubsub,
        identify,
    };
    // Streams negotiated as a default codio node does.
    let config = swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(idle)
        .with_substream_upgrade_protocol_override(
            codio_transport::TransportConfig::default().stream_negotiation(),
        );
    let mut swarm = Swarm::new(transport, layers, peer_id, config);
    let port = 1_000_000 + index as u64;
    let address: Multiaddr = format!("/memory/{port}").parse()?;
    swarm.listen_on(address.clone())?;
    swarm.behaviour_mut().discovery.start();
    let (joined_tx, joined) = oneshot::channel();
    let task = tokio::spawn(drive(swarm, joined_tx));
    let topic = Some(handle.join(TOPIC).await?);

    Ok(Node {
        peer_id,
        address: codio_network::with_p2p(address, peer_id),
        dht,
        pubsub: handle,
        topic,
        joined,
        task,
        refusals,
    })
}

/// Drives a node's swarm: identify feeds discovery and the policy; the first finished DHT
/// bootstrap is the node's join.
async fn drive(mut swarm: Swarm<Layers>, joined: oneshot::Sender<Duration>) {
    let started = Instant::now();
    let mut joined = Some(joined);
    while let Some(event) = swarm.next().await {
        match event {
            SwarmEvent::Behaviour(LayersEvent::Identify(IdentifyEvent::Received {
                peer_id,
                info,
                remote,
                ..
            })) => {
                let behaviour = swarm.behaviour_mut();
                let addresses = behaviour.discovery.on_identify(peer_id, &info, &remote);
                behaviour.policy.on_identify(&peer_id, &info);
                for address in addresses.unwrap_or_default() {
                    swarm.add_peer_address(peer_id, address);
                }
            }
            SwarmEvent::Behaviour(LayersEvent::Discovery(
                codio_discovery::Event::Bootstrapped { result: Ok(()) },
            )) => {
                if let Some(joined) = joined.take() {
                    let _ = joined.send(started.elapsed());
                }
            }
            _ => {}
        }
    }
}

/// Success and latency of one kind of query.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Outcome {
    pub(crate) runs: usize,
    pub(crate) ok: usize,
    pub(crate) success_percent: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

impl Outcome {
    fn from(results: &[(bool, Duration)]) -> Self {
        let mut samples = Samples::with_capacity(results.len());
        for (_, latency) in results {
            samples.push(*latency);
        }
        let ok = results.iter().filter(|(ok, _)| *ok).count();
        Self {
            runs: results.len(),
            ok,
            success_percent: 100.0 * ok as f64 / results.len().max(1) as f64,
            p50_ms: samples.quantile(0.5) / 1e3,
            p99_ms: samples.quantile(0.99) / 1e3,
        }
    }
}

/// What a scale run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) plan: Plan,
    pub(crate) seed: u64,
    /// Nodes whose first DHT bootstrap finished, of those started in the join phase.
    pub(crate) joined: usize,
    pub(crate) join_p50_ms: f64,
    pub(crate) join_p99_ms: f64,
    pub(crate) join_phase_s: f64,
    pub(crate) provides_failed: usize,
    pub(crate) rss_per_node_kib: f64,
    /// Connected peers per node once every node provided: median and most.
    pub(crate) peers_p50: u64,
    pub(crate) peers_max: u64,
    pub(crate) left: usize,
    pub(crate) arrived: usize,
    pub(crate) lookups: Outcome,
    pub(crate) find_providers: Outcome,
    pub(crate) gossip_expected: usize,
    pub(crate) gossip_delivered: usize,
    pub(crate) gossip_delivery_percent: f64,
    pub(crate) gossip_p50_ms: f64,
    pub(crate) gossip_p99_ms: f64,
    pub(crate) lookup_requests_per_node_s: f64,
    pub(crate) gossip_messages_per_node_s: f64,
    pub(crate) wire_bytes_per_node_s: f64,
    /// Connections the nodes' policies refused, by reason (all nodes, whole run).
    pub(crate) refused: Vec<(String, u64)>,
    /// Connections the nodes' policies trimmed above their high watermark (whole run).
    pub(crate) trimmed: u64,
    /// Connections the nodes' policies closed at their ceiling for a newcomer (whole run).
    pub(crate) evicted: u64,
}

/// Shared records of the run.
#[derive(Default)]
struct Records {
    lookups: Mutex<Vec<(bool, Duration)>>,
    providers: Mutex<Vec<(bool, Duration)>>,
    lookup_requests: AtomicU64,
    /// Per node index: when it could first count as a subscriber, when it left.
    lives: Mutex<HashMap<usize, (Instant, Option<Instant>)>>,
    /// Every node's refusal counters.
    refusals: Mutex<Vec<codio_policy::Stats>>,
    /// Per message sequence number: when it was published.
    published: Mutex<HashMap<u32, Instant>>,
    /// (node index, sequence number) -> delivery time.
    delivered: Mutex<HashMap<(usize, u32), Duration>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key(index: usize) -> Vec<u8> {
    format!("/content/{index}").into_bytes()
}

/// Reads node `index`'s topic, recording when each message arrived.
fn read_topic(
    index: usize,
    mut topic: Topic,
    epoch: Instant,
    records: Arc<Records>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(message) = topic.next_message().await {
            let Some((seq, sent)) = decode(&message.data) else {
                continue;
            };
            let latency = epoch.elapsed().saturating_sub(sent);
            lock(&records.delivered).insert((index, seq), latency);
        }
    })
}

fn encode(seq: u32, epoch: Instant) -> Vec<u8> {
    let mut data = seq.to_be_bytes().to_vec();
    data.extend((epoch.elapsed().as_nanos() as u64).to_be_bytes());
    data
}

fn decode(data: &[u8]) -> Option<(u32, Duration)> {
    let seq = u32::from_be_bytes(data.get(..4)?.try_into().ok()?);
    let nanos = u64::from_be_bytes(data.get(4..12)?.try_into().ok()?);
    Some((seq, Duration::from_nanos(nanos)))
}

/// One node's queries: `count` times, at a random moment of the phase, a lookup of another
/// stable node's id (ok: the lookup finds it) and a provider lookup of another stable node's
/// key (ok: that node is among the providers).
fn query_loop(
    me: PeerId,
    dht: Dht,
    stable: Arc<Vec<(usize, PeerId)>>,
    mut rng: Rng,
    count: usize,
    phase: Duration,
    records: Arc<Records>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut at = Duration::ZERO;
        let start = Instant::now();
        for _ in 0..count {
            at += Duration::from_millis(rng.below(phase.as_millis() as usize / count) as u64);
            tokio::time::sleep_until((start + at).into()).await;
            // Another node than this one (`stable` holds at least two).
            let mut other = || {
                let mut pick = stable[rng.below(stable.len())];
                for _ in 0..64 {
                    if pick.1 != me {
                        break;
                    }
                    pick = stable[rng.below(stable.len())];
                }
                pick
            };
            let (_, target) = other();
            let began = Instant::now();
            let lookup = dht.closest_peers(target.to_bytes()).await;
            let ok = lookup.as_ref().is_ok_and(|l| l.peers.contains(&target));
            if let Ok(lookup) = &lookup {
                records
                    .lookup_requests
                    .fetch_add(u64::from(lookup.requests), Relaxed);
            }
            lock(&records.lookups).push((ok, began.elapsed()));
            let (index, provider) = other();
            let began = Instant::now();
            let found = dht.find_providers(key(index)).await;
            let ok = found.is_ok_and(|found| found.iter().any(|p| p.peer_id == provider));
            lock(&records.providers).push((ok, began.elapsed()));
        }
    })
}

/// Starts nodes `range` at the join rate; returns them with their join times.
async fn join(
    range: std::ops::Range<usize>,
    plan: &Plan,
    bootstrap: &[Multiaddr],
) -> anyhow::Result<Vec<(usize, Node)>> {
    let mut nodes = Vec::with_capacity(range.len());
    let every = Duration::from_secs(1) / plan.join_rate.max(1) as u32;
    let mut tick = tokio::time::interval(every);
    for index in range {
        tick.tick().await;
        let cap = if index < plan.bootstrap {
            plan.nodes * 2
        } else {
            plan.max_peers
        };
        nodes.push((index, start_node(index, cap, plan, bootstrap).await?));
    }
    Ok(nodes)
}

/// Runs the plan (see the module docs).
pub(crate) async fn run(plan: Plan, seed: u64) -> anyhow::Result<Report> {
    let epoch = Instant::now();
    let records = Arc::new(Records::default());
    let mut rng = Rng(seed.max(1));
    // Bootstrap nodes first (each knows the ones before it), then everyone through them.
    let mut nodes: Vec<(usize, Node)> = Vec::new();
    let mut bootstrap = Vec::new();
    for index in 0..plan.bootstrap {
        let node = start_node(index, plan.nodes * 2, &plan, &bootstrap).await?;
        bootstrap.push(node.address.clone());
        nodes.push((index, node));
    }
    let join_started = Instant::now();
    nodes.extend(join(plan.bootstrap..plan.nodes, &plan, &bootstrap).await?);
    // One deadline for all: a node not joined a minute after the last one started has not.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut join_times = Samples::with_capacity(plan.nodes);
    for (_, node) in &mut nodes {
        if let Ok(Ok(took)) = tokio::time::timeout_at(deadline, &mut node.joined).await {
            join_times.push(took);
        }
    }
    let join_phase = join_started.elapsed();
    let joined = join_times.len();
    tracing::warn!(
        joined,
        secs = join_phase.as_secs_f64(),
        "scale: nodes joined"
    );
    let provide_started = Instant::now();

    // Every node provides its key (at most 64 announcements at once).
    let provides = futures::stream::iter(nodes.iter().map(|(i, n)| (key(*i), n.dht.clone())))
        .map(|(key, dht)| async move { dht.provide(key).await.is_err() })
        .buffer_unordered(64)
        .filter(|failed| futures::future::ready(*failed))
        .count()
        .await;
    let took = provide_started.elapsed().as_secs_f64();
    tracing::warn!(took, "scale: every node provided");
    let mut peers: Vec<u64> = nodes
        .iter()
        .map(|(_, n)| n.refusals.connected_peers())
        .collect();
    peers.sort_unstable();
    let (peers_p50, peers_max) = (
        peers.get(peers.len() / 2).copied().unwrap_or(0),
        peers.last().copied().unwrap_or(0),
    );
    let rss_per_node_kib =
        crate::memory::rss(std::process::id())? as f64 / 1024.0 / nodes.len() as f64;
    let now = Instant::now();
    let mut readers = Vec::new();
    for (index, node) in &mut nodes {
        lock(&records.lives).insert(*index, (now, None));
        if let Some(topic) = node.topic.take() {
            readers.push(read_topic(*index, topic, epoch, records.clone()));
        }
    }

    // Churn: who leaves (never a bootstrap node, nor the publisher) and when.
    let publisher = plan.bootstrap;
    let leaving_count = plan.nodes * plan.churn_percent / 100;
    let mut leaving = HashSet::new();
    while leaving.len() < leaving_count.min(plan.nodes - plan.bootstrap - 1) {
        leaving.insert(plan.bootstrap + 1 + rng.below(plan.nodes - plan.bootstrap - 1));
    }
    let stable: Arc<Vec<(usize, PeerId)>> = Arc::new(
        nodes
            .iter()
            .filter(|(i, _)| !leaving.contains(i))
            .map(|(i, n)| (*i, n.peer_id))
            .collect(),
    );
    let phase = Duration::from_secs(plan.seconds);
    // A leaving node's queries stop with it (its own results up to then count).
    let mut workers = HashMap::new();
    for (index, node) in &nodes {
        let rng = Rng(rng.below(usize::MAX) as u64 | 1);
        let (count, records) = (plan.queries_per_node, records.clone());
        let (me, dht) = (node.peer_id, node.dht.clone());
        let worker = query_loop(me, dht, stable.clone(), rng, count, phase, records);
        workers.insert(*index, worker);
    }
    let bytes_before = WIRE_BYTES.load(Relaxed);
    let phase_start = Instant::now();
    let mut events: Vec<(Duration, Event)> = Vec::new();
    for index in &leaving {
        events.push((
            phase.mul_f64(rng.below(800) as f64 / 1000.0),
            Event::Leave(*index),
        ));
    }
    for n in 0..leaving_count {
        events.push((
            phase.mul_f64(rng.below(800) as f64 / 1000.0),
            Event::Arrive(plan.nodes + n),
        ));
    }
    for seq in 0..plan.messages {
        let at = phase.mul_f64(0.9 * seq as f64 / plan.messages.max(1) as f64);
        events.push((at, Event::Publish(seq as u32)));
    }
    events.sort_by_key(|(at, _)| *at);
    let publisher_topic = {
        let node = nodes
            .iter()
            .find(|(i, _)| *i == publisher)
            .map(|(_, n)| n)
            .context("publisher")?;
        node.pubsub.join(TOPIC).await?
    };
    for (at, event) in events {
        tokio::time::sleep_until((phase_start + at).into()).await;
        match event {
            Event::Leave(index) => {
                if let Some(position) = nodes.iter().position(|(i, _)| *i == index) {
                    let (_, node) = nodes.swap_remove(position);
                    if let Some(worker) = workers.remove(&index) {
                        worker.abort();
                    }
                    node.task.abort();
                    lock(&records.refusals).push(node.refusals.clone());
                    if let Some((_, left)) = lock(&records.lives).get_mut(&index) {
                        *left = Some(Instant::now());
                    }
                }
            }
            Event::Arrive(index) => {
                let mut node = start_node(index, plan.max_peers, &plan, &bootstrap).await?;
                lock(&records.lives).insert(index, (Instant::now(), None));
                if let Some(topic) = node.topic.take() {
                    readers.push(read_topic(index, topic, epoch, records.clone()));
                }
                nodes.push((index, node));
            }
            Event::Publish(seq) => {
                lock(&records.published).insert(seq, Instant::now());
                if let Err(error) = publisher_topic.publish(encode(seq, epoch)).await {
                    tracing::warn!(%error, seq, "scale: publish failed");
                }
            }
        }
    }
    tracing::warn!("scale: churn done, waiting for the phase's end");
    let remaining = phase.saturating_sub(phase_start.elapsed());
    tokio::time::sleep(remaining + GRACE).await;
    for worker in workers.values() {
        worker.abort();
    }
    let bytes = WIRE_BYTES.load(Relaxed) - bytes_before;
    let phase_secs = phase_start.elapsed().as_secs_f64();
    let live = nodes.len() as f64;
    let (expected, latencies) = gossip(&records, publisher);
    let delivered = latencies.len();
    for (_, node) in nodes {
        node.task.abort();
        lock(&records.refusals).push(node.refusals);
    }
    let refused = codio_policy::DenialReason::ALL
        .iter()
        .map(|&reason| {
            let count = lock(&records.refusals)
                .iter()
                .map(|s| s.denied(reason))
                .sum();
            (reason.as_str().to_owned(), count)
        })
        .filter(|(_, count)| *count > 0)
        .collect();
    let total = |counter| {
        lock(&records.refusals)
            .iter()
            .map(|s| s.get(counter))
            .sum::<u64>()
    };
    let trimmed = total(codio_policy::Counter::PeersTrimmed);
    let evicted = total(codio_policy::Counter::PeersEvicted);
    for reader in readers {
        reader.abort();
    }
    let lookups = Outcome::from(&lock(&records.lookups));
    let find_providers = Outcome::from(&lock(&records.providers));
    Ok(Report {
        plan,
        seed,
        joined,
        join_p50_ms: join_times.quantile(0.5) / 1e3,
        join_p99_ms: join_times.quantile(0.99) / 1e3,
        join_phase_s: join_phase.as_secs_f64(),
        provides_failed: provides,
        rss_per_node_kib,
        peers_p50,
        peers_max,
        left: leaving.len(),
        arrived: leaving_count,
        lookups,
        find_providers,
        gossip_expected: expected,
        gossip_delivered: delivered,
        gossip_delivery_percent: 100.0 * delivered as f64 / expected.max(1) as f64,
        gossip_p50_ms: latencies.quantile(0.5) / 1e3,
        gossip_p99_ms: latencies.quantile(0.99) / 1e3,
        lookup_requests_per_node_s: records.lookup_requests.load(Relaxed) as f64
            / live
            / phase_secs,
        gossip_messages_per_node_s: delivered as f64 / live / phase_secs,
        wire_bytes_per_node_s: bytes as f64 / live / phase_secs,
        refused,
        trimmed,
        evicted,
    })
}

/// How long after the phase the run waits for the last messages and queries.
const GRACE: Duration = Duration::from_secs(5);
/// A subscriber counts for a message published this long after it joined (its mesh forms
/// within a few heartbeats) and if it stays this long after the publication.
const SETTLE: Duration = Duration::from_secs(3);

/// Expected deliveries (live subscribers per message) and the delivered ones' latencies.
fn gossip(records: &Records, publisher: usize) -> (usize, Samples) {
    let lives = lock(&records.lives);
    let published = lock(&records.published);
    let delivered = lock(&records.delivered);
    let mut expected = 0;
    let mut latencies = Samples::default();
    for (&seq, &at) in published.iter() {
        for (&index, &(since, left)) in lives.iter() {
            let live = since + SETTLE <= at && left.is_none_or(|left| left > at + SETTLE);
            if index == publisher || !live {
                continue;
            }
            expected += 1;
            if let Some(latency) = delivered.get(&(index, seq)) {
                latencies.push(*latency);
            }
        }
    }
    (expected, latencies)
}

enum Event {
    Leave(usize),
    Arrive(usize),
    Publish(u32),
}

/// Prints the report as a table.
#[allow(clippy::print_stdout)] // The report is the program's output.
pub(crate) fn print(r: &Report) {
    let p = &r.plan;
    println!(
        "scale: {} nodes ({} bootstrap, peer cap {}, {} at the cap, idle timeout {} s), {}% churn over {} s, seed {}",
        p.nodes,
        p.bootstrap,
        p.max_peers,
        if p.evict { "eviction" } else { "refusal" },
        p.idle_secs,
        p.churn_percent,
        p.seconds,
        r.seed
    );
    println!(
        "  join: {} of {} joined in {:.1} s; time to join p50 {:.0} ms, p99 {:.0} ms; {} provides failed",
        r.joined, p.nodes, r.join_phase_s, r.join_p50_ms, r.join_p99_ms, r.provides_failed
    );
    println!(
        "  memory: {:.0} KiB per node (process RSS / nodes); connected peers per node p50 {}, max {}",
        r.rss_per_node_kib, r.peers_p50, r.peers_max
    );
    println!("  churn: {} left, {} joined", r.left, r.arrived);
    for (name, o) in [
        ("lookups", &r.lookups),
        ("find_providers", &r.find_providers),
    ] {
        println!(
            "  {name}: {}/{} ok ({:.2}%), p50 {:.0} ms, p99 {:.0} ms",
            o.ok, o.runs, o.success_percent, o.p50_ms, o.p99_ms
        );
    }
    println!(
        "  gossip: {}/{} deliveries to live subscribers ({:.2}%), p50 {:.0} ms, p99 {:.0} ms",
        r.gossip_delivered,
        r.gossip_expected,
        r.gossip_delivery_percent,
        r.gossip_p50_ms,
        r.gossip_p99_ms
    );
    println!(
        "  per node per second: {:.1} lookup requests, {:.2} gossip messages, {:.0} bytes on the wire",
        r.lookup_requests_per_node_s, r.gossip_messages_per_node_s, r.wire_bytes_per_node_s
    );
    println!(
        "  connections refused by the nodes' policies: {:?}; trimmed: {}; evicted: {}",
        r.refused, r.trimmed, r.evicted
    );
}
