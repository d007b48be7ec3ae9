//! The security handshake: TLS 1.3 (`/tls/1.0.0`, libp2p-tls) and Noise (`/noise`), offered
//! in a configured order through multistream-select.
//!
//! TLS comes first by default, as in go-libp2p: on CPUs with AES instructions TLS 1.3's
//! AES-GCM moves bulk data several times faster than Noise's ChaCha20-Poly1305 (see
//! docs/performance.md). Noise stays offered so that every Noise-only implementation
//! (js-libp2p, py-libp2p, older nodes) connects as before.
//!
//! Round trips: multistream-select lets a dialer send its first handshake message together
//! with its proposal only when it proposes a single protocol (the lazy dialer); proposing
//! several waits one round trip for the listener's answer. So a dial to a peer never met
//! proposes every configured protocol and pays that round trip, and the protocol the peer
//! completed a handshake with (in either direction) is remembered: later dials to it propose
//! that protocol alone, with no round trip for the negotiation. Should that dial fail (the
//! peer changed), the peer is forgotten and the next dial proposes every protocol again. The
//! memory holds 4,096 peers, the oldest forgotten first; it is keyed by authenticated peer
//! ids, so no peer can change what is remembered for another.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

use futures::{AsyncRead, AsyncWrite, FutureExt, future::BoxFuture};
use libp2p::{
    Multiaddr, PeerId,
    core::{
        ConnectedPoint,
        upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo},
    },
    identity,
    multiaddr::Protocol,
    noise, tls,
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
pub type SecureStream<C> =
    futures::future::Either<crate::Coalesce<tls::TlsStream<C>>, noise::Output<C>>;

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

/// Peers remembered with the security protocol of their last handshake.
const KNOWN_PEERS: usize = 4096;

/// The security protocol each peer last completed a handshake with, bounded, oldest
/// forgotten first.
#[derive(Debug, Default)]
struct Known {
    protocols: HashMap<PeerId, SecurityProtocol>,
    /// Peers in the order they were first remembered.
    age: VecDeque<PeerId>,
}

impl Known {
    fn remember(&mut self, peer: PeerId, protocol: SecurityProtocol) {
        if self.protocols.insert(peer, protocol).is_none() {
            self.age.push_back(peer);
            if self.age.len() > KNOWN_PEERS
                && let Some(oldest) = self.age.pop_front()
            {
                self.protocols.remove(&oldest);
            }
        }
    }

    fn forget(&mut self, peer: &PeerId) {
        if self.protocols.remove(peer).is_some() {
            self.age.retain(|p| p != peer);
        }
    }
}

/// The peer a dial address names: its last `/p2p/` (after `/p2p-circuit`, the target).
fn peer_of(address: &Multiaddr) -> Option<PeerId> {
    address.iter().fold(None, |last, protocol| match protocol {
        Protocol::P2p(peer) => Some(peer),
        _ => last,
    })
}

/// The security upgrade: the configured protocols, in order of preference.
#[derive(Clone)]
pub(crate) struct Security {
    order: Vec<SecurityProtocol>,
    tls: Option<crate::tls::TlsConfig>,
    noise: Option<noise::Config>,
    stats: crate::InboundStats,
    known: Arc<Mutex<Known>>,
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
    /// configuration checks), with the node's TLS set-up `tls` (the build makes it whenever
    /// `order` offers TLS; a TLS proposal without it fails as not offered).
    pub(crate) fn new(
        keypair: &identity::Keypair,
        tls: Option<&crate::tls::TlsConfig>,
        order: &[SecurityProtocol],
        stats: crate::InboundStats,
    ) -> Result<Self, crate::TransportBuildError> {
        let wants = |protocol| order.contains(&protocol);
        let tls = tls.filter(|_| wants(SecurityProtocol::Tls)).cloned();
        let noise = match wants(SecurityProtocol::Noise) {
            true => Some(noise::Config::new(keypair)?),
            false => None,
        };
        Ok(Self {
            order: order.to_vec(),
            tls,
            noise,
            stats,
            known: Arc::default(),
        })
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        // Each change is one insert or removal: consistent after a panic elsewhere.
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The upgrade for a connection at `endpoint`: a dial to a peer whose protocol is
    /// remembered proposes that one alone, and the peer is returned (to forget should the
    /// set-up fail); everything else proposes every configured protocol.
    pub(crate) fn for_endpoint(&self, endpoint: &ConnectedPoint) -> (Self, Option<PeerId>) {
        let peer = match endpoint {
            ConnectedPoint::Dialer { address, .. } if crate::negotiate::proposes(endpoint) => {
                peer_of(address)
            }
            _ => None,
        };
        let known = peer.and_then(|peer| Some((peer, *self.known().protocols.get(&peer)?)));
        match known {
            Some((peer, protocol)) if self.order.len() > 1 && self.order.contains(&protocol) => {
                let narrowed = Self {
                    order: vec![protocol],
                    ..self.clone()
                };
                (narrowed, Some(peer))
            }
            _ => (self.clone(), None),
        }
    }

    /// Forgets what `peer` negotiated (a dial proposing only that failed).
    pub(crate) fn forget(&self, peer: &PeerId) {
        self.known().forget(peer);
    }

    /// TLS's configuration (it exists whenever TLS is offered, hence negotiated).
    fn tls(&self) -> Result<crate::tls::TlsConfig, SecurityError> {
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
        tls: impl FnOnce(crate::tls::TlsConfig, C) -> TlsFut,
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
                let stream = crate::Coalesce::new(stream);
                (peer, futures::future::Either::Left(stream))
            }
            SecurityProtocol::Noise => {
                let (peer, stream) = noise(self.noise()?, socket).await?;
                (peer, futures::future::Either::Right(stream))
            }
        };
        self.stats.count_secured(info);
        self.known().remember(peer, info);
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
            |config, socket| async move { config.secure_inbound(socket).await },
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
            |config, socket| async move { config.secure_outbound(socket).await },
            move |config, socket| config.upgrade_outbound(socket, name),
        )
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_is_bounded_and_forgets_the_oldest_first() {
        let mut known = Known::default();
        let peers: Vec<PeerId> = (0..KNOWN_PEERS + 2).map(|_| PeerId::random()).collect();
        for peer in &peers {
            known.remember(*peer, SecurityProtocol::Tls);
        }
        // Remembering a known peer again neither grows nor reorders the memory.
        known.remember(peers[5], SecurityProtocol::Noise);
        assert_eq!(known.protocols.len(), KNOWN_PEERS);
        assert_eq!(known.age.len(), KNOWN_PEERS);
        assert!(!known.protocols.contains_key(&peers[0]));
        assert!(!known.protocols.contains_key(&peers[1]));
        assert_eq!(known.protocols[&peers[5]], SecurityProtocol::Noise);
        known.forget(&peers[5]);
        assert!(!known.protocols.contains_key(&peers[5]));
        assert_eq!(known.age.len(), KNOWN_PEERS - 1);
    }

    #[test]
    fn a_dial_address_names_its_last_peer() {
        let (relay, target) = (PeerId::random(), PeerId::random());
        let direct: Multiaddr = format!("/ip4/10.0.0.1/tcp/1/p2p/{target}").parse().unwrap();
        let circuit: Multiaddr =
            format!("/ip4/10.0.0.1/tcp/1/p2p/{relay}/p2p-circuit/p2p/{target}")
                .parse()
                .unwrap();
        assert_eq!(peer_of(&direct), Some(target));
        assert_eq!(peer_of(&circuit), Some(target));
        assert_eq!(peer_of(&"/ip4/10.0.0.1/tcp/1".parse().unwrap()), None);
    }
}
