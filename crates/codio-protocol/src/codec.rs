//! Framing and the bounded request/response codec.
//!
//! ```text
//! frame = length:u32 (big-endian, 1..=limit) ‖ version:u8 (= 1) ‖ postcard(message)
//! ```
//!
//! The length is checked against the limit **before** anything is allocated; a frame that
//! claims more is rejected without reading it, and the stream is reset by the caller.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{Serialize, de::DeserializeOwned};

use crate::{ProtocolError, Request, Response, Stats, VERSION};

/// Largest request frame accepted: 64 KiB.
pub const MAX_REQUEST_FRAME: usize = 64 * 1024;
/// Largest response frame accepted: 4 MiB (a 1 MiB chunk comfortably fits).
pub const MAX_RESPONSE_FRAME: usize = 4 * 1024 * 1024;
/// Longest application topic, in bytes.
pub const MAX_TOPIC_LEN: usize = 64;

/// Encodes `message` into a complete frame (length prefix included).
///
/// # Errors
///
/// [`ProtocolError::TooLarge`] when the frame would exceed `limit`,
/// [`ProtocolError::Encode`] when serialization fails.
pub fn encode<M: Serialize>(message: &M, limit: usize) -> Result<Vec<u8>, ProtocolError> {
    let mut frame = vec![0, 0, 0, 0, VERSION];
    frame =
        postcard::to_extend(message, frame).map_err(|e| ProtocolError::Encode(e.to_string()))?;
    let body = frame.len() - 4;
    if body > limit {
        return Err(ProtocolError::TooLarge {
            size: body as u64,
            limit,
        });
    }
    let length = u32::try_from(body).map_err(|_| ProtocolError::TooLarge {
        size: body as u64,
        limit,
    })?;
    frame[..4].copy_from_slice(&length.to_be_bytes());
    Ok(frame)
}

/// Decodes a frame body (version byte and message, without the length prefix).
///
/// # Errors
///
/// [`ProtocolError::UnsupportedVersion`], [`ProtocolError::Malformed`] (bad encoding or
/// trailing bytes), [`ProtocolError::Empty`].
pub fn decode<M: DeserializeOwned>(body: &[u8]) -> Result<M, ProtocolError> {
    let (&version, rest) = body.split_first().ok_or(ProtocolError::Empty)?;
    if version != VERSION {
        return Err(ProtocolError::UnsupportedVersion(version));
    }
    let (message, trailing) =
        postcard::take_from_bytes(rest).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if !trailing.is_empty() {
        return Err(ProtocolError::Malformed(format!(
            "{} trailing bytes",
            trailing.len()
        )));
    }
    Ok(message)
}

/// Checks that `message` fits a frame body of `limit` bytes, as [`encode`] would, without
/// encoding it (nothing is allocated or copied).
///
/// # Errors
///
/// [`ProtocolError::TooLarge`] beyond `limit`, [`ProtocolError::Encode`] when the message
/// cannot be serialized.
pub fn check_size<M: Serialize>(message: &M, limit: usize) -> Result<(), ProtocolError> {
    let encoded = postcard::serialize_with_flavor(message, postcard::ser_flavors::Size::default())
        .map_err(|e| ProtocolError::Encode(e.to_string()))?;
    let body = encoded + 1;
    if body > limit {
        return Err(ProtocolError::TooLarge {
            size: body as u64,
            limit,
        });
    }
    Ok(())
}

/// Reads one frame body of at most `limit` bytes.
///
/// # Errors
///
/// I/O errors of `io` (a truncated frame is [`io::ErrorKind::UnexpectedEof`]), and
/// [`ProtocolError::TooLarge`] / [`ProtocolError::Empty`] for a bad length prefix, checked
/// before allocating.
pub async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    limit: usize,
) -> Result<Vec<u8>, ProtocolError> {
    let mut first = [0u8; 1];
    io.read_exact(&mut first).await?;
    read_frame_rest(io, first[0], limit).await
}

/// Reads the rest of a frame whose first length byte, `first`, was already read (for readers
/// that wait for the start of a frame differently from the rest of it); otherwise as
/// [`read_frame`].
///
/// # Errors
///
/// As [`read_frame`].
pub(crate) async fn read_frame_rest<R: AsyncRead + Unpin>(
    io: &mut R,
    first: u8,
    limit: usize,
) -> Result<Vec<u8>, ProtocolError> {
    let mut rest = [0u8; 3];
    io.read_exact(&mut rest).await?;
    let length = u32::from_be_bytes([first, rest[0], rest[1], rest[2]]) as usize;
    if length == 0 {
        return Err(ProtocolError::Empty);
    }
    if length > limit {
        return Err(ProtocolError::TooLarge {
            size: length as u64,
            limit,
        });
    }
    let mut body = vec![0u8; length];
    io.read_exact(&mut body).await?;
    Ok(body)
}

/// Writes `frame` (from [`encode`]) and flushes.
///
/// # Errors
///
/// I/O errors of `io`.
pub async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, frame: &[u8]) -> io::Result<()> {
    io.write_all(frame).await?;
    io.flush().await
}

/// The `request_response` codec of `/codio/1.0.0`: one framed request, one framed response
/// per stream, both bounded.
#[derive(Debug, Clone, Default)]
pub struct Codec {
    stats: std::sync::Arc<Stats>,
}

impl Codec {
    /// A codec counting into `stats`.
    pub fn new(stats: std::sync::Arc<Stats>) -> Self {
        Self { stats }
    }

    async fn read_request_inner<T>(io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, MAX_REQUEST_FRAME).await?;
        let request: Request = decode(&body)?;
        request.validate()?;
        Ok(request)
    }
}

/// Counts a rejected request when dropped armed.
struct RejectOnDrop(Option<std::sync::Arc<Stats>>);

impl Drop for RejectOnDrop {
    fn drop(&mut self) {
        if let Some(stats) = self.0.take() {
            stats.record_rejected();
        }
    }
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        // Counts a read that is abandoned half-way too: libp2p drops this future when the
        // request timeout expires (a slow sender) and reports nothing itself.
        let mut guard = RejectOnDrop(Some(self.stats.clone()));
        let result = Self::read_request_inner(io).await;
        match &result {
            Ok(_) => guard.0 = None,
            Err(error) => tracing::debug!(%error, "inbound request rejected; dropping the stream"),
        }
        result
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, MAX_RESPONSE_FRAME).await?;
        Ok(decode(&body)?)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let frame = encode(&request, MAX_REQUEST_FRAME)?;
        write_frame(io, &frame).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let frame = match encode(&response, MAX_RESPONSE_FRAME) {
            Ok(frame) => frame,
            // Tell the requester instead of leaving it to time out.
            Err(ProtocolError::TooLarge { size, limit }) => encode(
                &Response::error(
                    crate::ErrorCode::TooLarge,
                    format!("response of {size} bytes exceeds {limit}"),
                ),
                MAX_RESPONSE_FRAME,
            )?,
            Err(error) => return Err(error.into()),
        };
        write_frame(io, &frame).await?;
        io.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContentId, ErrorCode, Metadata};
    use futures::{executor::block_on, io::Cursor};
    use libp2p::request_response::Codec as _;
    use proptest::prelude::*;

    fn requests() -> Vec<Request> {
        vec![
            Request::GetChunk {
                content: ContentId([1; 32]),
                index: u64::MAX,
            },
            Request::GetMetadata {
                content: ContentId([2; 32]),
            },
            Request::App {
                topic: "cdn/purge".into(),
                payload: vec![0, 1, 2, 255],
            },
            Request::App {
                topic: String::new(),
                payload: Vec::new(),
            },
        ]
    }

    fn responses() -> Vec<Response> {
        vec![
            Response::Chunk {
                content: ContentId([3; 32]),
                index: 9,
                data: vec![42; 1 << 20],
            },
            Response::Metadata(Metadata {
                content: ContentId([4; 32]),
                size: 1 << 40,
                chunk_size: 1 << 20,
            }),
            Response::App {
                payload: b"ok".to_vec(),
            },
            Response::error(ErrorCode::NotFound, "no such chunk"),
            Response::error(ErrorCode::Overloaded, ""),
            Response::error(ErrorCode::BadRequest, "x"),
            Response::error(ErrorCode::UnsupportedVersion, "v2"),
            Response::error(ErrorCode::TooLarge, "big"),
            Response::error(ErrorCode::Internal, "oops"),
        ]
    }

    #[test]
    fn every_message_type_round_trips_through_the_codec() {
        let protocol = crate::PROTOCOL;
        for request in requests() {
            let mut wire = Vec::new();
            block_on(Codec::default().write_request(
                &protocol,
                &mut Cursor::new(&mut wire),
                request.clone(),
            ))
            .unwrap();
            let read = block_on(Codec::default().read_request(&protocol, &mut Cursor::new(&wire)))
                .unwrap();
            assert_eq!(read, request);
        }
        for response in responses() {
            let mut wire = Vec::new();
            block_on(Codec::default().write_response(
                &protocol,
                &mut Cursor::new(&mut wire),
                response.clone(),
            ))
            .unwrap();
            let read = block_on(Codec::default().read_response(&protocol, &mut Cursor::new(&wire)))
                .unwrap();
            assert_eq!(read, response);
        }
    }

    /// The example frame of docs/protocol.md, byte for byte.
    #[test]
    fn wire_format_matches_the_spec() {
        let frame = encode(
            &Request::GetMetadata {
                content: ContentId([7; 32]),
            },
            MAX_REQUEST_FRAME,
        )
        .unwrap();
        let mut expected = vec![0x00, 0x00, 0x00, 0x22, 0x01, 0x01];
        expected.extend([7u8; 32]);
        assert_eq!(frame, expected);
        // Varints: index 300 = 0xAC 0x02; App topic length and payload length prefixed.
        let frame = encode(
            &Request::GetChunk {
                content: ContentId([0; 32]),
                index: 300,
            },
            MAX_REQUEST_FRAME,
        )
        .unwrap();
        assert_eq!(&frame[4..6], &[0x01, 0x00]);
        assert_eq!(&frame[frame.len() - 2..], &[0xAC, 0x02]);
        let frame = encode(
            &Request::App {
                topic: "ab".into(),
                payload: vec![9],
            },
            MAX_REQUEST_FRAME,
        )
        .unwrap();
        assert_eq!(&frame[4..], &[0x01, 0x02, 0x02, b'a', b'b', 0x01, 0x09]);
    }

    #[test]
    fn oversized_length_prefix_is_rejected_before_allocating() {
        for prefix in [u32::MAX, (MAX_REQUEST_FRAME + 1) as u32] {
            // Only the prefix is sent: a reader that trusted it would wait for 4 GiB.
            let wire = prefix.to_be_bytes().to_vec();
            let err = block_on(read_frame(&mut Cursor::new(&wire), MAX_REQUEST_FRAME)).unwrap_err();
            assert!(
                matches!(
                    err,
                    ProtocolError::TooLarge {
                        limit: MAX_REQUEST_FRAME,
                        ..
                    }
                ),
                "{err}"
            );
        }
        // 2^64 - 1 as eight bytes: the first four already exceed every limit.
        let wire = u64::MAX.to_be_bytes().to_vec();
        assert!(matches!(
            block_on(read_frame(&mut Cursor::new(&wire), MAX_RESPONSE_FRAME)),
            Err(ProtocolError::TooLarge { .. })
        ));
        let err = block_on(read_frame(&mut Cursor::new(&[0, 0, 0, 0][..]), 10)).unwrap_err();
        assert!(matches!(err, ProtocolError::Empty));
    }

    #[test]
    fn truncated_frames_are_unexpected_eof() {
        let frame = encode(&requests()[2], MAX_REQUEST_FRAME).unwrap();
        for cut in [0, 2, 4, frame.len() - 1] {
            let err = block_on(read_frame(
                &mut Cursor::new(&frame[..cut]),
                MAX_REQUEST_FRAME,
            ))
            .unwrap_err();
            match err {
                ProtocolError::Io(e) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
                other => panic!("cut at {cut}: {other}"),
            }
        }
    }

    #[test]
    fn malformed_bodies_are_rejected() {
        assert!(matches!(decode::<Request>(&[]), Err(ProtocolError::Empty)));
        assert!(matches!(
            decode::<Request>(&[2, 0]),
            Err(ProtocolError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            decode::<Request>(&[VERSION, 200]),
            Err(ProtocolError::Malformed(_))
        ));
        let mut frame = encode(&requests()[1], MAX_REQUEST_FRAME).unwrap();
        frame.push(0);
        assert!(
            matches!(
                decode::<Request>(&frame[4..]),
                Err(ProtocolError::Malformed(_))
            ),
            "trailing byte"
        );
        // An App request whose topic exceeds the limit.
        let long = Request::App {
            topic: "t".repeat(MAX_TOPIC_LEN + 1),
            payload: vec![],
        };
        let frame = encode(&long, MAX_REQUEST_FRAME).unwrap();
        let err =
            block_on(Codec::default().read_request(&crate::PROTOCOL, &mut Cursor::new(&frame)))
                .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn oversized_messages_are_refused_and_responses_degrade_to_an_error() {
        let big = Request::App {
            topic: "x".into(),
            payload: vec![0; MAX_REQUEST_FRAME],
        };
        assert!(matches!(
            encode(&big, MAX_REQUEST_FRAME),
            Err(ProtocolError::TooLarge { .. })
        ));
        let huge = Response::App {
            payload: vec![0; MAX_RESPONSE_FRAME + 1],
        };
        let mut wire = Vec::new();
        block_on(Codec::default().write_response(
            &crate::PROTOCOL,
            &mut Cursor::new(&mut wire),
            huge,
        ))
        .unwrap();
        let read =
            block_on(Codec::default().read_response(&crate::PROTOCOL, &mut Cursor::new(&wire)))
                .unwrap();
        assert!(
            matches!(
                read,
                Response::Error {
                    code: ErrorCode::TooLarge,
                    ..
                }
            ),
            "{read:?}"
        );
    }

    #[test]
    fn error_messages_are_truncated_on_a_char_boundary() {
        let Response::Error { message, .. } =
            Response::error(ErrorCode::Internal, "é".repeat(1000))
        else {
            unreachable!()
        };
        assert!(message.len() <= MAX_TOPIC_LEN * 4);
        assert!(message.chars().all(|c| c == 'é'));
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<[u8; 32]>(), any::<u64>()).prop_map(|(c, index)| Request::GetChunk {
                content: ContentId(c),
                index
            }),
            any::<[u8; 32]>().prop_map(|c| Request::GetMetadata {
                content: ContentId(c)
            }),
            (
                "[a-z/]{0,64}",
                proptest::collection::vec(any::<u8>(), 0..512)
            )
                .prop_map(|(topic, payload)| Request::App { topic, payload }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes never panic the decoder: they decode or are rejected.
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
            let _ = block_on(read_frame(&mut Cursor::new(&bytes), MAX_REQUEST_FRAME));
        }

        /// Valid frames with random corruption never panic either.
        #[test]
        fn corrupted_frames_never_panic(request in arb_request(), position in any::<usize>(), value in any::<u8>()) {
            let mut frame = encode(&request, MAX_REQUEST_FRAME).unwrap();
            let at = position % frame.len();
            frame[at] = value;
            let _ = block_on(Codec::default().read_request(&crate::PROTOCOL, &mut Cursor::new(&frame)));
        }

        /// `check_size` agrees with `encode` at every limit around the real size.
        #[test]
        fn check_size_agrees_with_encode(request in arb_request(), slack in 0usize..4) {
            let body = encode(&request, usize::MAX).unwrap().len() - 4;
            for limit in [body.saturating_sub(slack), body + slack] {
                prop_assert_eq!(
                    check_size(&request, limit).is_ok(),
                    encode(&request, limit).is_ok()
                );
            }
        }

        /// Every request round-trips.
        #[test]
        fn requests_round_trip(request in arb_request()) {
            let frame = encode(&request, MAX_REQUEST_FRAME).unwrap();
            prop_assert_eq!(decode::<Request>(&frame[4..]).unwrap(), request);
        }
    }
}
