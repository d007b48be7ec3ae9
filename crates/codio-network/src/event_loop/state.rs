//! [`ListenAddrs`]: the listen addresses the event loop writes and handles read.

use std::sync::{Arc, PoisonError, RwLock};

use libp2p::Multiaddr;

/// The node's listen addresses, shared between the event loop (the only writer) and the
/// handles. Each update is one push or retain, so a poisoned lock holds a usable list.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListenAddrs(Arc<RwLock<Vec<Multiaddr>>>);

impl ListenAddrs {
    pub(crate) fn get(&self) -> Vec<Multiaddr> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Vec<Multiaddr>)) {
        f(&mut self.0.write().unwrap_or_else(PoisonError::into_inner));
    }
}
