//! Mesh changes: gossipsub reports no event when it grafts or prunes a peer, so the
//! behaviour compares each joined topic's mesh with the last one it saw (once a heartbeat)
//! and reports the difference. Pure state.

use std::collections::{BTreeSet, HashMap};

use libp2p::{PeerId, gossipsub::TopicHash};
use serde::Serialize;

/// How a topic's mesh changed since the last look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MeshChange {
    /// Peers grafted into the mesh.
    #[serde(serialize_with = "crate::ser::peers")]
    pub added: Vec<PeerId>,
    /// Peers pruned from it (or gone).
    #[serde(serialize_with = "crate::ser::peers")]
    pub removed: Vec<PeerId>,
    /// The mesh's size now.
    pub size: usize,
}

/// The last mesh seen per topic.
#[derive(Debug, Default)]
pub(crate) struct Meshes {
    by_topic: HashMap<TopicHash, BTreeSet<PeerId>>,
}

impl Meshes {
    /// Records `topic`'s mesh now; returns the change since the last call, if any.
    pub(crate) fn update(
        &mut self,
        topic: &TopicHash,
        now: impl IntoIterator<Item = PeerId>,
    ) -> Option<MeshChange> {
        let now: BTreeSet<PeerId> = now.into_iter().collect();
        let before = self.by_topic.entry(topic.clone()).or_default();
        let added: Vec<PeerId> = now.difference(before).copied().collect();
        let removed: Vec<PeerId> = before.difference(&now).copied().collect();
        let size = now.len();
        *before = now;
        (!added.is_empty() || !removed.is_empty()).then_some(MeshChange {
            added,
            removed,
            size,
        })
    }

    /// Forgets a topic left.
    pub(crate) fn forget(&mut self, topic: &TopicHash) {
        self.by_topic.remove(topic);
    }

    /// Peers in all meshes (a peer in two meshes counts twice).
    pub(crate) fn total(&self) -> usize {
        self.by_topic.values().map(BTreeSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_grafts_and_prunes_once() {
        let topic = TopicHash::from_raw("t");
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut meshes = Meshes::default();
        let change = meshes.update(&topic, [a, b]).unwrap();
        assert_eq!(change.added.len(), 2);
        assert!(change.removed.is_empty());
        assert_eq!(meshes.update(&topic, [b, a]), None);
        let change = meshes.update(&topic, [b, c]).unwrap();
        assert_eq!(
            (change.added, change.removed, change.size),
            (vec![c], vec![a], 2)
        );
        assert_eq!(meshes.total(), 2);
        meshes.forget(&topic);
        assert_eq!(meshes.total(), 0);
    }
}
