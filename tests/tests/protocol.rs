//! `/codio/1.0.0` between nodes: every message type, 1,000 concurrent requests, overload,
//! and hostile input (malformed, oversized, truncated, slow) that must not hurt the node.

// Test code: a failed expectation panics and fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{io, time::Duration};

use codio_network::{
    NetworkConfig, NetworkManager, PeerId, protocol::ContentId, protocol::ErrorCode,
    protocol::InboundRequest, protocol::Metadata, protocol::ProtocolConfig, protocol::Request,
    protocol::RequestError, protocol::Response,
};
use codio_tests::{
    EVENT_TIMEOUT, TestNode, connect, init_tracing, loopback_node, started_node, started_receiver,
    started_server, started_with,
};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::{StreamProtocol, Swarm, identity, request_response, swarm::SwarmEvent};
use tokio::sync::mpsc;

const KNOWN: ContentId = ContentId([7; 32]);

/// Asserts that a request failed with a remote error `code`.
fn assert_remote(err: &RequestError, code: ErrorCode) {
    assert!(
        matches!(err, RequestError::Remote { code: got, .. } if *got == code),
        "expected a remote {code:?}, got {err}"
    );
}

/// The answer a test server gives to `request`.
fn answer(request: &Request) -> Response {
    match request {
        Request::GetChunk { content, index } if *content == KNOWN => Response::Chunk {
            content: *content,
            index: *index,
            data: vec![*index as u8; 1024],
        },
        Request::GetMetadata { content } if *content == KNOWN => Response::Metadata(Metadata {
            content: *content,
            size: 10 * 1024,
            chunk_size: 1024,
        }),
        Request::App { payload, .. } => Response::App {
            payload: payload.clone(),
        },
        _ => Response::error(ErrorCode::NotFound, "unknown content"),
    }
}

/// Serves requests from `requests` until the channel closes.
fn serve(mut requests: mpsc::Receiver<InboundRequest>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut served = 0;
        while let Some(InboundRequest {
            request, responder, ..
        }) = requests.recv().await
        {
            let _ = responder.respond(answer(&request)).await;
            served += 1;
        }
        served
    })
}

async fn server(
    config: codio_network::NetworkConfig,
) -> (TestNode, tokio::task::JoinHandle<usize>) {
    let (node, requests) = started_server(config).await;
    let handler = serve(requests);
    (node, handler)
}

/// A serving node whose request timeout is 2 s, so slow senders are cut off quickly.
async fn impatient_server() -> (TestNode, tokio::task::JoinHandle<usize>) {
    let mut config = NetworkConfig::loopback();
    config.protocol = ProtocolConfig {
        request_timeout: Duration::from_secs(2),
        ..ProtocolConfig::default()
    };
    server(config).await
}

#[tokio::test]
async fn every_message_type_round_trips_between_nodes() {
    init_tracing();
    let (server, _handler) = server(NetworkConfig::loopback()).await;
    let client = loopback_node().await;
    let id = connect(&client, &server).await;
    let requests = [
        Request::GetChunk {
            content: KNOWN,
            index: 3,
        },
        Request::GetMetadata { content: KNOWN },
        Request::App {
            topic: "echo".into(),
            payload: b"hello".to_vec(),
        },
    ];
    for request in requests {
        let response = client.send_request(id, request.clone()).await.unwrap();
        assert_eq!(response, answer(&request));
    }
    let err = client
        .send_request(
            id,
            Request::GetChunk {
                content: ContentId([0; 32]),
                index: 0,
            },
        )
        .await
        .unwrap_err();
    assert_remote(&err, ErrorCode::NotFound);
    let too_big = Request::App {
        topic: "x".into(),
        payload: vec![0; codio_protocol::MAX_REQUEST_FRAME + 1],
    };
    assert!(matches!(
        client.send_request(id, too_big).await,
        Err(RequestError::TooLarge(_))
    ));
}

#[tokio::test]
async fn requests_without_a_handler_are_refused_clearly() {
    init_tracing();
    let server = loopback_node().await;
    let client = loopback_node().await;
    let id = connect(&client, &server).await;
    let err = client
        .send_request(id, Request::GetMetadata { content: KNOWN })
        .await
        .unwrap_err();
    assert_remote(&err, ErrorCode::NotFound);
}

/// 1,000 requests in flight at once from 10 peers: every one answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_requests_across_ten_peers() {
    init_tracing();
    // The handler queue is sized for the burst: 1,000 requests arrive at once, 100 from each
    // peer (beyond the default share of 64 per peer).
    let mut config = NetworkConfig::loopback().with_max_peers(64);
    config.protocol.inbound_request_buffer = 1024;
    config.protocol.max_requests_per_peer = 100;
    let (server, handler) = server(config).await;
    let target = server.dial_addr().unwrap();
    let mut clients = Vec::new();
    for _ in 0..10 {
        let client = loopback_node().await;
        client.connect_peer(target.clone()).await.unwrap();
        clients.push(client);
    }
    let server_id = server.local_peer_id();
    let requests = clients.iter().enumerate().flat_map(|(c, client)| {
        (0..100u64).map(move |i| {
            let request = Request::App {
                topic: "load".into(),
                payload: format!("{c}:{i}").into_bytes(),
            };
            async move {
                (
                    request.clone(),
                    client.send_request(server_id, request).await,
                )
            }
        })
    });
    let results = futures::future::join_all(requests).await;
    assert_eq!(results.len(), 1000);
    for (request, result) in results {
        assert_eq!(result.unwrap(), answer(&request));
    }
    for client in &clients {
        client.shutdown().await;
    }
    server.shutdown().await;
    assert_eq!(handler.await.unwrap(), 1000);
}

/// A peer that keeps exactly its share of requests in flight is never refused: the node gives
/// a request's place back before its answer leaves, so the next request, sent when the answer
/// arrives, always finds room (it once found the place still held, under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_its_full_share_in_flight_is_never_refused() {
    use futures::StreamExt;
    init_tracing();
    let mut config = NetworkConfig::loopback();
    config.protocol.max_requests_per_peer = 4;
    let (server, handler) = server(config).await;
    let client = loopback_node().await;
    let id = connect(&client, &server).await;
    let refused = futures::stream::iter(0..4_000u32)
        .map(|i| {
            let request = Request::App {
                topic: "share".into(),
                payload: i.to_be_bytes().to_vec(),
            };
            let client = &client;
            async move { client.send_request(id, request).await.is_err() }
        })
        .buffer_unordered(4)
        .filter(|refused| futures::future::ready(*refused))
        .count()
        .await;
    assert_eq!(refused, 0, "requests refused within the peer's share");
    client.shutdown().await;
    server.shutdown().await;
    assert_eq!(handler.await.unwrap(), 4_000);
}

/// A handler that does not keep up: the node answers Overloaded beyond its queue instead of
/// buffering, and the queued requests are answered once the handler catches up.
#[tokio::test]
async fn slow_handler_makes_the_node_refuse_not_buffer() {
    init_tracing();
    let mut config = NetworkConfig::loopback();
    config.protocol.inbound_request_buffer = 4;
    let (server, mut requests) = started_server(config).await;
    let client = loopback_node().await;
    let id = connect(&client, &server).await;
    let mut calls: futures::stream::FuturesUnordered<_> = (0..12u8)
        .map(|i| {
            client.send_request(
                id,
                Request::App {
                    topic: "t".into(),
                    payload: vec![i],
                },
            )
        })
        .collect();
    // Nobody reads the queue: the four queued requests wait, the other eight are refused at once.
    for _ in 0..8 {
        let result = tokio::time::timeout(EVENT_TIMEOUT, calls.next())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                result,
                Err(RequestError::Remote {
                    code: ErrorCode::Overloaded,
                    ..
                })
            ),
            "{result:?}"
        );
    }
    // The handler catches up: the queued four are answered.
    for _ in 0..4 {
        let InboundRequest {
            request, responder, ..
        } = tokio::time::timeout(EVENT_TIMEOUT, requests.recv())
            .await
            .unwrap()
            .unwrap();
        responder.respond(answer(&request)).await.unwrap();
    }
    for _ in 0..4 {
        let result = tokio::time::timeout(EVENT_TIMEOUT, calls.next())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(result, Ok(Response::App { .. })), "{result:?}");
    }
    drop(calls);
}

/// What a hostile client sends on a `/codio/1.0.0` stream.
#[derive(Debug, Clone)]
struct Raw {
    bytes: Vec<u8>,
    /// Pause after each byte (a slow sender).
    per_byte: Option<Duration>,
}

/// A codec that writes raw bytes as the request and reads whatever comes back.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Raw;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> io::Result<Raw> {
        Err(io::Error::other("the hostile client serves nothing"))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.take(1 << 20).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        raw: Raw,
    ) -> io::Result<()> {
        match raw.per_byte {
            None => io.write_all(&raw.bytes).await?,
            Some(pause) => {
                for byte in raw.bytes {
                    io.write_all(&[byte]).await?;
                    io.flush().await?;
                    tokio::time::sleep(pause).await;
                }
            }
        }
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()> {
        Err(io::Error::other("the hostile client serves nothing"))
    }
}

/// An `App` request whose topic is one byte over the limit: well-formed on the wire, refused
/// by `Request::validate` on both request protocols.
fn long_topic() -> Request {
    Request::App {
        topic: "t".repeat(codio_network::protocol::MAX_TOPIC_LEN + 1),
        payload: vec![1],
    }
}

/// A swarm on codio's transport with nothing but `behaviour` (no codio node behind it).
fn bare_swarm<B: libp2p::swarm::NetworkBehaviour>(behaviour: B) -> Swarm<B> {
    let keypair = identity::Keypair::generate_ed25519();
    Swarm::new(
        codio_transport::build_transport(&keypair, &Default::default()).unwrap(),
        behaviour,
        keypair.public().to_peer_id(),
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(Duration::from_secs(60)),
    )
}

fn hostile_swarm() -> Swarm<request_response::Behaviour<RawCodec>> {
    let behaviour = request_response::Behaviour::with_codec(
        RawCodec,
        [(
            codio_protocol_id(),
            request_response::ProtocolSupport::Outbound,
        )],
        request_response::Config::default().with_request_timeout(Duration::from_secs(20)),
    );
    bare_swarm(behaviour)
}

fn codio_protocol_id() -> StreamProtocol {
    StreamProtocol::new("/codio/1.0.0")
}

/// Sends `raw` from a hostile swarm and returns how its request ended.
async fn send_raw(
    swarm: &mut Swarm<request_response::Behaviour<RawCodec>>,
    server: PeerId,
    raw: Raw,
) -> Result<Vec<u8>, String> {
    let id = swarm.behaviour_mut().send_request(&server, raw);
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message:
                        request_response::Message::Response {
                            request_id,
                            response,
                        },
                    ..
                }) if request_id == id => return Ok(response),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    request_id,
                    error,
                    ..
                }) if request_id == id => {
                    return Err(error.to_string());
                }
                _ => {}
            }
        }
    })
    .await
    .expect("hostile request ends")
}

/// Malformed frames, oversized and truncated length prefixes, a 1 byte/s sender: each is
/// rejected or timed out with its stream reset, and the node keeps serving others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_rejected_and_other_streams_are_unaffected() {
    init_tracing();
    let (server, _handler) = impatient_server().await;
    let server_id = server.local_peer_id();
    let good = loopback_node().await;
    connect(&good, &server).await;

    let mut hostile = hostile_swarm();
    hostile.add_peer_address(server_id, server.listen_addrs()[0].clone());
    let valid = codio_protocol::encode(
        &Request::GetMetadata { content: KNOWN },
        codio_protocol::MAX_REQUEST_FRAME,
    )
    .unwrap();
    let cases: Vec<(&str, Raw)> = vec![
        (
            "length prefix 2^32-1",
            Raw {
                bytes: u32::MAX.to_be_bytes().to_vec(),
                per_byte: None,
            },
        ),
        (
            "length prefix 2^64-1 (8 bytes)",
            Raw {
                bytes: u64::MAX.to_be_bytes().to_vec(),
                per_byte: None,
            },
        ),
        (
            "zero length",
            Raw {
                bytes: vec![0, 0, 0, 0],
                per_byte: None,
            },
        ),
        (
            "truncated frame",
            Raw {
                bytes: valid[..valid.len() - 3].to_vec(),
                per_byte: None,
            },
        ),
        (
            "garbage body",
            Raw {
                bytes: vec![0, 0, 0, 5, 1, 0xff, 0xff, 0xff, 0xff],
                per_byte: None,
            },
        ),
        (
            "unknown version",
            Raw {
                bytes: [&[0u8, 0, 0, 2][..], &[9, 0]].concat(),
                per_byte: None,
            },
        ),
        (
            "topic over MAX_TOPIC_LEN (Request::validate)",
            Raw {
                bytes: codio_protocol::encode(&long_topic(), codio_protocol::MAX_REQUEST_FRAME)
                    .unwrap(),
                per_byte: None,
            },
        ),
        (
            "1 byte per second",
            Raw {
                bytes: valid.clone(),
                per_byte: Some(Duration::from_secs(1)),
            },
        ),
    ];
    for (what, raw) in cases {
        // A well-behaved request runs at the same time on another connection.
        let rejected_before = server.rejected_requests();
        let good_request = good.send_request(
            server_id,
            Request::App {
                topic: "t".into(),
                payload: what.as_bytes().to_vec(),
            },
        );
        let (hostile_result, good_result) =
            tokio::join!(send_raw(&mut hostile, server_id, raw), good_request);
        assert!(
            good_result.is_ok(),
            "{what}: the well-behaved request failed: {good_result:?}"
        );
        // The hostile stream gets no valid response: an error, or an empty/garbled reply.
        if let Ok(bytes) = &hostile_result {
            assert!(
                codio_protocol::decode::<Response>(bytes.get(4..).unwrap_or(&[])).is_err(),
                "{what}: got a response {bytes:?}"
            );
        }
        // The node counted the rejection (a slow sender once its request timeout expired).
        let counted = codio_tests::eventually(EVENT_TIMEOUT, || async {
            server.rejected_requests() > rejected_before
        })
        .await;
        assert!(counted, "{what}: not counted as rejected");
    }
    // The node is fine: the good peer is still connected and served.
    assert!(server.peer_info(&good.local_peer_id()).is_some());
    let response = good
        .send_request(server_id, Request::GetMetadata { content: KNOWN })
        .await
        .unwrap();
    assert_eq!(response, answer(&Request::GetMetadata { content: KNOWN }));
}

/// FNV-1a over everything written through it.
#[derive(Debug)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// `size` pseudo-random bytes generated on the fly (nothing is held in memory), hashed as
/// they are produced.
struct Generated {
    data: codio_tests::data::Generated,
    hash: Fnv,
}

impl Generated {
    fn new(size: u64, seed: u64) -> Self {
        Self {
            data: codio_tests::data::Generated::new(size, seed),
            hash: Fnv::new(),
        }
    }
}

/// Asserts that a bulk transfer was rejected with `code`.
fn assert_rejected(result: Result<u64, codio_network::protocol::BulkError>, code: ErrorCode) {
    match result {
        Err(codio_network::protocol::BulkError::Rejected { code: got, .. }) if got == code => {}
        other => panic!("expected a rejection with {code:?}, got {other:?}"),
    }
}

impl futures::AsyncRead for Generated {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let n = self.data.fill(buf);
        self.hash.update(&buf[..n]);
        std::task::Poll::Ready(Ok(n))
    }
}

/// Hashes what it is given, stores nothing.
struct HashSink(Fnv);

impl futures::AsyncWrite for HashSink {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.0.update(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// 1 GiB over one stream: streamed, back-pressured, progress reported, checksum verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_bulk_transfer_with_checksum() {
    init_tracing();
    const SIZE: u64 = 1 << 30;
    let (receiver, mut incoming) = started_receiver(NetworkConfig::loopback()).await;
    let sender = loopback_node().await;
    let receiver_id = connect(&sender, &receiver).await;

    let receive = tokio::spawn(async move {
        let mut bulk = incoming.recv().await.unwrap();
        let header = bulk.header().await.unwrap();
        let mut sink = HashSink(Fnv::new());
        let mut updates = 0u64;
        let received = bulk
            .receive(&header, &mut sink, |_| updates += 1)
            .await
            .unwrap();
        (header, received, sink.0.0, updates)
    });
    let mut source = Generated::new(SIZE, 0x9e37_79b9_7f4a_7c15);
    let header = codio_network::protocol::BulkHeader {
        content: KNOWN,
        size: SIZE,
        topic: "video".into(),
    };
    let mut last = 0;
    let mut monotonic = true;
    let sent = sender
        .send_bulk(receiver_id, header.clone(), &mut source, |n| {
            monotonic &= n > last;
            last = n;
        })
        .await
        .unwrap();
    let (got_header, received, receiver_hash, updates) = receive.await.unwrap();
    assert_eq!(sent, SIZE);
    assert_eq!(received, SIZE);
    assert_eq!(got_header, header);
    assert!(monotonic && last == SIZE, "progress must rise to the size");
    assert!(
        updates >= SIZE / (64 * 1024),
        "progress per chunk: {updates}"
    );
    assert_eq!(receiver_hash, source.hash.0, "checksum mismatch");
}

/// A receiver may refuse; a sender whose source is too short fails clearly; with no bulk
/// consumer installed, transfers are refused.
#[tokio::test]
async fn bulk_transfers_can_be_refused() {
    init_tracing();
    let (receiver, mut incoming) = started_receiver(NetworkConfig::loopback()).await;
    let unwilling = loopback_node().await;
    let sender = loopback_node().await;
    let id = connect(&sender, &receiver).await;
    let unwilling_id = connect(&sender, &unwilling).await;
    let header = codio_network::protocol::BulkHeader {
        content: KNOWN,
        size: 10 << 20,
        topic: "t".into(),
    };

    // No consumer registered when the node was built.
    let mut source = Generated::new(10 << 20, 1);
    assert_rejected(
        sender
            .send_bulk(unwilling_id, header.clone(), &mut source, |_| {})
            .await,
        ErrorCode::Overloaded,
    );
    unwilling.shutdown().await;

    // The consumer rejects after reading the header.
    let rejecting = tokio::spawn(async move {
        let mut bulk = incoming.recv().await.unwrap();
        let header = bulk.header().await.unwrap();
        assert_eq!(header.topic, "t");
        bulk.reject(ErrorCode::TooLarge, "no room").await.unwrap();
        incoming
    });
    let mut source = Generated::new(10 << 20, 2);
    assert_rejected(
        sender
            .send_bulk(id, header.clone(), &mut source, |_| {})
            .await,
        ErrorCode::TooLarge,
    );
    let _incoming = rejecting.await.unwrap();

    // A source shorter than announced.
    let mut short = Generated::new(1000, 3);
    let err = sender
        .send_bulk(id, header, &mut short, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            codio_network::protocol::BulkError::SourceEnded { got: 1000, .. }
        ),
        "{err}"
    );
}

/// `receive_committed` confirms a transfer only once the application's commit succeeded:
/// a commit that refuses (here: after every byte arrived, as a digest check would) reaches
/// the sender as a rejection with its code and message; one that succeeds, as completion.
#[tokio::test]
async fn a_bulk_transfer_is_confirmed_only_after_its_commit() {
    init_tracing();
    let (receiver, mut incoming) = started_receiver(NetworkConfig::loopback()).await;
    let sender = loopback_node().await;
    let id = connect(&sender, &receiver).await;
    let header = codio_network::protocol::BulkHeader {
        content: KNOWN,
        size: 1 << 20,
        topic: "t".into(),
    };
    let receiving = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for verdict in [false, true] {
            let mut bulk = incoming.recv().await.unwrap();
            let header = bulk.header().await.unwrap();
            let mut sink = HashSink(Fnv::new());
            let commit = |sink: &mut HashSink| {
                let seen = (sink.0).0;
                async move {
                    if verdict {
                        Ok(())
                    } else {
                        Err((ErrorCode::BadRequest, format!("digest {seen:x} refused")))
                    }
                }
            };
            let result = bulk
                .receive_committed(&header, &mut sink, |_| {}, commit)
                .await;
            outcomes.push(
                result
                    .map(|(received, ())| received)
                    .map_err(|e| e.to_string()),
            );
        }
        outcomes
    });
    let mut source = Generated::new(1 << 20, 4);
    assert_rejected(
        sender
            .send_bulk(id, header.clone(), &mut source, |_| {})
            .await,
        ErrorCode::BadRequest,
    );
    let mut source = Generated::new(1 << 20, 4);
    let sent = sender.send_bulk(id, header, &mut source, |_| {}).await;
    assert_eq!(sent.unwrap(), 1 << 20);
    let outcomes = receiving.await.unwrap();
    assert!(
        outcomes[0].as_ref().is_err_and(|e| e.contains("refused")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], Ok(1 << 20));
}

/// A bulk transfer marks both peers as active (`PeerInfo::last_seen`, which the connection
/// policy reads so that eviction at the peer cap never cuts a transfer): with pings a minute
/// apart and identify done, only the transfer can move it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_transfer_marks_both_peers_active() {
    use codio_network::NetworkEvent;
    use codio_tests::{ConfigExt, wait_for_event};
    init_tracing();
    let quiet = || {
        NetworkConfig::loopback().with_liveness(Duration::from_secs(60), Duration::from_secs(20), 3)
    };
    let (receiver, mut incoming) = started_receiver(quiet()).await;
    let sender = started_node(quiet()).await;
    let mut events = [receiver.subscribe(), sender.subscribe()];
    let id = connect(&sender, &receiver).await;
    // Both events, in either order (a ping can be answered before identify completes).
    for events in &mut events {
        let (mut identified, mut verified) = (false, false);
        while !(identified && verified) {
            let event = wait_for_event(events, EVENT_TIMEOUT, "identified and verified", |e| {
                matches!(
                    e,
                    NetworkEvent::PeerIdentified { .. } | NetworkEvent::ConnectionVerified { .. }
                )
            })
            .await;
            identified |= matches!(event, NetworkEvent::PeerIdentified { .. });
            verified |= matches!(event, NetworkEvent::ConnectionVerified { .. });
        }
    }
    let before = std::time::Instant::now();
    let receiving = tokio::spawn(async move {
        let mut bulk = incoming.recv().await.unwrap();
        let header = bulk.header().await.unwrap();
        bulk.receive(&header, &mut futures::io::sink(), |_| {})
            .await
    });
    let header = codio_network::protocol::BulkHeader {
        content: KNOWN,
        size: 1 << 20,
        topic: "t".into(),
    };
    let mut source = Generated::new(1 << 20, 4);
    let sent = sender.send_bulk(id, header, &mut source, |_| {}).await;
    assert_eq!(sent.unwrap(), 1 << 20);
    assert_eq!(receiving.await.unwrap().unwrap(), 1 << 20);
    let seen_by_receiver = receiver.peer_info(&sender.local_peer_id()).unwrap();
    let seen_by_sender = sender.peer_info(&id).unwrap();
    assert!(seen_by_receiver.last_seen >= before, "{seen_by_receiver:?}");
    assert!(seen_by_sender.last_seen >= before, "{seen_by_sender:?}");
}

/// Sixteen bulk transfers started at once from one peer all arrive. (libp2p-stream 0.5, used
/// before `codio_protocol::streams`, kept one waiting inbound stream and reset the rest of such
/// a burst; the benchmark's 4-stream run found it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_bulk_transfers_from_one_peer_all_arrive() {
    init_tracing();
    const STREAMS: u64 = 16;
    const SIZE: u64 = 256 * 1024;
    let (receiver, mut incoming) = started_receiver(NetworkConfig::loopback()).await;
    let sender = loopback_node().await;
    let receiver_id = connect(&sender, &receiver).await;

    let receive = tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..STREAMS {
            let mut bulk = incoming.recv().await.unwrap();
            tasks.spawn(async move {
                let header = bulk.header().await.unwrap();
                let mut sink = HashSink(Fnv::new());
                let received = bulk.receive(&header, &mut sink, |_| {}).await.unwrap();
                (header.content, received, sink.0.0)
            });
        }
        tasks.join_all().await
    });
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..STREAMS {
        let sender = sender.clone();
        sends.spawn(async move {
            let mut source = Generated::new(SIZE, 1 + i);
            let header = codio_network::protocol::BulkHeader {
                content: codio_network::protocol::ContentId([i as u8; 32]),
                size: SIZE,
                topic: "burst".into(),
            };
            let sent = sender
                .send_bulk(receiver_id, header, &mut source, |_| {})
                .await
                .unwrap_or_else(|e| panic!("transfer {i} failed: {e}"));
            ([i as u8; 32], sent, source.hash.0)
        });
    }
    let mut sent: Vec<_> = sends.join_all().await;
    let mut received: Vec<_> = receive
        .await
        .unwrap()
        .into_iter()
        .map(|(content, n, hash)| (content.0, n, hash))
        .collect();
    sent.sort();
    received.sort();
    assert_eq!(sent.len(), STREAMS as usize);
    assert_eq!(sent, received, "every transfer arrives intact");
}

/// With a registry configured, requests and bulk bytes are counted on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_bulk_bytes() {
    use std::sync::{Arc, Mutex};

    use codio_network::metrics::{Registry, encode};

    init_tracing();
    let sender_registry = Arc::new(Mutex::new(Registry::default()));
    let receiver_registry = Arc::new(Mutex::new(Registry::default()));
    let config = NetworkConfig::loopback().with_metrics(receiver_registry.clone());
    let (receiver, (requests, mut incoming)) =
        started_with(config, |b| (b.request_queue(), b.bulk_queue())).await;
    let serving = serve(requests);
    let sender =
        started_node(NetworkConfig::loopback().with_metrics(sender_registry.clone())).await;
    let id = connect(&sender, &receiver).await;
    for _ in 0..3 {
        sender
            .send_request(
                id,
                Request::App {
                    topic: "m".into(),
                    payload: vec![1; 10],
                },
            )
            .await
            .unwrap();
    }
    let receive = tokio::spawn(async move {
        let mut bulk = incoming.recv().await.unwrap();
        let header = bulk.header().await.unwrap();
        bulk.receive(&header, &mut HashSink(Fnv::new()), |_| {})
            .await
            .unwrap()
    });
    let header = codio_network::protocol::BulkHeader {
        content: KNOWN,
        size: 1 << 20,
        topic: "m".into(),
    };
    sender
        .send_bulk(id, header, &mut Generated::new(1 << 20, 5), |_| {})
        .await
        .unwrap();
    assert_eq!(receive.await.unwrap(), 1 << 20);
    let text = |registry: &Arc<Mutex<Registry>>| {
        let mut out = String::new();
        encode(&mut out, &registry.lock().unwrap()).unwrap();
        out
    };
    let sent = text(&sender_registry);
    for line in [
        "codio_request_duration_seconds_count 3",
        "codio_requests_total{outcome=\"ok\"} 3",
        "codio_bulk_bytes_total{direction=\"outbound\"} 1048576",
        "codio_connected_peers 1",
    ] {
        assert!(sent.contains(line), "sender lacks {line:?}:\n{sent}");
    }
    let received = text(&receiver_registry);
    for line in [
        "codio_inbound_requests_total 3",
        "codio_bulk_bytes_total{direction=\"inbound\"} 1048576",
    ] {
        assert!(
            received.contains(line),
            "receiver lacks {line:?}:\n{received}"
        );
    }
    sender.shutdown().await;
    receiver.shutdown().await;
    serving.abort();
}

/// A bare swarm that only opens `/codio/rpc/1.0.0` streams (no codio node behind it).
async fn raw_rpc_stream(server: &NetworkManager) -> libp2p::Stream {
    use codio_protocol::streams::{Behaviour as Streams, StreamsConfig};

    let (behaviour, control, _incoming) =
        Streams::new(StreamsConfig::new(codio_protocol::rpc::RPC_PROTOCOL));
    let mut swarm = bare_swarm(behaviour);
    swarm.dial(server.dial_addr().unwrap()).unwrap();
    tokio::time::timeout(EVENT_TIMEOUT, async {
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = swarm.select_next_some().await {
                break;
            }
        }
    })
    .await
    .expect("raw swarm connects");
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    tokio::time::timeout(EVENT_TIMEOUT, control.open_stream(server.local_peer_id()))
        .await
        .expect("rpc stream opens in time")
        .expect("rpc stream opens")
}

/// Hostile `/codio/rpc/1.0.0` streams: each bad frame is counted and ends its stream; a slow
/// frame is cut off by the request timeout; other peers are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rpc_streams_are_cut_off_and_counted() {
    use futures::{AsyncReadExt, AsyncWriteExt};

    init_tracing();
    let (server, _handler) = impatient_server().await;
    let good = loopback_node().await;
    let server_id = connect(&good, &server).await;
    let valid = codio_protocol::rpc::encode_request(&codio_protocol::rpc::RpcRequest {
        id: 1,
        request: Request::GetMetadata { content: KNOWN },
    })
    .unwrap();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "length prefix 2^32-1",
            u32::MAX.to_be_bytes().to_vec(),
            false,
        ),
        ("zero length", vec![0, 0, 0, 0], false),
        (
            "garbage body",
            vec![0, 0, 0, 5, 1, 0xff, 0xff, 0xff, 0xff],
            false,
        ),
        ("unknown version", vec![0, 0, 0, 2, 9, 0], false),
        (
            "a frame that never completes",
            valid[..valid.len() - 3].to_vec(),
            false,
        ),
        (
            "topic over MAX_TOPIC_LEN (Request::validate)",
            codio_protocol::rpc::encode_request(&codio_protocol::rpc::RpcRequest {
                id: 2,
                request: long_topic(),
            })
            .unwrap(),
            false,
        ),
        (
            "a valid request, then garbage",
            [&valid[..], &[0, 0, 0, 1, 7]].concat(),
            true,
        ),
    ];
    for (what, bytes, answers_first) in cases {
        let rejected_before = server.rejected_requests();
        let mut stream = raw_rpc_stream(&server).await;
        stream.write_all(&bytes).await.unwrap();
        stream.flush().await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(EVENT_TIMEOUT, stream.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "{what}: the server did not end the stream");
        if answers_first {
            let response = codio_protocol::rpc::decode_response(&got[4..]).unwrap();
            assert_eq!(response.id, 1, "{what}");
            assert_eq!(
                response.response,
                answer(&Request::GetMetadata { content: KNOWN })
            );
        } else {
            assert!(got.is_empty(), "{what}: got {got:?}");
        }
        let counted = codio_tests::eventually(EVENT_TIMEOUT, || async {
            server.rejected_requests() > rejected_before
        })
        .await;
        assert!(counted, "{what}: not counted as rejected");
        let ok = good
            .send_request(
                server_id,
                Request::App {
                    topic: "t".into(),
                    payload: what.as_bytes().to_vec(),
                },
            )
            .await;
        assert!(ok.is_ok(), "{what}: a well-behaved request failed: {ok:?}");
    }
}

/// A peer that speaks only `/codio/1.0.0` (one stream per request) is still asked: codio
/// falls back, and remembers to — with strict stream negotiation (the default: the refusal
/// fails the stream's opening) and with lazy (the refusal arrives on the first read, after
/// the first requests were sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_rpc_are_asked_over_codio_1_0_0() {
    init_tracing();
    for mode in [
        codio_transport::NegotiationMode::Strict,
        codio_transport::NegotiationMode::Lazy,
    ] {
        ask_a_legacy_peer(mode).await;
    }
}

async fn ask_a_legacy_peer(mode: codio_transport::NegotiationMode) {
    let stats = std::sync::Arc::new(codio_protocol::Stats::default());
    let mut legacy = bare_swarm(libp2p::request_response::Behaviour::with_codec(
        codio_protocol::Codec::new(stats),
        [(
            codio_protocol::PROTOCOL,
            libp2p::request_response::ProtocolSupport::Full,
        )],
        libp2p::request_response::Config::default(),
    ));
    legacy
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let address = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = legacy.select_next_some().await {
            break address;
        }
    };
    let legacy_id = *legacy.local_peer_id();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            }) = legacy.select_next_some().await
            {
                let _ = legacy
                    .behaviour_mut()
                    .send_response(channel, answer(&request));
            }
        }
    });
    let mut config = NetworkConfig::loopback();
    config.transport =
        codio_network::transport::TransportConfig::default().with_stream_negotiation(mode);
    let node = codio_tests::started_node(config).await;
    node.connect_peer(codio_network::with_p2p(address, legacy_id))
        .await
        .unwrap();
    for i in 0..3u8 {
        let request = Request::App {
            topic: "legacy".into(),
            payload: vec![i],
        };
        let response =
            tokio::time::timeout(EVENT_TIMEOUT, node.send_request(legacy_id, request.clone()))
                .await
                .expect("answered in time")
                .unwrap();
        assert_eq!(response, answer(&request));
    }
}

/// After a disconnect the request stream is gone; the next request opens a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_work_again_after_a_reconnect() {
    init_tracing();
    let (server, _handler) = server(NetworkConfig::loopback()).await;
    let client = loopback_node().await;
    let request = Request::GetMetadata { content: KNOWN };
    for _ in 0..3 {
        let id = connect(&client, &server).await;
        let response = client.send_request(id, request.clone()).await.unwrap();
        assert_eq!(response, answer(&request));
        client.disconnect_peer(id).await.unwrap();
    }
}

/// A request handler and a bulk handler made from a handle to their own node: the request
/// handler answers with what its node knows (its id, its connected peers) and the bulk handler
/// reports each transfer it took. That handle does not keep the node running: once the
/// application drops its own handle, the node shuts down and its peer sees it go.
#[tokio::test]
async fn handlers_reach_their_own_node_without_keeping_it_alive() {
    init_tracing();
    let (transfers, mut taken) = mpsc::channel(4);
    let server = NetworkManager::builder(NetworkConfig::loopback())
        .serve_requests_with(|node| {
            move |peer: PeerId, _request: Request| {
                let node = node.clone();
                async move {
                    let knows_peer = node.peer_info(&peer).is_some();
                    let mut payload = node.local_peer_id().to_bytes();
                    payload.push(u8::from(knows_peer));
                    Response::App { payload }
                }
            }
        })
        .serve_bulk_with(move |node| {
            move |mut bulk: codio_network::protocol::IncomingBulk| {
                let (node, transfers) = (node.clone(), transfers.clone());
                async move {
                    let header = bulk.header().await.unwrap();
                    let mut sink = futures::io::sink();
                    let bytes = bulk.receive(&header, &mut sink, |_| {}).await.unwrap();
                    transfers.send((node.local_peer_id(), bytes)).await.unwrap();
                }
            }
        })
        .build()
        .await
        .unwrap();
    server.start().await.unwrap();
    let server_id = server.local_peer_id();
    assert_eq!(
        server.dial_addrs().first(),
        server.dial_addr().as_ref(),
        "the first dial address"
    );
    assert!(
        server
            .dial_addrs()
            .iter()
            .all(|a| a.iter().last() == Some(codio_network::Protocol::P2p(server_id))),
        "every dial address ends in the node's id: {:?}",
        server.dial_addrs()
    );
    let client = loopback_node().await;
    connect(&client, &server).await;
    client.identified(server_id, EVENT_TIMEOUT).await.unwrap();

    let ask = Request::App {
        topic: "who".into(),
        payload: vec![],
    };
    let Response::App { payload } = client.send_request(server_id, ask).await.unwrap() else {
        panic!("expected an App response");
    };
    let mut expected = server_id.to_bytes();
    expected.push(1);
    assert_eq!(
        payload, expected,
        "the handler's node id, and it knows the peer"
    );

    let header = codio_network::protocol::BulkHeader {
        content: ContentId([3; 32]),
        size: 100_000,
        topic: "t".into(),
    };
    let mut source = futures::io::Cursor::new(vec![9u8; 100_000]);
    client
        .send_bulk(server_id, header, &mut source, |_| {})
        .await
        .unwrap();
    let (at, bytes) = tokio::time::timeout(EVENT_TIMEOUT, taken.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((at, bytes), (server_id, 100_000));

    // The application drops its only handle: the handlers' handles do not hold the node.
    let mut events = client.subscribe();
    drop(server);
    codio_tests::wait_for_event(&mut events, EVENT_TIMEOUT, "the server goes away", |e| {
        matches!(e, codio_network::NetworkEvent::PeerDisconnected { peer_id, .. } if *peer_id == server_id)
    })
    .await;
}
