//! Building the transport from a [`TransportConfig`]: TCP and QUIC, security, Yamux, the
//! set-up timeout, the inbound gate; and the same upgrades for any other byte stream.

use std::io;

use futures::{AsyncRead, AsyncWrite};
use libp2p::{
    Transport,
    core::{muxing::StreamMuxerBox, upgrade::Version},
    dns, identity,
    pnet::PnetConfig,
    tcp,
};

use crate::{
    CodioTransport, InboundGate, InboundStats, SetupError, TransportBuildError, TransportConfig,
    eyeballs, negotiate, quic, reuse, security, timeout,
};

/// A built transport and the handles that come with it.
#[non_exhaustive]
pub struct Built {
    /// The transport, for the swarm.
    pub transport: CodioTransport,
    /// With `relay`, the relay client's behaviour half, which the swarm's behaviour must
    /// include (`codio_nat::Behaviour` does).
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
    let keys = Keys::new(keypair, config)?;
    let direct = direct(&keys, config, &gate)?;
    let inbound = gate.stats();
    let (transport, relay_client) = if relay {
        let (transport, client) = with_relay(direct, &keys, config, &gate)?;
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
    keys: &Keys<'_>,
    config: &TransportConfig,
    gate: &InboundGate,
) -> Result<CodioTransport, TransportBuildError> {
    let tcp = reuse::ReuseFallback::new(tcp::tokio::Transport::new(config.tcp_config()));
    let tcp = private(tcp, keys, config, gate)?;
    let Some(tls) = keys.tls.clone().filter(|_| config.quic_enabled()) else {
        return with_dns(tcp, config);
    };
    let ip = tcp
        .or_transport(quic::transport(tls, config, gate)?)
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
    keys: &Keys<'_>,
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
            upgrade_gated(pnet, keys, config, gate)
        }
        None => upgrade_gated(transport, keys, config, gate),
    }
}

/// The relay client transport, upgraded within the same `gate`, tried before `direct`.
fn with_relay(
    direct: CodioTransport,
    keys: &Keys<'_>,
    config: &TransportConfig,
    gate: &InboundGate,
) -> Result<(CodioTransport, libp2p::relay::client::Behaviour), TransportBuildError> {
    let peer_id = keys.keypair.public().to_peer_id();
    let (relay_transport, relay_client) = libp2p::relay::client::new(peer_id);
    let relayed = upgrade_gated(relay_transport, keys, config, gate)?;
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
    let keys = Keys::new(keypair, config)?;
    let direct = direct(&keys, config, &gate)?;
    with_relay(direct, &keys, config, &gate)
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
    upgrade_gated(transport, &Keys::new(keypair, config)?, config, &gate)
}

/// The node's keys as every transport of one build uses them: one TLS certificate for TCP,
/// the relay client transport and QUIC (each `TlsConfig::new` signs a fresh certificate).
struct Keys<'a> {
    keypair: &'a identity::Keypair,
    /// Made when TLS is offered or QUIC is on.
    tls: Option<crate::tls::TlsConfig>,
}

impl<'a> Keys<'a> {
    fn new(
        keypair: &'a identity::Keypair,
        config: &TransportConfig,
    ) -> Result<Self, TransportBuildError> {
        let wanted =
            config.security.contains(&crate::SecurityProtocol::Tls) || config.quic_enabled();
        let tls = wanted
            .then(|| crate::tls::TlsConfig::new(keypair))
            .transpose()
            .map_err(TransportBuildError::Tls)?;
        Ok(Self { keypair, tls })
    }
}

fn upgrade_gated<T>(
    transport: T,
    keys: &Keys<'_>,
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
    let security = security::Security::new(keys.keypair, keys.tls.as_ref(), order, gate.stats())?;
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
    use crate::{NegotiationMode, PreSharedKey, QuicConfig};
    use futures::StreamExt;
    use libp2p::noise;
    use libp2p::{
        Multiaddr, Swarm,
        swarm::{DialError, SwarmEvent, dial_opts::DialOpts},
    };
    use std::time::Duration;
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
