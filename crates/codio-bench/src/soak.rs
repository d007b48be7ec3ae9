//! The attack soak (issue 13): a `codio-node` process under every attack of the adversary
//! harness at once, for a while, while a well-behaved peer sends echo requests and one bulk
//! transfer. Reports the node's resident memory over time, the good peer's request latency
//! and failures, and whether its transfer arrived intact. A measurement, not a test: it
//! fails only when the good peer is not served at all.
//!
//! Attackers, each from its own loopback /24 (the node holds loopback to its
//! per-address limits with `--limit-loopback`): 60 silent and 40 stalled TCP sockets, 60
//! minted peer ids, an identify flood (300 addresses every 5 ms), a provider flood (1,500
//! keys), 10 RPC sessions of 200 requests that never read, and 300 `/codio/1.0.0` streams
//! that never read. (mDNS spoofing needs a network namespace; its test runs it.)

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use codio_network::{
    NetworkConfig, NetworkManager, PeerId, protocol::BulkHeader, protocol::ContentId,
    protocol::Request, protocol::Response,
};
use codio_tests::{adversary, data::Generated};
use sha2::Digest as _;

use crate::{memory::rss, stats::Samples};

/// The seed of the bulk transfer's data.
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// What a soak run measured.
#[derive(Debug)]
pub(crate) struct Soak {
    /// `(seconds since the attacks began, resident bytes)`, once a second.
    pub(crate) rss: Vec<(u64, u64)>,
    pub(crate) requests_ok: usize,
    pub(crate) requests_failed: usize,
    pub(crate) latencies: Samples,
    pub(crate) bulk_bytes: u64,
    pub(crate) bulk_seconds: f64,
    pub(crate) bulk_intact: bool,
    /// The node's own metrics at the end (selected lines).
    pub(crate) gauges: Vec<String>,
    /// What each attack opened or sent, with what it counts.
    pub(crate) attacked: Vec<(&'static str, u64)>,
}

/// The node process and its directory, removed when dropped (also on errors).
struct Node {
    child: Child,
    dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("CODIO_SOAK_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A free port on 127.0.0.1 (released at once; the node binds it right after).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `codio-node` next to this executable (same profile), as `cargo build -p codio-node` puts it.
fn node_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("executable directory")?
            .join("codio-node"),
    };
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it first (cargo build [--release] -p codio-node) or pass --node",
        path.display()
    );
    Ok(path)
}

/// Starts the node; its inbox accepts files from `sender` only.
fn spawn_node(binary: &Path, port: u16, metrics: u16, sender: PeerId) -> anyhow::Result<Node> {
    let dir = std::env::temp_dir().join(format!("codio-soak-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("inbox"))?;
    let log = std::fs::File::create(dir.join("node.log"))?;
    let child = Command::new(binary)
        .args([
            "--listen-ip",
            "127.0.0.1",
            "--listen-port",
            &port.to_string(),
        ])
        .args([
            "--no-mdns",
            "--no-relay",
            "--no-peer-book",
            "--echo",
            "--limit-loopback",
            // A DHT server, so that the provider flood reaches its record store.
            "--kad-server",
        ])
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics}"))
        .arg("--data-dir")
        .arg(&dir)
        .arg("--inbox")
        .arg(dir.join("inbox"))
        .arg("--inbox-allow")
        .arg(sender.to_string())
        .env(
            "RUST_LOG",
            std::env::var("CODIO_SOAK_NODE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(Node { child, dir })
}

/// The good peer (identity `keypair`), connected to the node; retries while the node starts
/// (10 s at most).
async fn good_peer(
    address: &libp2p::Multiaddr,
    keypair: libp2p::identity::Keypair,
) -> anyhow::Result<(NetworkManager, PeerId)> {
    let config = NetworkConfig::default()
        .with_listen_ip(Ipv4Addr::LOCALHOST.into())
        .with_mdns(false)
        .with_relay(false)
        .with_keypair(keypair);
    let good = NetworkManager::new(config).await?;
    good.start().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match good.connect_peer(address.clone()).await {
            Ok(peer) => return Ok((good, peer)),
            Err(e) if Instant::now() > deadline => return Err(e).context("connecting to the node"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Every attack of the harness, each from its own /24 (so that each meets its own bounds, not
/// the others'); dropping the list stops them.
fn attacks(
    address: &libp2p::Multiaddr,
    node: PeerId,
    port: u16,
) -> Vec<(&'static str, adversary::Attack)> {
    let from = |attacker: u8| IpAddr::V4(Ipv4Addr::new(127, 4 + attacker, 0, 1));
    let socket = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stalled = b"\x13/multistream/1.0.0\n";
    let every = Duration::from_millis(5);
    vec![
        (
            "silent sockets opened",
            adversary::hold_sockets(socket, from(1), 60, b""),
        ),
        (
            "stalled sockets opened",
            adversary::hold_sockets(socket, from(1), 40, stalled),
        ),
        (
            "peer ids' connections",
            adversary::mint_peers(address.clone(), from(2), 60),
        ),
        (
            "identify pushes",
            adversary::identify_flood(address.clone(), from(3), 300, every),
        ),
        (
            "provider announcements",
            adversary::provider_flood(address.clone(), node, from(4), 1_500),
        ),
        (
            "RPC sessions",
            adversary::rpc_never_read(address.clone(), node, from(5), 10, 200, 32 * 1024),
        ),
        (
            "request streams written",
            adversary::request_streams_never_read(address.clone(), node, from(6), 300, vec![7; 16]),
        ),
    ]
}

/// Runs the soak for `duration` with a bulk transfer of `bulk_bytes` (without the attacks
/// unless `attacked`: the baseline).
pub(crate) async fn run(
    duration: Duration,
    bulk_bytes: u64,
    binary: Option<&Path>,
    attacked: bool,
) -> anyhow::Result<Soak> {
    let binary = node_binary(binary)?;
    let (port, metrics_port) = (free_port()?, free_port()?);
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let sender = keypair.public().to_peer_id();
    let node = spawn_node(&binary, port, metrics_port, sender)?;
    let address: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse()?;
    let (good, peer) = good_peer(&address, keypair).await?;
    let pid = node.child.id();
    let attacks = if attacked {
        attacks(&address, peer, port)
    } else {
        Vec::new()
    };
    let started = Instant::now();
    let sampler = tokio::spawn(sample_rss(pid, duration));
    let bulk = tokio::spawn(send_bulk(good.clone(), peer, bulk_bytes));
    let (requests_ok, requests_failed, latencies) = requests(&good, peer, started + duration).await;
    let (bulk_seconds, content) = bulk.await??;
    let rss = sampler.await?;
    // Read while the attacks still run: the gauges show what they hold.
    let gauges = scrape(metrics_port).await.unwrap_or_default();
    let attacked = attacks
        .iter()
        .map(|(name, attack)| (*name, attack.opened()))
        .collect();
    drop(attacks);
    let bulk_intact = intact(&node.dir.join("inbox"), &content, bulk_bytes).await;
    good.shutdown().await;
    drop(node);
    Ok(Soak {
        rss,
        requests_ok,
        requests_failed,
        latencies,
        bulk_bytes,
        bulk_seconds,
        bulk_intact,
        gauges,
        attacked,
    })
}

/// The node's resident memory once a second for `duration`.
async fn sample_rss(pid: u32, duration: Duration) -> Vec<(u64, u64)> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for second in 0..=duration.as_secs() {
        tick.tick().await;
        if let Ok(bytes) = rss(pid) {
            samples.push((second, bytes));
        }
    }
    samples
}

/// Echo requests of 1 KiB, one at a time, until `until`; each answer checked.
async fn requests(good: &NetworkManager, peer: PeerId, until: Instant) -> (usize, usize, Samples) {
    let (mut ok, mut failed) = (0, 0);
    let mut latencies = Samples::with_capacity(100_000);
    let mut n = 0u32;
    while Instant::now() < until {
        n = n.wrapping_add(1);
        let payload: Vec<u8> = n.to_be_bytes().iter().copied().cycle().take(1024).collect();
        let request = Request::App {
            topic: "echo".into(),
            payload: payload.clone(),
        };
        let sent = Instant::now();
        match good.send_request(peer, request).await {
            Ok(Response::App { payload: back }) if back == payload => {
                ok += 1;
                latencies.push(sent.elapsed());
            }
            _ => failed += 1,
        }
    }
    (ok, failed, latencies)
}

/// Sends `size` bytes of generated data; the time it took and its content id.
async fn send_bulk(
    good: NetworkManager,
    peer: PeerId,
    size: u64,
) -> anyhow::Result<(f64, [u8; 32])> {
    let mut hasher = sha2::Sha256::new();
    let mut data = Generated::new(size, SEED);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = data.fill(&mut buf);
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let content: [u8; 32] = hasher.finalize().into();
    let header = BulkHeader {
        content: ContentId(content),
        size,
        topic: "soak".into(),
    };
    let started = Instant::now();
    good.send_bulk(peer, header, &mut Generated::new(size, SEED), |_| {})
        .await
        .context("bulk transfer")?;
    Ok((started.elapsed().as_secs_f64(), content))
}

/// Whether the inbox holds the transfer under its content id, with that digest and size.
async fn intact(inbox: &Path, content: &[u8; 32], size: u64) -> bool {
    let name: String = content.iter().map(|b| format!("{b:02x}")).collect();
    // The node renames the file once its digest checked out: wait for it a little.
    for _ in 0..50 {
        if let Ok(bytes) = std::fs::read(inbox.join(&name)) {
            let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
            return digest == *content && bytes.len() as u64 == size;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The node's gauges and refusal counters, from its metrics endpoint.
async fn scrape(port: u16) -> anyhow::Result<Vec<String>> {
    let address = format!("127.0.0.1:{port}");
    let text = codio_tests::http_get(&address, "/metrics", Duration::from_secs(5)).await?;
    const WANTED: [&str; 12] = [
        "codio_peak_peer_streams ",
        "codio_dht_remote_provider_keys ",
        "codio_inbound_pending ",
        "codio_inbound_shed_total",
        "codio_connections_denied_total",
        "codio_peers_connected ",
        "codio_inbound_sessions ",
        "codio_request_streams ",
        "codio_queued_response_bytes ",
        "codio_identify_dropped_total",
        "codio_dht_refused_providers_total",
        "codio_refused_over_streams_total",
    ];
    Ok(text
        .lines()
        .filter(|line| WANTED.iter().any(|w| line.starts_with(w)))
        .map(str::to_owned)
        .collect())
}

/// Prints the run as a Markdown section.
// The report is the program's output.
#[allow(clippy::print_stdout)]
pub(crate) fn print(soak: &Soak, duration: Duration) {
    let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);
    println!(
        "## Soak: codio-node under every attack for {} s\n",
        duration.as_secs()
    );
    println!("| seconds | node RSS (MiB) |\n|---|---|");
    let step = (soak.rss.len() / 12).max(1);
    for (second, bytes) in soak.rss.iter().step_by(step) {
        println!("| {second} | {:.1} |", mib(*bytes));
    }
    let peak = soak.rss.iter().map(|(_, b)| *b).max().unwrap_or(0);
    println!("\npeak RSS {:.1} MiB", mib(peak));
    println!(
        "good peer: {} echo requests answered, {} failed; p50 {:.0} us, p99 {:.0} us",
        soak.requests_ok,
        soak.requests_failed,
        soak.latencies.quantile(0.5),
        soak.latencies.quantile(0.99)
    );
    println!(
        "good peer's bulk transfer: {:.0} MiB in {:.1} s, {}",
        mib(soak.bulk_bytes),
        soak.bulk_seconds,
        if soak.bulk_intact {
            "arrived intact (SHA-256 checked)"
        } else {
            "NOT intact"
        }
    );
    for (name, count) in &soak.attacked {
        println!("attack: {count} {name}");
    }
    println!("\nnode metrics at the end, attacks still running:\n```");
    for line in &soak.gauges {
        println!("{line}");
    }
    println!("```");
}
