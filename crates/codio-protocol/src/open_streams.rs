//! Each peer's inbound `/codio/1.0.0` streams in flight, from the request read to the answer
//! written (or the stream failed): pure state owned by the behaviour, so one peer cannot hold
//! more than its share of streams — and of the answers they pin — whatever its connection
//! count.
//!
//! libp2p-request-response bounds streams per *connection* (`max_concurrent_streams`); a
//! peer holds several connections, and its streams outlive the handler's work while a peer
//! that does not read keeps their answers unwritten.

use std::{collections::HashMap, hash::Hash};

use libp2p::PeerId;

/// Streams in flight per peer, and the peer of each stream (by its id `K`: libp2p's
/// `InboundRequestId` in the behaviour).
#[derive(Debug)]
pub(crate) struct OpenStreams<K> {
    per_peer: HashMap<PeerId, usize>,
    streams: HashMap<K, PeerId>,
}

impl<K> Default for OpenStreams<K> {
    fn default() -> Self {
        Self {
            per_peer: HashMap::new(),
            streams: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> OpenStreams<K> {
    /// Counts the stream of `id` for `peer` unless the peer holds `max` already (`Err` with
    /// what it holds); `Ok` with what it holds now.
    pub(crate) fn open(&mut self, peer: PeerId, id: K, max: usize) -> Result<usize, usize> {
        let held = self.per_peer.entry(peer).or_default();
        if *held >= max {
            return Err(*held);
        }
        *held += 1;
        let now = *held;
        self.streams.insert(id, peer);
        Ok(now)
    }

    /// The stream of `id` ended (answer written, or failed); a stream not counted is ignored.
    pub(crate) fn close(&mut self, id: &K) {
        let Some(peer) = self.streams.remove(id) else {
            return;
        };
        if let Some(held) = self.per_peer.get_mut(&peer) {
            *held -= 1;
            if *held == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }

    /// Streams in flight, all peers together.
    pub(crate) fn total(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_holds_at_most_its_share_and_gets_it_back() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let ids = [10u64, 11, 12, 13];
        let mut open = OpenStreams::default();
        assert_eq!(open.open(a, ids[0], 2), Ok(1));
        assert_eq!(open.open(a, ids[1], 2), Ok(2));
        assert_eq!(open.open(a, ids[2], 2), Err(2));
        assert_eq!(
            open.open(b, ids[3], 2),
            Ok(1),
            "another peer keeps its share"
        );
        open.close(&ids[2]);
        assert_eq!(open.total(), 3, "a refused stream was never counted");
        open.close(&ids[0]);
        open.close(&ids[0]);
        assert_eq!(open.open(a, ids[2], 2), Ok(2));
        for id in &ids {
            open.close(id);
        }
        assert_eq!(open.total(), 0);
        assert!(
            open.per_peer.is_empty(),
            "no entry outlives a peer's last stream"
        );
    }
}
