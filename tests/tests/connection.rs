//! Connection management of the facade on loopback.

// Test code: a failed expectation panics and fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use codio_network::{ConnectError, NetworkConfig, NetworkError, NetworkEvent, PeerId};
use codio_tests::{
    EVENT_TIMEOUT, Pair, TestNode, assert_connected, connect, init_tracing, loopback_node, pair,
    started_node, wait_for_event,
};
use libp2p::{Multiaddr, multiaddr::Protocol};

/// The seed's connection management test: connect, both sides see each other, disconnect,
/// both sides update, events on both sides.
#[tokio::test]
async fn test_connection_management() {
    init_tracing();
    let a = loopback_node().await;
    let b = loopback_node().await;
    let mut a_events = a.subscribe();
    let mut b_events = b.subscribe();

    let peer = connect(&b, &a).await;
    assert_eq!(peer, a.local_peer_id());

    // The dialer's state is updated before connect_peer returns.
    let b_view = b.connected_peers();
    assert_eq!(b_view.len(), 1);
    assert_eq!(b_view[0].peer_id, a.local_peer_id());
    assert!(b_view[0].addresses.contains(&a.listen_addrs()[0]));
    assert!(b_view[0].last_seen >= b_view[0].connection_time);
    wait_for_event(&mut b_events, EVENT_TIMEOUT, "B: PeerConnected(A)", |e| {
        matches!(e, NetworkEvent::PeerConnected { peer_id, .. } if *peer_id == a.local_peer_id())
    })
    .await;

    // The listener learns of the connection through its event.
    wait_for_event(&mut a_events, EVENT_TIMEOUT, "A: PeerConnected(B)", |e| {
        matches!(e, NetworkEvent::PeerConnected { peer_id, .. } if *peer_id == b.local_peer_id())
    })
    .await;
    let a_view = a.connected_peers();
    assert_eq!(a_view.len(), 1);
    assert_eq!(a_view[0].peer_id, b.local_peer_id());

    // Identify fills in the agent version and B's listen address on A's side.
    wait_for_event(&mut a_events, EVENT_TIMEOUT, "A: PeerIdentified(B)", |e| {
        matches!(e, NetworkEvent::PeerIdentified { peer_id, .. } if *peer_id == b.local_peer_id())
    })
    .await;
    let info = a.peer_info(&b.local_peer_id()).expect("B known to A");
    assert!(
        info.agent_version
            .as_deref()
            .is_some_and(|v| v.starts_with("codio-network/"))
    );
    assert!(info.addresses.contains(&b.listen_addrs()[0]), "{info:?}");

    b.disconnect_peer(a.local_peer_id())
        .await
        .expect("disconnect");
    assert!(b.connected_peers().is_empty());
    wait_for_event(&mut b_events, EVENT_TIMEOUT, "B: PeerDisconnected(A)", |e| {
        matches!(e, NetworkEvent::PeerDisconnected { peer_id, .. } if *peer_id == a.local_peer_id())
    })
    .await;
    wait_for_event(&mut a_events, EVENT_TIMEOUT, "A: PeerDisconnected(B)", |e| {
        matches!(e, NetworkEvent::PeerDisconnected { peer_id, .. } if *peer_id == b.local_peer_id())
    })
    .await;
    assert!(a.connected_peers().is_empty());

    // Disconnecting again is a clear error.
    let err = b.disconnect_peer(a.local_peer_id()).await.unwrap_err();
    assert!(
        matches!(err, NetworkError::NotConnected(p) if p == a.local_peer_id()),
        "{err}"
    );
}

#[tokio::test]
async fn dialing_a_wrong_peer_id_fails_with_wrong_peer_id() {
    init_tracing();
    let a = loopback_node().await;
    let b = loopback_node().await;
    let imposter = PeerId::random();
    let addr = a.listen_addrs()[0].clone().with(Protocol::P2p(imposter));
    let err = b.connect_peer(addr.clone()).await.unwrap_err();
    match err {
        ConnectError::WrongPeerId {
            expected,
            obtained,
            address,
        } => {
            assert_eq!(expected, imposter);
            assert_eq!(obtained, a.local_peer_id());
            assert_eq!(address, addr);
        }
        other => panic!("expected WrongPeerId, got {other:?}"),
    }
    assert!(b.connected_peers().is_empty());
}

#[tokio::test]
async fn dialing_a_closed_port_fails_fast_and_clearly() {
    init_tracing();
    // A port that was just free: bind, read it, release it.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let b = loopback_node().await;
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let started = Instant::now();
    let err = b.connect_peer(addr.clone()).await.unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        ConnectError::Unreachable { address, reason } => {
            assert_eq!(address, &addr);
            assert!(reason.to_lowercase().contains("refused"), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // "Fast" means it did not wait for the 10 s connect timeout.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test]
async fn twenty_connect_disconnect_cycles_leak_nothing() {
    init_tracing();
    let a = loopback_node().await;
    let b = loopback_node().await;
    let mut a_events = a.subscribe();
    let target = a.dial_addr().unwrap();
    for cycle in 0..20 {
        let peer = b
            .connect_peer(target.clone())
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        wait_for_event(&mut a_events, EVENT_TIMEOUT, "A: PeerConnected", |e| {
            matches!(e, NetworkEvent::PeerConnected { .. })
        })
        .await;
        assert_eq!(
            b.peer_info(&peer).map(|p| p.connections),
            Some(1),
            "cycle {cycle}"
        );
        b.disconnect_peer(peer)
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        wait_for_event(&mut a_events, EVENT_TIMEOUT, "A: PeerDisconnected", |e| {
            matches!(e, NetworkEvent::PeerDisconnected { .. })
        })
        .await;
        assert!(
            a.connected_peers().is_empty(),
            "cycle {cycle}: A still has {:?}",
            a.connected_peers()
        );
        assert!(
            b.connected_peers().is_empty(),
            "cycle {cycle}: B still has {:?}",
            b.connected_peers()
        );
    }
}

/// libp2p closes connections no protocol uses after 10 s by default; codio keeps them.
#[tokio::test]
async fn quiet_connections_survive_the_default_idle_timeout() {
    init_tracing();
    let Pair { a, b } = pair(NetworkConfig::loopback(), NetworkConfig::loopback()).await;
    let mut b_events = b.subscribe();
    // Watch for a disconnect for 12 s: with libp2p's default it would come after 10 s.
    let disconnect = tokio::time::timeout(Duration::from_secs(12), async {
        loop {
            match b_events.recv().await {
                Ok(NetworkEvent::PeerDisconnected { cause, .. }) => return cause,
                Ok(_) => {}
                Err(e) => panic!("event channel: {e}"),
            }
        }
    })
    .await;
    assert!(disconnect.is_err(), "connection dropped: {disconnect:?}");
    assert_eq!(b.connected_peers().len(), 1);
    assert_connected(&a, &b);
}

#[tokio::test]
async fn shutdown_closes_connections_and_rejects_further_commands() {
    init_tracing();
    let Pair { a, b } = pair(NetworkConfig::loopback(), NetworkConfig::loopback()).await;
    let mut b_events = b.subscribe();
    a.shutdown().await;
    wait_for_event(&mut b_events, EVENT_TIMEOUT, "B: PeerDisconnected(A)", |e| {
        matches!(e, NetworkEvent::PeerDisconnected { peer_id, .. } if *peer_id == a.local_peer_id())
    })
    .await;
    assert!(b.connected_peers().is_empty());
    let err = a.connect_peer(b.dial_addr().unwrap()).await.unwrap_err();
    assert_eq!(err, ConnectError::ShutDown);
    assert!(matches!(a.start().await, Err(NetworkError::AlreadyStarted)));
    // Waiting for a peer's identification on a stopped node ends at once, not at its timeout.
    let started = Instant::now();
    let wait = a.identified(b.local_peer_id(), EVENT_TIMEOUT).await;
    assert!(matches!(wait, Err(NetworkError::ShutDown)), "{wait:?}");
    assert!(
        started.elapsed() < EVENT_TIMEOUT / 2,
        "{:?}",
        started.elapsed()
    );
    a.shutdown().await; // idempotent
}

#[tokio::test]
async fn connecting_to_an_already_connected_peer_reuses_the_connection() {
    init_tracing();
    let a = loopback_node().await;
    let b = loopback_node().await;
    let addr = a.dial_addr().unwrap();
    let first = b.connect_peer(addr.clone()).await.expect("first");
    let second = b.connect_peer(addr).await.expect("second");
    assert_eq!(first, second);
    assert_eq!(b.peer_info(&first).map(|p| p.connections), Some(1));
}

#[tokio::test]
async fn listening_on_a_busy_port_is_an_error() {
    init_tracing();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let node = codio_network::NetworkManager::new(NetworkConfig::loopback().with_listen_port(port))
        .await
        .unwrap();
    let err = node.start().await.unwrap_err();
    assert!(matches!(err, NetworkError::Listen { .. }), "{err}");
}

/// A kubo swarm key file (`/key/swarm/psk/1.0.0/`, base16) for `byte` repeated.
fn swarm_key(byte: u8) -> codio_transport::PreSharedKey {
    let hex: String = std::iter::repeat_n(format!("{byte:02x}"), 32).collect();
    format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n")
        .parse()
        .expect("key file")
}

/// A node of the private network of `key` (`None`: a public node).
async fn private_node(key: Option<codio_transport::PreSharedKey>) -> TestNode {
    let mut config = NetworkConfig::loopback();
    config.transport =
        codio_network::transport::TransportConfig::default().with_private_network(key);
    started_node(config).await
}

/// Nodes that share a swarm key connect; a node without it, or with another key, cannot
/// finish the transport handshake with them, in either direction.
#[tokio::test]
async fn a_private_network_admits_only_nodes_with_its_key() {
    init_tracing();
    let a = private_node(Some(swarm_key(1))).await;
    let b = private_node(Some(swarm_key(1))).await;
    let peer = connect(&b, &a).await;
    assert_eq!(peer, a.local_peer_id());
    for outsider in [
        private_node(None).await,
        private_node(Some(swarm_key(2))).await,
    ] {
        // Each side fails within the other's inbound handshake limit (5 s) at the latest:
        // one reads the other's pnet nonce as garbage, the other waits for a handshake.
        let within = Duration::from_secs(8);
        let started = Instant::now();
        let inbound = outsider.connect_peer(a.dial_addr().unwrap()).await;
        assert!(inbound.is_err(), "an outsider dialing in: {inbound:?}");
        assert!(started.elapsed() < within, "{:?}", started.elapsed());
        let started = Instant::now();
        let outbound = a.connect_peer(outsider.dial_addr().unwrap()).await;
        assert!(outbound.is_err(), "dialing an outsider: {outbound:?}");
        assert!(started.elapsed() < within, "{:?}", started.elapsed());
        assert!(outsider.connected_peers().is_empty());
        outsider.shutdown().await;
    }
    assert_eq!(a.connected_peers().len(), 1, "only the member");
}

/// The behaviour of the stock rust-libp2p peers below: identify and ping.
#[derive(libp2p::swarm::NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Stock {
    identify: libp2p::identify::Behaviour,
    ping: libp2p::ping::Behaviour,
}

/// Which security protocols a stock peer offers.
#[derive(Debug, Clone, Copy)]
enum StockSecurity {
    Noise,
    Tls,
    TlsThenNoise,
}

/// The stock peers' behaviour for `key`.
fn stock_behaviour(key: &libp2p::identity::Keypair) -> Stock {
    use libp2p::{identify, ping};
    Stock {
        identify: identify::Behaviour::new(identify::Config::new(
            "/ipfs/id/1.0.0".into(),
            key.public(),
        )),
        ping: ping::Behaviour::default(),
    }
}

/// A stock rust-libp2p swarm (its own `SwarmBuilder` stack: TCP, Yamux, `security`),
/// listening on loopback.
fn stock_swarm(security: StockSecurity) -> libp2p::Swarm<Stock> {
    use libp2p::{noise, tcp, tls, yamux};
    let behaviour = stock_behaviour;
    let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(30));
    let tcp = tcp::Config::default;
    let mut swarm = match security {
        StockSecurity::Noise => builder
            .with_tcp(tcp(), noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(behaviour)
            .unwrap()
            .with_swarm_config(idle)
            .build(),
        StockSecurity::Tls => builder
            .with_tcp(tcp(), tls::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(behaviour)
            .unwrap()
            .with_swarm_config(idle)
            .build(),
        StockSecurity::TlsThenNoise => builder
            .with_tcp(
                tcp(),
                (tls::Config::new, noise::Config::new),
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(behaviour)
            .unwrap()
            .with_swarm_config(idle)
            .build(),
    };
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    swarm
}

/// Stock rust-libp2p peers offering only Noise, only TLS, and both interoperate with a
/// default codio node (TLS offered first, Noise second, no swarm key): each dials codio,
/// identifies it and pings it, codio dials each back, and codio's counters show the protocol
/// the pair agreed on. Two codio nodes agree on TLS. A codio node with a swarm key refuses
/// the stock peer.
#[tokio::test]
async fn stock_libp2p_peers_interoperate_with_a_node_without_a_swarm_key() {
    use futures::StreamExt;
    use libp2p::{identify, ping, swarm::SwarmEvent};

    init_tracing();
    let private = private_node(Some(swarm_key(3))).await;
    for (security, agreed) in [
        (StockSecurity::Noise, "noise"),
        (StockSecurity::Tls, "tls"),
        (StockSecurity::TlsThenNoise, "tls"),
    ] {
        let registry = std::sync::Arc::new(std::sync::Mutex::new(
            codio_network::metrics::Registry::default(),
        ));
        let codio = started_node(NetworkConfig::loopback().with_metrics(registry.clone())).await;
        let handshakes = |protocol: &str| {
            codio_tests::adversary::metric(
                &registry,
                &format!("codio_security_handshakes_total{{protocol=\"{protocol}\"}}"),
            )
        };
        let mut stock = stock_swarm(security);
        let stock_id = *stock.local_peer_id();
        stock.dial(codio.dial_addr().unwrap()).unwrap();
        stock.dial(private.dial_addr().unwrap()).unwrap();
        let (mut identified, mut pinged, mut private_failed) = (None, false, false);
        let mut stock_addr = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while identified.is_none() || !pinged || !private_failed || stock_addr.is_none() {
            tokio::select! {
                event = stock.select_next_some() => match event {
                    SwarmEvent::NewListenAddr { address, .. } => stock_addr = Some(address),
                    SwarmEvent::Behaviour(StockEvent::Identify(identify::Event::Received { peer_id, info, .. }))
                        if peer_id == codio.local_peer_id() => identified = Some(info.agent_version),
                    SwarmEvent::Behaviour(StockEvent::Ping(ping::Event { peer, result: Ok(_), .. }))
                        if peer == codio.local_peer_id() => pinged = true,
                    SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), .. }
                        if peer == private.local_peer_id() => private_failed = true,
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                        assert_ne!(peer_id, private.local_peer_id(), "no key, no connection");
                    }
                    _ => {}
                },
                () = tokio::time::sleep_until(deadline) => panic!(
                    "{security:?}: identified {identified:?}, pinged {pinged}, private refused {private_failed}"
                ),
            }
        }
        assert!(identified.unwrap().starts_with("codio-network/"));
        // And the other way: codio dials the stock peer (driven while codio dials).
        codio.disconnect_peer(stock_id).await.unwrap();
        let address = codio_network::with_p2p(stock_addr.unwrap(), stock_id);
        let dial = codio.connect_peer(address);
        tokio::pin!(dial);
        let peer = loop {
            tokio::select! {
                result = &mut dial => break result.expect("codio dials stock"),
                _ = stock.select_next_some() => {}
            }
        };
        assert_eq!(peer, stock_id);
        let other = if agreed == "tls" { "noise" } else { "tls" };
        assert_eq!(
            handshakes(agreed),
            2.0,
            "{security:?}: both connections on {agreed}"
        );
        assert_eq!(handshakes(other), 0.0, "{security:?}");
        codio.shutdown().await;
    }
    private.shutdown().await;

    // codio with codio: TLS.
    let registry = std::sync::Arc::new(std::sync::Mutex::new(
        codio_network::metrics::Registry::default(),
    ));
    let a = started_node(NetworkConfig::loopback().with_metrics(registry.clone())).await;
    let b = loopback_node().await;
    connect(&b, &a).await;
    let tls = "codio_security_handshakes_total{protocol=\"tls\"}";
    assert!(
        codio_tests::eventually(EVENT_TIMEOUT, || async {
            codio_tests::adversary::metric(&registry, tls) == 1.0
        })
        .await
    );
}

/// The application's connection gate decides through `NetworkConfig`: a gate that refuses
/// one peer id after the handshake keeps that peer out (reported as a `gate` refusal) and lets
/// every other peer in.
#[tokio::test]
async fn an_application_gate_refuses_the_peers_it_names() {
    use codio_network::{
        policy::AccessConfig, policy::ConnectionGate, policy::Denial, policy::Event as PolicyEvent,
    };
    use libp2p::core::Endpoint;

    struct Refuse(PeerId);

    impl ConnectionGate for Refuse {
        fn after_handshake(
            &self,
            _: Endpoint,
            peer_id: &PeerId,
            _: &Multiaddr,
        ) -> codio_network::policy::Verdict {
            if *peer_id == self.0 {
                codio_network::policy::Verdict::Reject
            } else {
                codio_network::policy::Verdict::Accept
            }
        }
    }

    init_tracing();
    let refused = loopback_node().await;
    let mut config = NetworkConfig::loopback();
    let gate =
        AccessConfig::default().with_gate(std::sync::Arc::new(Refuse(refused.local_peer_id())));
    config.policy = config.policy.with_access(gate);
    let node = started_node(config).await;
    let mut events = node.subscribe();
    let _ = refused.connect_peer(node.dial_addr().unwrap()).await;
    wait_for_event(&mut events, EVENT_TIMEOUT, "a gate refusal", |e| {
        matches!(e, NetworkEvent::Policy(PolicyEvent::Denied { peer_id: Some(p), reason: Denial::Access(_), .. }) if *p == refused.local_peer_id())
    })
    .await;
    assert!(node.peer_info(&refused.local_peer_id()).is_none());
    let other = loopback_node().await;
    assert_eq!(connect(&other, &node).await, node.local_peer_id());
}

/// Disconnects `node` from `peer` and waits for the event that says it happened.
async fn disconnect(
    node: &codio_network::NetworkManager,
    events: &mut tokio::sync::broadcast::Receiver<NetworkEvent>,
    peer: PeerId,
) {
    node.disconnect_peer(peer).await.unwrap();
    wait_for_event(
        events,
        EVENT_TIMEOUT,
        "disconnected",
        |e| matches!(e, NetworkEvent::PeerDisconnected { peer_id, .. } if *peer_id == peer),
    )
    .await;
}

/// A link with a 100 ms round trip to `target`'s first listen address (TCP): the proxy (the
/// link lasts as long as it does) and the address to dial through it.
async fn slow_link_to(
    target: &codio_network::NetworkManager,
) -> (codio_tests::delay::DelayProxy, Multiaddr) {
    let socket = codio_tests::adversary::socket_addr(&target.listen_addrs()[0]);
    let proxy = codio_tests::delay::DelayProxy::start(socket, Duration::from_millis(50)).await;
    let address = format!(
        "/ip4/127.0.0.1/tcp/{}/p2p/{}",
        proxy.address().port(),
        target.local_peer_id()
    )
    .parse()
    .unwrap();
    (proxy, address)
}

/// Set-up times of dials over a link with a 100 ms round trip, from a node offering `dialer`
/// to one offering `listener`: `(first, again)`, the fastest of three first dials (each from
/// a fresh node) and of three second dials (the same node, after disconnecting).
async fn setup_over_slow_link(
    listener: &[codio_transport::SecurityProtocol],
    dialer: &[codio_transport::SecurityProtocol],
) -> (Duration, Duration) {
    let node = |security: &[codio_transport::SecurityProtocol]| {
        let mut config = NetworkConfig::loopback();
        config.transport =
            codio_network::transport::TransportConfig::default().with_security(security.to_vec());
        config
    };
    let target = started_node(node(listener)).await;
    let (_proxy, address) = slow_link_to(&target).await;
    let (mut first, mut again) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let dialing = started_node(node(dialer)).await;
        let mut events = dialing.subscribe();
        for fastest in [&mut first, &mut again] {
            let started = Instant::now();
            let peer = dialing
                .connect_peer(address.clone())
                .await
                .expect("connects");
            *fastest = (*fastest).min(started.elapsed());
            disconnect(&dialing, &mut events, peer).await;
        }
        dialing.shutdown().await;
    }
    target.shutdown().await;
    (first, again)
}

/// What offering two security protocols costs in round trips, on a link with a 100 ms round
/// trip: multistream-select's lazy dialer sends its proposal with its first handshake message
/// only when it proposes a single protocol. A first dial offering TLS then Noise costs one
/// round trip more than offering one protocol, whichever the peer accepts; a later dial to
/// the same peer proposes the protocol that peer completed and costs no round trip more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_peer_is_dialed_with_its_protocol_alone_at_no_extra_round_trip() {
    use codio_transport::SecurityProtocol::{Noise, Tls};
    init_tracing();
    let rtt = Duration::from_millis(100);
    let tls_only = setup_over_slow_link(&[Tls, Noise], &[Tls]).await;
    let tls_first = setup_over_slow_link(&[Tls, Noise], &[Tls, Noise]).await;
    let noise_only = setup_over_slow_link(&[Noise], &[Noise]).await;
    let tls_first_to_noise = setup_over_slow_link(&[Noise], &[Tls, Noise]).await;
    let times = format!(
        "(first, again): tls only {tls_only:?}, tls first {tls_first:?}, noise only \
         {noise_only:?}, tls first to a noise-only peer {tls_first_to_noise:?}"
    );
    tracing::info!(times, "set-up times");
    let extra =
        |two: Duration, one: Duration| two.saturating_sub(one).as_secs_f64() / rtt.as_secs_f64();
    for (what, one, two) in [
        ("TLS accepted", tls_only, tls_first),
        ("Noise-only peer", noise_only, tls_first_to_noise),
    ] {
        let first = extra(two.0, one.0);
        assert!(
            (0.5..1.5).contains(&first),
            "{what}, first dial: {first:.2} round trips more; {times}"
        );
        let again = extra(two.1, one.1);
        assert!(
            again < 0.5,
            "{what}, dialed again: {again:.2} round trips more; {times}"
        );
    }
}

/// The first `App` request on a new connection over a link with a 100 ms round trip, from a
/// node whose negotiation mode is `mode`: the fastest of three, each from a fresh node. The
/// first request opens the connection's request stream (later ones reuse it).
async fn first_request_over_slow_link(mode: codio_transport::NegotiationMode) -> Duration {
    use codio_network::protocol::{Request, Response};
    let (target, mut requests) = codio_tests::started_server(NetworkConfig::loopback()).await;
    let answering = tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let _ = request
                .responder
                .respond(Response::App {
                    payload: b"pong".to_vec(),
                })
                .await;
        }
    });
    let (_proxy, address) = slow_link_to(&target).await;
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let mut config = NetworkConfig::loopback();
        config.transport =
            codio_network::transport::TransportConfig::default().with_stream_negotiation(mode);
        let client = started_node(config).await;
        let peer = client
            .connect_peer(address.clone())
            .await
            .expect("connects");
        let started = Instant::now();
        let response = client
            .send_request(
                peer,
                Request::App {
                    topic: "rtt".into(),
                    payload: b"ping".to_vec(),
                },
            )
            .await
            .expect("answered");
        fastest = fastest.min(started.elapsed());
        assert!(matches!(response, Response::App { payload } if payload == b"pong"));
        client.shutdown().await;
    }
    answering.abort();
    fastest
}

/// With lazy stream negotiation the first request on a new connection goes together with its
/// stream's protocol proposal: one round trip on a 100 ms link, where waiting for the
/// listener's confirmation first (`NegotiationMode::Strict`, rust-libp2p's and codio's
/// default for streams) costs two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_request_to_a_new_peer_takes_one_round_trip() {
    init_tracing();
    let rtt = Duration::from_millis(100);
    let lazy = first_request_over_slow_link(codio_transport::NegotiationMode::Lazy).await;
    let strict = first_request_over_slow_link(codio_transport::NegotiationMode::Strict).await;
    let trips = |d: Duration| d.as_secs_f64() / rtt.as_secs_f64();
    assert!(
        (0.9..1.5).contains(&trips(lazy)),
        "lazy: {lazy:?} ({:.2} round trips); strict: {strict:?}",
        trips(lazy)
    );
    assert!(
        (1.9..2.5).contains(&trips(strict)),
        "strict: {strict:?} ({:.2} round trips); lazy: {lazy:?}",
        trips(strict)
    );
}

/// A peer that does not speak ping stays connected, also with lazy stream negotiation: codio's
/// pings to it are refused (learnt on the stream's first read), which the liveness policy
/// takes as "unsupported", not as failures that would close the connection. Ten ping
/// intervals pass with two failures allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_ping_is_not_closed_as_dead() {
    use codio_tests::ConfigExt;
    use futures::StreamExt;
    init_tracing();
    let mut quiet = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::tls::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| {
            libp2p::identify::Behaviour::new(libp2p::identify::Config::new(
                "/ipfs/id/1.0.0".into(),
                key.public(),
            ))
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    quiet
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let address = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
            quiet.select_next_some().await
        {
            break address.with(Protocol::P2p(*quiet.local_peer_id()));
        }
    };
    let driving = tokio::spawn(async move {
        loop {
            quiet.select_next_some().await;
        }
    });
    let interval = Duration::from_millis(300);
    let mut config = NetworkConfig::loopback().with_liveness(interval, Duration::from_secs(1), 2);
    config.transport = codio_network::transport::TransportConfig::default()
        .with_stream_negotiation(codio_transport::NegotiationMode::Lazy);
    let node = started_node(config).await;
    let mut events = node.subscribe();
    let peer = node.connect_peer(address).await.expect("connects");
    let closed = tokio::time::timeout(10 * interval, async {
        loop {
            match events.recv().await {
                Ok(NetworkEvent::PeerDisconnected { peer_id, .. }) if peer_id == peer => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    })
    .await;
    assert!(closed.is_err(), "the peer without ping was disconnected");
    assert_connected_to(&node, peer);
    driving.abort();
}

fn assert_connected_to(node: &codio_network::NetworkManager, peer: PeerId) {
    assert!(
        node.connected_peers().iter().any(|p| p.peer_id == peer),
        "not connected to {peer}"
    );
}

/// A peer remembered with TLS that comes back offering only Noise (same identity, same
/// address): the dial proposing TLS alone fails, the peer is forgotten, and the next dial
/// proposes both protocols and connects with Noise.
#[tokio::test]
async fn a_peer_that_dropped_its_remembered_protocol_is_reached_on_the_next_dial() {
    use codio_transport::SecurityProtocol::{Noise, Tls};
    init_tracing();
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let with = |security: Vec<codio_transport::SecurityProtocol>, port: u16| {
        let mut config = NetworkConfig::loopback()
            .with_keypair(keypair.clone())
            .with_listen_port(port);
        config.transport =
            codio_network::transport::TransportConfig::default().with_security(security);
        config
    };
    let target = started_node(with(vec![Tls, Noise], 0)).await;
    let address = target.dial_addr().unwrap();
    let port = codio_tests::adversary::socket_addr(&target.listen_addrs()[0]).port();
    let dialing = loopback_node().await;
    let mut events = dialing.subscribe();
    let peer = dialing.connect_peer(address.clone()).await.unwrap();
    disconnect(&dialing, &mut events, peer).await;
    target.shutdown().await;
    // Back at the same port, Noise only: it stays up for the two dials below.
    let _noise_only = started_node(with(vec![Noise], port)).await;
    assert!(
        dialing.connect_peer(address.clone()).await.is_err(),
        "TLS alone is proposed, and refused"
    );
    assert_eq!(dialing.connect_peer(address).await.unwrap(), peer);
}

/// A stock rust-libp2p swarm speaking QUIC only (no TCP at all), listening nowhere.
fn stock_quic_only_swarm() -> libp2p::Swarm<Stock> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(stock_behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

/// A stock QUIC-only peer dials `address` of `target`, identifies it and pings it.
async fn stock_quic_reaches(target: &codio_network::NetworkManager, address: Multiaddr) {
    use futures::StreamExt;
    use libp2p::{identify, ping, swarm::SwarmEvent};
    let mut stock = stock_quic_only_swarm();
    stock.dial(address.clone()).unwrap();
    let codio = target.local_peer_id();
    let (mut identified, mut pinged) = (false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !identified || !pinged {
        tokio::select! {
            event = stock.select_next_some() => match event {
                SwarmEvent::Behaviour(StockEvent::Identify(identify::Event::Received { peer_id, .. }))
                    if peer_id == codio => identified = true,
                SwarmEvent::Behaviour(StockEvent::Ping(ping::Event { peer, result: Ok(_), .. }))
                    if peer == codio => pinged = true,
                SwarmEvent::OutgoingConnectionError { error, .. } => panic!("{address}: {error}"),
                _ => {}
            },
            () = tokio::time::sleep_until(deadline) => {
                panic!("{address}: identified {identified}, pinged {pinged}")
            }
        }
    }
}

/// A default node (listening on `0.0.0.0`, which means `::` too, over TCP and QUIC) is
/// reached over each of the four: inside a fresh network namespace, a TCP-only codio peer
/// connects to it at `127.0.0.1` and `::1` over TCP, and a stock QUIC-only libp2p peer at
/// both over QUIC (identify and ping answered).
#[tokio::test]
async fn a_default_node_is_reached_over_tcp_and_quic_on_ipv4_and_ipv6() {
    const NAME: &str = "a_default_node_is_reached_over_tcp_and_quic_on_ipv4_and_ipv6";
    if !codio_tests::netns::is_netns_child() {
        codio_tests::netns::in_fresh_netns(NAME, Duration::from_secs(90)).await;
        return;
    }
    codio_tests::netns::setup_fresh_netns();
    init_tracing();
    let node = started_node(codio_network::NetworkConfig::default()).await;
    let loopback = |a: &Multiaddr| {
        let s = a.to_string();
        s.starts_with("/ip4/127.0.0.1/") || s.starts_with("/ip6/::1/")
    };
    let mut addresses = Vec::new();
    let all_four = codio_tests::eventually(EVENT_TIMEOUT, || {
        addresses = node.listen_addrs().into_iter().filter(loopback).collect();
        let four = addresses.len() == 4;
        async move { four }
    })
    .await;
    assert!(all_four, "loopback listen addresses: {addresses:?}");
    let tcp_only = NetworkConfig::loopback().with_transport(
        codio_network::transport::TransportConfig::default()
            .with_quic(codio_network::transport::QuicConfig::default().with_enabled(false)),
    );
    for address in addresses {
        let target = codio_network::with_p2p(address.clone(), node.local_peer_id());
        if codio_transport::addr::is_quic(&address) {
            stock_quic_reaches(&node, target).await;
            continue;
        }
        let peer = codio_network::NetworkManager::new(tcp_only.clone())
            .await
            .unwrap();
        assert_eq!(
            peer.connect_peer(target).await.unwrap(),
            node.local_peer_id()
        );
        let info = peer.peer_info(&node.local_peer_id()).unwrap();
        assert!(info.addresses.contains(&address), "{:?}", info.addresses);
        peer.shutdown().await;
    }
}
