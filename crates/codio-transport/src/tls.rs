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
    sync::Arc,
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
    crypto::{CryptoProvider, aws_lc_rs},
    pki_types::{CertificateDer, ServerName, UnixTime},
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

/// A node's TLS client and server configurations (one certificate for both).
#[derive(Clone)]
pub(crate) struct TlsConfig {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cipher_suites", &CIPHER_SUITES)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// The configurations for `keypair`: a fresh certificate signed by it.
    pub(crate) fn new(keypair: &identity::Keypair) -> Result<Self, UpgradeError> {
        let (cert, key) = certificate::generate(keypair)?;
        let provider = Arc::new(CryptoProvider {
            cipher_suites: CIPHER_SUITES.to_vec(),
            ..aws_lc_rs::default_provider()
        });
        let invalid = |e: rustls::Error| UpgradeError::ServerUpgrade(std::io::Error::other(e));
        // Not `with_single_cert`: it parses the certificate with webpki, which refuses the
        // libp2p extension (critical, unknown to it); libp2p's own checks run on the peer's.
        let signer = aws_lc_rs::sign::any_ecdsa_type(&key).map_err(invalid)?;
        let ours = Arc::new(OwnCertificate(Arc::new(CertifiedKey::new(
            vec![cert],
            signer,
        ))));
        let verifier = Arc::new(PeerCertificate);
        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(invalid)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(ours.clone());
        client.alpn_protocols = vec![ALPN.to_vec()];
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(invalid)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(ours);
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.ignore_client_order = true;
        Ok(Self {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    /// The handshake as the side that proposed `/tls/1.0.0`.
    pub(crate) async fn secure_outbound<C>(
        &self,
        socket: C,
    ) -> Result<(PeerId, TlsStream<C>), UpgradeError>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        // The spec: clients MUST NOT send a server name (SNI); an IP address sends none.
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
        let stream = TlsConnector::from(self.client.clone())
            .connect(name, socket)
            .await
            .map_err(UpgradeError::ClientUpgrade)?;
        let peer = peer_id(stream.get_ref().1.peer_certificates())?;
        Ok((peer, stream.into()))
    }

    /// The handshake as the side that accepted `/tls/1.0.0`.
    pub(crate) async fn secure_inbound<C>(
        &self,
        socket: C,
    ) -> Result<(PeerId, TlsStream<C>), UpgradeError>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = TlsAcceptor::from(self.server.clone())
            .accept(socket)
            .await
            .map_err(UpgradeError::ServerUpgrade)?;
        let peer = peer_id(stream.get_ref().1.peer_certificates())?;
        Ok((peer, stream.into()))
    }
}

/// The peer id of the single certificate a completed handshake verified.
fn peer_id(certificates: Option<&[CertificateDer<'_>]>) -> Result<PeerId, UpgradeError> {
    match certificates {
        Some([cert]) => Ok(certificate::parse(cert)?.peer_id()),
        // The verifier accepts exactly one certificate, and both sides must present one.
        _ => Err(UpgradeError::ServerUpgrade(std::io::Error::other(
            "the peer presented no single certificate",
        ))),
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
/// handshake signatures checked against it. The peer id is checked by the swarm.
#[derive(Debug)]
struct PeerCertificate;

impl PeerCertificate {
    fn verify(
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
        certificate::parse(end_entity)?;
        Ok(())
    }

    fn verify_signature(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        certificate::parse(cert)?.verify_signature(dss.scheme, message, dss.signature())?;
        Ok(HandshakeSignatureValid::assertion())
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
        Self::verify(end_entity, intermediates)?;
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
        Self::verify_signature(message, cert, dss)
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
        Self::verify(end_entity, intermediates)?;
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
        Self::verify_signature(message, cert, dss)
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

    /// A rustls client that trusts the libp2p server but presents no certificate at all.
    fn client_without_certificate() -> Arc<rustls::ClientConfig> {
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap_or_else(|e| panic!("{e}"))
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PeerCertificate))
                .with_no_client_auth();
        config.alpn_protocols = vec![ALPN.to_vec()];
        Arc::new(config)
    }
}
