//! QUIC beside TCP: its settings ([`QuicConfig`]) and the QUIC half of the transport.
//!
//! QUIC (QUIC v1 on quinn endpoints codio builds itself, `quic/endpoint.rs`, with libp2p's
//! TLS 1.3 certificates and codio's TLS configuration: AES-128-GCM first, one certificate
//! check per handshake; it interoperates with libp2p-quic both ways) sets a
//! connection up in one round trip where TCP + TLS/Noise + Yamux needs three, its streams do
//! not wait behind each other's lost packets, and UDP hole punching succeeds more often than
//! TCP's. A QUIC connection carries the same peer id and stream budget as a TCP one:
//! `max_streams` concurrent streams, a receive window of at most the configured connection
//! window, the set-up within `connect_timeout`, inbound set-ups through the same
//! [`InboundGate`](crate::InboundGate) as TCP's.
//!
//! A private network key (pnet) cannot wrap QUIC (its encryption is part of QUIC itself), so a
//! transport with a key has no QUIC: kubo does the same.

use std::time::Duration;

use libp2p::Transport;

use crate::{
    CodioTransport, TransportBuildError, TransportConfig, gate::InboundGate, timeout::SetupTimeout,
    tls::TlsConfig,
};

mod connection;
mod endpoint;

pub use endpoint::QuicError;
use endpoint::QuicTransport;

/// The most one QUIC stream may have unread before its sender waits (16 MiB, as a Yamux
/// stream's window may grow to), unless the connection window is smaller.
const STREAM_WINDOW: u32 = 16 * 1024 * 1024;

/// QUIC settings of a [`TransportConfig`](crate::TransportConfig).
///
/// | setting | default |
/// |---|---|
/// | [`enabled`](Self::with_enabled) | `true` (off whenever a private network key is set) |
/// | [`keep_alive`](Self::with_keep_alive) | 15 s: a quiet connection sends a keep-alive packet this often (go-libp2p's) |
/// | [`idle_timeout`](Self::with_idle_timeout) | 30 s without a packet from the peer closes the connection (go-libp2p's; libp2p-quic's default of 10 s closes connections of a node starved of CPU for a few seconds; keep it above `keep_alive`; dead peers are the policy's pings' to find) |
/// | [`mtu_discovery`](Self::with_mtu_discovery) | `true`: probe for packets larger than 1,200 bytes |
/// | [`tcp_delay`](Self::with_tcp_delay) | 250 ms to public addresses, 30 ms to loopback and private ones (go-libp2p's dial ranker): how long a TCP dial waits for a QUIC dial to the same peer before it starts too |
///
/// The handshake is bounded by [`TransportConfig::with_connect_timeout`], the concurrent
/// streams a peer may open by [`TransportConfig::with_max_streams`], and the connection's
/// receive window by [`TransportConfig::with_yamux_connection_window`] (each stream's by
/// 16 MiB within it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicConfig {
    enabled: bool,
    keep_alive: Duration,
    idle_timeout: Duration,
    mtu_discovery: bool,
    public_tcp_delay: Duration,
    private_tcp_delay: Duration,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            keep_alive: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(30),
            mtu_discovery: true,
            public_tcp_delay: Duration::from_millis(250),
            private_tcp_delay: Duration::from_millis(30),
        }
    }
}

impl QuicConfig {
    /// Turns QUIC on or off (default on).
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets how often a quiet connection sends a keep-alive packet (default 15 s).
    pub fn with_keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// Sets how long a connection lives without a packet from its peer (default 30 s).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Turns path MTU discovery on or off (default on).
    pub fn with_mtu_discovery(mut self, enabled: bool) -> Self {
        self.mtu_discovery = enabled;
        self
    }

    /// Sets how long a TCP dial waits for a QUIC dial to the same peer before starting too:
    /// `public` for public addresses (default 250 ms), `private` for loopback, private and
    /// link-local ones (default 30 ms). A QUIC dial that fails ends the wait at once.
    pub fn with_tcp_delay(mut self, public: Duration, private: Duration) -> Self {
        self.public_tcp_delay = public;
        self.private_tcp_delay = private;
        self
    }

    /// Whether QUIC is on (before a private network key turns it off).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How long a TCP dial waits for a QUIC dial to the same peer: `(public, private)`.
    pub fn tcp_delay(&self) -> (Duration, Duration) {
        (self.public_tcp_delay, self.private_tcp_delay)
    }

    /// The quinn transport settings under `transport`'s budgets.
    pub(crate) fn quinn_config(&self, transport: &TransportConfig) -> quinn::TransportConfig {
        let window = u32::try_from(transport.yamux_connection_window).unwrap_or(u32::MAX);
        let mut config = quinn::TransportConfig::default();
        // The concurrent streams a peer may open are granted as it uses them, up to
        // `max_streams` (`quic/connection.rs`).
        config
            .max_idle_timeout(quinn::IdleTimeout::try_from(self.idle_timeout).ok())
            .keep_alive_interval(Some(self.keep_alive))
            // libp2p streams are bidirectional; no unidirectional ones, no datagrams.
            .max_concurrent_uni_streams(0u32.into())
            .datagram_receive_buffer_size(None)
            .stream_receive_window(STREAM_WINDOW.min(window).into())
            .receive_window(window.into())
            .allow_spin(false);
        if !self.mtu_discovery {
            config.mtu_discovery_config(None);
        }
        config
    }
}

/// The QUIC transport with the node's TLS set-up `tls`: connections as `(peer id, muxer)`,
/// dials bounded by the connect timeout, inbound set-ups within `gate`.
pub(crate) fn transport(
    tls: TlsConfig,
    config: &TransportConfig,
    gate: &InboundGate,
) -> Result<CodioTransport, TransportBuildError> {
    let streams = u32::try_from(config.max_streams).unwrap_or(u32::MAX);
    let quic = QuicTransport::new(tls, config.quic.quinn_config(config), streams)
        .map_err(TransportBuildError::Quic)?;
    let timed = SetupTimeout::new(quic, config.connect_timeout, gate.clone());
    Ok(timed.boxed())
}
