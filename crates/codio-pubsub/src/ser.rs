//! Serialisation of libp2p types in events (peer ids and message ids as strings).

use libp2p::{PeerId, gossipsub::MessageId};
use serde::Serializer;

pub(crate) fn peer<S: Serializer>(peer: &PeerId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(peer)
}

pub(crate) fn option_peer<S: Serializer>(peer: &Option<PeerId>, s: S) -> Result<S::Ok, S::Error> {
    match peer {
        Some(peer) => s.collect_str(peer),
        None => s.serialize_none(),
    }
}

pub(crate) fn peers<S: Serializer>(peers: &[PeerId], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(peers.iter().map(PeerId::to_string))
}

pub(crate) fn message_id<S: Serializer>(id: &MessageId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}
