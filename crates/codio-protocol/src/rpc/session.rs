//! What client and server sessions share: kill switches, end reasons, write batching.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use libp2p::PeerId;
use tokio::sync::oneshot;

/// Bytes of requests or responses written in one go before a flush.
pub(crate) const COALESCE: usize = 64 * 1024;
/// Write buffer capacity a session keeps between batches.
const KEEP: usize = 16 * 1024;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// No request for the idle time: closed on purpose.
    Idle,
    /// The peer's last connection closed, or the node stopped.
    ConnectionClosed,
    /// The peer closed its side.
    ClosedByPeer,
    /// Every handle of the client is gone.
    ClientGone,
    /// Writing failed.
    WriteFailed,
    /// An answer was not written within the write timeout: the peer does not read.
    WriteStalled,
    /// Reading failed (the stream died).
    ReadFailed,
    /// A frame began but did not finish within the frame timeout (a peer dripping bytes).
    ReadStalled,
    /// The peer sent a frame that breaks the protocol.
    BadFrame,
    /// The peer sent a frame that does not decode as the expected message.
    Malformed,
    /// The peer does not speak the protocol (it refused the lazily proposed stream).
    Refused,
}

impl SessionEnd {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SessionEnd::Idle => "idle",
            SessionEnd::ConnectionClosed => "connection closed",
            SessionEnd::ClosedByPeer => "closed by peer",
            SessionEnd::ClientGone => "client gone",
            SessionEnd::WriteFailed => "write failed",
            SessionEnd::WriteStalled => "peer does not read",
            SessionEnd::ReadFailed => "stream closed",
            SessionEnd::ReadStalled => "frame not finished in time",
            SessionEnd::BadFrame => "bad frame",
            SessionEnd::Malformed => "malformed message",
            SessionEnd::Refused => "protocol refused",
        }
    }
}

/// Kill switches of running sessions, by peer: dropping a peer's senders ends its sessions.
/// The behaviour trips them when the peer's last connection closes (a dead Yamux stream is
/// not guaranteed to wake a reader) and all of them when it is dropped (the node stopped).
#[derive(Debug, Default)]
pub(crate) struct KillSwitches(Mutex<HashMap<PeerId, Vec<oneshot::Sender<()>>>>);

impl KillSwitches {
    /// A switch for a new session of `peer`, which may hold at most `max` sessions: when it
    /// holds `max` already, its oldest is ended (dropping a switch trips it) and `true`
    /// returned.
    pub(crate) fn arm(&self, peer: PeerId, max: usize) -> (oneshot::Receiver<()>, bool) {
        let (tx, rx) = oneshot::channel();
        let mut map = self.lock();
        let switches = map.entry(peer).or_default();
        // Sessions that ended by themselves dropped their receivers.
        switches.retain(|s| !s.is_closed());
        let shed = switches.len() >= max.max(1);
        if shed {
            switches.remove(0);
        }
        switches.push(tx);
        (rx, shed)
    }

    /// Ends every session of `peer`.
    pub(crate) fn trip(&self, peer: &PeerId) {
        self.lock().remove(peer);
    }

    /// Ends every session.
    pub(crate) fn trip_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Vec<oneshot::Sender<()>>>> {
        // Each update is one insert or remove: a panic elsewhere cannot leave it half-done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Empties a write buffer for the next batch; one that grew past [`KEEP`] (a burst, a large
/// response) is shrunk, so an idle session holds little memory.
pub(crate) fn reuse(buffer: &mut Vec<u8>) {
    buffer.clear();
    if buffer.capacity() > KEEP {
        buffer.shrink_to(KEEP);
    }
}
