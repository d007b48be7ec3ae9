//! `codio-bench`: raw TCP, an encrypted pipe (the ceiling), stock rust-libp2p (Noise and TLS)
//! and codio measured side by side on loopback, in one run.
//!
//! ```text
//! cargo run --release -p codio-bench                  # full run (~3 minutes), table on stdout
//! cargo run --release -p codio-bench -- --json r.json # also write the JSON report
//! cargo run -p codio-bench -- --smoke                 # tiny sizes: checks that it all works
//! cargo run --release -p codio-bench -- --check docs/bench-baseline.json  # what got worse
//! ```
//!
//! Every figure is from the same process and machine state: bulk throughput and CPU-seconds
//! per GiB (1 and 4 streams), small request latency and rate (1 and 64 in flight), connection
//! set-up, memory per idle connection (server in a child process), a 100-node Kademlia
//! network, and WAN rows (`wan.rs`, root only: bulk and a new peer's first answer over a
//! 50 ms, 1 Gbit/s path between two network namespaces, and bulk with 0.5 % loss). The ceiling of an encrypted stream is measured as a stack of its own: raw TCP
//! carrying 64 KiB records sealed with ring's AES-128-GCM (and ChaCha20-Poly1305) on the
//! sending task and opened on the receiving one; bulk rows show codio/ceiling beside
//! codio/stock.

mod check;
mod cipher;
mod codio;
mod drive;
mod memory;
mod pipe;
mod raw;
mod report;
mod scale;
mod soak;
mod stats;
mod stock;
mod wan;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    report::{Report, Row},
    stats::median,
};

/// Which stack a measurement runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Kind {
    /// Plain TCP sockets.
    Raw,
    /// The ceiling: raw TCP with AES-128-GCM records (bulk only).
    PipeAes,
    /// Raw TCP with ChaCha20-Poly1305 records (bulk only).
    PipeChacha,
    /// rust-libp2p with its default TCP + Noise + Yamux.
    Stock,
    /// rust-libp2p with TCP + TLS 1.3 + Yamux.
    StockTls,
    /// codio-network over TCP.
    Codio,
    /// rust-libp2p with QUIC alone.
    StockQuic,
    /// codio-network over QUIC.
    CodioQuic,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::PipeAes => "pipe-aes",
            Kind::PipeChacha => "pipe-chacha",
            Kind::Stock => "stock",
            Kind::StockTls => "stock-tls",
            Kind::Codio => "codio",
            Kind::StockQuic => "stock-quic",
            Kind::CodioQuic => "codio-quic",
        }
    }

    /// The transport of a codio stack (TCP for the others: not used).
    pub(crate) fn codio_transport(self) -> codio::Transport {
        match self {
            Kind::CodioQuic => codio::Transport::Quic,
            _ => codio::Transport::Tcp,
        }
    }

    /// The security protocol of a stock stack (Noise for the others: not used).
    pub(crate) fn stock_security(self) -> stock::Security {
        match self {
            Kind::StockTls => stock::Security::Tls,
            Kind::StockQuic => stock::Security::Quic,
            _ => stock::Security::Noise,
        }
    }

    /// Whether `part` is measured on this stack (a pipe only moves bulk data).
    fn measures(self, part: Part) -> bool {
        !matches!(self, Kind::PipeAes | Kind::PipeChacha) || part == Part::Bulk
    }
}

/// Which measurements to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Bulk,
    Requests,
    Setup,
    Memory,
    Kad,
    /// Bulk and first answers over a path with a 50 ms round trip (needs root).
    Wan,
}

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Side-by-side benchmarks: raw TCP, stock libp2p, codio"
)]
struct Args {
    /// Tiny sizes: checks that every measurement works (CI), figures mean nothing.
    #[arg(long)]
    smoke: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Run only these parts (comma separated); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<Part>,
    /// Measure only these stacks (comma separated); all by default.
    #[arg(long, value_delimiter = ',')]
    stacks: Vec<Kind>,
    /// Compare the run's ratios with this baseline report and list what got worse by more
    /// than the noise (exit status 1 when anything did); docs/performance.md explains it.
    #[arg(long)]
    check: Option<std::path::PathBuf>,
    /// With `--check`: take the run's figures from this JSON report instead of running.
    #[arg(long, requires = "check")]
    from: Option<std::path::PathBuf>,
    /// Idle connections of the memory measurement (default: 1,000; 20 with `--smoke`).
    #[arg(long)]
    idle_connections: Option<usize>,
    /// Repetitions of each bulk measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Experiment: codio's Yamux frame size in bytes (default: the transport's default).
    #[arg(long)]
    yamux_frame_size: Option<usize>,
    /// The security protocols codio offers, in order (`tls`, `noise`; default: codio's own,
    /// TLS then Noise), to compare them.
    #[arg(long, value_delimiter = ',')]
    codio_security: Vec<SecurityArg>,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Internal: the child server of the memory measurement.
    #[command(hide = true)]
    IdleServer {
        /// The stack to serve.
        kind: Kind,
    },
    /// A `codio-node` process under every attack of the adversary harness at once, while a
    /// good peer sends echo requests and one bulk transfer: the node's memory over time, the
    /// good peer's latency, the transfer's checksum.
    Soak {
        /// How long the attacks and the good peer's requests run.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Size of the good peer's bulk transfer, in MiB.
        #[arg(long, default_value_t = 256)]
        bulk_mib: u64,
        /// The `codio-node` binary (default: next to this one).
        #[arg(long)]
        node: Option<std::path::PathBuf>,
        /// The same run without the attacks: the baseline.
        #[arg(long)]
        without_attacks: bool,
    },
    /// A network of many nodes in one process (memory transport, codio's stack above it):
    /// join through bootstrap nodes, then churn while every node runs DHT lookups and
    /// provider lookups and one node publishes to a topic all subscribe to.
    Scale {
        /// Nodes at the start.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Percent of the nodes that leave during the churn phase (as many join).
        #[arg(long, default_value_t = 20)]
        churn: usize,
        /// Length of the churn phase, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Nodes started per second while joining.
        #[arg(long, default_value_t = 25)]
        join_rate: usize,
        /// Every non-bootstrap node's connection cap (the policy's `max_established`).
        #[arg(long, default_value_t = 50)]
        max_peers: usize,
        /// Seconds a connection with no stream open stays (the facade's default: 30).
        #[arg(long, default_value_t = 30)]
        idle_secs: u64,
        /// Refuse newcomers at a node's ceiling instead of letting them displace an older
        /// connection the node does not keep alive (the policy's default).
        #[arg(long)]
        refuse_at_cap: bool,
        /// Seed of the run's random choices.
        #[arg(long, default_value_t = 17)]
        seed: u64,
    },
}

/// The sizes of a run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    bulk_single: u64,
    bulk_each_of_4: u64,
    requests_sequential: usize,
    requests_parallel: usize,
    request_size: usize,
    setups: usize,
    idle_warmup: usize,
    idle_connections: usize,
    kad_nodes: usize,
    cipher_time: Duration,
    wan_bulk: u64,
    wan_lossy_bulk: u64,
    wan_tries: usize,
}

impl Sizes {
    fn full() -> Self {
        Self {
            bulk_single: 1 << 30,
            bulk_each_of_4: 256 << 20,
            requests_sequential: 20_000,
            requests_parallel: 100_000,
            request_size: 64,
            setups: 300,
            idle_warmup: 24,
            idle_connections: 1000,
            kad_nodes: 100,
            cipher_time: Duration::from_secs(1),
            wan_bulk: 256 << 20,
            wan_lossy_bulk: 16 << 20,
            wan_tries: 5,
        }
    }

    fn smoke() -> Self {
        Self {
            bulk_single: 4 << 20,
            bulk_each_of_4: 1 << 20,
            requests_sequential: 200,
            requests_parallel: 2_000,
            request_size: 64,
            setups: 10,
            idle_warmup: 2,
            idle_connections: 20,
            kad_nodes: 10,
            cipher_time: Duration::from_millis(50),
            wan_bulk: 2 << 20,
            wan_lossy_bulk: 256 << 10,
            wan_tries: 1,
        }
    }
}

/// Every stack, in the report's column order.
const KINDS: [Kind; 8] = [
    Kind::Raw,
    Kind::PipeAes,
    Kind::PipeChacha,
    Kind::Stock,
    Kind::StockTls,
    Kind::Codio,
    Kind::StockQuic,
    Kind::CodioQuic,
];
/// Column indices of the stacks targets compare.
const AES_PIPE: usize = 1;
const STOCK: usize = 3;
const CODIO: usize = 5;
const STOCK_QUIC: usize = 6;
const CODIO_QUIC: usize = 7;

/// A security protocol named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SecurityArg {
    Tls,
    Noise,
}

impl SecurityArg {
    fn protocol(self) -> codio_transport::SecurityProtocol {
        match self {
            SecurityArg::Tls => codio_transport::SecurityProtocol::Tls,
            SecurityArg::Noise => codio_transport::SecurityProtocol::Noise,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(
                |_| // kad warns of "no known peers" at every lone node's start.
                tracing_subscriber::EnvFilter::new("warn,libp2p_kad=error"),
            ),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if !args.codio_security.is_empty() {
        let order = args.codio_security.iter().map(|s| s.protocol()).collect();
        let _ = codio::SECURITY.set(order);
    }
    if let Some(size) = args.yamux_frame_size {
        let _ = codio::YAMUX_FRAME_SIZE.set(size);
    }
    match args.command {
        Some(Sub::IdleServer { kind }) => return runtime.block_on(memory::serve(kind)),
        Some(Sub::Soak {
            seconds,
            bulk_mib,
            ref node,
            without_attacks,
        }) => {
            let duration = Duration::from_secs(seconds);
            let run = soak::run(duration, bulk_mib << 20, node.as_deref(), !without_attacks);
            let result = runtime.block_on(run)?;
            soak::print(&result, duration);
            anyhow::ensure!(
                result.requests_ok > 0 && result.bulk_intact,
                "the good peer was not served"
            );
            return Ok(());
        }
        Some(Sub::Scale {
            nodes,
            churn,
            seconds,
            join_rate,
            max_peers,
            idle_secs,
            refuse_at_cap,
            seed,
        }) => {
            let plan = if args.smoke {
                scale::Plan::smoke()
            } else {
                scale::Plan {
                    churn_percent: churn,
                    seconds,
                    join_rate,
                    max_peers,
                    idle_secs,
                    evict: !refuse_at_cap,
                    ..scale::Plan::full(nodes)
                }
            };
            let report = runtime.block_on(scale::run(plan, seed))?;
            scale::print(&report);
            if let Some(path) = &args.json {
                std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
            }
            anyhow::ensure!(report.joined > 0, "no node joined");
            return Ok(());
        }
        None => {}
    }
    if let (Some(baseline), Some(from)) = (&args.check, &args.from) {
        let outcome = check::compare(&check::read(baseline)?, &check::read(from)?)?;
        return check::report(&outcome, baseline);
    }
    let mut sizes = if args.smoke {
        Sizes::smoke()
    } else {
        Sizes::full()
    };
    if let Some(count) = args.idle_connections {
        sizes.idle_connections = count;
    }
    let report = runtime.block_on(run(&args, sizes))?;
    report.print_table();
    let json = serde_json::to_value(&report)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    if let Some(baseline) = &args.check {
        let outcome = check::compare(&check::read(baseline)?, &json)?;
        return check::report(&outcome, baseline);
    }
    Ok(())
}

/// The stacks to measure for `part`, with their column index.
fn stacks(args: &Args, part: Part) -> impl Iterator<Item = (usize, Kind)> + '_ {
    KINDS.into_iter().enumerate().filter(move |(_, kind)| {
        kind.measures(part) && (args.stacks.is_empty() || args.stacks.contains(kind))
    })
}

fn wants(args: &Args, part: Part) -> bool {
    args.only.is_empty() || args.only.contains(&part)
}

async fn bulk(kind: Kind, streams: usize, bytes_each: u64) -> anyhow::Result<stats::BulkRun> {
    match kind {
        Kind::Raw => raw::bulk(streams, bytes_each).await,
        Kind::PipeAes => pipe::bulk(pipe::Cipher::Aes128Gcm, streams, bytes_each).await,
        Kind::PipeChacha => pipe::bulk(pipe::Cipher::ChaCha20Poly1305, streams, bytes_each).await,
        Kind::Stock | Kind::StockTls | Kind::StockQuic => {
            stock::bulk(kind.stock_security(), streams, bytes_each).await
        }
        Kind::Codio | Kind::CodioQuic => {
            codio::bulk(kind.codio_transport(), streams, bytes_each).await
        }
    }
}

async fn requests(
    kind: Kind,
    count: usize,
    in_flight: usize,
    size: usize,
) -> anyhow::Result<drive::RequestRun> {
    match kind {
        Kind::Raw => raw::requests(count, in_flight, size).await,
        Kind::PipeAes | Kind::PipeChacha => anyhow::bail!("a pipe answers no requests"),
        Kind::Stock | Kind::StockTls | Kind::StockQuic => {
            stock::requests(kind.stock_security(), count, in_flight, size).await
        }
        Kind::Codio | Kind::CodioQuic => {
            codio::requests(kind.codio_transport(), count, in_flight, size).await
        }
    }
}

async fn setup(kind: Kind, count: usize) -> anyhow::Result<stats::Samples> {
    match kind {
        Kind::Raw => raw::setup(count).await,
        Kind::PipeAes | Kind::PipeChacha => anyhow::bail!("a pipe has no set-up"),
        Kind::Stock | Kind::StockTls | Kind::StockQuic => {
            stock::setup(kind.stock_security(), count).await
        }
        Kind::Codio | Kind::CodioQuic => codio::setup(kind.codio_transport(), count).await,
    }
}

/// One value per stack, in [`KINDS`] order.
type PerKind = [f64; KINDS.len()];
const NONE: PerKind = [f64::NAN; KINDS.len()];

// Progress, one line per measurement, goes to stderr: the table on stdout stays clean.
#[allow(clippy::print_stderr)]
async fn run(args: &Args, sizes: Sizes) -> anyhow::Result<Report> {
    let mut report = Report::new(args.smoke);
    let mib = |bytes_per_s: f64| bytes_per_s / f64::from(1u32 << 20);

    if wants(args, Part::Bulk) {
        let cipher = cipher::seal_rate(sizes.cipher_time)?;
        report.cipher_mib_s = mib(cipher);
        eprintln!("cipher: {:.0} MiB/s", mib(cipher));
        for (streams, each) in [(1, sizes.bulk_single), (4, sizes.bulk_each_of_4)] {
            let (mut rate, mut cpu) = (NONE, NONE);
            for (i, kind) in stacks(args, Part::Bulk) {
                let mut runs = Vec::with_capacity(args.repeat);
                for _ in 0..args.repeat.max(1) {
                    runs.push(bulk(kind, streams, each).await?);
                }
                rate[i] = mib(median(runs.iter().map(|r| r.bytes_per_s).collect()));
                cpu[i] = median(runs.iter().map(|r| r.cpu_s_per_gib).collect());
                eprintln!(
                    "bulk {streams} stream(s) {}: {:.0} MiB/s, {:.2} CPU-s/GiB",
                    kind.name(),
                    rate[i],
                    cpu[i]
                );
            }
            report.rows.extend(bulk_rows(streams, rate, cpu));
        }
    }

    if wants(args, Part::Requests) {
        for (count, in_flight) in [
            (sizes.requests_sequential, 1),
            (sizes.requests_parallel, 64),
        ] {
            let mut p50: PerKind = NONE;
            let mut p99: PerKind = NONE;
            let mut rate: PerKind = NONE;
            for (i, kind) in stacks(args, Part::Requests) {
                let run = requests(kind, count, in_flight, sizes.request_size).await?;
                p50[i] = run.latencies.quantile(0.5);
                p99[i] = run.latencies.quantile(0.99);
                rate[i] = run.per_second();
                eprintln!(
                    "requests x{in_flight} {}: p50 {:.0} us, p99 {:.0} us, {:.0}/s",
                    kind.name(),
                    p50[i],
                    p99[i],
                    rate[i]
                );
            }
            let label = |what: &str| {
                format!(
                    "{} B request, {in_flight} in flight: {what}",
                    sizes.request_size
                )
            };
            let mut p50_row = Row::lower("requests", label("p50"), "us", p50);
            if in_flight == 1 {
                p50_row = p50_row.target("<= 100".into(), p50[CODIO] <= 100.0);
            }
            report.rows.push(p50_row);
            report
                .rows
                .push(Row::lower("requests", label("p99"), "us", p99));
            let mut rate_row = Row::higher("requests", label("rate"), "req/s", rate);
            // The ratios to stock measured before issue 15, to be kept.
            let ratio = if in_flight == 1 { 2.3 } else { 8.9 };
            let kept = rate[CODIO] >= ratio * rate[STOCK];
            rate_row = match in_flight {
                1 => rate_row.target(format!(">= {ratio}x stock"), kept),
                _ => rate_row.target(
                    format!(">= 50000 and >= {ratio}x stock"),
                    kept && rate[CODIO] >= 50_000.0,
                ),
            };
            report.rows.push(rate_row);
        }
    }

    if wants(args, Part::Setup) {
        let mut p50: PerKind = NONE;
        let mut p99: PerKind = NONE;
        for (i, kind) in stacks(args, Part::Setup) {
            let samples = setup(kind, sizes.setups).await?;
            p50[i] = samples.quantile(0.5);
            p99[i] = samples.quantile(0.99);
            eprintln!(
                "setup {}: p50 {:.0} us p99 {:.0} us",
                kind.name(),
                p50[i],
                p99[i]
            );
        }
        report.rows.push(
            Row::lower("connections", "set-up p50".into(), "us", p50)
                .target("<= stock".into(), p50[CODIO] <= p50[STOCK]),
        );
        report
            .rows
            .push(Row::lower("connections", "set-up p99".into(), "us", p99));
    }

    if wants(args, Part::Memory) {
        let mut per_conn: PerKind = NONE;
        for (i, kind) in stacks(args, Part::Memory) {
            per_conn[i] =
                memory::per_idle_connection(kind, sizes.idle_warmup, sizes.idle_connections)
                    .await?
                    / 1024.0;
            eprintln!(
                "memory {}: {:.1} KiB per idle connection",
                kind.name(),
                per_conn[i]
            );
        }
        report.rows.push(
            Row::lower(
                "memory",
                format!(
                    "server RSS per idle connection ({})",
                    sizes.idle_connections
                ),
                "KiB",
                per_conn,
            )
            .target(
                "<= 0.75x stock; QUIC <= stock QUIC".into(),
                per_conn[CODIO] <= 0.75 * per_conn[STOCK]
                    && per_conn[CODIO_QUIC] <= per_conn[STOCK_QUIC],
            ),
        );
    }

    if wants(args, Part::Wan) {
        match wan_rows(args, sizes).await {
            Ok(rows) => report.rows.extend(rows),
            Err(error) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                return Err(error.context("WAN rows under CI=true"));
            }
            Err(error) => eprintln!("wan: SKIPPED ({error:#})"),
        }
    }

    if wants(args, Part::Kad) {
        let kad = codio::kad(sizes.kad_nodes).await?;
        let only_codio = |v: f64| {
            let mut values = NONE;
            values[CODIO] = v;
            values
        };
        let nodes = sizes.kad_nodes;
        report.rows.push(Row::lower(
            "kademlia",
            format!("{nodes} nodes joined"),
            "ms",
            only_codio(kad.joined.as_secs_f64() * 1e3),
        ));
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            report.rows.push(Row::lower(
                "kademlia",
                format!("lookup {name} ({nodes} nodes)"),
                "ms",
                only_codio(kad.lookups.quantile(q) / 1e3),
            ));
        }
        report.rows.push(Row::lower(
            "kademlia",
            "RPCs per lookup p50".into(),
            "count",
            only_codio(kad.rpcs.quantile(0.5)),
        ));
    }
    Ok(report)
}

/// The stacks measured on a path, with their column (raw UDP rides in the raw column of a
/// row of its own).
fn wan_stacks(args: &Args) -> Vec<(usize, wan::Stack)> {
    let all = [
        (0, wan::Stack::RawTcp),
        (STOCK, wan::Stack::Stock),
        (CODIO, wan::Stack::Codio),
        (STOCK_QUIC, wan::Stack::StockQuic),
        (CODIO_QUIC, wan::Stack::CodioQuic),
    ];
    all.into_iter()
        .filter(|(_, stack)| args.stacks.is_empty() || args.stacks.contains(&stack.kind()))
        .collect()
}

/// The WAN rows: a clean path (50 ms round trip, 1 Gbit/s each way) and the same path with
/// 0.5 % of the packets dropped in each direction. An error means the path could not be
/// built (not root, no `tc`) or a stack failed on it.
// Progress goes to stderr, as in `run`.
#[allow(clippy::print_stderr)]
async fn wan_rows(args: &Args, sizes: Sizes) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let stacks = wan_stacks(args);
    let clean = wan::Shape {
        one_way: Duration::from_millis(25),
        loss: 0.0,
        mbit: 1000,
    };
    let rtt_ms = 2 * clean.one_way.as_millis();
    {
        let path = wan::Path::open(clean)?;
        let rtt = wan::round_trip(&path, 5).await?;
        eprintln!("wan: round trip {:.1} ms", rtt.as_secs_f64() * 1e3);
        let (mut rate, mut first) = (NONE, NONE);
        for &(i, stack) in &stacks {
            let before = path.kernel_counts()?;
            let bytes_per_s = wan::bulk(&path, stack, sizes.wan_bulk).await?;
            let kernel = path.kernel_counts()? - before;
            rate[i] = bytes_per_s / f64::from(1u32 << 20);
            let answer = wan::first_answer(&path, stack, sizes.wan_tries).await?;
            first[i] = answer.as_secs_f64() / rtt.as_secs_f64();
            eprintln!(
                "wan {}: {:.0} MiB/s ({} TCP retransmits, {} UDP buffer drops), first answer \
                 {:.1} ms ({:.2} RTT)",
                stack.name(),
                rate[i],
                kernel.tcp_retransmits,
                kernel.udp_buffer_drops,
                answer.as_secs_f64() * 1e3,
                first[i]
            );
        }
        let mut ceiling = NONE;
        if stacks.iter().any(|(_, s)| *s == wan::Stack::RawTcp) {
            let udp = wan::bulk(&path, wan::Stack::RawUdp, sizes.wan_bulk).await?;
            ceiling[0] = udp / f64::from(1u32 << 20);
            eprintln!("wan raw-udp: {:.0} MiB/s arrived", ceiling[0]);
        }
        let (forwarded, _, overflowed) = wan::relay_counts(&path);
        eprintln!("wan relay: {forwarded} packets forwarded, {overflowed} dropped when full");
        let mut measured = NONE;
        measured[0] = rtt.as_secs_f64() * 1e3;
        let label = format!("{rtt_ms} ms RTT, {} Mbit/s", clean.mbit);
        rows.push(
            Row::higher("wan", format!("bulk 1 stream, {label}"), "MiB/s", rate)
                .target(">= 0.9x raw TCP".into(), rate[CODIO] >= 0.9 * rate[0]),
        );
        rows.push(Row::higher(
            "wan",
            format!("raw UDP through the path (its ceiling), {label}"),
            "MiB/s",
            ceiling,
        ));
        rows.push(Row::lower(
            "wan",
            "round trip measured (TCP connect)".into(),
            "ms",
            measured,
        ));
        rows.push(Row::lower(
            "wan",
            format!("new peer: dial to first answer, {label}"),
            "RTT",
            first,
        ));
    }
    let lossy = wan::Shape {
        loss: 0.005,
        ..clean
    };
    let path = wan::Path::open(lossy)?;
    let mut rate = NONE;
    for &(i, stack) in &stacks {
        let before = path.kernel_counts()?;
        let bytes_per_s = wan::bulk(&path, stack, sizes.wan_lossy_bulk).await?;
        let kernel = path.kernel_counts()? - before;
        rate[i] = bytes_per_s / f64::from(1u32 << 20);
        eprintln!(
            "wan lossy {}: {:.1} MiB/s ({} TCP retransmits, {} UDP buffer drops)",
            stack.name(),
            rate[i],
            kernel.tcp_retransmits,
            kernel.udp_buffer_drops
        );
    }
    let (forwarded, lost, overflowed) = wan::relay_counts(&path);
    eprintln!(
        "wan lossy relay: {forwarded} forwarded, {lost} dropped at random, {overflowed} when full"
    );
    rows.push(Row::higher(
        "wan-lossy",
        format!(
            "bulk 1 stream, {rtt_ms} ms RTT, {} Mbit/s, 0.5 % loss",
            clean.mbit
        ),
        "MiB/s",
        rate,
    ));
    Ok(rows)
}

/// The rows of one bulk measurement: throughput (with its targets) and CPU per GiB.
fn bulk_rows(streams: usize, rate: PerKind, cpu: PerKind) -> [Row; 2] {
    let label = |what: &str| {
        format!(
            "{streams} stream{} {what}",
            if streams == 1 { "" } else { "s" }
        )
    };
    let twice_stock = 2.0 * rate[STOCK];
    let (target, met) = if streams == 1 {
        let pipe_share = 0.6 * rate[AES_PIPE];
        (
            format!(">= {twice_stock:.0} (2x stock) and >= {pipe_share:.0} (0.6x AES pipe)"),
            rate[CODIO] >= twice_stock && rate[CODIO] >= pipe_share,
        )
    } else {
        (
            format!(">= {twice_stock:.0} (2x stock)"),
            rate[CODIO] >= twice_stock,
        )
    };
    [
        Row::higher("bulk", label("throughput"), "MiB/s", rate).target(target, met),
        Row::lower("bulk", label("CPU per GiB"), "CPU-s", cpu),
    ]
}
