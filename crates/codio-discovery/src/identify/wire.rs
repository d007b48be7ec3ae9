//! The identify message (`/ipfs/id/1.0.0`, `/ipfs/id/push/1.0.0`): the protobuf of the
//! libp2p identify specification, one varint-length-prefixed message per stream, read and
//! written within a size bound and a deadline.

use std::{io, time::Duration};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{Multiaddr, StreamProtocol, identify::Info, identity::PublicKey};
use prost::Message as _;

/// The identify message, as the specification's `structs.proto` declares it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Message {
    #[prost(string, optional, tag = "5")]
    pub(crate) protocol_version: Option<String>,
    #[prost(string, optional, tag = "6")]
    pub(crate) agent_version: Option<String>,
    #[prost(bytes = "vec", optional, tag = "1")]
    pub(crate) public_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub(crate) listen_addrs: Vec<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub(crate) observed_addr: Option<Vec<u8>>,
    #[prost(string, repeated, tag = "3")]
    pub(crate) protocols: Vec<String>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub(crate) signed_peer_record: Option<Vec<u8>>,
}

/// Why an identify exchange with a peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentifyError {
    /// The stream failed or closed early.
    #[error("identify stream: {0}")]
    Io(#[from] io::Error),
    /// Not read or written within the deadline.
    #[error("identify stream timed out")]
    Timeout,
    /// The length prefix announced more than the bound.
    #[error("identify message of {0} bytes is above the bound")]
    TooLarge(usize),
    /// Not a valid message.
    #[error("malformed identify message: {0}")]
    Malformed(&'static str),
    /// The peer does not speak identify.
    #[error("peer does not speak identify")]
    Unsupported,
}

/// Writes `message` (length-prefixed) and closes the stream, within `deadline`.
pub(crate) async fn send<S: AsyncWrite + Unpin>(
    mut stream: S,
    message: &[u8],
    deadline: Duration,
) -> Result<(), IdentifyError> {
    let write = async {
        stream.write_all(message).await?;
        stream.close().await
    };
    tokio::time::timeout(deadline, write)
        .await
        .map_err(|_| IdentifyError::Timeout)?
        .map_err(IdentifyError::Io)
}

/// Reads one length-prefixed message of at most `max` bytes within `deadline`.
pub(crate) async fn receive<S: AsyncRead + Unpin>(
    mut stream: S,
    max: usize,
    deadline: Duration,
) -> Result<Message, IdentifyError> {
    let read = async {
        let length = read_length(&mut stream, max).await?;
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await?;
        Message::decode(body.as_slice()).map_err(|_| IdentifyError::Malformed("protobuf"))
    };
    tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| IdentifyError::Timeout)?
}

/// An unsigned varint length, refused as soon as it passes `max`.
async fn read_length<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<usize, IdentifyError> {
    let mut length: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await?;
        length |= u64::from(byte[0] & 0x7f) << shift;
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        if length > max {
            return Err(IdentifyError::TooLarge(length));
        }
        if byte[0] & 0x80 == 0 {
            return Ok(length);
        }
    }
    Err(IdentifyError::Malformed("length prefix"))
}

/// What this node says about itself; `observed` is the peer's address as this node sees it.
#[derive(Debug)]
pub(crate) struct Local<'a> {
    pub(crate) public_key: &'a [u8],
    pub(crate) protocol_version: &'a str,
    pub(crate) agent_version: &'a str,
    pub(crate) addresses: &'a [Multiaddr],
    pub(crate) protocols: &'a [StreamProtocol],
}

/// Encodes `local` for a peer seen at `observed`, length-prefixed, within `max` bytes: the
/// addresses, then the protocols, that would pass the bound are left out.
pub(crate) fn encode(local: &Local<'_>, observed: &Multiaddr, max: usize) -> Vec<u8> {
    let mut message = Message {
        protocol_version: Some(local.protocol_version.to_owned()),
        agent_version: Some(local.agent_version.to_owned()),
        public_key: Some(local.public_key.to_vec()),
        listen_addrs: Vec::new(),
        observed_addr: Some(observed.to_vec()),
        protocols: Vec::new(),
        signed_peer_record: None,
    };
    // Room for the length prefix (at most 3 bytes below 2 MiB) on top of the body.
    let fits = |message: &Message| message.encoded_len() + 3 <= max;
    for address in local.addresses {
        message.listen_addrs.push(address.to_vec());
        if !fits(&message) {
            message.listen_addrs.pop();
            break;
        }
    }
    for protocol in local.protocols {
        message.protocols.push(protocol.to_string());
        if !fits(&message) {
            message.protocols.pop();
            break;
        }
    }
    message.encode_length_delimited_to_vec()
}

/// A peer's message as [`Info`]; `name` turns a protocol name into a [`StreamProtocol`]
/// (sharing the allocation of names already known). Invalid addresses and protocol names
/// are left out; a message without a valid public key is refused.
pub(crate) fn decode(
    message: Message,
    mut name: impl FnMut(String) -> Option<StreamProtocol>,
) -> Result<Info, IdentifyError> {
    let public_key = message
        .public_key
        .as_deref()
        .and_then(|key| PublicKey::try_decode_protobuf(key).ok())
        .ok_or(IdentifyError::Malformed("public key"))?;
    let address = |bytes: Vec<u8>| Multiaddr::try_from(bytes).ok();
    Ok(Info {
        public_key,
        protocol_version: message.protocol_version.unwrap_or_default(),
        agent_version: message.agent_version.unwrap_or_default(),
        listen_addrs: message
            .listen_addrs
            .into_iter()
            .filter_map(address)
            .collect(),
        protocols: message
            .protocols
            .into_iter()
            .filter_map(&mut name)
            .collect(),
        observed_addr: message
            .observed_addr
            .and_then(address)
            .unwrap_or_else(Multiaddr::empty),
        // Not read: the listen addresses are judged by where the connection comes from,
        // and checking a signature per identify would be work an attacker makes us do.
        signed_peer_record: None,
    })
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;

    fn local<'a>(
        key: &'a [u8],
        addresses: &'a [Multiaddr],
        protocols: &'a [StreamProtocol],
    ) -> Local<'a> {
        Local {
            public_key: key,
            protocol_version: "/codio/1.0.0",
            agent_version: "codio-network/test",
            addresses,
            protocols,
        }
    }

    fn body(framed: &[u8]) -> Message {
        Message::decode_length_delimited(framed).unwrap()
    }

    #[test]
    fn a_message_reads_back_as_what_was_sent() {
        let keypair = Keypair::generate_ed25519();
        let key = keypair.public().encode_protobuf();
        let addresses: Vec<Multiaddr> = vec![
            "/ip4/203.0.113.1/tcp/4001".parse().unwrap(),
            "/ip4/203.0.113.1/udp/4001/quic-v1".parse().unwrap(),
        ];
        let protocols = [
            StreamProtocol::new("/ipfs/id/1.0.0"),
            StreamProtocol::new("/x/1"),
        ];
        let observed: Multiaddr = "/ip4/198.51.100.9/tcp/5555".parse().unwrap();
        let framed = encode(&local(&key, &addresses, &protocols), &observed, 4096);
        let info = decode(body(&framed), |n| StreamProtocol::try_from_owned(n).ok()).unwrap();
        assert_eq!(info.public_key, keypair.public());
        assert_eq!(info.listen_addrs, addresses);
        assert_eq!(info.protocols, protocols);
        assert_eq!(info.observed_addr, observed);
        assert_eq!(info.agent_version, "codio-network/test");
        assert_eq!(info.protocol_version, "/codio/1.0.0");
    }

    #[test]
    fn what_does_not_fit_the_bound_is_left_out() {
        let key = Keypair::generate_ed25519().public().encode_protobuf();
        let addresses: Vec<Multiaddr> = (0..500)
            .map(|p| format!("/ip4/203.0.113.1/tcp/{p}").parse().unwrap())
            .collect();
        let observed = Multiaddr::empty();
        let framed = encode(&local(&key, &addresses, &[]), &observed, 1024);
        assert!(framed.len() <= 1024, "{}", framed.len());
        let message = body(&framed);
        assert!(
            message.listen_addrs.len() > 50,
            "{}",
            message.listen_addrs.len()
        );
        assert!(message.listen_addrs.len() < 500);
    }

    #[test]
    fn a_message_without_a_valid_key_or_with_bad_fields_is_judged_field_by_field() {
        let mut message = Message {
            public_key: Some(vec![1, 2, 3]),
            ..Message::default()
        };
        assert!(matches!(
            decode(message.clone(), |n| StreamProtocol::try_from_owned(n).ok()),
            Err(IdentifyError::Malformed("public key"))
        ));
        message.public_key = Some(Keypair::generate_ed25519().public().encode_protobuf());
        message.listen_addrs = vec![
            vec![0xff, 0xff],
            "/ip4/1.2.3.4/tcp/1".parse::<Multiaddr>().unwrap().to_vec(),
        ];
        message.protocols = vec!["no-slash".into(), "/ok/1".into()];
        let info = decode(message, |n| StreamProtocol::try_from_owned(n).ok()).unwrap();
        assert_eq!(info.listen_addrs.len(), 1);
        assert_eq!(info.protocols, [StreamProtocol::new("/ok/1")]);
        assert!(info.observed_addr.is_empty());
    }

    #[tokio::test]
    async fn a_length_above_the_bound_is_refused_before_the_body_is_read() {
        // A prefix announcing 1 MiB, and no body at all: refused from the prefix alone.
        let prefix: &[u8] = &[0x80, 0x80, 0x40];
        let result = receive(prefix, 4096, Duration::from_secs(1)).await;
        assert!(
            matches!(result, Err(IdentifyError::TooLarge(n)) if n > 4096),
            "{result:?}"
        );
        // A varint that never ends is refused after ten bytes.
        let endless = [0x80u8; 16];
        let result = receive(&endless[..], usize::MAX, Duration::from_secs(1)).await;
        assert!(
            matches!(result, Err(IdentifyError::Malformed(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_peer_that_stops_sending_is_cut_at_the_deadline() {
        use futures::{StreamExt as _, TryStreamExt as _};
        // 10 bytes announced, 2 sent, then nothing, never closed.
        let drip = futures::stream::iter([Ok::<_, io::Error>(vec![10u8, 1, 2])])
            .chain(futures::stream::pending())
            .into_async_read();
        let result = receive(drip, 4096, Duration::from_millis(100)).await;
        assert!(matches!(result, Err(IdentifyError::Timeout)), "{result:?}");
    }
}
