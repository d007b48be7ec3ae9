//! [`Shared`]: the state the event loop writes and handles read.

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
};

use codio_policy::ConnectionCounts;
use libp2p::{Multiaddr, PeerId};

use crate::{NatStatus, PeerInfo};

/// State shared between the event loop (the only writer) and the handles (readers).
///
/// A panic while holding a lock cannot leave a value half-updated in a way readers care
/// about (each update is a single insert, remove or field write), so poisoning is ignored.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    peers: RwLock<HashMap<PeerId, PeerInfo>>,
    listen_addrs: RwLock<Vec<Multiaddr>>,
    counts: RwLock<ConnectionCounts>,
    nat: RwLock<NatStatus>,
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(PoisonError::into_inner).clone()
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn peers(&self) -> Vec<PeerInfo> {
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        peers.values().cloned().collect()
    }

    pub(crate) fn peer(&self, peer_id: &PeerId) -> Option<PeerInfo> {
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        peers.get(peer_id).cloned()
    }

    pub(crate) fn listen_addrs(&self) -> Vec<Multiaddr> {
        read(&self.listen_addrs)
    }

    pub(crate) fn counts(&self) -> ConnectionCounts {
        read(&self.counts)
    }

    pub(crate) fn nat_status(&self) -> NatStatus {
        read(&self.nat)
    }

    pub(crate) fn set_nat_status(&self, status: NatStatus) {
        *write(&self.nat) = status;
    }

    pub(crate) fn set_counts(&self, counts: ConnectionCounts) {
        *write(&self.counts) = counts;
    }

    pub(crate) fn update_peers<R>(&self, f: impl FnOnce(&mut HashMap<PeerId, PeerInfo>) -> R) -> R {
        f(&mut write(&self.peers))
    }

    pub(crate) fn update_listen_addrs(&self, f: impl FnOnce(&mut Vec<Multiaddr>)) {
        f(&mut write(&self.listen_addrs))
    }
}
