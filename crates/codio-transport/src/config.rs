//! [`TransportConfig`]: every setting of the transport, with its default, and the errors of
//! building one.

use std::{io, time::Duration};

use libp2p::{
    PeerId,
    core::{muxing::StreamMuxerBox, transport::Boxed, upgrade::Version},
    noise, tcp,
};

use crate::{
    InboundLimits, NOISE_FRAME_PAYLOAD, PreSharedKey, QuicConfig, SecurityProtocol, YamuxConfig,
};

/// The transport type produced by this crate: authenticated (remote [`PeerId`]) and
/// multiplexed connections behind a boxed, type-erased [`Transport`](libp2p::Transport).
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
    /// The QUIC transport could not be set up.
    #[error("QUIC: {0}")]
    Quic(#[source] crate::QuicError),
}

/// How a multistream-select negotiation runs where codio proposes: the security and
/// multiplexing protocols of a connection it dials ([`TransportConfig::with_negotiation`]),
/// and the protocol of every stream it opens ([`TransportConfig::with_stream_negotiation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NegotiationMode {
    /// The dialer sends its single proposal without waiting for the listener's confirmation,
    /// saving one round trip per negotiated protocol (what libp2p's `SwarmBuilder` uses for
    /// TCP, and go-libp2p for the streams it opens). On a stream the request goes out with
    /// the proposal: the first request on a new connection takes one round trip, not two. A
    /// listener that refuses the protocol is then seen as a failed read on the stream rather
    /// than as a negotiation failure (`codio_base::protocol_refused` tells them apart).
    #[default]
    Lazy,
    /// Every proposal waits for the listener's confirmation (multistream-select 1.0 as written;
    /// rust-libp2p's default for streams, and codio's).
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
/// | [`stream_negotiation`](Self::with_stream_negotiation) | [`NegotiationMode::Strict`] (see there) |
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
/// | [`security`](Self::with_security) | TLS 1.3 first, Noise second (see [`security`](crate::security)) |
/// | [`quic`](Self::with_quic) | [`QuicConfig::default`]: QUIC on beside TCP (off with a private network key), TCP dials wait 250 ms (30 ms on private addresses) for a QUIC dial to the same peer |
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub(crate) nodelay: bool,
    pub(crate) listen_backlog: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_streams: usize,
    pub(crate) dns: bool,
    pub(crate) negotiation: NegotiationMode,
    pub(crate) stream_negotiation: NegotiationMode,
    pub(crate) yamux_frame_size: usize,
    pub(crate) yamux_connection_window: usize,
    pub(crate) inbound: InboundLimits,
    pub(crate) psk: Option<PreSharedKey>,
    pub(crate) security: Vec<SecurityProtocol>,
    pub(crate) quic: QuicConfig,
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
            stream_negotiation: NegotiationMode::Strict,
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

    /// Sets how the streams a node opens negotiate their protocol (default
    /// [`NegotiationMode::Strict`]). [`NegotiationMode::Lazy`] saves the first request on a new
    /// connection one round trip (measured over a 50 ms path: a new peer's first answer in 4
    /// round trips instead of 5 over TCP, 2 instead of 3 over QUIC; docs/performance.md) and
    /// every Kademlia RPC one, and codio's own protocols and the liveness policy handle its
    /// refusals; it is not the default because the 100-node Kademlia test then intermittently
    /// fails to find a lookup's target (not yet explained).
    pub fn with_stream_negotiation(mut self, negotiation: NegotiationMode) -> Self {
        self.stream_negotiation = negotiation;
        self
    }

    /// The multistream-select version of the streams a node opens, for the swarm's
    /// `with_substream_upgrade_protocol_override` ([`Self::with_stream_negotiation`]).
    pub fn stream_negotiation(&self) -> Version {
        self.stream_negotiation.into()
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

    /// Sets the bounds on inbound connections in their handshake (see [`gate`](crate::gate)).
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
