//! TLS 1.3 as libp2p specifies it (`/tls/1.0.0`), preferring AES-GCM.
//!
//! libp2p-tls 0.7 lists ChaCha20-Poly1305 first among its cipher suites, and rustls servers
//! follow the client's order, so two libp2p-tls peers settle on ChaCha20-Poly1305. On CPUs
//! with AES instructions AES-128-GCM seals and opens at about twice its rate (see
//! docs/performance.md), so codio builds its own rustls configurations: AES-128-GCM first,
//! then AES-256-GCM, then ChaCha20-Poly1305 (every peer offers all three), and as the server
//! it chooses by its own order, so a stock client that lists ChaCha20 first gets AES too.
//!
//! What goes over the wire is exactly libp2p-tls's handshake: its certificate (libp2p-tls's
//! `certificate` module makes and checks it: a self-signed P-256 certificate carrying the
//! identity key's signature), ALPN `libp2p`, no SNI, mutual authentication, TLS 1.3 only.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, PoisonError},
};

use futures::{AsyncRead, AsyncWrite};
use futures_rustls::{TlsAcceptor, TlsConnector};
use libp2p::{
    PeerId, identity,
    tls::{TlsStream, UpgradeError, certificate},
};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme,
    SupportedCipherSuite,
    client::{
        ResolvesClientCert,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs},
    pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime},
    server::{
        ResolvesServerCert,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};

/// The cipher suites offered, most preferred first.
static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
    aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
    aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
];

/// The ALPN protocol libp2p's TLS handshake uses.
const ALPN: &[u8] = b"libp2p";

/// A node's TLS set-up: its certificate and the cipher suites; each connection gets its own
/// rustls configuration around a verifier that keeps the peer id it verified, so the
/// certificate is not parsed (and its two signatures checked) once more after the handshake.
#[derive(Clone)]
pub(crate) struct TlsConfig {
    provider: Arc<CryptoProvider>,
    certificate: Arc<OwnCertificate>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cipher_suites", &CIPHER_SUITES)
            .finish_non_exhaustive()
    }
}

/// A rustls configuration error (none is expected: the provider and versions are fixed).
fn config_error(error: rustls::Error) -> UpgradeError {
    UpgradeError::ServerUpgrade(std::io::Error::other(error))
}

impl TlsConfig {
    /// The set-up for `keypair`: a fresh certificate signed by it.
    pub(crate) fn new(keypair: &identity::Keypair) -> Result<Self, UpgradeError> {
        let (cert, key) = certificate::generate(keypair)?;
        // Not `with_single_cert`: it parses the certificate with webpki, which refuses the
        // libp2p extension (critical, unknown to it); libp2p's own checks run on the peer's.
        let signer = aws_lc_rs::sign::any_ecdsa_type(&key).map_err(config_error)?;
        let own = CertifiedKey::new(vec![cert], signer);
        let config = Self {
            provider: Arc::new(CryptoProvider {
                cipher_suites: CIPHER_SUITES.to_vec(),
                ..aws_lc_rs::default_provider()
            }),
            certificate: Arc::new(OwnCertificate(Arc::new(own))),
        };
        // Both configurations once, so that a bad setting fails here rather than per dial.
        let verifier = || Arc::new(PeerCertificate::new(&config.provider));
        config.client(verifier())?;
        config.server(verifier())?;
        Ok(config)
    }

    fn client(&self, verifier: Arc<PeerCertificate>) -> Result<rustls::ClientConfig, UpgradeError> {
        let mut client = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(self.certificate.clone());
        client.alpn_protocols = vec![ALPN.to_vec()];
        // Every libp2p connection authenticates both certificates: no session resumption.
        client.resumption = rustls::client::Resumption::disabled();
        Ok(client)
    }

    fn server(&self, verifier: Arc<PeerCertificate>) -> Result<rustls::ServerConfig, UpgradeError> {
        let mut server = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.certificate.clone());
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.ignore_client_order = true;
        // No session tickets or session cache: nothing is resumed (see `client`).
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(server)
    }

    /// A source of random bytes (the crypto provider's).
    pub(crate) fn random(&self) -> impl Fn(&mut [u8]) + Send + Sync + 'static {
        let random = self.provider.secure_random;
        move |buf: &mut [u8]| {
            // The provider's generator fails only when the OS has no randomness at all; the
            // bytes are then left as they were (hole-punch datagrams need no secrecy).
            let _ = random.fill(buf);
        }
    }

    /// A client configuration for one connection (QUIC's handshake runs inside quinn) and
    /// the verifier that holds the peer id once the handshake completed.
    pub(crate) fn client_for_one(
        &self,
    ) -> Result<(rustls::ClientConfig, OneHandshake), UpgradeError> {
        let verifier = Arc::new(PeerCertificate::new(&self.provider));
        Ok((self.client(verifier.clone())?, OneHandshake(verifier)))
    }

    /// A server configuration for one connection and its verifier (see
    /// [`client_for_one`](Self::client_for_one)).
    pub(crate) fn server_for_one(
        &self,
    ) -> Result<(rustls::ServerConfig, OneHandshake), UpgradeError> {
        let verifier = Arc::new(PeerCertificate::new(&self.provider));
        Ok((self.server(verifier.clone())?, OneHandshake(verifier)))
    }

    /// The handshake as the side that proposed `/tls/1.0.0`.
    pub(crate) async fn secure_outbound<C>(
        &self,
        socket: C,
    ) -> Result<(PeerId, TlsStream<C>), UpgradeError>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let verifier = Arc::new(PeerCertificate::new(&self.provider));
        let client = self.client(verifier.clone())?;
        // The spec: clients MUST NOT send a server name (SNI); an IP address sends none.
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
        let stream = TlsConnector::from(Arc::new(client))
            .connect(name, socket)
            .await
            .map_err(UpgradeError::ClientUpgrade)?;
        Ok((verifier.peer()?, stream.into()))
    }

    /// The handshake as the side that accepted `/tls/1.0.0`.
    pub(crate) async fn secure_inbound<C>(
        &self,
        socket: C,
    ) -> Result<(PeerId, TlsStream<C>), UpgradeError>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let verifier = Arc::new(PeerCertificate::new(&self.provider));
        let server = self.server(verifier.clone())?;
        let stream = TlsAcceptor::from(Arc::new(server))
            .accept(socket)
            .await
            .map_err(UpgradeError::ServerUpgrade)?;
        Ok((verifier.peer()?, stream.into()))
    }
}

/// The verifier of one handshake run elsewhere (QUIC): the peer id it verified.
#[derive(Debug, Clone)]
pub(crate) struct OneHandshake(Arc<PeerCertificate>);

impl OneHandshake {
    /// The peer id of the certificate the handshake verified.
    pub(crate) fn peer(&self) -> Result<PeerId, UpgradeError> {
        self.0.peer()
    }
}

/// This node's certificate, presented whatever the peer asks for.
#[derive(Debug)]
struct OwnCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for OwnCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for OwnCertificate {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// libp2p's certificate rules, for both sides: exactly one certificate, self-signed, with a
/// valid libp2p extension (its signature over the certificate key by the identity key);
/// handshake signatures checked against it. One per connection: it keeps the peer id of the
/// certificate it accepted, and that certificate's key until rustls asks about the handshake
/// signature next (so the certificate's two signatures are checked once, not twice; the
/// rustls connection holds the verifier for its lifetime, and after the handshake only the
/// peer id is left in it). The peer id is checked against the dialed one by the swarm.
#[derive(Debug)]
struct PeerCertificate {
    peer: std::sync::OnceLock<PeerId>,
    /// The verified certificate, until its handshake signature is checked.
    verified: std::sync::Mutex<Option<Verified>>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// A peer certificate that passed libp2p's checks.
#[derive(Debug)]
struct Verified {
    /// The certificate, to recognise it when rustls asks to check a handshake signature.
    der: Vec<u8>,
    /// Its subject public key info: the key the handshake is signed with.
    key: Vec<u8>,
}

impl PeerCertificate {
    fn new(provider: &CryptoProvider) -> Self {
        Self {
            peer: std::sync::OnceLock::new(),
            verified: std::sync::Mutex::new(None),
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// The peer id verified (a completed handshake always verified one).
    fn peer(&self) -> Result<PeerId, UpgradeError> {
        self.peer.get().copied().ok_or_else(|| {
            UpgradeError::ServerUpgrade(std::io::Error::other("no peer certificate verified"))
        })
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(std::io::Error::other(
                    "libp2p TLS requires exactly one certificate",
                ))),
            )));
        }
        // libp2p-tls parses the certificate and checks both its signatures.
        let peer = certificate::parse(end_entity)?.peer_id();
        let (_, parsed) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        // A handshake verifies one certificate: the first is the peer's.
        if self.peer.set(peer).is_ok() {
            let verified = Verified {
                der: end_entity.to_vec(),
                key: parsed.tbs_certificate.subject_pki.raw.to_vec(),
            };
            *self.verified.lock().unwrap_or_else(PoisonError::into_inner) = Some(verified);
        }
        Ok(())
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, cert, dss.scheme, dss.signature())?;
        Ok(HandshakeSignatureValid::assertion())
    }

    /// Checks `signature` (by `scheme`) over `message` against `cert`'s key.
    fn check_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        scheme: SignatureScheme,
        signature: &[u8],
    ) -> Result<(), rustls::Error> {
        let bad = || rustls::Error::InvalidCertificate(CertificateError::BadSignature);
        // Taken: the key is needed once, and the verifier lives as long as the connection.
        let verified = self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match verified {
            // The certificate verified above: only the handshake signature is left to check,
            // by a scheme TLS 1.3 allows (RFC 8446 4.2.3: no PKCS#1 v1.5 signatures).
            Some(verified) if verified.der == cert.as_ref() => {
                let pkcs1 = [
                    SignatureScheme::RSA_PKCS1_SHA256,
                    SignatureScheme::RSA_PKCS1_SHA384,
                    SignatureScheme::RSA_PKCS1_SHA512,
                ];
                if pkcs1.contains(&scheme) {
                    return Err(bad());
                }
                let (_, algorithms) = self
                    .algorithms
                    .mapping
                    .iter()
                    .find(|(s, _)| *s == scheme)
                    .ok_or_else(bad)?;
                let spki = SubjectPublicKeyInfoDer::from(verified.key.as_slice());
                let key = webpki::RawPublicKeyEntity::try_from(&spki).map_err(|_| bad())?;
                // A scheme maps to algorithms for several key types; the key's own one passes.
                let valid = algorithms
                    .iter()
                    .any(|algorithm| key.verify_signature(*algorithm, message, signature).is_ok());
                valid.then_some(()).ok_or_else(bad)
            }
            _ => {
                certificate::parse(cert)?.verify_signature(scheme, message, signature)?;
                Ok(())
            }
        }
    }

    /// The schemes libp2p-tls accepts, most preferred first (RSA last).
    fn schemes() -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA512,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::RSA_PKCS1_SHA256,
        ]
    }

    /// The configurations allow TLS 1.3 only: a TLS 1.2 signature is never asked for.
    fn tls12() -> rustls::Error {
        rustls::Error::General("TLS 1.2 is not offered".into())
    }
}

impl ServerCertVerifier for PeerCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(Self::tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

impl ClientCertVerifier for PeerCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(Self::tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::core::upgrade::OutboundConnectionUpgrade;

    use super::*;

    /// A byte pipe between two tasks (both directions).
    fn pipe() -> (
        impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
        impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    ) {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (a, b) = tokio::io::duplex(64 * 1024);
        (a.compat(), b.compat())
    }

    fn suite(stream: &TlsStream<impl AsyncRead + AsyncWrite + Unpin>) -> SupportedCipherSuite {
        stream
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .expect("a completed handshake has a suite")
    }

    /// Two codio peers settle on AES-128-GCM, each learns the other's peer id, and data
    /// crosses.
    #[tokio::test]
    async fn codio_peers_use_aes_128_gcm() -> Result<(), Box<dyn std::error::Error>> {
        let (a, b) = (
            identity::Keypair::generate_ed25519(),
            identity::Keypair::generate_ed25519(),
        );
        let (client, server) = (TlsConfig::new(&a)?, TlsConfig::new(&b)?);
        let (x, y) = pipe();
        let (dialed, accepted) =
            futures::join!(client.secure_outbound(x), server.secure_inbound(y));
        let ((to, mut dialed), (from, mut accepted)) = (dialed?, accepted?);
        assert_eq!(
            (to, from),
            (b.public().to_peer_id(), a.public().to_peer_id())
        );
        assert_eq!(
            suite(&dialed),
            aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        );
        dialed.write_all(b"over TLS").await?;
        dialed.flush().await?;
        let mut read = [0u8; 8];
        accepted.read_exact(&mut read).await?;
        assert_eq!(&read, b"over TLS");
        Ok(())
    }

    /// A stock libp2p-tls client lists ChaCha20-Poly1305 first; a codio server still picks
    /// AES-128-GCM, and the stock client accepts it.
    #[tokio::test]
    async fn a_stock_client_gets_aes_from_a_codio_server() -> Result<(), Box<dyn std::error::Error>>
    {
        let (a, b) = (
            identity::Keypair::generate_ed25519(),
            identity::Keypair::generate_ed25519(),
        );
        let stock = libp2p::tls::Config::new(&a)?;
        let server = TlsConfig::new(&b)?;
        let (x, y) = pipe();
        let (dialed, accepted) = futures::join!(
            stock.upgrade_outbound(x, "/tls/1.0.0"),
            server.secure_inbound(y)
        );
        let ((to, dialed), (from, _)) = (dialed?, accepted?);
        assert_eq!(
            (to, from),
            (b.public().to_peer_id(), a.public().to_peer_id())
        );
        assert_eq!(
            suite(&dialed),
            aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        );
        Ok(())
    }

    /// A client that presents no certificate (libp2p authenticates both sides) is refused.
    #[tokio::test]
    async fn a_client_without_a_certificate_is_refused() {
        let key = identity::Keypair::generate_ed25519();
        let server = TlsConfig::new(&key).unwrap_or_else(|e| panic!("{e}"));
        let plain = client_without_certificate();
        let (x, y) = pipe();
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
        let (dialed, accepted) = futures::join!(
            TlsConnector::from(plain).connect(name, x),
            server.secure_inbound(y)
        );
        assert!(
            accepted.is_err(),
            "a client without a libp2p certificate got in"
        );
        let _ = dialed;
    }

    /// The handshake signature is checked against the certificate verified before it (the
    /// fast path) and against any other certificate by parsing it whole: both refuse a
    /// signature over other bytes, and a certificate is verified before its key is used.
    #[test]
    fn handshake_signatures_are_checked_against_the_verified_certificate() {
        const P256: SignatureScheme = SignatureScheme::ECDSA_NISTP256_SHA256;
        let provider = aws_lc_rs::default_provider();
        let sign = |keypair: &identity::Keypair, message: &[u8]| {
            let (cert, key) = certificate::generate(keypair).unwrap();
            let signer = aws_lc_rs::sign::any_ecdsa_type(&key)
                .unwrap()
                .choose_scheme(&[P256])
                .unwrap();
            let signature = signer.sign(message).unwrap();
            (cert, signature)
        };
        let (a, b) = (
            identity::Keypair::generate_ed25519(),
            identity::Keypair::generate_ed25519(),
        );
        let (cert_a, signed_a) = sign(&a, b"transcript");
        let (cert_b, signed_b) = sign(&b, b"transcript");
        let p384 = SignatureScheme::ECDSA_NISTP384_SHA384;
        // The fast path (each verifier uses it once: the key is dropped after its check).
        let verified = || {
            let verifier = PeerCertificate::new(&provider);
            verifier.verify(&cert_a, &[]).unwrap();
            assert!(verifier.verified.lock().unwrap().is_some());
            verifier
        };
        assert!(
            verified()
                .check_signature(b"transcript", &cert_a, P256, &signed_a)
                .is_ok()
        );
        assert!(
            verified()
                .check_signature(b"other", &cert_a, P256, &signed_a)
                .is_err()
        );
        assert!(
            verified()
                .check_signature(b"transcript", &cert_a, p384, &signed_a)
                .is_err()
        );
        assert!(
            verified()
                .check_signature(b"transcript", &cert_a, P256, &signed_b)
                .is_err()
        );
        let verifier = verified();
        assert!(
            verifier
                .check_signature(b"transcript", &cert_a, P256, &signed_a)
                .is_ok()
        );
        assert!(
            verifier.verified.lock().unwrap().is_none(),
            "the key is not kept"
        );
        // Without a verified certificate waiting, a certificate is parsed whole; a signature
        // by another key never passes.
        assert!(
            verifier
                .check_signature(b"transcript", &cert_a, P256, &signed_a)
                .is_ok()
        );
        assert!(
            verifier
                .check_signature(b"transcript", &cert_b, P256, &signed_b)
                .is_ok()
        );
        assert!(
            verifier
                .check_signature(b"other", &cert_b, P256, &signed_b)
                .is_err()
        );
        assert!(
            verifier
                .check_signature(b"transcript", &cert_a, P256, &signed_b)
                .is_err()
        );
        assert_eq!(verifier.peer().unwrap(), a.public().to_peer_id());
    }

    /// A rustls client that trusts the libp2p server but presents no certificate at all.
    fn client_without_certificate() -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let verifier = Arc::new(PeerCertificate::new(&provider));
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap_or_else(|e| panic!("{e}"))
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN.to_vec()];
        Arc::new(config)
    }
}
