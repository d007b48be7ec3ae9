//! `codio-node`: runs a codio network node until Ctrl-C or SIGTERM.
//!
//! ```text
//! codio-node --listen-port 4001 --data-dir /var/lib/codio
//! codio-node --config /etc/codio/node.toml --json
//! codio-node config example > node.toml
//! codio-node send --to /ip4/10.0.0.1/tcp/4001/p2p/<peer id> ./file.bin
//! codio-node --subscribe cdn/announce --json
//! codio-node publish --topic cdn/announce --dial /ip4/10.0.0.1/tcp/4001/p2p/<peer id> 'new: /v/1'
//! ```
//!
//! Configuration: defaults < TOML file (`--config`) < `CODIO_*` environment variables < flags
//! (`docs/operations.md`). Logs go to stderr through `tracing` (filter with `RUST_LOG`,
//! default `info`); `--json` adds one JSON event per line on stdout.

mod config;
mod fdlimit;
mod files;
mod http;
mod identity;
mod inbox;
mod logs;
mod output;
mod peerbook;
mod pubsub;
mod transfer;

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use codio_base::addr::peer_id_of;
use codio_network::{
    Multiaddr, NetworkManager, PeerId, metrics::Registry, protocol::ErrorCode,
    protocol::IncomingBulk, protocol::Request, protocol::Response,
};
use serde_json::json;
use tokio::sync::{broadcast::error::RecvError, mpsc};

use crate::{
    config::{NodeConfig, Overrides, Validated},
    output::Output,
    peerbook::PeerBook,
};

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(name = "codio-node", version, about = "Run a codio network node")]
struct Cli {
    /// TOML configuration file (see `codio-node config example`).
    #[arg(long, env = "CODIO_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print this node's peer id (its identity in --data-dir, created if missing): what other
    /// nodes put in --allow-peer and --inbox-allow.
    Id,
    /// Private network keys.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Send a file to a peer over /codio/bulk/1.0.0 (its inbox stores it), then exit.
    Send {
        /// The receiver's address, ending in /p2p/PEER_ID.
        #[arg(long, value_name = "ADDR")]
        to: Multiaddr,
        /// Accept whichever peer answers at an address without /p2p/PEER_ID.
        #[arg(long)]
        any_peer: bool,
        /// The file.
        file: PathBuf,
    },
    /// Publish one message to a pub/sub topic, then exit: connects to the --dial, --bootstrap
    /// and peer-book peers, waits (at most --wait-ms) until one of them subscribes to the topic.
    Publish {
        /// The topic.
        #[arg(long)]
        topic: String,
        /// How long to wait for a subscribed peer, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        wait_ms: u64,
        /// The message: a file's content if MESSAGE names a file, else the text itself.
        message: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// Write a fresh swarm key (kubo's format, mode 0600) to FILE, which must not exist; give
    /// it to every node of the private swarm with --swarm-key.
    Generate {
        /// Where to write it.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print a documented configuration file with every default.
    Example,
    /// Validate the configuration (file, environment, flags) and print the result.
    Check,
}

/// How often the peer book is written while it changes.
const PEER_BOOK_SAVE_INTERVAL: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    logs::init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code for an invalid configuration (as for bad command-line usage).
const INVALID_CONFIG: u8 = 2;

#[allow(clippy::print_stdout, clippy::print_stderr)] // `config` output and config errors.
async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(Command::Config {
        action: ConfigAction::Example,
    }) = cli.command
    {
        print!("{}", config::EXAMPLE);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Command::Key {
        action: KeyAction::Generate { file },
    }) = &cli.command
    {
        let fingerprint = config::generate_swarm_key(file)?;
        println!(
            "wrote a new swarm key to {} (fingerprint {fingerprint})",
            file.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let invalid = |errors: Vec<String>| {
        eprintln!("codio-node: invalid configuration:");
        for error in errors {
            eprintln!("  - {error}");
        }
        Ok(ExitCode::from(INVALID_CONFIG))
    };
    let node_config = match NodeConfig::load(cli.config.as_deref(), cli.overrides) {
        Ok(config) => config,
        Err(config::LoadError::Read(error)) => return Err(error),
        Err(config::LoadError::Invalid(errors)) => return invalid(errors),
    };
    let validated = match node_config.validate() {
        Ok(validated) => validated,
        Err(errors) => return invalid(errors),
    };
    // Temporary files are another node's work in progress unless this process holds the
    // lock: they are removed only under it (`config` commands take no lock, remove nothing).
    let _lock = match (&cli.command, &node_config.data_dir) {
        (Some(Command::Config { .. }), _) | (_, None) => None,
        (_, Some(dir)) => match files::DirLock::acquire(dir) {
            Ok(lock) => {
                let removed = files::remove_temps(dir);
                if removed > 0 {
                    tracing::info!(removed, dir = %dir.display(), "removed temporary files left by a crash");
                }
                Some(lock)
            }
            Err(error) if error.downcast_ref::<files::DirInUse>().is_some() => {
                eprintln!("codio-node: {error}");
                return Ok(ExitCode::from(INVALID_CONFIG));
            }
            Err(error) => return Err(error),
        },
    };
    match cli.command {
        Some(Command::Id) => {
            let Some(dir) = &node_config.data_dir else {
                eprintln!(
                    "codio-node: id needs --data-dir (without it every start is a new identity)"
                );
                return Ok(ExitCode::from(INVALID_CONFIG));
            };
            let (keypair, _) = identity::load_or_create(dir)?;
            println!("{}", keypair.public().to_peer_id());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Config {
            action: ConfigAction::Check,
        }) => {
            println!("# configuration OK");
            print!("{}", toml::to_string(&node_config)?);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Send { to, any_peer, file }) => {
            if peer_id_of(&to).is_none() && !any_peer {
                eprintln!(
                    "codio-node: send --to {to}: the address has no /p2p/<peer id>, so any peer \
                     answering there would get the file; add the receiver's id, or --any-peer"
                );
                return Ok(ExitCode::from(INVALID_CONFIG));
            }
            send(&node_config, &validated, to, &file).await
        }
        Some(Command::Publish {
            topic,
            wait_ms,
            message,
        }) => {
            let data = pubsub::message_bytes(&message)?;
            let (network, _) = start_network(&node_config, &validated, None).await?;
            let wait = Duration::from_millis(wait_ms);
            let result = pubsub::publish(&network, &validated.dial, &topic, data, wait).await;
            network.shutdown().await;
            let id = result?;
            Output::new(node_config.json).json("published", json!({ "topic": topic, "id": id }));
            tracing::info!(%topic, %id, "published");
            Ok(ExitCode::SUCCESS)
        }
        _ => serve(&node_config, &validated).await,
    }
}

/// Builds and starts the network of `config`.
async fn start_network(
    config: &NodeConfig,
    validated: &Validated,
    registry: Option<Arc<Mutex<Registry>>>,
) -> anyhow::Result<(NetworkManager, Option<mpsc::Receiver<IncomingBulk>>)> {
    let mut network_config = config.network_config(validated);
    if let Some(dir) = &config.data_dir {
        let (keypair, created) = identity::load_or_create(dir)?;
        if created {
            tracing::info!(dir = %dir.display(), "created a new identity");
        }
        network_config = network_config.with_keypair(keypair);
    }
    if let Some(registry) = registry {
        network_config = network_config.with_metrics(registry);
    }
    let mut builder = NetworkManager::builder(network_config);
    // Bulk transfers are accepted only with an inbox to put them in.
    let inbox = config.inbox.is_some().then(|| builder.bulk_queue());
    if config.echo {
        tokio::spawn(codio_network::protocol::serve(
            builder.request_queue(),
            echo,
            64,
        ));
    }
    let network = builder.build().await.context("creating the network")?;
    Ok((network, inbox))
}

/// The `echo` service: an `App` request of topic "echo" is answered with its payload.
async fn echo(_: PeerId, request: Request) -> Response {
    match request {
        Request::App { topic, payload } if topic == "echo" => Response::App { payload },
        _ => Response::error(ErrorCode::NotFound, "this node serves only echo"),
    }
}

async fn send(
    config: &NodeConfig,
    validated: &Validated,
    to: Multiaddr,
    file: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let output = Output::new(config.json);
    let (network, _) = start_network(config, validated, None).await?;
    network.start().await.context("starting the network")?;
    let peer = network
        .connect_peer(to.clone())
        .await
        .with_context(|| format!("connecting to {to}"))?;
    let result = transfer::send_file(&network, peer, file, output).await;
    network.shutdown().await;
    result.map(|_| ExitCode::SUCCESS)
}

async fn serve(config: &NodeConfig, validated: &Validated) -> anyhow::Result<ExitCode> {
    let output = Output::new(config.json);
    let mut signals = Signals::register()?;
    let registry = config
        .metrics_addr
        .map(|_| Arc::new(Mutex::new(Registry::default())));
    // Bind the metrics endpoint first: a taken port fails the start, not a scrape later.
    let metrics_listener = bind_metrics(config).await?;
    raise_fd_limit();
    let (network, inbox) = start_network(config, validated, registry.clone()).await?;
    let mut events = network.subscribe();
    announce_start(&network, output).await?;
    if let (Some(listener), Some(registry)) = (metrics_listener, registry.clone()) {
        serve_metrics(listener, registry, output)?;
    }
    let mut book = open_peer_book(config, &network);
    dial_and_find(&network, validated);
    for name in &config.subscribe {
        let topic = network
            .join(name)
            .await
            .with_context(|| format!("joining topic {name}"))?;
        tracing::info!(topic = %name, "subscribed");
        tokio::spawn(pubsub::print_topic(topic, output));
    }
    if let (Some(dir), Some(incoming)) = (&config.inbox, inbox) {
        let inbox = transfer::Inbox::open(dir, config.inbox_rules(validated), output)?;
        if let Some(registry) = &registry {
            inbox.register(&mut registry.lock().unwrap_or_else(PoisonError::into_inner));
        }
        tokio::spawn(inbox.run(incoming));
    }
    let signal =
        run_until_signal(&network, &mut events, &mut signals, book.as_mut(), output).await?;
    stop(&network, book.as_mut(), signal, output).await;
    Ok(ExitCode::SUCCESS)
}

/// Binds the metrics endpoint, when one is configured.
async fn bind_metrics(config: &NodeConfig) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = config.metrics_addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {addr}"))?;
    Ok(Some(listener))
}

/// Raises the open-file soft limit to the hard limit (each connection holds descriptors).
fn raise_fd_limit() {
    match fdlimit::raise() {
        Ok(l) => {
            tracing::info!(before = ?l.before, soft = ?l.soft, hard = ?l.hard, "open-file limit")
        }
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
}

/// Starts listening and reports the node's identity and the addresses to dial it by.
async fn announce_start(network: &NetworkManager, output: Output) -> anyhow::Result<()> {
    let peer_id = network.local_peer_id();
    tracing::info!(%peer_id, "local peer id");
    network.start().await.context("starting the network")?;
    // The addresses to dial this node by, one line each (the `listening` events that follow
    // say the same without the peer id, at debug level).
    let addrs = network.dial_addrs();
    for address in &addrs {
        tracing::info!(%address, "listening on");
    }
    output.json(
        "started",
        json!({
            "peer_id": peer_id.to_string(),
            "listen_addrs": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
    );
    Ok(())
}

/// Serves `/metrics` on `listener`.
fn serve_metrics(
    listener: tokio::net::TcpListener,
    registry: Arc<Mutex<Registry>>,
    output: Output,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving metrics at /metrics");
    output.json("metrics_listening", json!({ "address": addr.to_string() }));
    tokio::spawn(http::serve(listener, registry));
    Ok(())
}

/// Loads the peer book of the data directory (when kept) and dials its peers.
fn open_peer_book(config: &NodeConfig, network: &NetworkManager) -> Option<PeerBook> {
    let book = match (&config.data_dir, config.peer_book) {
        (Some(dir), true) => PeerBook::load(dir),
        _ => return None,
    };
    let known = book.dial_addresses();
    tracing::info!(peers = known.len(), "dialing the peers of the peer book");
    for (peer, addresses) in known {
        let network = network.clone();
        tokio::spawn(async move { redial(&network, peer, addresses).await });
    }
    Some(book)
}

/// Dials the `--dial` addresses and looks up the `--find-peer` peers, in the background.
fn dial_and_find(network: &NetworkManager, validated: &Validated) {
    for addr in &validated.dial {
        if peer_id_of(addr).is_none() {
            tracing::warn!(%addr, "dialing without /p2p/<peer id>: whichever peer answers is accepted");
        }
        let network = network.clone();
        let addr = addr.clone();
        tokio::spawn(async move {
            match network.connect_peer(addr.clone()).await {
                Ok(peer) => tracing::info!(%peer, %addr, "dialed"),
                Err(error) => tracing::error!(%addr, %error, "dial failed"),
            }
        });
    }
    if !validated.find_peers.is_empty() {
        tokio::spawn(find_peers(
            network.clone(),
            validated.bootstrap.iter().filter_map(peer_id_of).collect(),
            validated.find_peers.clone(),
        ));
    }
}

/// Reports events and saves the peer book until a signal arrives (or the network stops);
/// returns the signal's name.
async fn run_until_signal(
    network: &NetworkManager,
    events: &mut tokio::sync::broadcast::Receiver<codio_network::NetworkEvent>,
    signals: &mut Signals,
    mut book: Option<&mut PeerBook>,
    output: Output,
) -> anyhow::Result<Option<&'static str>> {
    let mut save_tick = tokio::time::interval(PEER_BOOK_SAVE_INTERVAL);
    save_tick.tick().await;
    loop {
        tokio::select! {
            signal = signals.recv() => return Ok(Some(signal?)),
            _ = save_tick.tick() => save_book(book.as_deref_mut()),
            event = events.recv() => match event {
                Ok(event) => {
                    if let Some(book) = book.as_deref_mut() {
                        book.learn(&event);
                    }
                    output.network_event(&event, || network.connected_peers().len());
                }
                Err(RecvError::Lagged(missed)) => tracing::warn!(missed, "event log fell behind"),
                Err(RecvError::Closed) => return Ok(None),
            },
        }
    }
}

/// Saves the peer book and shuts the network down.
async fn stop(
    network: &NetworkManager,
    mut book: Option<&mut PeerBook>,
    signal: Option<&'static str>,
    output: Output,
) {
    tracing::info!(signal = signal.unwrap_or("none"), "shutting down");
    if let Some(book) = book.as_deref_mut() {
        // Peers of the book still connected were seen now (nothing else is added: the book
        // holds only addresses this node dialed).
        for peer in network.connected_peers() {
            book.touch(&peer.peer_id);
        }
    }
    save_book(book);
    network.shutdown().await;
    output.json("stopped", json!({ "signal": signal }));
    tracing::info!("stopped");
}

fn save_book(book: Option<&mut PeerBook>) {
    if let Some(book) = book {
        match book.save() {
            Ok(()) => tracing::debug!(peers = book.len(), "peer book saved"),
            Err(error) => tracing::warn!(%error, "cannot save the peer book"),
        }
    }
}

/// Dials a peer from the peer book, one address after the other.
async fn redial(network: &NetworkManager, peer: PeerId, addresses: Vec<Multiaddr>) {
    for address in addresses {
        match network.connect_peer(address.clone()).await {
            Ok(_) => {
                tracing::info!(%peer, %address, "reconnected to a peer from the peer book");
                return;
            }
            Err(error) => tracing::debug!(%peer, %address, %error, "peer book address failed"),
        }
    }
    tracing::info!(%peer, "no address of this peer-book peer answered");
}

/// Waits (at most 30 s) until one of the bootstrap peers is identified, then looks up `peers`.
async fn find_peers(network: NetworkManager, bootstrap: Vec<PeerId>, peers: Vec<PeerId>) {
    let wait = Duration::from_secs(30);
    let identified = bootstrap
        .iter()
        .map(|peer| Box::pin(network.identified(*peer, wait)));
    if !bootstrap.is_empty() && futures::future::select_ok(identified).await.is_err() {
        tracing::warn!("no bootstrap peer was identified within 30 s; looking up anyway");
    }
    for peer in peers {
        match network.find_peer(peer).await {
            Ok(addresses) => tracing::info!(%peer, ?addresses, "found peer"),
            Err(error) => tracing::error!(%peer, %error, "find peer failed"),
        }
    }
}

/// SIGINT (Ctrl-C) and SIGTERM, registered as soon as this is created, so a signal that
/// arrives while the node is still starting stops it cleanly too.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())
                    .context("installing the SIGINT handler")?,
                terminate: signal(SignalKind::terminate())
                    .context("installing the SIGTERM handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves with the name of the first signal received.
    async fn recv(&mut self) -> anyhow::Result<&'static str> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Ok("SIGINT"),
                _ = self.terminate.recv() => Ok("SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            Ok("Ctrl-C")
        }
    }
}
