//! Memory per idle connection: a server in a child process (so that only its memory is
//! counted) accepts connections from distinct clients in this process; the child's resident
//! set is read from `/proc` before and after.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{Kind, codio, stock};

/// Kills the child server when dropped, also on errors.
#[derive(Debug)]
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resident set size of `pid` in bytes.
pub(crate) fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?;
    Ok(kib * 1024)
}

/// Waits until the resident set stops growing (two readings 250 ms apart within 0.5 %), at
/// most 15 s; returns the last reading.
async fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = rss(pid)?;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss(pid)?;
        if now.abs_diff(last) * 200 <= last || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// The prefix of the child's address line.
const ADDRESS: &str = "listening: ";

/// Runs in the child: serve `kind` connections until stdin closes.
pub(crate) async fn serve(kind: Kind) -> anyhow::Result<()> {
    let mut keep = Vec::new();
    let addr = match kind {
        Kind::Raw => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?.to_string();
            tokio::spawn(async move {
                let mut sockets = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    let _ = socket.set_nodelay(true);
                    sockets.push(socket);
                }
            });
            addr
        }
        Kind::PipeAes | Kind::PipeChacha => anyhow::bail!("a pipe holds no idle connections"),
        Kind::Stock | Kind::StockTls | Kind::StockQuic => {
            let node = stock::Node::start(kind.stock_security()).await?;
            let addr = node.dial_addr().to_string();
            keep.push(Box::new(node) as Box<dyn std::any::Any + Send>);
            addr
        }
        Kind::Codio | Kind::CodioQuic => {
            let node = codio::node(
                codio::config(kind.codio_transport())
                    .with_max_peers(4096)
                    .with_policy(
                        codio_network::policy::PolicyConfig::default().with_limits(
                            codio_network::policy::LimitsConfig::new(4096)
                                .with_max_pending_incoming(256)
                                .with_max_pending_outgoing(256),
                        ),
                    ),
            )
            .await?;
            let addr = codio::dial_addr(&node)?.to_string();
            keep.push(Box::new(node));
            addr
        }
    };
    #[allow(clippy::print_stdout)] // The child's one line of protocol with its parent.
    {
        println!("{ADDRESS}{addr}");
    }
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin()
            .read_line(&mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            line.clear();
        }
    })
    .await?;
    drop(keep);
    Ok(())
}

/// Opens `warmup` and then `count` more idle connections to a `kind` server in a child
/// process; returns the server's resident bytes per connection over the last `count`.
pub(crate) async fn per_idle_connection(
    kind: Kind,
    warmup: usize,
    count: usize,
) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    // Profiling: `CODIO_BENCH_IDLE_WRAPPER="heaptrack -o /tmp/idle"` runs the server under
    // that command (its RSS figure then means nothing; the profile does).
    let wrapper = std::env::var("CODIO_BENCH_IDLE_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    let mut child = ServerProcess(
        command
            .args(["idle-server", kind.name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let stdout = child.0.stdout.take().context("child stdout")?;
    let addr = tokio::task::spawn_blocking(move || {
        // The address line; a profiler wrapping the child may print lines of its own first.
        let mut lines = BufReader::new(stdout).lines();
        lines
            .find_map(|line| Some(line.ok()?.strip_prefix(ADDRESS)?.to_owned()))
            .unwrap_or_default()
    })
    .await?;
    let addr = addr.trim().to_string();
    anyhow::ensure!(!addr.is_empty(), "idle server did not start");
    let pid = child.0.id();
    let mut clients = Clients::default();
    clients.open(kind, &addr, warmup).await?;
    let before = settled_rss(pid).await?;
    clients.open(kind, &addr, count).await?;
    let after = settled_rss(pid).await?;
    tracing::info!(kind = kind.name(), before, after, count, "idle connections");
    drop(clients);
    Ok(after.saturating_sub(before) as f64 / count as f64)
}

/// The client ends, held open until dropped.
#[derive(Default)]
struct Clients {
    raw: Vec<tokio::net::TcpStream>,
    stock: Vec<stock::Node>,
    codio: Vec<codio_network::NetworkManager>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

/// Clients connect this many at a time.
const BATCH: usize = 32;

impl Clients {
    async fn open(&mut self, kind: Kind, addr: &str, count: usize) -> anyhow::Result<()> {
        let mut left = count;
        while left > 0 {
            let batch = left.min(BATCH);
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..batch {
                let addr = addr.to_string();
                tasks.spawn(async move {
                    anyhow::Ok(match kind {
                        Kind::Raw => {
                            let socket = tokio::net::TcpStream::connect(&addr).await?;
                            socket.set_nodelay(true)?;
                            Opened::Raw(socket)
                        }
                        Kind::PipeAes | Kind::PipeChacha => {
                            anyhow::bail!("a pipe holds no idle connections")
                        }
                        Kind::Stock | Kind::StockTls | Kind::StockQuic => {
                            let node = stock::Node::client(kind.stock_security()).await?;
                            node.dial(addr.parse()?).await?;
                            Opened::Stock(node)
                        }
                        Kind::Codio | Kind::CodioQuic => {
                            // Dialing only: no listener per client.
                            let config = codio::config(kind.codio_transport());
                            let node = codio_network::NetworkManager::new(config).await?;
                            node.connect_peer(addr.parse()?).await?;
                            Opened::Codio(node)
                        }
                    })
                });
            }
            while let Some(opened) = tasks.join_next().await {
                match opened?? {
                    Opened::Raw(s) => self.raw.push(s),
                    Opened::Stock(n) => self.stock.push(n),
                    Opened::Codio(n) => self.codio.push(n),
                }
            }
            left -= batch;
        }
        Ok(())
    }
}

enum Opened {
    Raw(tokio::net::TcpStream),
    Stock(stock::Node),
    Codio(codio_network::NetworkManager),
}
