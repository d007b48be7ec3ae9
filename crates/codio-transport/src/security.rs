//! The security handshake: TLS 1.3 (`/tls/1.0.0`, libp2p-tls) and Noise (`/noise`), offered
//! in a configured order through multistream-select.
//!
//! TLS comes first by default, as in go-libp2p: on CPUs with AES instructions TLS 1.3's
//! AES-GCM moves bulk data several times faster than Noise's ChaCha20-Poly1305 (see
//! docs/performance.md). Noise stays offered so that every Noise-only implementation
//! (js-libp2p, py-libp2p, older nodes) connects as before. When the peer accepts the first
//! protocol offered, the negotiation costs no extra round trip (the lazy multistream-select
//! dialer sends its choice with its first handshake message); a peer that knows only the
//! second costs one.

use std::fmt;

use futures::{AsyncRead, AsyncWrite, FutureExt, future::BoxFuture};
use libp2p::{
    PeerId,
    core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo},
    identity, noise, tls,
};

/// A security protocol codio can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecurityProtocol {
    /// TLS 1.3 (`/tls/1.0.0`).
    Tls,
    /// Noise XX (`/noise`).
    Noise,
}

impl SecurityProtocol {
    /// The multistream-select protocol name.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Tls => "/tls/1.0.0",
            SecurityProtocol::Noise => "/noise",
        }
    }
}

impl AsRef<str> for SecurityProtocol {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The stream a security handshake produced.
pub type SecureStream<C> = futures::future::Either<tls::TlsStream<C>, noise::Output<C>>;

/// A failed security handshake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// The TLS handshake failed.
    #[error("TLS handshake: {0}")]
    Tls(#[from] tls::UpgradeError),
    /// The Noise handshake failed.
    #[error("Noise handshake: {0}")]
    Noise(#[from] noise::Error),
    /// The peer chose a protocol this node does not offer (multistream-select never does).
    #[error("{0} is not offered")]
    NotOffered(SecurityProtocol),
}

/// The security upgrade: the configured protocols, in order of preference.
#[derive(Clone)]
pub(crate) struct Security {
    order: Vec<SecurityProtocol>,
    tls: Option<tls::Config>,
    noise: Option<noise::Config>,
    stats: crate::InboundStats,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("order", &self.order)
            .finish()
    }
}

impl Security {
    /// The upgrade for `keypair` offering `order` (not empty, no repeats: the transport
    /// configuration checks).
    pub(crate) fn new(
        keypair: &identity::Keypair,
        order: &[SecurityProtocol],
        stats: crate::InboundStats,
    ) -> Result<Self, crate::TransportBuildError> {
        let wants = |protocol| order.contains(&protocol);
        let tls = match wants(SecurityProtocol::Tls) {
            true => Some(tls::Config::new(keypair).map_err(crate::TransportBuildError::Tls)?),
            false => None,
        };
        let noise = match wants(SecurityProtocol::Noise) {
            true => Some(noise::Config::new(keypair)?),
            false => None,
        };
        Ok(Self {
            order: order.to_vec(),
            tls,
            noise,
            stats,
        })
    }

    /// TLS's configuration (it exists whenever TLS is offered, hence negotiated).
    fn tls(&self) -> Result<tls::Config, SecurityError> {
        (self.tls.clone()).ok_or(SecurityError::NotOffered(SecurityProtocol::Tls))
    }

    /// Noise's configuration (it exists whenever Noise is offered).
    fn noise(&self) -> Result<noise::Config, SecurityError> {
        (self.noise.clone()).ok_or(SecurityError::NotOffered(SecurityProtocol::Noise))
    }
}

impl UpgradeInfo for Security {
    type Info = SecurityProtocol;
    type InfoIter = std::vec::IntoIter<SecurityProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.order.clone().into_iter()
    }
}

impl Security {
    /// Runs the negotiated handshake on `socket`: `tls` or `noise` given its configuration,
    /// then counts it.
    async fn secure<C, TlsFut, NoiseFut>(
        self,
        socket: C,
        info: SecurityProtocol,
        tls: impl FnOnce(tls::Config, C) -> TlsFut,
        noise: impl FnOnce(noise::Config, C) -> NoiseFut,
    ) -> Result<(PeerId, SecureStream<C>), SecurityError>
    where
        TlsFut:
            std::future::Future<Output = Result<(PeerId, tls::TlsStream<C>), tls::UpgradeError>>,
        NoiseFut: std::future::Future<Output = Result<(PeerId, noise::Output<C>), noise::Error>>,
    {
        let (peer, stream) = match info {
            SecurityProtocol::Tls => {
                let (peer, stream) = tls(self.tls()?, socket).await?;
                (peer, futures::future::Either::Left(stream))
            }
            SecurityProtocol::Noise => {
                let (peer, stream) = noise(self.noise()?, socket).await?;
                (peer, futures::future::Either::Right(stream))
            }
        };
        self.stats.count_secured(info);
        Ok((peer, stream))
    }
}

impl<C> InboundConnectionUpgrade<C> for Security
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = (PeerId, SecureStream<C>);
    type Error = SecurityError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, info: SecurityProtocol) -> Self::Future {
        let name = info.name();
        self.secure(
            socket,
            info,
            move |config, socket| config.upgrade_inbound(socket, name),
            move |config, socket| config.upgrade_inbound(socket, name),
        )
        .boxed()
    }
}

impl<C> OutboundConnectionUpgrade<C> for Security
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = (PeerId, SecureStream<C>);
    type Error = SecurityError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, info: SecurityProtocol) -> Self::Future {
        let name = info.name();
        self.secure(
            socket,
            info,
            move |config, socket| config.upgrade_outbound(socket, name),
            move |config, socket| config.upgrade_outbound(socket, name),
        )
        .boxed()
    }
}
