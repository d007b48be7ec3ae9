//! Shared helpers for codio's cross-crate and multi-host tests.
//!
//! Every helper here is bounded in time: waits take a timeout and fail the test with a message
//! naming what was awaited, never hang.

// This crate is test code: a failed expectation is meant to panic and fail the test.
// Skips are reported on stderr, as the test runner shows it.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

use std::{
    future::Future,
    path::PathBuf,
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

pub mod adversary;
pub mod data;
pub mod delay;
pub mod natlab;
pub mod netns;
pub mod process;

use codio_network::{NetworkConfig, NetworkEvent, NetworkManager};
use tokio::sync::broadcast::{self, error::RecvError};

/// Default time a test waits for one expected event.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs a test-friendly tracing subscriber once (`RUST_LOG` filters; default `warn`).
pub fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Shorthands for the layer settings tests change most (the library keeps each setting in
/// its layer's configuration; these only reach into it).
pub trait ConfigExt: Sized {
    /// Sets the Kademlia mode.
    fn with_kad_mode(self, mode: codio_network::discovery::KadMode) -> Self;
    /// Sets the DHT query timeout.
    fn with_query_timeout(self, timeout: Duration) -> Self;
    /// Sets the watermarks and the grace period.
    fn with_watermarks(self, low: usize, high: usize, grace: Duration) -> Self;
    /// Sets the bounds on pending inbound and outbound connections.
    fn with_pending_limits(self, incoming: usize, outgoing: usize) -> Self;
    /// Turns reconnection on or off.
    fn with_reconnect(self, reconnect: bool) -> Self;
    /// Sets the reconnection backoff.
    fn with_backoff(self, backoff: codio_network::policy::BackoffConfig) -> Self;
    /// Sets the ping interval, timeout and the failures that close a connection.
    fn with_liveness(self, interval: Duration, timeout: Duration, failures: u32) -> Self;
}

impl ConfigExt for NetworkConfig {
    fn with_kad_mode(mut self, mode: codio_network::discovery::KadMode) -> Self {
        self.discovery = self.discovery.with_kad_mode(mode);
        self
    }

    fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.discovery = self.discovery.with_query_timeout(timeout);
        self
    }

    fn with_watermarks(mut self, low: usize, high: usize, grace: Duration) -> Self {
        let limits = self.policy.limits().clone();
        *self.policy.limits_mut() = limits.with_watermarks(low, high).with_grace_period(grace);
        self
    }

    fn with_pending_limits(mut self, incoming: usize, outgoing: usize) -> Self {
        let limits = self.policy.limits().clone();
        *self.policy.limits_mut() = limits
            .with_max_pending_incoming(incoming)
            .with_max_pending_outgoing(outgoing);
        self
    }

    fn with_reconnect(mut self, reconnect: bool) -> Self {
        self.policy = self.policy.with_reconnect(reconnect);
        self
    }

    fn with_backoff(mut self, backoff: codio_network::policy::BackoffConfig) -> Self {
        self.policy = self.policy.with_backoff(backoff);
        self
    }

    fn with_liveness(mut self, interval: Duration, timeout: Duration, failures: u32) -> Self {
        self.policy = self.policy.with_liveness(interval, timeout, failures);
        self
    }
}

/// A started node that shuts down when dropped, also when the test fails half-way. Derefs to
/// its [`NetworkManager`]; `clone()` gives a plain handle (which keeps the node running while
/// it lives).
#[derive(Debug)]
pub struct TestNode(NetworkManager);

impl std::ops::Deref for TestNode {
    type Target = NetworkManager;

    fn deref(&self) -> &NetworkManager {
        &self.0
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // Graceful when the runtime lives on; otherwise the runtime's end closes everything.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let node = self.0.clone();
            runtime.spawn(async move { node.shutdown().await });
        }
    }
}

/// Builds a node from `builder`, starts it and wraps it in a [`TestNode`].
pub async fn started(builder: codio_network::NodeBuilder) -> TestNode {
    let node = builder.build().await.expect("create node");
    node.start().await.expect("start node");
    TestNode(node)
}

/// Creates and starts a node after `take` took what it needs from the builder (a queue).
pub async fn started_with<T>(
    config: NetworkConfig,
    take: impl FnOnce(&mut codio_network::NodeBuilder) -> T,
) -> (TestNode, T) {
    let mut builder = NetworkManager::builder(config);
    let taken = take(&mut builder);
    (started(builder).await, taken)
}

/// Creates and starts a node whose inbound requests come out of the returned queue.
pub async fn started_server(
    config: NetworkConfig,
) -> (
    TestNode,
    tokio::sync::mpsc::Receiver<codio_network::protocol::InboundRequest>,
) {
    started_with(config, codio_network::NodeBuilder::request_queue).await
}

/// Creates and starts a node whose inbound bulk transfers come out of the returned queue.
pub async fn started_receiver(
    config: NetworkConfig,
) -> (
    TestNode,
    tokio::sync::mpsc::Receiver<codio_network::protocol::IncomingBulk>,
) {
    started_with(config, codio_network::NodeBuilder::bulk_queue).await
}

/// Creates and starts a node.
pub async fn started_node(config: NetworkConfig) -> TestNode {
    started(NetworkManager::builder(config)).await
}

/// Creates and starts a node for this host only ([`NetworkConfig::loopback`]).
pub async fn loopback_node() -> TestNode {
    started_node(NetworkConfig::loopback()).await
}

/// Connects `from` to `to` (at its first dial address) and returns `to`'s peer id.
///
/// # Panics
///
/// When `to` does not listen or the connection fails.
pub async fn connect(from: &NetworkManager, to: &NetworkManager) -> codio_network::PeerId {
    let address = to.dial_addr().expect("the node dialed listens");
    let peer = from
        .connect_peer(address.clone())
        .await
        .unwrap_or_else(|e| panic!("connecting to {address}: {e}"));
    assert_eq!(peer, to.local_peer_id());
    peer
}

/// Two started nodes, `b` connected to `a`.
#[derive(Debug)]
pub struct Pair {
    /// The node dialed.
    pub a: TestNode,
    /// The node that dialed.
    pub b: TestNode,
}

/// Starts `a` and `b` from their configurations and connects `b` to `a`.
pub async fn pair(a: NetworkConfig, b: NetworkConfig) -> Pair {
    let a = started_node(a).await;
    let b = started_node(b).await;
    connect(&b, &a).await;
    Pair { a, b }
}

/// `n` started nodes joined through the first (every other one has it as bootstrap peer),
/// returned once the first has identified all of them. `config(i)` configures node `i`.
pub async fn network(n: usize, config: impl Fn(usize) -> NetworkConfig) -> Vec<TestNode> {
    let first = started_node(config(0)).await;
    let bootstrap = vec![first.dial_addr().expect("the first node listens")];
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(started_node(config(i).with_bootstrap_peers(bootstrap.clone())).await);
    }
    // A join storm on two cores: generous, and bounded.
    let deadline = Instant::now() + Duration::from_secs(60 + n as u64);
    for node in &nodes[1..] {
        let left = deadline.saturating_duration_since(Instant::now());
        nodes[0]
            .identified(node.local_peer_id(), left)
            .await
            .unwrap_or_else(|e| panic!("node {} did not join: {e}", node.local_peer_id()));
    }
    nodes
}

/// The first QUIC dial address of `node`.
///
/// # Panics
///
/// When `node` does not listen on QUIC.
pub fn quic_dial_addr(node: &NetworkManager) -> codio_network::Multiaddr {
    node.dial_addrs()
        .into_iter()
        .find(codio_transport::addr::is_quic)
        .expect("node listens on QUIC")
}

/// Asserts that `a` and `b` each list the other as connected.
///
/// # Panics
///
/// When either does not.
pub fn assert_connected(a: &NetworkManager, b: &NetworkManager) {
    for (x, y) in [(a, b), (b, a)] {
        assert!(
            x.peer_info(&y.local_peer_id()).is_some(),
            "{} does not list {} as connected: {:?}",
            x.local_peer_id(),
            y.local_peer_id(),
            x.connected_peers()
        );
    }
}

/// Waits up to `timeout` for an event matching `predicate` and returns it.
///
/// # Panics
///
/// When the timeout expires or the channel closes first; the message names `what`.
pub async fn wait_for_event<F>(
    events: &mut broadcast::Receiver<NetworkEvent>,
    timeout: Duration,
    what: &str,
    mut predicate: F,
) -> NetworkEvent
where
    F: FnMut(&NetworkEvent) -> bool,
{
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, events.recv()).await {
            Ok(Ok(event)) if predicate(&event) => return event,
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(n))) => {
                panic!("event subscriber lagged by {n} while waiting for {what}")
            }
            Ok(Err(RecvError::Closed)) => panic!("event channel closed while waiting for {what}"),
            Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout` expires; returns whether it held.
/// For state that has no event of its own (process output, files).
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Path of the `codio-node` binary of this workspace, built on first use with the same
/// profile as the running test (cargo does not build other packages' binaries for tests).
/// It is built as part of the workspace's binaries and examples: that selection turns on the
/// same dependency features as `cargo test --workspace` (dev-dependencies included), so the
/// build reuses the test build's libp2p instead of compiling it again for codio-node's own
/// feature set (minutes of a fresh CI run); CI runs the other binaries and examples built.
pub fn node_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // The test executable lives in <target>/<profile>/deps/.
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test binary in <target>/<profile>/deps")
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut command = Command::new(cargo);
        command
            .args(["build", "--quiet", "--workspace", "--bins", "--examples"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // Cargo sets these for this test; ring's build script tracks them, and values the
        // top-level build did not have would rebuild ring (and libp2p on top) each time.
        for (key, _) in std::env::vars_os() {
            let per_crate = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ];
            let key_str = key.to_string_lossy();
            if per_crate.iter().any(|prefix| key_str.starts_with(prefix))
                || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"].contains(&&*key_str)
            {
                command.env_remove(&key);
            }
        }
        if release {
            command.arg("--release");
        }
        let status = command.status().expect("run cargo build");
        assert!(status.success(), "building codio-node failed: {status}");
        let path = profile_dir.join("codio-node");
        assert!(path.exists(), "{} missing after build", path.display());
        path
    })
    .clone()
}

/// `GET path` over HTTP/1.1 from `address` (`host:port`): the whole response, head and body,
/// read until the server closes, within `timeout`.
pub async fn http_get(address: &str, path: &str, timeout: Duration) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut socket = tokio::net::TcpStream::connect(address).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        socket.read_to_string(&mut response).await?;
        Ok(response)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// A directory removed when dropped, also when the test fails.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory named after `name` and this process.
    ///
    /// # Panics
    ///
    /// When it cannot be created.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("codio-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        Self(dir)
    }

    /// `name` inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// `name` inside it, as a command-line argument.
    ///
    /// # Panics
    ///
    /// When the path is not UTF-8.
    pub fn arg(&self, name: &str) -> String {
        self.path(name).to_str().expect("UTF-8 path").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
