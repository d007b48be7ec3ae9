//! The node's configuration: defaults, then a TOML file (`--config`), then `CODIO_*`
//! environment variables, then command-line flags (each layer overrides the one before).
//! [`NodeConfig::validate`] checks the merged result and names every bad field.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;

use codio_base::addr::peer_id_of;
use codio_network::{
    Edit, Multiaddr, NetworkConfig, PeerId, discovery::KadMode, discovery::MdnsConfig,
    nat::AutonatSettings, nat::NatConfig, policy::AccessConfig, policy::AccessMode,
    policy::BackoffConfig, policy::MemoryLimit, policy::PolicyConfig, transport::InboundLimits,
    transport::PreSharedKey, transport::QuicConfig, transport::TransportConfig,
};

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::inbox::{Rules as InboxRules, Senders};

/// Why the configuration could not be loaded.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// The file could not be read (exit 1).
    Read(anyhow::Error),
    /// The file is not a valid configuration: every problem found (exit 2).
    Invalid(Vec<String>),
}

/// Everything `codio-node` can be configured with. Keys of the TOML file are the field names;
/// flags are the same names in kebab case; environment variables are `CODIO_` + the name in
/// upper case (lists comma separated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct NodeConfig {
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) listen_ip: IpAddr,
    pub(crate) listen_port: u16,
    pub(crate) listen: Vec<String>,
    pub(crate) quic: bool,
    pub(crate) max_peers: usize,
    pub(crate) mdns: bool,
    pub(crate) kad_server: bool,
    pub(crate) bootstrap: Vec<String>,
    pub(crate) reserved: Vec<String>,
    pub(crate) dial: Vec<String>,
    pub(crate) find_peer: Vec<String>,
    pub(crate) subscribe: Vec<String>,
    pub(crate) relay: bool,
    pub(crate) relay_server: bool,
    pub(crate) relays: Vec<String>,
    pub(crate) external_addrs: Vec<String>,
    pub(crate) ping_interval_ms: u64,
    pub(crate) ping_timeout_ms: u64,
    pub(crate) ping_failures: u32,
    pub(crate) connect_timeout_ms: u64,
    pub(crate) backoff_min_ms: u64,
    pub(crate) backoff_max_ms: u64,
    pub(crate) autonat_boot_delay_ms: u64,
    pub(crate) autonat_retry_ms: u64,
    pub(crate) autonat_private_ips: bool,
    pub(crate) peer_book: bool,
    pub(crate) metrics_addr: Option<SocketAddr>,
    pub(crate) json: bool,
    pub(crate) inbox: Option<PathBuf>,
    pub(crate) inbox_max_bytes: u64,
    pub(crate) inbox_allow: Vec<String>,
    pub(crate) inbox_allow_any: bool,
    pub(crate) inbox_quota_bytes: u64,
    pub(crate) inbox_min_free_bytes: u64,
    pub(crate) inbox_deadline_ms: u64,
    pub(crate) inbox_min_rate: u64,
    pub(crate) echo: bool,
    pub(crate) limit_loopback: bool,
    pub(crate) max_memory_percent: u8,
    pub(crate) swarm_key: Option<PathBuf>,
    pub(crate) allow_peer: Vec<String>,
    pub(crate) deny_peer: Vec<String>,
    pub(crate) reserved_only: bool,
    pub(crate) kad_protocol: Option<String>,
    pub(crate) mdns_service: Option<String>,
}

impl Default for NodeConfig {
    /// Every setting the library has is the library's own default, read from the layers (the
    /// test `defaults_are_the_layers_defaults` fails if a mapping drifts); the rest are the
    /// node's.
    fn default() -> Self {
        let network = NetworkConfig::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (ping_interval, ping_timeout, ping_failures) = network.policy.liveness();
        let backoff = network.policy.backoff();
        let limits = network.policy.limits();
        let autonat = &network.nat.autonat;
        Self {
            data_dir: None,
            listen_ip: network.listen_ip,
            listen_port: network.listen_port,
            listen: vec![],
            quic: network.transport.quic_enabled(),
            max_peers: network.max_peers,
            mdns: network.enable_mdns,
            kad_server: false,
            bootstrap: vec![],
            reserved: vec![],
            dial: vec![],
            find_peer: vec![],
            subscribe: vec![],
            relay: network.enable_relay,
            relay_server: network.nat.relay_server,
            relays: vec![],
            external_addrs: vec![],
            ping_interval_ms: ms(ping_interval),
            ping_timeout_ms: ms(ping_timeout),
            ping_failures,
            connect_timeout_ms: ms(network.transport.connect_timeout()),
            backoff_min_ms: ms(backoff.min()),
            backoff_max_ms: ms(backoff.max()),
            autonat_boot_delay_ms: ms(autonat.boot_delay),
            autonat_retry_ms: ms(autonat.retry_interval),
            autonat_private_ips: !autonat.only_global_ips,
            peer_book: true,
            metrics_addr: None,
            json: false,
            inbox: None,
            inbox_max_bytes: 1 << 30,
            inbox_allow: vec![],
            inbox_allow_any: false,
            inbox_quota_bytes: 16 << 30,
            inbox_min_free_bytes: 1 << 30,
            inbox_deadline_ms: 60_000,
            inbox_min_rate: 1 << 20,
            echo: false,
            limit_loopback: limits.limit_loopback(),
            max_memory_percent: match limits.max_memory() {
                MemoryLimit::Percent(percent) => percent,
                _ => 0,
            },
            swarm_key: None,
            allow_peer: vec![],
            deny_peer: vec![],
            reserved_only: false,
            kad_protocol: None,
            mdns_service: None,
        }
    }
}

/// `codio-node config example`: every key with its default and what it does. A test checks
/// that it parses to [`NodeConfig::default`] and mentions every key.
pub(crate) const EXAMPLE: &str = r#"# codio-node configuration (TOML). Every key is optional; the values shown are the defaults.
# Precedence: defaults < this file (--config) < CODIO_* environment variables < flags.
# Environment variables are CODIO_ + the key in upper case, lists comma separated,
# e.g. CODIO_LISTEN_PORT=4001 CODIO_BOOTSTRAP=/ip4/10.0.0.1/tcp/4001/p2p/12D3KooW...

# Directory for the node's state: identity.key (created on first start, mode 0600, reused
# after: the peer id stays stable) and peers.json (the peer book). Without it the node gets
# a fresh identity every start and keeps no peer book.
# data_dir = "/var/lib/codio"

# Address and port to listen on, over TCP and (with quic) QUIC on the same UDP port number
# (port 0: any free port). 0.0.0.0 means every interface of both families: :: is listened on
# too when the host has IPv6.
listen_ip = "0.0.0.0"
listen_port = 0
# Addresses to listen on instead of listen_ip/listen_port, each required, e.g.
# ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1", "/ip6/::/tcp/4001"].
listen = []
# Speak QUIC beside TCP (always off with a swarm key: pnet cannot wrap QUIC).
quic = true

# Most established connections (peers beyond it are refused; bootstrap and reserved peers
# get a few extra slots).
max_peers = 50

# Discover peers on the local network with mDNS (needs multicast: off in most containers).
mdns = true

# Always answer DHT queries (default: only once the node has a confirmed external address).
kad_server = false

# Bootstrap peers: dialed at start, redialed when lost, used to join the DHT. Each must end
# in /p2p/<peer id>, and each peer may appear once.
bootstrap = []

# Peers kept connected (protected from trimming, reconnected with backoff); /p2p/ required.
reserved = []

# Addresses dialed once at start.
dial = []

# Peer ids looked up in the DHT and connected to once a bootstrap peer identified us.
find_peer = []

# Pub/sub topics to join; their messages are printed as JSON events ("message", with --json).
subscribe = []

# NAT traversal as a client: relay client, automatic relay reservations, hole punching.
relay = true
# Serve as a relay for peers behind NATs.
relay_server = false
# Relays to reserve on when private, besides bootstrap peers that are relays.
relays = []
# Addresses this node is known to be reachable at (confirmed without waiting for AutoNAT).
external_addrs = []

# Liveness: ping interval and timeout; failed pings in a row before a connection is closed.
ping_interval_ms = 15000
ping_timeout_ms = 20000
ping_failures = 3

# Bound on connection set-up (TCP connect + TLS/Noise + Yamux, or the QUIC handshake).
connect_timeout_ms = 10000

# Reconnection backoff: first delay, doubling (with +-20% jitter) up to the largest.
backoff_min_ms = 500
backoff_max_ms = 300000

# AutoNAT: delay before the first probe, probe interval while unsure, and whether peers at
# private IP addresses count (one LAN, a lab).
autonat_boot_delay_ms = 15000
autonat_retry_ms = 90000
autonat_private_ips = false

# Remember connected peers in <data_dir>/peers.json and dial them again at the next start.
peer_book = true

# Serve Prometheus metrics at http://<metrics_addr>/metrics (off when unset).
# metrics_addr = "127.0.0.1:9090"

# Print one JSON object per event on stdout (logs stay on stderr).
json = false

# Accept bulk transfers into this directory, stored under their SHA-256 content id.
# inbox = "/var/lib/codio/inbox"
# Largest transfer the inbox accepts, in bytes.
inbox_max_bytes = 1073741824
# Peers (peer ids) allowed to send files, besides bootstrap, reserved and allow-listed
# peers, which always may. Anyone else is refused before a byte is stored.
inbox_allow = []
# Accept files from any peer (think twice on a public network).
inbox_allow_any = false
# Most bytes the inbox holds, stored files and transfers in flight together.
inbox_quota_bytes = 17179869184
# Free bytes that must stay on the inbox's disk: transfers that would go below are refused.
inbox_min_free_bytes = 1073741824
# A transfer must be complete within inbox_deadline_ms plus its size at inbox_min_rate
# bytes per second, or it is cut off (a sender dripping bytes cannot hold a slot).
inbox_deadline_ms = 60000
inbox_min_rate = 1048576

# Answer requests of topic "echo" with their own payload (a liveness check for operators
# and benchmarks); other requests are answered NotFound.
echo = false

# Hold loopback addresses to the per-address and per-subnet connection limits too (by
# default, as in go-libp2p, local tools are exempt).
limit_loopback = false

# Refuse new connections while the process uses more than this percentage of the machine's
# physical memory (0: never).
max_memory_percent = 80

# Private network: the swarm key file (kubo's format, /key/swarm/psk/1.0.0/); only nodes
# with the same key can connect (off when unset).
# swarm_key = "/etc/codio/swarm.key"

# Admit only these peers (peer ids), besides bootstrap and reserved peers: everyone else is
# refused right after the transport handshake, before any protocol runs. Empty: no allow
# list (unless reserved_only).
allow_peer = []
# Refuse these peers (peer ids), whatever else says.
deny_peer = []
# Admit only bootstrap and reserved peers, and those of allow_peer (Substrate's meaning).
reserved_only = false

# The DHT's protocol name. Unset: /ipfs/kad/1.0.0 (the public DHT), or with a swarm key
# /codio/kad/<key fingerprint>/1.0.0, so a private swarm never merges with a public DHT.
# kad_protocol = "/ipfs/kad/1.0.0"
# The mDNS service name. Unset: _p2p._udp.local (libp2p's), or with a swarm key
# _codio-<key fingerprint>._udp.local.
# mdns_service = "_p2p._udp.local"
"#;

/// Command-line flags that override the file; each also reads `CODIO_<NAME>`.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct Overrides {
    /// Directory for the identity key and the peer book [env: CODIO_DATA_DIR].
    #[arg(long, env = "CODIO_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// IP address to listen on (default 0.0.0.0).
    #[arg(long, env = "CODIO_LISTEN_IP")]
    listen_ip: Option<IpAddr>,
    /// Port to listen on, TCP and UDP (QUIC) (0: any free port; default 0).
    #[arg(long, env = "CODIO_LISTEN_PORT")]
    listen_port: Option<u16>,
    /// Address to listen on instead of --listen-ip/--listen-port, e.g.
    /// /ip6/::/udp/4001/quic-v1 (repeatable).
    #[arg(
        long = "listen",
        env = "CODIO_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    listen: Vec<String>,
    /// Speak QUIC beside TCP (default on; off with a swarm key); `--quic=false` turns it off.
    #[arg(long, env = "CODIO_QUIC", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", overrides_with = "no_quic")]
    quic: Option<bool>,
    /// Same as `--quic=false`.
    #[arg(long, env = "CODIO_NO_QUIC", overrides_with = "quic")]
    no_quic: bool,
    /// Maximum number of established connections (default 50).
    #[arg(long, env = "CODIO_MAX_PEERS")]
    max_peers: Option<usize>,
    /// Discover peers with mDNS (default on); `--mdns=false` turns it off.
    #[arg(long, env = "CODIO_MDNS", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", overrides_with = "no_mdns")]
    mdns: Option<bool>,
    /// Same as `--mdns=false`.
    #[arg(long, env = "CODIO_NO_MDNS", overrides_with = "mdns")]
    no_mdns: bool,
    /// Always answer DHT queries (default off); `--kad-server=false` turns it off.
    #[arg(long, env = "CODIO_KAD_SERVER", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", overrides_with = "no_kad_server")]
    kad_server: Option<bool>,
    /// Same as `--kad-server=false`.
    #[arg(long, env = "CODIO_NO_KAD_SERVER", overrides_with = "kad_server")]
    no_kad_server: bool,
    /// Bootstrap peer, ending in /p2p/PEER_ID (repeatable).
    #[arg(
        long = "bootstrap",
        env = "CODIO_BOOTSTRAP",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    bootstrap: Vec<String>,
    /// Peer to keep connected, ending in /p2p/PEER_ID (repeatable).
    #[arg(
        long = "reserved",
        env = "CODIO_RESERVED",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    reserved: Vec<String>,
    /// Address to dial at start (repeatable).
    #[arg(
        long = "dial",
        env = "CODIO_DIAL",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    dial: Vec<String>,
    /// Pub/sub topic to join; its messages become JSON events (repeatable).
    #[arg(
        long = "subscribe",
        env = "CODIO_SUBSCRIBE",
        value_name = "TOPIC",
        value_delimiter = ','
    )]
    subscribe: Vec<String>,
    /// Peer id to look up in the DHT and connect to (repeatable).
    #[arg(
        long = "find-peer",
        env = "CODIO_FIND_PEER",
        value_name = "PEER_ID",
        value_delimiter = ','
    )]
    find_peer: Vec<String>,
    /// NAT traversal as a client (relay client, hole punching) (default on); `--relay-client=false` turns it off.
    #[arg(long = "relay-client", env = "CODIO_RELAY", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", overrides_with = "no_relay")]
    relay: Option<bool>,
    /// Same as `--relay-client=false`.
    #[arg(long = "no-relay", env = "CODIO_NO_RELAY", overrides_with = "relay")]
    no_relay: bool,
    /// Serve as a relay (default off); `--relay-server=false` turns it off.
    #[arg(long, env = "CODIO_RELAY_SERVER", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", overrides_with = "no_relay_server")]
    relay_server: Option<bool>,
    /// Same as `--relay-server=false`.
    #[arg(long, env = "CODIO_NO_RELAY_SERVER", overrides_with = "relay_server")]
    no_relay_server: bool,
    /// Relay to reserve on when private (repeatable; also `--relays`).
    #[arg(
        long = "relay",
        visible_alias = "relays",
        env = "CODIO_RELAYS",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    relays: Vec<String>,
    /// Address this node is reachable at (repeatable; also `--external-addrs`).
    #[arg(
        long = "external-addr",
        visible_alias = "external-addrs",
        env = "CODIO_EXTERNAL_ADDRS",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    external_addrs: Vec<String>,
    /// Ping interval in milliseconds (default 15000).
    #[arg(long, env = "CODIO_PING_INTERVAL_MS", value_name = "MS")]
    ping_interval_ms: Option<u64>,
    /// Ping timeout in milliseconds (default 20000).
    #[arg(long, env = "CODIO_PING_TIMEOUT_MS", value_name = "MS")]
    ping_timeout_ms: Option<u64>,
    /// Failed pings before a connection is closed (default 3).
    #[arg(long, env = "CODIO_PING_FAILURES")]
    ping_failures: Option<u32>,
    /// Connection set-up bound in milliseconds (default 10000).
    #[arg(long, env = "CODIO_CONNECT_TIMEOUT_MS", value_name = "MS")]
    connect_timeout_ms: Option<u64>,
    /// First reconnection delay in milliseconds (default 500).
    #[arg(long, env = "CODIO_BACKOFF_MIN_MS", value_name = "MS")]
    backoff_min_ms: Option<u64>,
    /// Largest reconnection delay in milliseconds (default 300000).
    #[arg(long, env = "CODIO_BACKOFF_MAX_MS", value_name = "MS")]
    backoff_max_ms: Option<u64>,
    /// Delay before the first AutoNAT probe in milliseconds (default 15000).
    #[arg(long, env = "CODIO_AUTONAT_BOOT_DELAY_MS", value_name = "MS")]
    autonat_boot_delay_ms: Option<u64>,
    /// AutoNAT probe interval while unsure, in milliseconds (default 90000).
    #[arg(long, env = "CODIO_AUTONAT_RETRY_MS", value_name = "MS")]
    autonat_retry_ms: Option<u64>,
    /// Let AutoNAT use peers at private IP addresses (default off); `--autonat-private-ips=false` turns it off.
    #[arg(long, env = "CODIO_AUTONAT_PRIVATE_IPS", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", overrides_with = "no_autonat_private_ips")]
    autonat_private_ips: Option<bool>,
    /// Same as `--autonat-private-ips=false`.
    #[arg(
        long,
        env = "CODIO_NO_AUTONAT_PRIVATE_IPS",
        overrides_with = "autonat_private_ips"
    )]
    no_autonat_private_ips: bool,
    /// Keep a peer book in the data directory (default on); `--peer-book=false` turns it off.
    #[arg(long, env = "CODIO_PEER_BOOK", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", overrides_with = "no_peer_book")]
    peer_book: Option<bool>,
    /// Same as `--peer-book=false`.
    #[arg(long, env = "CODIO_NO_PEER_BOOK", overrides_with = "peer_book")]
    no_peer_book: bool,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9090).
    #[arg(long, env = "CODIO_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Print one JSON event per line on stdout (default off); `--json=false` turns it off.
    #[arg(long, env = "CODIO_JSON", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", overrides_with = "no_json")]
    json: Option<bool>,
    /// Same as `--json=false`.
    #[arg(long, env = "CODIO_NO_JSON", overrides_with = "json")]
    no_json: bool,
    /// Accept bulk transfers into this directory.
    #[arg(long, env = "CODIO_INBOX", value_name = "DIR")]
    inbox: Option<PathBuf>,
    /// Largest transfer the inbox accepts, in bytes (default 1 GiB).
    #[arg(long, env = "CODIO_INBOX_MAX_BYTES", value_name = "BYTES")]
    inbox_max_bytes: Option<u64>,
    /// Peer allowed to send files to the inbox (repeatable), besides bootstrap, reserved and
    /// allow-listed peers.
    #[arg(
        long = "inbox-allow",
        env = "CODIO_INBOX_ALLOW",
        value_name = "PEER_ID",
        value_delimiter = ','
    )]
    inbox_allow: Vec<String>,
    /// Accept files from any peer (default off).
    #[arg(long, env = "CODIO_INBOX_ALLOW_ANY", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    inbox_allow_any: Option<bool>,
    /// Most bytes the inbox holds (default 16 GiB).
    #[arg(long, env = "CODIO_INBOX_QUOTA_BYTES", value_name = "BYTES")]
    inbox_quota_bytes: Option<u64>,
    /// Free bytes that must stay on the inbox's disk (default 1 GiB).
    #[arg(long, env = "CODIO_INBOX_MIN_FREE_BYTES", value_name = "BYTES")]
    inbox_min_free_bytes: Option<u64>,
    /// Base deadline of a transfer in milliseconds (default 60000).
    #[arg(long, env = "CODIO_INBOX_DEADLINE_MS", value_name = "MS")]
    inbox_deadline_ms: Option<u64>,
    /// Slowest rate a transfer may average, in bytes per second (default 1 MiB/s).
    #[arg(long, env = "CODIO_INBOX_MIN_RATE", value_name = "BYTES_PER_SEC")]
    inbox_min_rate: Option<u64>,
    /// Answer requests of topic "echo" with their payload (default off).
    #[arg(long, env = "CODIO_ECHO", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    echo: Option<bool>,
    /// Hold loopback addresses to the per-address connection limits (default off).
    #[arg(long, env = "CODIO_LIMIT_LOOPBACK", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    limit_loopback: Option<bool>,
    /// Refuse new connections above this percentage of physical memory (default 80; 0: never).
    #[arg(long, env = "CODIO_MAX_MEMORY_PERCENT", value_name = "PERCENT")]
    max_memory_percent: Option<u8>,
    /// Join the private network of this swarm key file (kubo's format).
    #[arg(long, env = "CODIO_SWARM_KEY", value_name = "FILE")]
    swarm_key: Option<PathBuf>,
    /// Admit only this peer (repeatable), besides bootstrap and reserved peers.
    #[arg(
        long = "allow-peer",
        env = "CODIO_ALLOW_PEER",
        value_name = "PEER_ID",
        value_delimiter = ','
    )]
    allow_peer: Vec<String>,
    /// Refuse this peer (repeatable).
    #[arg(
        long = "deny-peer",
        env = "CODIO_DENY_PEER",
        value_name = "PEER_ID",
        value_delimiter = ','
    )]
    deny_peer: Vec<String>,
    /// Admit only bootstrap, reserved and allow-listed peers (default off).
    #[arg(long, env = "CODIO_RESERVED_ONLY", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    reserved_only: Option<bool>,
    /// The DHT's protocol name (default /ipfs/kad/1.0.0; with a swarm key, derived from it).
    #[arg(long, env = "CODIO_KAD_PROTOCOL", value_name = "PROTOCOL")]
    kad_protocol: Option<String>,
    /// The mDNS service name (default _p2p._udp.local; with a swarm key, derived from it).
    #[arg(long, env = "CODIO_MDNS_SERVICE", value_name = "NAME")]
    mdns_service: Option<String>,
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

/// A boolean setting: `off` (a `--no-…` flag) wins, else the value given, else unchanged.
fn switch(target: &mut bool, on: Option<bool>, off: bool) {
    if off {
        *target = false;
    } else if let Some(on) = on {
        *target = on;
    }
}

fn set_list(target: &mut Vec<String>, value: Vec<String>) {
    if !value.is_empty() {
        *target = value;
    }
}

impl Overrides {
    fn apply(self, c: &mut NodeConfig) {
        if self.data_dir.is_some() {
            c.data_dir = self.data_dir;
        }
        set(&mut c.listen_ip, self.listen_ip);
        set(&mut c.listen_port, self.listen_port);
        set_list(&mut c.listen, self.listen);
        switch(&mut c.quic, self.quic, self.no_quic);
        set(&mut c.max_peers, self.max_peers);
        switch(&mut c.mdns, self.mdns, self.no_mdns);
        switch(&mut c.kad_server, self.kad_server, self.no_kad_server);
        set_list(&mut c.bootstrap, self.bootstrap);
        set_list(&mut c.reserved, self.reserved);
        set_list(&mut c.dial, self.dial);
        set_list(&mut c.find_peer, self.find_peer);
        set_list(&mut c.subscribe, self.subscribe);
        switch(&mut c.relay, self.relay, self.no_relay);
        switch(&mut c.relay_server, self.relay_server, self.no_relay_server);
        set_list(&mut c.relays, self.relays);
        set_list(&mut c.external_addrs, self.external_addrs);
        set(&mut c.ping_interval_ms, self.ping_interval_ms);
        set(&mut c.ping_timeout_ms, self.ping_timeout_ms);
        set(&mut c.ping_failures, self.ping_failures);
        set(&mut c.connect_timeout_ms, self.connect_timeout_ms);
        set(&mut c.backoff_min_ms, self.backoff_min_ms);
        set(&mut c.backoff_max_ms, self.backoff_max_ms);
        set(&mut c.autonat_boot_delay_ms, self.autonat_boot_delay_ms);
        set(&mut c.autonat_retry_ms, self.autonat_retry_ms);
        switch(
            &mut c.autonat_private_ips,
            self.autonat_private_ips,
            self.no_autonat_private_ips,
        );
        switch(&mut c.peer_book, self.peer_book, self.no_peer_book);
        if self.metrics_addr.is_some() {
            c.metrics_addr = self.metrics_addr;
        }
        switch(&mut c.json, self.json, self.no_json);
        if self.inbox.is_some() {
            c.inbox = self.inbox;
        }
        set(&mut c.inbox_max_bytes, self.inbox_max_bytes);
        set_list(&mut c.inbox_allow, self.inbox_allow);
        set(&mut c.inbox_allow_any, self.inbox_allow_any);
        set(&mut c.inbox_quota_bytes, self.inbox_quota_bytes);
        set(&mut c.inbox_min_free_bytes, self.inbox_min_free_bytes);
        set(&mut c.inbox_deadline_ms, self.inbox_deadline_ms);
        set(&mut c.inbox_min_rate, self.inbox_min_rate);
        set(&mut c.echo, self.echo);
        set(&mut c.limit_loopback, self.limit_loopback);
        set(&mut c.max_memory_percent, self.max_memory_percent);
        if self.swarm_key.is_some() {
            c.swarm_key = self.swarm_key;
        }
        set_list(&mut c.allow_peer, self.allow_peer);
        set_list(&mut c.deny_peer, self.deny_peer);
        set(&mut c.reserved_only, self.reserved_only);
        if self.kad_protocol.is_some() {
            c.kad_protocol = self.kad_protocol;
        }
        if self.mdns_service.is_some() {
            c.mdns_service = self.mdns_service;
        }
    }
}

impl NodeConfig {
    /// Defaults, overridden by the file at `path` (if any), then by `overrides` (flags and
    /// environment variables, which clap has already merged).
    pub(crate) fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, LoadError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the configuration {}", path.display()))
                    .map_err(LoadError::Read)?;
                Self::parse(&text).map_err(|errors| {
                    let at = |e| format!("{}: {e}", path.display());
                    LoadError::Invalid(errors.into_iter().map(at).collect())
                })?
            }
            None => Self::default(),
        };
        overrides.apply(&mut config);
        Ok(config)
    }

    /// Parses a TOML configuration (unknown keys are errors: a typo must not be ignored).
    /// Every bad key is reported, each naming the key; a syntax error is reported alone (the
    /// rest of the file cannot be read past it).
    pub(crate) fn parse(text: &str) -> Result<Self, Vec<String>> {
        let table: toml::Table = text.parse().map_err(|e| vec![format!("{e}")])?;
        // Each key alone: every field has a default, so a one-key table checks just that key.
        let errors: Vec<String> = table
            .iter()
            .filter_map(|(key, value)| {
                let one = toml::Table::from_iter([(key.clone(), value.clone())]);
                let result: Result<Self, _> = toml::Value::Table(one).try_into();
                result.err().map(|e| format!("`{key}`: {}", e.message()))
            })
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| vec![e.message().to_owned()])
    }

    /// Checks every field and converts the result; all problems are reported at once, each
    /// naming its field.
    pub(crate) fn validate(&self) -> Result<Validated, Vec<String>> {
        let mut errors = Vec::new();
        let bootstrap = addresses("bootstrap", &self.bootstrap, true, &mut errors);
        let reserved = addresses("reserved", &self.reserved, true, &mut errors);
        let dial = addresses("dial", &self.dial, false, &mut errors);
        let listen = addresses("listen", &self.listen, false, &mut errors);
        let relays = addresses("relays", &self.relays, false, &mut errors);
        let external = addresses("external_addrs", &self.external_addrs, false, &mut errors);
        duplicates("bootstrap", &bootstrap, &mut errors);
        duplicates("reserved", &reserved, &mut errors);
        let find_peers = peer_ids("find_peer", &self.find_peer, &mut errors);
        let allow = peer_ids("allow_peer", &self.allow_peer, &mut errors);
        let deny = peer_ids("deny_peer", &self.deny_peer, &mut errors);
        let inbox_allow = peer_ids("inbox_allow", &self.inbox_allow, &mut errors);
        let kad_protocol = self.kad_protocol.as_ref().and_then(|name| {
            StreamProtocol::try_from_owned(name.clone())
                .map_err(|e| errors.push(format!("kad_protocol = {name:?}: {e}")))
                .ok()
        });
        self.check_ranges(&mut errors);
        let swarm_key = self.swarm_key.as_ref().and_then(|path| {
            read_swarm_key(path)
                .map_err(|e| errors.push(format!("swarm_key = {}: {e}", path.display())))
                .ok()
        });
        if self.max_memory_percent > 100 {
            errors.push(format!(
                "max_memory_percent = {}: must be at most 100",
                self.max_memory_percent
            ));
        }
        if self.inbox_max_bytes > self.inbox_quota_bytes {
            errors.push(format!(
                "inbox_max_bytes = {} is larger than inbox_quota_bytes = {}",
                self.inbox_max_bytes, self.inbox_quota_bytes
            ));
        }
        if self.backoff_min_ms > self.backoff_max_ms {
            errors.push(format!(
                "backoff_min_ms = {} is larger than backoff_max_ms = {}",
                self.backoff_min_ms, self.backoff_max_ms
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Validated {
            listen,
            bootstrap,
            reserved,
            dial,
            relays,
            external,
            find_peers,
            swarm_key,
            allow,
            deny,
            kad_protocol,
            inbox_allow,
        })
    }

    /// Every count and duration within `1..=` its bound (`0..=` for the few where 0 means
    /// something): values past them serve no one and overflow time arithmetic.
    fn check_ranges(&self, errors: &mut Vec<String>) {
        const HOUR_MS: u64 = 3_600_000;
        const DAY_MS: u64 = 24 * HOUR_MS;
        let (at_least_one, zero_ok) = (1, 0);
        let ranges = [
            ("max_peers", self.max_peers as u64, at_least_one, 100_000),
            (
                "ping_interval_ms",
                self.ping_interval_ms,
                at_least_one,
                HOUR_MS,
            ),
            (
                "ping_timeout_ms",
                self.ping_timeout_ms,
                at_least_one,
                HOUR_MS,
            ),
            (
                "ping_failures",
                u64::from(self.ping_failures),
                at_least_one,
                1_000,
            ),
            (
                "connect_timeout_ms",
                self.connect_timeout_ms,
                at_least_one,
                10 * 60_000,
            ),
            ("backoff_min_ms", self.backoff_min_ms, at_least_one, HOUR_MS),
            ("backoff_max_ms", self.backoff_max_ms, at_least_one, DAY_MS),
            (
                "autonat_boot_delay_ms",
                self.autonat_boot_delay_ms,
                zero_ok,
                DAY_MS,
            ),
            (
                "autonat_retry_ms",
                self.autonat_retry_ms,
                at_least_one,
                DAY_MS,
            ),
            (
                "inbox_max_bytes",
                self.inbox_max_bytes,
                at_least_one,
                u64::MAX,
            ),
            (
                "inbox_deadline_ms",
                self.inbox_deadline_ms,
                at_least_one,
                DAY_MS,
            ),
            (
                "inbox_min_rate",
                self.inbox_min_rate,
                at_least_one,
                u64::MAX,
            ),
        ];
        for (field, value, min, max) in ranges {
            if value < min {
                errors.push(format!("{field} = {value}: must be at least {min}"));
            } else if value > max {
                errors.push(format!("{field} = {value}: must be at most {max}"));
            }
        }
        if let Some(topic) = self
            .subscribe
            .iter()
            .find(|t| t.is_empty() || t.len() > 256)
        {
            errors.push(format!("subscribe = {topic:?}: a topic is 1 to 256 bytes"));
        }
        let lists = [
            ("bootstrap", self.bootstrap.len(), 1_024),
            ("reserved", self.reserved.len(), 1_024),
            ("dial", self.dial.len(), 1_024),
            ("listen", self.listen.len(), 64),
            ("find_peer", self.find_peer.len(), 1_024),
            ("subscribe", self.subscribe.len(), 64),
            ("relays", self.relays.len(), 1_024),
            ("external_addrs", self.external_addrs.len(), 1_024),
            ("allow_peer", self.allow_peer.len(), 65_536),
            ("deny_peer", self.deny_peer.len(), 65_536),
            ("inbox_allow", self.inbox_allow.len(), 65_536),
        ];
        for (field, len, max) in lists {
            if len > max {
                errors.push(format!("{field}: {len} entries, at most {max}"));
            }
        }
    }

    /// The network configuration for these settings.
    pub(crate) fn network_config(&self, v: &Validated) -> NetworkConfig {
        let ms = Duration::from_millis;
        let mut config = NetworkConfig {
            listen_port: self.listen_port,
            max_peers: self.max_peers,
            bootstrap_peers: v.bootstrap.clone(),
            reserved_peers: v.reserved.clone(),
            enable_mdns: self.mdns,
            enable_relay: self.relay,
            ..NetworkConfig::default()
        }
        .with_listen_ip(self.listen_ip)
        .with_listen_addrs(v.listen.clone())
        .with_transport(
            TransportConfig::default()
                .with_quic(QuicConfig::default().with_enabled(self.quic))
                .with_connect_timeout(ms(self.connect_timeout_ms))
                .with_private_network(v.swarm_key)
                .with_inbound_limits(
                    InboundLimits::default().with_limit_loopback(self.limit_loopback),
                ),
        );
        config.nat = NatConfig {
            relay_server: self.relay_server,
            relays: v.relays.clone(),
            external_addrs: v.external.clone(),
            autonat: AutonatSettings {
                boot_delay: ms(self.autonat_boot_delay_ms),
                retry_interval: ms(self.autonat_retry_ms),
                only_global_ips: !self.autonat_private_ips,
                ..AutonatSettings::default()
            },
            ..NatConfig::default()
        };
        config.discovery = config.discovery.with_kad_mode(if self.kad_server {
            KadMode::Server
        } else {
            KadMode::Auto
        });
        if let Some(protocol) = v.kad_protocol() {
            config.discovery = config.discovery.with_kad_protocol(protocol);
        }
        let service = self.mdns_service.clone().or_else(|| {
            v.swarm_key
                .map(|key| format!("_codio-{}._udp.local", fingerprint(&key)))
        });
        if let Some(service) = service {
            config.discovery = config
                .discovery
                .with_mdns_config(MdnsConfig::default().with_service_name(service));
        }
        config.policy = PolicyConfig::default()
            .with_liveness(
                ms(self.ping_interval_ms),
                ms(self.ping_timeout_ms),
                self.ping_failures,
            )
            .with_backoff(
                BackoffConfig::default()
                    .with_min(ms(self.backoff_min_ms))
                    .with_max(ms(self.backoff_max_ms)),
            )
            .with_access(self.access(v));
        let memory = match self.max_memory_percent {
            0 => MemoryLimit::Off,
            percent => MemoryLimit::Percent(percent),
        };
        config.policy.limits_mut().edit(|limits| {
            limits
                .with_limit_loopback(self.limit_loopback)
                .with_max_memory(memory)
        });
        config
    }
}

impl NodeConfig {
    /// The access rules: an allow list when peers are listed or only reserved peers are
    /// admitted (the facade adds bootstrap and reserved peers to it).
    fn access(&self, v: &Validated) -> AccessConfig {
        let mode = if self.reserved_only || !v.allow.is_empty() {
            AccessMode::AllowList
        } else {
            AccessMode::Open
        };
        AccessConfig::default()
            .with_mode(mode)
            .with_allowed(v.allow.iter().copied())
            .with_denied(v.deny.iter().copied())
    }
}

impl NodeConfig {
    /// The inbox's rules: senders are the inbox allow list plus every peer the node was told
    /// to trust (bootstrap, reserved, allow-listed), unless any sender is accepted.
    pub(crate) fn inbox_rules(&self, v: &Validated) -> InboxRules {
        let senders = if self.inbox_allow_any {
            Senders::Any
        } else {
            let trusted = v.bootstrap.iter().chain(&v.reserved).filter_map(peer_id_of);
            let listed = v.inbox_allow.iter().chain(&v.allow).copied();
            Senders::Only(trusted.chain(listed).collect())
        };
        InboxRules {
            senders,
            max_file: self.inbox_max_bytes,
            quota: self.inbox_quota_bytes,
            min_free: self.inbox_min_free_bytes,
            deadline_base: Duration::from_millis(self.inbox_deadline_ms),
            min_rate: self.inbox_min_rate,
        }
    }
}

/// The parsed values of a valid configuration.
#[derive(Debug, Clone)]
pub(crate) struct Validated {
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) reserved: Vec<Multiaddr>,
    pub(crate) dial: Vec<Multiaddr>,
    pub(crate) relays: Vec<Multiaddr>,
    pub(crate) external: Vec<Multiaddr>,
    pub(crate) find_peers: Vec<PeerId>,
    pub(crate) swarm_key: Option<PreSharedKey>,
    pub(crate) allow: Vec<PeerId>,
    pub(crate) deny: Vec<PeerId>,
    pub(crate) kad_protocol: Option<StreamProtocol>,
    pub(crate) inbox_allow: Vec<PeerId>,
}

impl Validated {
    /// The DHT protocol: the configured one, else one of the swarm key's, else libp2p's.
    fn kad_protocol(&self) -> Option<StreamProtocol> {
        self.kad_protocol.clone().or_else(|| {
            let key = self.swarm_key?;
            StreamProtocol::try_from_owned(format!("/codio/kad/{}/1.0.0", fingerprint(&key))).ok()
        })
    }
}

/// The first 16 hex digits of a swarm key's fingerprint (go-libp2p's): names the private
/// swarm's DHT protocol and mDNS service without revealing the key.
pub(crate) fn fingerprint(key: &PreSharedKey) -> String {
    key.fingerprint().to_string().chars().take(16).collect()
}

fn peer_ids(field: &str, texts: &[String], errors: &mut Vec<String>) -> Vec<PeerId> {
    let mut peers = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        match text.trim().parse::<PeerId>() {
            Ok(peer) => peers.push(peer),
            Err(e) => errors.push(format!("{field}[{i}] = {text:?}: not a peer id ({e})")),
        }
    }
    peers
}

/// Writes a fresh swarm key to `path` (which must not exist), owner-only; its fingerprint.
pub(crate) fn generate_swarm_key(path: &Path) -> anyhow::Result<String> {
    let key = PreSharedKey::new(crate::files::random_bytes::<32>().context("OS randomness")?);
    crate::files::write_new(path, key.to_string().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(fingerprint(&key))
}

/// A kubo swarm key file: `/key/swarm/psk/1.0.0/`, an encoding line, the key.
fn read_swarm_key(path: &Path) -> anyhow::Result<PreSharedKey> {
    let text = std::fs::read_to_string(path).context("reading it")?;
    text.trim_end()
        .parse::<PreSharedKey>()
        .map_err(|e| anyhow::anyhow!("not a swarm key file ({e})"))
}

fn addresses(
    field: &str,
    texts: &[String],
    need_peer_id: bool,
    errors: &mut Vec<String>,
) -> Vec<Multiaddr> {
    let mut parsed = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        match text.trim().parse::<Multiaddr>() {
            Ok(address) if need_peer_id && peer_id_of(&address).is_none() => errors.push(format!(
                "{field}[{i}] = {text:?}: missing /p2p/<peer id> (the peer must be identified)"
            )),
            Ok(address) => parsed.push(address),
            Err(e) => errors.push(format!("{field}[{i}] = {text:?}: not a multiaddr ({e})")),
        }
    }
    parsed
}

fn duplicates(field: &str, addresses: &[Multiaddr], errors: &mut Vec<String>) {
    let mut seen: HashMap<PeerId, usize> = HashMap::new();
    for (i, address) in addresses.iter().enumerate() {
        if let Some(peer) = peer_id_of(address)
            && let Some(first) = seen.insert(peer, i)
        {
            errors.push(format!(
                "{field}[{i}]: duplicate peer {peer} (already {field}[{first}])"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_example_is_the_defaults_and_names_every_key() {
        assert_eq!(NodeConfig::parse(EXAMPLE).unwrap(), NodeConfig::default());
        let everything = NodeConfig {
            data_dir: Some("/d".into()),
            metrics_addr: Some("127.0.0.1:1".parse().unwrap()),
            inbox: Some("/i".into()),
            ..NodeConfig::default()
        };
        let keys = toml::to_string(&everything).unwrap();
        for line in keys.lines() {
            let key = line.split(" = ").next().unwrap();
            assert!(
                EXAMPLE.contains(&format!("{key} = ")),
                "the example does not document {key}"
            );
        }
    }

    #[test]
    fn the_operations_guide_shows_the_current_example() {
        let guide = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operations.md"),
        )
        .unwrap();
        assert!(
            guide.contains(EXAMPLE.trim_end()),
            "docs/operations.md must quote config::EXAMPLE verbatim"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let peer = PeerId::random();
        let config = NodeConfig::parse(&format!(
            r#"
            bootstrap = ["/ip4/10.0.0.1/tcp/1/p2p/{peer}", "/ip4/10.0.0.2/tcp/1/p2p/{peer}",
                         "/ip4/10.0.0.3/tcp/1", "not an address"]
            find_peer = ["nope"]
            ping_failures = 0
            backoff_min_ms = 10
            backoff_max_ms = 5
            "#
        ))
        .unwrap();
        let errors = config.validate().unwrap_err();
        let joined = errors.join("\n");
        for expected in [
            "bootstrap[1]: duplicate peer",
            "bootstrap[2] = \"/ip4/10.0.0.3/tcp/1\": missing /p2p/",
            "bootstrap[3] = \"not an address\": not a multiaddr",
            "find_peer[0] = \"nope\": not a peer id",
            "ping_failures = 0",
            "backoff_min_ms = 10 is larger than backoff_max_ms = 5",
        ] {
            assert!(
                joined.contains(expected),
                "missing {expected:?} in:\n{joined}"
            );
        }
        assert_eq!(errors.len(), 6, "{joined}");
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_key() {
        let err = NodeConfig::parse("listen_port = 70000")
            .unwrap_err()
            .join("; ");
        assert!(err.contains("listen_port"), "{err}");
        let err = NodeConfig::parse("listen_prot = 1").unwrap_err().join("; ");
        assert!(err.contains("listen_prot"), "{err}");
        // Every bad key at once, not only the first.
        let errors =
            NodeConfig::parse("listen_port = 70000\njson = \"yes\"\nmdsn = false").unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        for key in ["listen_port", "json", "mdsn"] {
            assert!(errors.iter().any(|e| e.contains(key)), "{key}: {errors:?}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let file = NodeConfig::parse("listen_port = 4001\nmdns = true\nmax_peers = 7").unwrap();
        let mut config = file;
        Overrides {
            listen_port: Some(5001),
            no_mdns: true,
            ..Overrides::default()
        }
        .apply(&mut config);
        assert_eq!(config.listen_port, 5001);
        assert!(!config.mdns);
        assert_eq!(config.max_peers, 7, "unset flags keep the file's value");
    }

    /// A swarm key names the node's DHT protocol and mDNS service after the key, so a private
    /// swarm never merges with the public DHT or another swarm; explicit names win; without a
    /// key the public defaults stay.
    #[test]
    fn a_swarm_key_names_the_dht_and_mdns_service() {
        let path =
            std::env::temp_dir().join(format!("codio-node-swarm-key-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let fp = generate_swarm_key(&path).unwrap();
        assert_eq!(fp.len(), 16, "{fp}");
        let names = |config: &NodeConfig| {
            let network = config.network_config(&config.validate().unwrap());
            (
                network.discovery.kad_protocol().to_string(),
                network.discovery.mdns_config().service_name().to_owned(),
            )
        };
        let keyed = NodeConfig {
            swarm_key: Some(path.clone()),
            ..NodeConfig::default()
        };
        assert_eq!(
            names(&keyed),
            (
                format!("/codio/kad/{fp}/1.0.0"),
                format!("_codio-{fp}._udp.local")
            )
        );
        let named = NodeConfig {
            kad_protocol: Some("/cdn/kad/1.0.0".into()),
            mdns_service: Some("_cdn._udp.local".into()),
            ..keyed
        };
        assert_eq!(
            names(&named),
            ("/cdn/kad/1.0.0".into(), "_cdn._udp.local".into())
        );
        assert_eq!(
            names(&NodeConfig::default()),
            ("/ipfs/kad/1.0.0".into(), "_p2p._udp.local".into())
        );
        std::fs::remove_file(path).unwrap();
    }

    /// `allow_peer`, `deny_peer` and `reserved_only` reach the node's access rules.
    #[test]
    fn listen_addresses_and_quic_reach_the_node() {
        let file = NodeConfig::parse(
            "listen = [\"/ip4/0.0.0.0/tcp/4001\", \"/ip6/::/udp/4001/quic-v1\"]\nquic = false",
        )
        .unwrap();
        let network = file.network_config(&file.validate().unwrap());
        assert_eq!(
            network.listen_addrs,
            ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/udp/4001/quic-v1"]
                .map(|a| a.parse::<Multiaddr>().unwrap())
        );
        assert!(!network.transport.quic_enabled());
        let default = NodeConfig::default();
        let network = default.network_config(&default.validate().unwrap());
        assert!(network.transport.quic_enabled() && network.listen_addrs.is_empty());
        let bad = NodeConfig {
            listen: vec!["/ip4/0.0.0.0/tcp/4001".into(), "nonsense".into()],
            ..NodeConfig::default()
        };
        let errors = bad.validate().unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with("listen[1]")),
            "{errors:?}"
        );
    }

    /// The node's defaults build exactly the library's default node: a layer default that
    /// changes without the node's mapping (or the reverse) fails here.
    #[test]
    fn defaults_are_the_layers_defaults() {
        let node = NodeConfig::default();
        let network = node.network_config(&node.validate().unwrap());
        let library = NetworkConfig::default();
        assert_eq!(network.max_peers, library.max_peers);
        assert_eq!(network.enable_mdns, library.enable_mdns);
        assert_eq!(network.enable_relay, library.enable_relay);
        assert_eq!(network.listen_ip, library.listen_ip);
        assert_eq!(network.listen_port, library.listen_port);
        assert_eq!(network.policy.liveness(), library.policy.liveness());
        assert_eq!(network.policy.backoff(), library.policy.backoff());
        assert_eq!(network.policy.limits(), library.policy.limits());
        assert_eq!(network.nat, library.nat);
        assert_eq!(
            network.transport.connect_timeout(),
            library.transport.connect_timeout()
        );
        assert_eq!(
            network.transport.quic_enabled(),
            library.transport.quic_enabled()
        );
    }

    #[test]
    fn access_settings_reach_the_node() {
        let (friend, foe) = (PeerId::random(), PeerId::random());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for (allow, reserved_only, mode) in [
            (vec![], false, AccessMode::Open),
            (vec![friend.to_string()], false, AccessMode::AllowList),
            (vec![], true, AccessMode::AllowList),
        ] {
            let config = NodeConfig {
                allow_peer: allow.clone(),
                deny_peer: vec![foe.to_string()],
                reserved_only,
                mdns: false,
                listen_ip: "127.0.0.1".parse().unwrap(),
                ..NodeConfig::default()
            };
            let v = config.validate().unwrap();
            runtime.block_on(async {
                let node = codio_network::NetworkManager::new(config.network_config(&v))
                    .await
                    .unwrap();
                let access = node.access();
                assert_eq!(access.mode(), mode, "{allow:?} {reserved_only}");
                assert_eq!(access.allowed().len(), allow.len());
                assert_eq!(access.denied(), vec![foe]);
                node.shutdown().await;
            });
        }
    }

    mod property {
        use super::*;
        use proptest::prelude::*;

        /// Mostly values within `1..=max`, often `max` itself, sometimes anything at all
        /// (0, just past the bound, `u64::MAX`).
        fn up_to(max: u64) -> impl Strategy<Value = u64> {
            prop_oneof![
                24 => 1..=max,
                8 => Just(max),
                1 => prop_oneof![Just(0), Just(max.saturating_add(1)), Just(u64::MAX), any::<u64>()],
            ]
        }

        fn config() -> impl Strategy<Value = NodeConfig> {
            const HOUR: u64 = 3_600_000;
            const DAY: u64 = 24 * HOUR;
            let times = (
                up_to(HOUR),
                up_to(HOUR),
                up_to(600_000),
                up_to(HOUR),
                up_to(DAY),
                up_to(DAY),
                up_to(DAY),
                up_to(DAY),
            );
            let counts = (
                up_to(100_000),
                up_to(1_000),
                up_to(u64::MAX),
                up_to(u64::MAX),
                up_to(u64::MAX),
                up_to(101),
            );
            (times, counts).prop_map(|(t, c)| NodeConfig {
                ping_interval_ms: t.0,
                ping_timeout_ms: t.1,
                connect_timeout_ms: t.2,
                backoff_min_ms: t.3,
                backoff_max_ms: t.4,
                autonat_boot_delay_ms: t.5,
                autonat_retry_ms: t.6,
                inbox_deadline_ms: t.7,
                max_peers: usize::try_from(c.0).unwrap_or(usize::MAX),
                ping_failures: u32::try_from(c.1).unwrap_or(u32::MAX),
                inbox_max_bytes: c.2,
                // Mostly at least the largest file (else validation refuses it).
                inbox_quota_bytes: if c.3 % 8 == 0 {
                    c.3
                } else {
                    c.2.saturating_add(c.3)
                },
                inbox_min_rate: c.4,
                max_memory_percent: u8::try_from(c.5).unwrap_or(u8::MAX),
                // Never mDNS in the host's namespace.
                mdns: false,
                listen_ip: "127.0.0.1".parse().unwrap(),
                ..NodeConfig::default()
            })
        }

        /// Every duration the node derives from a configuration, added to now.
        fn times_fit(config: &NodeConfig, v: &Validated) -> bool {
            let network = config.network_config(v);
            let rules = config.inbox_rules(v);
            let ledger = crate::inbox::Ledger::new(rules, 0);
            let backoff = BackoffConfig::default()
                .with_min(Duration::from_millis(config.backoff_min_ms))
                .with_max(Duration::from_millis(config.backoff_max_ms));
            let ms = Duration::from_millis;
            let now = std::time::Instant::now();
            let window = ms(config.ping_interval_ms)
                .checked_mul(config.ping_failures)
                .and_then(|d| d.checked_add(ms(config.ping_timeout_ms)));
            [
                window,
                Some(backoff.base_delay(u32::MAX)),
                Some(ledger.deadline(u64::MAX)),
                Some(network.transport.connect_timeout()),
                Some(ms(config.autonat_boot_delay_ms)),
                Some(ms(config.autonat_retry_ms)),
            ]
            .into_iter()
            .all(|d| d.and_then(|d| now.checked_add(d)).is_some())
        }

        /// A configuration that validates builds a node, and every duration derived from it
        /// can be added to the clock. 256 cases (a quarter of them valid, each built into a
        /// node; the rest exercise the refusals).
        #[test]
        fn no_configuration_that_validates_makes_the_node_panic() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let built = std::cell::Cell::new(0);
            let mut runner =
                proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
            runner
                .run(&config(), |config| {
                    let Ok(v) = config.validate() else {
                        return Ok(());
                    };
                    built.set(built.get() + 1);
                    prop_assert!(times_fit(&config, &v));
                    runtime.block_on(async {
                        let node = codio_network::NetworkManager::new(config.network_config(&v))
                            .await
                            .expect("a validated configuration builds a node");
                        node.shutdown().await;
                    });
                    Ok(())
                })
                .unwrap();
            let built = built.get();
            assert!(
                built >= 256 / 8,
                "only {built} of 256 configurations were valid"
            );
        }
    }
}
