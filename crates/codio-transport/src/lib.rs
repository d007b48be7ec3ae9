//! Authenticated, multiplexed transport for codio nodes.
//!
//! [`build_transport`] returns the transport every codio node speaks: TCP (with `TCP_NODELAY`)
//! and, beside it, QUIC ([`QuicConfig`]; TCP dials wait briefly for a QUIC dial to the same
//! peer, happy-eyeballs style), optionally behind DNS resolution; [`listen`] says which
//! addresses a node listens on (TCP and QUIC, IPv4 and IPv6). TCP is secured with TLS 1.3 or
//! [Noise](libp2p::noise) (XX
//! handshake), negotiated in a configured order ([`security`]; Ed25519 identities either way;
//! a peer met before is dialed with the protocol it completed, at no negotiation round trip),
//! and multiplexed with Yamux ([`YamuxConfig`], tuned: see the `muxer` notes on
//! [`NOISE_FRAME_PAYLOAD`]); a failed set-up is a [`SetupError`]. The whole connection set-up — TCP
//! connect, protocol negotiation, security handshake and Yamux negotiation — is bounded by
//! [`TransportConfig::connect_timeout`]; a set-up that takes longer fails with an
//! [`std::io::ErrorKind::TimedOut`] error.
//!
//! [`upgrade`] applies the same security and multiplexing upgrades to any other byte-stream
//! transport, so that every path into a node is authenticated and multiplexed the same way;
//! [`build_with_relay`] uses it to put the relay v2 client transport (NAT traversal: dialing and
//! listening on `/p2p-circuit` addresses) in front of TCP and hands back the relay client's
//! behaviour half. [`ConnectError::from_dial_error`] turns a failed dial into what a caller can
//! act on (timeout, wrong peer id, unreachable with the whole error chain, denied, …).
//!
//! Inbound connections in their handshake pass through an [`InboundGate`] ([`gate`]): at most
//! 64 at once, 8 per source address and 16 per subnet, 5 s each; when a bound is reached the
//! oldest handshake of the offending (or busiest) source is aborted and the newcomer kept.
//! [`build`] returns its [`InboundStats`] with the transport.
//!
//! The result is a plain [`Boxed`] libp2p transport and works with any [`libp2p::Swarm`]:
//!
//! ```
//! use codio_transport::{TransportConfig, build_transport};
//! use libp2p::{Swarm, identity, ping, swarm};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keypair = identity::Keypair::generate_ed25519();
//! let config = TransportConfig::default()
//!     .with_connect_timeout(Duration::from_secs(5))
//!     .with_max_streams(256);
//! let transport = build_transport(&keypair, &config)?;
//! let swarm = Swarm::new(
//!     transport,
//!     ping::Behaviour::default(),
//!     keypair.public().to_peer_id(),
//!     swarm::Config::with_tokio_executor(),
//! );
//! assert_eq!(*swarm.local_peer_id(), keypair.public().to_peer_id());
//! # Ok(())
//! # }
//! ```

use std::{io, time::Duration};

use futures::{AsyncRead, AsyncWrite};
pub use libp2p::pnet::PreSharedKey;
use libp2p::{
    PeerId, Transport,
    core::{muxing::StreamMuxerBox, transport::Boxed, upgrade::Version},
    dns, identity, noise,
    pnet::PnetConfig,
    tcp,
};

pub mod addr;
mod coalesce;
mod connect_error;
mod eyeballs;
pub mod gate;
pub mod listen;
mod muxer;
mod negotiate;
mod quic;
mod reuse;
pub mod security;
mod timeout;
mod tls;

pub use coalesce::Coalesce;
pub use connect_error::ConnectError;
pub use gate::{InboundGate, InboundLimits, InboundStats, ShedReason};
pub use muxer::{Muxer, MuxerError, NOISE_FRAME_PAYLOAD, Stream, YamuxConfig};
pub use negotiate::SetupError;
pub use quic::QuicConfig;
pub use security::{SecureStream, SecurityError, SecurityProtocol};

/// The transport type produced by this crate: authenticated (remote [`PeerId`]) and
/// multiplexed connections behind a boxed, type-erased [`Transport`].
pub type CodioTransport = Boxed<(PeerId, StreamMuxerBox)>;

/// Errors building a transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportBuildError {
    /// The Noise configuration could not be derived from the identity keypair.
    #[error("noise configuration: {0}")]
    Noise(#[from] noise::Error),
    /// The TLS certificate or configuration could not be made from the identity keypair.
    #[error("TLS configuration: {0}")]
    Tls(#[source] libp2p::tls::UpgradeError),
    /// The security protocols configured cannot work (none, or one listed twice).
    #[error("security protocols {0:?}: list each at most once, and at least one")]
    Security(Vec<SecurityProtocol>),
    /// The system DNS configuration could not be read.
    #[error("dns resolver configuration: {0}")]
    Dns(#[source] io::Error),
}

/// How the multistream-select negotiation of the security and multiplexing protocols runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NegotiationMode {
    /// The dialer sends its single proposal without waiting for the listener's confirmation,
    /// saving one round trip per negotiated protocol (what libp2p's `SwarmBuilder` uses for TCP).
    #[default]
    Lazy,
    /// Every proposal waits for the listener's confirmation (multistream-select 1.0 as written).
    Strict,
}

impl From<NegotiationMode> for Version {
    fn from(mode: NegotiationMode) -> Self {
        match mode {
            NegotiationMode::Lazy => Version::V1Lazy,
            NegotiationMode::Strict => Version::V1,
        }
    }
}

/// Configuration of the codio transport.
///
/// | setting | default |
/// |---|---|
/// | [`nodelay`](Self::with_nodelay) | `true` (Nagle off: small request/response frames go out at once) |
/// | [`listen_backlog`](Self::with_listen_backlog) | `1024` |
/// | [`connect_timeout`](Self::with_connect_timeout) | 10 s for TCP connect + security handshake + Yamux |
/// | [`max_streams`](Self::with_max_streams) | 256 concurrent Yamux streams per connection (go-libp2p's inbound streams per peer) |
/// | [`dns`](Self::with_dns) | `true`: `/dns`, `/dns4`, `/dns6` addresses are resolved with the system resolver |
/// | [`negotiation`](Self::with_negotiation) | [`NegotiationMode::Lazy`] |
/// | [`yamux_frame_size`](Self::with_yamux_frame_size) | [`NOISE_FRAME_PAYLOAD`] (64,499 bytes: one Yamux frame fills one Noise message; libp2p-yamux uses 16 KiB) |
/// | [`yamux_connection_window`](Self::with_yamux_connection_window) | 96 MiB: 256 KiB for each of `max_streams` streams plus 32 MiB for busy streams to grow their windows into (two at 16 MiB); the most unread data one connection can make this node hold (rust-yamux defaults to 1 GiB) |
///
/// The memory budget behind `max_streams` and `yamux_connection_window`: an idle connection
/// costs about 60 KiB (`codio-bench --only memory`); a peer that opens every stream it may and
/// fills every window without our reading makes its connection hold at most
/// `yamux_connection_window` (96 MiB); the policy's per-source and total connection bounds
/// multiply it, and memory-based refusal (codio-policy) stops admitting connections when the
/// process is near its memory budget. See `docs/security.md`.
/// | [`private_network`](Self::with_private_network) | none: with a pre-shared key, every TCP connection first runs libp2p's private-network handshake (pnet, XSalsa20 with the key, kubo's key file format); peers without the key cannot finish it |
/// | [`inbound`](Self::with_inbound_limits) | [`InboundLimits::default`]: 64 inbound handshakes at once, 8 per source, 16 per subnet, 5 s each |
/// | [`security`](Self::with_security) | TLS 1.3 first, Noise second (see [`security`]) |
/// | [`quic`](Self::with_quic) | [`QuicConfig::default`]: QUIC on beside TCP (off with a private network key), TCP dials wait 250 ms (30 ms on private addresses) for a QUIC dial to the same peer |
#[derive(Debug, Clone)]
pub struct TransportConfig {
    nodelay: bool,
    listen_backlog: u32,
    connect_timeout: Duration,
    max_streams: usize,
    dns: bool,
    negotiation: NegotiationMode,
    yamux_frame_size: usize,
    yamux_connection_window: usize,
    inbound: InboundLimits,
    psk: Option<PreSharedKey>,
    security: Vec<SecurityProtocol>,
    quic: QuicConfig,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            nodelay: true,
            listen_backlog: 1024,
            connect_timeout: Duration::from_secs(10),
            max_streams: 256,
            dns: true,
            negotiation: NegotiationMode::default(),
            yamux_frame_size: NOISE_FRAME_PAYLOAD,
            yamux_connection_window: 96 * 1024 * 1024,
            inbound: InboundLimits::default(),
            psk: None,
            security: vec![SecurityProtocol::Tls, SecurityProtocol::Noise],
            quic: QuicConfig::default(),
        }
    }
}

impl TransportConfig {
    /// Sets `TCP_NODELAY` on every socket (default `true`).
    pub fn with_nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// Sets the listen backlog of TCP listeners (default 1024).
    pub fn with_listen_backlog(mut self, backlog: u32) -> Self {
        self.listen_backlog = backlog;
        self
    }

    /// Bounds the whole set-up of a dial: TCP connect, protocol negotiation, security handshake
    /// and Yamux negotiation (default 10 s). Inbound set-ups have the shorter
    /// [`InboundLimits::with_handshake_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the maximum number of concurrent Yamux streams per connection (default 256).
    pub fn with_max_streams(mut self, max_streams: usize) -> Self {
        self.max_streams = max_streams;
        self
    }

    /// Enables or disables DNS resolution of `/dns*` addresses (default `true`).
    pub fn with_dns(mut self, dns: bool) -> Self {
        self.dns = dns;
        self
    }

    /// Sets the protocol negotiation mode (default [`NegotiationMode::Lazy`]).
    pub fn with_negotiation(mut self, negotiation: NegotiationMode) -> Self {
        self.negotiation = negotiation;
        self
    }

    /// Sets the largest Yamux data frame codio sends (default [`NOISE_FRAME_PAYLOAD`]). Larger
    /// frames mean fewer Noise messages and system calls per byte; smaller ones interleave
    /// concurrent streams more finely.
    pub fn with_yamux_frame_size(mut self, bytes: usize) -> Self {
        self.yamux_frame_size = bytes.max(1);
        self
    }

    /// Bounds the sum of the auto-tuned Yamux receive windows of one connection's streams
    /// (default 96 MiB; never below 256 KiB × [`max_streams`](Self::with_max_streams), and
    /// what lies above that is the room streams have to grow beyond 256 KiB): the
    /// most a peer can make a connection buffer.
    pub fn with_yamux_connection_window(mut self, bytes: usize) -> Self {
        self.yamux_connection_window = bytes;
        self
    }

    /// Makes this a private network: every TCP connection first runs libp2p's pnet
    /// handshake with `key` (`None`: a public network). Read a kubo swarm key file with
    /// `key_file_text.parse::<PreSharedKey>()`. Relayed connections ride on connections that
    /// ran it.
    pub fn with_private_network(mut self, key: Option<PreSharedKey>) -> Self {
        self.psk = key;
        self
    }

    /// Sets the security protocols offered, most preferred first (default TLS 1.3, then
    /// Noise). Offer Noise too unless every peer speaks TLS: js-libp2p and py-libp2p peers
    /// often speak only Noise.
    pub fn with_security(mut self, protocols: impl IntoIterator<Item = SecurityProtocol>) -> Self {
        self.security = protocols.into_iter().collect();
        self
    }

    /// The security protocols offered, most preferred first.
    pub fn security(&self) -> &[SecurityProtocol] {
        &self.security
    }

    /// Sets the QUIC settings (default [`QuicConfig::default`]: QUIC on).
    pub fn with_quic(mut self, quic: QuicConfig) -> Self {
        self.quic = quic;
        self
    }

    /// The QUIC settings.
    pub fn quic(&self) -> &QuicConfig {
        &self.quic
    }

    /// Whether the transport speaks QUIC: when enabled and no private network key is set
    /// (pnet cannot wrap QUIC).
    pub fn quic_enabled(&self) -> bool {
        self.quic.enabled() && self.psk.is_none()
    }

    /// The pre-shared key of a private network, if set.
    pub fn private_network(&self) -> Option<PreSharedKey> {
        self.psk
    }

    /// Sets the bounds on inbound connections in their handshake (see [`gate`]).
    pub fn with_inbound_limits(mut self, limits: InboundLimits) -> Self {
        self.inbound = limits;
        self
    }

    /// The bounds on inbound connections in their handshake.
    pub fn inbound_limits(&self) -> &InboundLimits {
        &self.inbound
    }

    /// The connection set-up timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The maximum number of concurrent Yamux streams per connection.
    pub fn max_streams(&self) -> usize {
        self.max_streams
    }

    /// The Yamux configuration derived from this configuration.
    pub fn yamux_config(&self) -> YamuxConfig {
        YamuxConfig::new(
            self.max_streams,
            self.yamux_frame_size,
            self.yamux_connection_window,
        )
    }

    /// The TCP configuration derived from this configuration.
    pub fn tcp_config(&self) -> tcp::Config {
        tcp::Config::new()
            .nodelay(self.nodelay)
            .listen_backlog(self.listen_backlog)
    }
}

/// A built transport and the handles that come with it.
#[non_exhaustive]
pub struct Built {
    /// The transport, for the swarm.
    pub transport: CodioTransport,
    /// With `relay`, the relay client's behaviour half, which the swarm's behaviour must
    /// include (`codio_policy::nat` does).
    pub relay_client: Option<libp2p::relay::client::Behaviour>,
    /// What the inbound gate (shared by the direct and relayed transports) did.
    pub inbound: InboundStats,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("relay_client", &self.relay_client.is_some())
            .field("inbound", &self.inbound)
            .finish_non_exhaustive()
    }
}

/// Builds the transport for `keypair`: TCP (TLS or Noise, Yamux) and QUIC unless it is off
/// ([`TransportConfig::quic_enabled`]), behind DNS when enabled, and, with `relay`, the relay
/// v2 client transport tried first (so `/p2p-circuit` addresses can be dialed and listened
/// on), with the same upgrades; one [`InboundGate`] for all of them.
///
/// # Errors
///
/// Fails when the Noise configuration cannot be derived from the keypair or, with DNS enabled,
/// when the system resolver configuration cannot be read.
pub fn build(
    keypair: &identity::Keypair,
    config: &TransportConfig,
    relay: bool,
) -> Result<Built, TransportBuildError> {
    let gate = InboundGate::new(config.inbound.clone());
    let direct = direct(keypair, config, &gate)?;
    let inbound = gate.stats();
    let (transport, relay_client) = if relay {
        let (transport, client) = with_relay(direct, keypair, config, &gate)?;
        (transport, Some(client))
    } else {
        (direct, None)
    };
    Ok(Built {
        transport,
        relay_client,
        inbound,
    })
}

/// TCP upgraded and, when enabled, QUIC beside it (TCP dials waiting briefly for QUIC dials
/// to the same peer, see `eyeballs.rs`), inbound set-ups within `gate`; behind DNS resolution
/// when enabled.
fn direct(
    keypair: &identity::Keypair,
    config: &TransportConfig,
    gate: &InboundGate,
) -> Result<CodioTransport, TransportBuildError> {
    let tcp = reuse::ReuseFallback::new(tcp::tokio::Transport::new(config.tcp_config()));
    let tcp = private(tcp, keypair, config, gate)?;
    if !config.quic_enabled() {
        return with_dns(tcp, config);
    }
    let ip = tcp
        .or_transport(quic::transport(keypair, config, gate))
        .map(|either, _| either.into_inner())
        .map_err(|either| either.into_inner())
        .boxed();
    // The race wraps the DNS layer (see `eyeballs.rs`).
    let (public, private) = config.quic.tcp_delay();
    let delays = eyeballs::Delays { public, private };
    Ok(eyeballs::Eyeballs::new(with_dns(ip, config)?, delays).boxed())
}

/// `transport` behind DNS resolution when enabled.
fn with_dns(
    transport: CodioTransport,
    config: &TransportConfig,
) -> Result<CodioTransport, TransportBuildError> {
    if !config.dns {
        return Ok(transport);
    }
    let dns = dns::tokio::Transport::system(transport).map_err(TransportBuildError::Dns)?;
    Ok(dns.map_err(unwrap_dns).boxed())
}

/// A DNS layer's error as the transport's own where it is one (so a set-up timeout stays
/// `TimedOut`).
fn unwrap_dns(error: dns::Error<io::Error>) -> io::Error {
    match error {
        dns::Error::Transport(error) => error,
        dns::Error::Dial(mut errors) if errors.len() == 1 => match errors.pop() {
            Some(error) => unwrap_dns(error),
            None => io::Error::other("no dial error"),
        },
        other => io::Error::other(other),
    }
}

/// `transport` upgraded, after the private-network handshake when a key is set (inside the
/// set-up timeout and the inbound gate, like the rest of the set-up).
fn private<T>(
    transport: T,
    keypair: &identity::Keypair,
    config: &TransportConfig,
    gate: &InboundGate,
) -> Result<CodioTransport, TransportBuildError>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    match config.psk {
        Some(key) => {
            let pnet = transport.and_then(move |socket, _| PnetConfig::new(key).handshake(socket));
            upgrade_gated(pnet, keypair, config, gate)
        }
        None => upgrade_gated(transport, keypair, config, gate),
    }
}

/// The relay client transport, upgraded within the same `gate`, tried before `direct`.
fn with_relay(
    direct: CodioTransport,
    keypair: &identity::Keypair,
    config: &TransportConfig,
    gate: &InboundGate,
) -> Result<(CodioTransport, libp2p::relay::client::Behaviour), TransportBuildError> {
    let (relay_transport, relay_client) = libp2p::relay::client::new(keypair.public().to_peer_id());
    let relayed = upgrade_gated(relay_transport, keypair, config, gate)?;
    // Relay first: the DNS layer of the direct transport reports addresses it cannot dial as
    // errors rather than "not supported", which would stop the fall-through.
    let transport = relayed
        .or_transport(direct)
        .map_err(|error| error.into_inner())
        .map(|output, _| output.into_inner())
        .boxed();
    Ok((transport, relay_client))
}

/// [`build`] without the relay client: the transport only.
///
/// # Errors
///
/// As [`build`].
pub fn build_transport(
    keypair: &identity::Keypair,
    config: &TransportConfig,
) -> Result<CodioTransport, TransportBuildError> {
    build(keypair, config, false).map(|built| built.transport)
}

/// [`build`] with the relay client: the transport and the relay client's behaviour half.
///
/// # Errors
///
/// As [`build`].
pub fn build_with_relay(
    keypair: &identity::Keypair,
    config: &TransportConfig,
) -> Result<(CodioTransport, libp2p::relay::client::Behaviour), TransportBuildError> {
    let gate = InboundGate::new(config.inbound.clone());
    let direct = direct(keypair, config, &gate)?;
    with_relay(direct, keypair, config, &gate)
}

/// Secures `transport` (the configured security protocols) and multiplexes it with Yamux,
/// bounded by the configured set-up timeouts, inbound set-ups within a gate of their own
/// ([`InboundGate`]).
///
/// Use this to give other byte-stream transports (the relay client transport, a memory
/// transport in tests) exactly the same upgrades as [`build_transport`].
///
/// # Errors
///
/// Fails when the TLS or Noise configuration cannot be derived from the keypair, or the
/// security protocols configured cannot work.
pub fn upgrade<T>(
    transport: T,
    keypair: &identity::Keypair,
    config: &TransportConfig,
) -> Result<CodioTransport, TransportBuildError>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let gate = InboundGate::new(config.inbound.clone());
    upgrade_gated(transport, keypair, config, &gate)
}

fn upgrade_gated<T>(
    transport: T,
    keypair: &identity::Keypair,
    config: &TransportConfig,
    gate: &InboundGate,
) -> Result<CodioTransport, TransportBuildError>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let order = &config.security;
    let repeated = order
        .iter()
        .enumerate()
        .any(|(i, p)| order[..i].contains(p));
    if order.is_empty() || repeated {
        return Err(TransportBuildError::Security(order.clone()));
    }
    let security = security::Security::new(keypair, order, gate.stats())?;
    let version: Version = config.negotiation.into();
    let muxer = config.yamux_config();
    let transport = transport.and_then(move |io, endpoint| async move {
        let (security, narrowed) = security.for_endpoint(&endpoint);
        let secured = negotiate::negotiate(io, security.clone(), &endpoint, version).await;
        let (peer_id, stream) = secured.inspect_err(|_| {
            if let Some(peer) = narrowed {
                security.forget(&peer);
            }
        })?;
        let muxer = negotiate::negotiate(stream, muxer, &endpoint, version).await?;
        Ok::<_, SetupError>((peer_id, StreamMuxerBox::new(muxer)))
    });
    let timeout = timeout::SetupTimeout::new(transport, config.connect_timeout, gate.clone());
    Ok(timeout.boxed())
}

/// Whether a transport error (as reported in a dial or listen error) is the connection set-up
/// timeout of [`TransportConfig::connect_timeout`] or an OS-level connect timeout.
///
/// Boxed transports wrap errors in further [`io::Error`]s; this walks the wrapping.
pub fn is_timeout(error: &io::Error) -> bool {
    let mut current = error;
    // Bounded: each step unwraps one layer of a finite chain of boxes.
    loop {
        if current.kind() == io::ErrorKind::TimedOut {
            return true;
        }
        match current
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<io::Error>())
        {
            Some(inner) => current = inner,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use libp2p::{
        Multiaddr, Swarm,
        swarm::{DialError, SwarmEvent, dial_opts::DialOpts},
    };
    use std::time::Instant;

    fn swarm(config: &TransportConfig) -> Swarm<libp2p::ping::Behaviour> {
        let keypair = identity::Keypair::generate_ed25519();
        let transport = build_transport(&keypair, config).unwrap();
        Swarm::new(
            transport,
            libp2p::ping::Behaviour::default(),
            keypair.public().to_peer_id(),
            libp2p::swarm::Config::with_tokio_executor(),
        )
    }

    async fn listen(swarm: &mut Swarm<libp2p::ping::Behaviour>) -> Multiaddr {
        listen_on(swarm, "/ip4/127.0.0.1/tcp/0").await
    }

    async fn listen_on(swarm: &mut Swarm<libp2p::ping::Behaviour>, addr: &str) -> Multiaddr {
        swarm.listen_on(addr.parse().unwrap()).unwrap();
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    }

    /// `dialer` dials `target` at `addresses` (in this order); the address of the connection
    /// it got and how long that took.
    async fn connect(
        dialer: &mut Swarm<libp2p::ping::Behaviour>,
        target: &mut Swarm<libp2p::ping::Behaviour>,
        addresses: Vec<Multiaddr>,
    ) -> (Multiaddr, Duration) {
        let peer = *target.local_peer_id();
        let started = Instant::now();
        dialer
            .dial(DialOpts::peer_id(peer).addresses(addresses).build())
            .unwrap();
        let run = async {
            loop {
                tokio::select! {
                    _ = target.select_next_some() => {}
                    event = dialer.select_next_some() => match event {
                        SwarmEvent::ConnectionEstablished { endpoint, .. } => {
                            return codio_base::addr::without_p2p(endpoint.get_remote_address().clone());
                        }
                        SwarmEvent::OutgoingConnectionError { error, .. } => panic!("{error}"),
                        _ => {}
                    },
                }
            }
        };
        let address = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("connected within 10 s");
        (address, started.elapsed())
    }

    /// A peer listening on TCP and QUIC is reached over each alone, and over QUIC when the
    /// dialer knows both (TCP listed first): TCP waits for the QUIC dial, which wins.
    #[tokio::test]
    async fn quic_and_tcp_each_connect_and_quic_wins_when_both_are_known() {
        // A long delay: an unoptimised QUIC handshake can take longer than the default 30 ms.
        let delay = Duration::from_secs(5);
        let quic = QuicConfig::default().with_tcp_delay(delay, delay);
        let config = TransportConfig::default().with_quic(quic);
        let mut target = swarm(&config);
        let tcp = listen(&mut target).await;
        let quic = listen_on(&mut target, "/ip4/127.0.0.1/udp/0/quic-v1").await;
        for addresses in [
            vec![quic.clone()],
            vec![tcp.clone()],
            vec![tcp, quic.clone()],
        ] {
            let mut dialer = swarm(&config);
            let expected = addresses.last().unwrap().clone();
            let (address, took) = connect(&mut dialer, &mut target, addresses).await;
            assert_eq!(address, expected);
            assert!(took < delay, "{took:?}");
        }
    }

    /// A QUIC address that swallows every packet (UDP filtered): the TCP dial starts after
    /// the configured delay, not after QUIC's handshake timeout.
    #[tokio::test]
    async fn a_blocked_quic_address_falls_back_to_tcp_after_the_delay() {
        let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = black_hole.local_addr().unwrap().port();
        let blocked: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
            .parse()
            .unwrap();
        let delay = Duration::from_millis(400);
        let quic = QuicConfig::default().with_tcp_delay(delay, delay);
        let config = TransportConfig::default().with_quic(quic);
        let mut target = swarm(&config);
        let tcp = listen(&mut target).await;
        let mut dialer = swarm(&config);
        let (address, took) = connect(&mut dialer, &mut target, vec![blocked, tcp.clone()]).await;
        assert_eq!(address, tcp);
        assert!(took >= delay, "TCP started before the delay: {took:?}");
        assert!(took < delay * 3, "TCP waited for QUIC's timeout: {took:?}");
    }

    /// With a private network key there is no QUIC: listening on a QUIC address fails.
    #[tokio::test]
    async fn a_private_network_has_no_quic() {
        let key: PreSharedKey = PreSharedKey::new([7; 32]);
        let config = TransportConfig::default().with_private_network(Some(key));
        assert!(!config.quic_enabled());
        let mut swarm = swarm(&config);
        assert!(
            swarm
                .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
                .is_err()
        );
    }

    #[tokio::test]
    async fn two_swarms_connect_and_ping_over_loopback() {
        let config = TransportConfig::default();
        let mut a = swarm(&config);
        let mut b = swarm(&config);
        let addr = listen(&mut a).await;
        let a_id = *a.local_peer_id();
        b.dial(addr).unwrap();
        let run = async {
            loop {
                tokio::select! {
                    _ = a.select_next_some() => {}
                    event = b.select_next_some() => {
                        if let SwarmEvent::Behaviour(libp2p::ping::Event { peer, result: Ok(rtt), .. }) = event {
                            return (peer, rtt);
                        }
                    }
                }
            }
        };
        let (peer, rtt) = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("ping within 10 s");
        assert_eq!(peer, a_id);
        assert!(rtt < Duration::from_secs(5));
    }

    /// codio's own Yamux adapter (64 KiB frames) speaks the same wire protocol as a stock
    /// libp2p node (libp2p-yamux, 16 KiB frames): a stock swarm dials codio and pings.
    #[tokio::test]
    async fn codio_yamux_interoperates_with_stock_libp2p_yamux() {
        let mut codio = swarm(&TransportConfig::default());
        let addr = listen(&mut codio).await;
        let keypair = identity::Keypair::generate_ed25519();
        let stock_transport = tcp::tokio::Transport::new(tcp::Config::new())
            .upgrade(Version::V1)
            .authenticate(noise::Config::new(&keypair).unwrap())
            .multiplex(libp2p::yamux::Config::default())
            .boxed();
        let mut stock = Swarm::new(
            stock_transport,
            libp2p::ping::Behaviour::default(),
            keypair.public().to_peer_id(),
            libp2p::swarm::Config::with_tokio_executor(),
        );
        stock.dial(addr).unwrap();
        let codio_id = *codio.local_peer_id();
        let run = async {
            loop {
                tokio::select! {
                    _ = codio.select_next_some() => {}
                    event = stock.select_next_some() => {
                        if let SwarmEvent::Behaviour(libp2p::ping::Event { peer, result: Ok(_), .. }) = event {
                            return peer;
                        }
                    }
                }
            }
        };
        let peer = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("ping within 10 s");
        assert_eq!(peer, codio_id);
    }

    #[tokio::test]
    async fn silent_listener_hits_connect_timeout() {
        // A TCP listener that accepts but never speaks: the Noise handshake cannot finish.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let timeout = Duration::from_millis(300);
        let mut dialer = swarm(&TransportConfig::default().with_connect_timeout(timeout));
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        let started = Instant::now();
        dialer
            .dial(DialOpts::unknown_peer_id().address(addr).build())
            .unwrap();
        let error = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let SwarmEvent::OutgoingConnectionError { error, .. } =
                    dialer.select_next_some().await
                {
                    return error;
                }
            }
        })
        .await
        .expect("dial error within 10 s");
        let elapsed = started.elapsed();
        accept.abort();
        let DialError::Transport(errors) = error else {
            panic!("expected a transport error, got {error:?}");
        };
        let timed_out = errors.iter().any(|(_, e)| match e {
            libp2p::TransportError::Other(e) => is_timeout(e),
            libp2p::TransportError::MultiaddrNotSupported(_) => false,
        });
        assert!(timed_out, "expected a TimedOut error, got {errors:?}");
        assert!(elapsed >= timeout, "failed before the timeout: {elapsed:?}");
    }

    #[test]
    fn builders_set_fields() {
        let config = TransportConfig::default()
            .with_connect_timeout(Duration::from_secs(3))
            .with_max_streams(7)
            .with_dns(false)
            .with_nodelay(false)
            .with_listen_backlog(8)
            .with_negotiation(NegotiationMode::Strict);
        assert_eq!(config.connect_timeout(), Duration::from_secs(3));
        assert_eq!(config.max_streams(), 7);
        assert!(!config.dns);
        assert!(!config.nodelay);
        assert_eq!(config.listen_backlog, 8);
        assert_eq!(Version::from(config.negotiation), Version::V1);
    }
}
