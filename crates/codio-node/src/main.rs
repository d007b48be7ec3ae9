//! `codio-node`: runs a codio network node until Ctrl-C or SIGTERM.
//!
//! ```text
//! codio-node --listen-port 4001
//! codio-node --listen-port 4002 --dial /ip4/127.0.0.1/tcp/4001/p2p/<peer id>
//! ```
//!
//! Logs go to stderr through `tracing` (filter with `RUST_LOG`, default `info`).

mod identity;

use std::{net::IpAddr, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use std::time::Duration;

use codio_network::{
    AutonatSettings, BackoffConfig, KadMode, Multiaddr, NatStatus, NetworkConfig, NetworkEvent,
    NetworkManager, PeerId, TransportConfig,
};
use libp2p::multiaddr::Protocol;
use tokio::sync::broadcast::error::RecvError;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(name = "codio-node", version, about = "Run a codio network node")]
struct Args {
    /// Directory for the node's state: its identity key (created on first start, reused after,
    /// so the peer id stays stable). Without it the node gets a fresh identity every start.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TCP port to listen on (0: any free port).
    #[arg(long, default_value_t = 0)]
    listen_port: u16,
    /// IP address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    listen_ip: IpAddr,
    /// Address of a peer to connect to at start (repeatable), e.g.
    /// /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...
    #[arg(long = "dial", value_name = "ADDR")]
    dial: Vec<Multiaddr>,
    /// Peer to look up in the DHT and connect to (repeatable), once a bootstrap peer has
    /// identified this node (bounded by 30 s).
    #[arg(long = "find-peer", value_name = "PEER_ID")]
    find_peers: Vec<PeerId>,
    /// Bootstrap peer (repeatable): dialed at start, dialed again when lost, and used to join
    /// the DHT, e.g. /ip4/10.0.0.1/tcp/4001/p2p/12D3KooW...
    #[arg(long = "bootstrap", value_name = "ADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Disable mDNS discovery on the local network.
    #[arg(long)]
    no_mdns: bool,
    /// Always answer DHT queries (default: only once the node has a confirmed external address).
    #[arg(long)]
    kad_server: bool,
    /// Peer to keep connected (repeatable): dialed at start, protected from trimming and
    /// reconnected with backoff, but not used for the DHT bootstrap.
    #[arg(long = "reserved", value_name = "ADDR")]
    reserved: Vec<Multiaddr>,
    /// Maximum number of established connections.
    #[arg(long, default_value_t = 50)]
    max_peers: usize,
    /// Interval between pings on each connection, in milliseconds.
    #[arg(long, default_value_t = 15_000, value_name = "MS")]
    ping_interval_ms: u64,
    /// Time after which an unanswered ping fails, in milliseconds.
    #[arg(long, default_value_t = 20_000, value_name = "MS")]
    ping_timeout_ms: u64,
    /// Failed pings after which a connection is closed as dead.
    #[arg(long, default_value_t = 3)]
    ping_failures: u32,
    /// Bound on connection set-up (TCP + Noise + Yamux), in milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    connect_timeout_ms: u64,
    /// First reconnection delay, in milliseconds.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    backoff_min_ms: u64,
    /// Largest reconnection delay, in milliseconds.
    #[arg(long, default_value_t = 300_000, value_name = "MS")]
    backoff_max_ms: u64,
    /// Disable NAT traversal as a client (relay client, automatic reservations, hole punching).
    #[arg(long)]
    no_relay: bool,
    /// Serve as a relay for peers behind NATs.
    #[arg(long)]
    relay_server: bool,
    /// Relay to reserve on when private (repeatable), besides bootstrap peers that are relays.
    #[arg(long = "relay", value_name = "ADDR")]
    relays: Vec<Multiaddr>,
    /// An address this node is known to be reachable at (repeatable), e.g. a server's public
    /// address; confirmed at start without waiting for AutoNAT.
    #[arg(long = "external-addr", value_name = "ADDR")]
    external_addrs: Vec<Multiaddr>,
    /// Delay before the first AutoNAT probe, in milliseconds.
    #[arg(long, default_value_t = 15_000, value_name = "MS")]
    autonat_boot_delay_ms: u64,
    /// AutoNAT probe interval while unsure, in milliseconds.
    #[arg(long, default_value_t = 90_000, value_name = "MS")]
    autonat_retry_ms: u64,
    /// Let AutoNAT probe through and serve peers at private IP addresses (one LAN, a lab).
    #[arg(long)]
    autonat_private_ips: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let args = Args::parse();
    let mut signals = Signals::register()?;

    let config = NetworkConfig {
        listen_port: args.listen_port,
        max_peers: args.max_peers,
        bootstrap_peers: args.bootstrap,
        reserved_peers: args.reserved,
        enable_mdns: !args.no_mdns,
        enable_relay: !args.no_relay,
        relay_server: args.relay_server,
        relays: args.relays,
        external_addrs: args.external_addrs,
        autonat: AutonatSettings {
            boot_delay: Duration::from_millis(args.autonat_boot_delay_ms),
            retry_interval: Duration::from_millis(args.autonat_retry_ms),
            only_global_ips: !args.autonat_private_ips,
            ..AutonatSettings::default()
        },
        kad_mode: if args.kad_server {
            KadMode::Server
        } else {
            KadMode::Auto
        },
        ..NetworkConfig::default()
    }
    .with_listen_ip(args.listen_ip)
    .with_ping(
        Duration::from_millis(args.ping_interval_ms),
        Duration::from_millis(args.ping_timeout_ms),
    )
    .with_ping_failures(args.ping_failures)
    .with_transport(
        TransportConfig::default()
            .with_connect_timeout(Duration::from_millis(args.connect_timeout_ms)),
    )
    .with_backoff(
        BackoffConfig::default()
            .with_min(Duration::from_millis(args.backoff_min_ms))
            .with_max(Duration::from_millis(args.backoff_max_ms)),
    );
    let config = match &args.data_dir {
        Some(dir) => {
            let (keypair, created) = identity::load_or_create(dir)?;
            if created {
                tracing::info!(dir = %dir.display(), "created a new identity");
            }
            config.with_keypair(keypair)
        }
        None => config,
    };
    let config_bootstrap_ids: Vec<PeerId> = config
        .bootstrap_peers
        .iter()
        .filter_map(|a| match a.iter().last() {
            Some(Protocol::P2p(peer)) => Some(peer),
            _ => None,
        })
        .collect();
    let network = NetworkManager::new(config)
        .await
        .context("creating the network")?;
    let peer_id = network.local_peer_id();
    tracing::info!(%peer_id, "local peer id");
    let mut events = network.subscribe();
    let addrs = network.start().await.context("starting the network")?;
    for addr in &addrs {
        tracing::info!(address = %format!("{addr}/p2p/{peer_id}"), "listening on");
    }

    for addr in args.dial {
        let network = network.clone();
        tokio::spawn(async move {
            match network.connect_peer(addr.clone()).await {
                Ok(peer) => tracing::info!(%peer, %addr, "dialed"),
                Err(error) => tracing::error!(%addr, %error, "dial failed"),
            }
        });
    }

    if !args.find_peers.is_empty() {
        let network = network.clone();
        let bootstrap: Vec<PeerId> = config_bootstrap_ids;
        let mut events = network.subscribe();
        tokio::spawn(async move {
            let joined = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    match events.recv().await {
                        Ok(NetworkEvent::PeerIdentified { peer_id, .. })
                            if bootstrap.is_empty() || bootstrap.contains(&peer_id) =>
                        {
                            break;
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => break,
                    }
                }
            })
            .await;
            if joined.is_err() {
                tracing::warn!(
                    "no bootstrap peer identified this node within 30 s; looking up anyway"
                );
            }
            for peer in args.find_peers {
                match network.find_peer(peer).await {
                    Ok(addresses) => tracing::info!(%peer, ?addresses, "found peer"),
                    Err(error) => tracing::error!(%peer, %error, "find peer failed"),
                }
            }
        });
    }

    loop {
        tokio::select! {
            signal = signals.recv() => {
                tracing::info!(signal = signal?, "shutting down");
                break;
            }
            event = events.recv() => match event {
                Ok(event) => log_event(&event, network.connected_peers().len()),
                Err(RecvError::Lagged(missed)) => tracing::warn!(missed, "event log fell behind"),
                Err(RecvError::Closed) => break,
            },
        }
    }
    network.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn log_event(event: &NetworkEvent, connected: usize) {
    match event {
        NetworkEvent::PeerConnected {
            peer_id,
            address,
            direction,
            relayed,
        } => tracing::info!(%peer_id, %address, ?direction, relayed, connected, "peer connected"),
        NetworkEvent::ConnectionVerified {
            peer_id,
            rtt,
            relayed,
        } => tracing::info!(%peer_id, ?rtt, relayed, "ping answered"),
        NetworkEvent::NatStatusChanged { status } => match status {
            NatStatus::Public { address } => tracing::info!(%address, "NAT status: public"),
            NatStatus::Private => tracing::info!("NAT status: private"),
            _ => tracing::info!("NAT status: unknown"),
        },
        NetworkEvent::RelayReservationAccepted { relay, renewal } => {
            tracing::info!(%relay, renewal, "relay reservation accepted");
        }
        NetworkEvent::HolePunchSucceeded { peer_id } => {
            tracing::info!(%peer_id, "hole punch succeeded: direct connection");
        }
        NetworkEvent::HolePunchFailed { peer_id, error } => {
            tracing::warn!(%peer_id, %error, "hole punch failed");
        }
        NetworkEvent::PeerDisconnected { peer_id, cause } => {
            let cause = cause.as_deref().unwrap_or("closed");
            tracing::info!(%peer_id, cause, connected, "peer disconnected");
        }
        NetworkEvent::PeerDiscovered {
            peer_id,
            addresses,
            source,
        } => tracing::info!(%peer_id, ?addresses, ?source, "peer discovered"),
        NetworkEvent::PeerIdentified {
            peer_id,
            agent_version,
            ..
        } => tracing::info!(%peer_id, %agent_version, "peer identified"),
        NetworkEvent::DialFailed { peer_id, error } => {
            tracing::warn!(?peer_id, %error, "dial failed");
        }
        NetworkEvent::ConnectionDenied {
            peer_id,
            direction,
            reason,
        } => tracing::info!(?peer_id, ?direction, %reason, "connection denied"),
        NetworkEvent::PeerTrimmed { peer_id } => tracing::info!(%peer_id, "connection trimmed"),
        NetworkEvent::DeadPeer { peer_id, failures } => {
            tracing::warn!(%peer_id, failures, "peer stopped answering pings");
        }
        NetworkEvent::Reconnecting {
            peer_id,
            attempt,
            delay,
        } => tracing::info!(%peer_id, attempt, ?delay, "reconnecting"),
        NetworkEvent::Reconnected { peer_id, attempts } => {
            tracing::info!(%peer_id, attempts, "reconnected");
        }
        NetworkEvent::ReconnectGaveUp { peer_id, attempts } => {
            tracing::warn!(%peer_id, attempts, "gave up reconnecting");
        }
        other => tracing::debug!(?other, "event"),
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
