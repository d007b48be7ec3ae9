//! When each connected peer last exchanged a request, a response or bulk data with us.
//!
//! Sessions run in their own tasks; they record activity here (at most once a second per
//! session) and the node reads it for its peer table. Entries go when the peer's last
//! connection closes, so the table holds connected peers only.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use libp2p::PeerId;

/// When a connected peer last exchanged a request, a response or bulk data with us, if it is
/// connected (see [`Behaviour::activity_source`](crate::Behaviour::activity_source)).
pub type ActivitySource = std::sync::Arc<dyn Fn(&PeerId) -> Option<Instant> + Send + Sync>;

/// A session records activity at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(1);

/// Last activity per connected peer.
#[derive(Debug, Default)]
pub(crate) struct Activity(Mutex<HashMap<PeerId, Instant>>);

impl Activity {
    pub(crate) fn last(&self, peer: &PeerId) -> Option<Instant> {
        self.lock().get(peer).copied()
    }

    /// A connection to `peer` was established: its activity is tracked from now on.
    pub(crate) fn connected(&self, peer: PeerId, now: Instant) {
        self.lock().entry(peer).or_insert(now);
    }

    /// The last connection to `peer` closed.
    pub(crate) fn forget(&self, peer: &PeerId) {
        self.lock().remove(peer);
    }

    /// Only connected peers are updated: a session racing its peer's disconnect adds nothing.
    pub(crate) fn record(&self, peer: PeerId, now: Instant) {
        if let Some(last) = self.lock().get_mut(&peer) {
            *last = now;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Instant>> {
        // Each update is one insert or remove: a panic elsewhere cannot leave it half-done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Records one session's activity, at most every [`TOUCH_EVERY`].
#[derive(Debug)]
pub(crate) struct Toucher {
    activity: std::sync::Arc<Activity>,
    peer: PeerId,
    last: Option<Instant>,
}

impl Toucher {
    pub(crate) fn new(activity: std::sync::Arc<Activity>, peer: PeerId) -> Self {
        Self {
            activity,
            peer,
            last: None,
        }
    }

    pub(crate) fn touch(&mut self) {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|last| now.duration_since(last) >= TOUCH_EVERY)
        {
            self.last = Some(now);
            self.activity.record(self.peer, now);
        }
    }

    /// `progress` that also touches: a transfer's progress callback marks its peer busy.
    pub(crate) fn on_progress<'a>(
        &'a mut self,
        mut progress: impl FnMut(u64) + 'a,
    ) -> impl FnMut(u64) + 'a {
        move |bytes| {
            self.touch();
            progress(bytes);
        }
    }
}
