//! Who may hold a connection: an allow list (with the reserved peers), a deny list, and a
//! [`ConnectionGate`] the application supplies.
//!
//! The rules are checked by the policy [`Behaviour`](crate::Behaviour) before any protocol
//! runs: a dial to a refused peer is never started, an inbound connection from a refused
//! address is dropped before its handshake, and a refused peer's connection is closed the
//! moment the transport handshake names it (no identify, no ping, no stream). [`Access`] is
//! a cheap handle to change the rules while the node runs; connections that a change refuses
//! are closed at once.
//!
//! ```
//! use codio_policy::{AccessConfig, AccessMode, Behaviour, PolicyConfig};
//! use libp2p::PeerId;
//!
//! let friend = PeerId::random();
//! let policy = Behaviour::new(PolicyConfig::default().with_access(
//!     AccessConfig::default().with_mode(AccessMode::AllowList).with_allowed([friend]),
//! ));
//! let access = policy.access();
//! assert!(access.admits(&friend).is_ok());
//! assert!(access.admits(&PeerId::random()).is_err());
//! access.deny(friend).unwrap();
//! assert!(access.admits(&friend).is_err());
//! ```

use std::{
    collections::HashSet,
    fmt,
    sync::{Arc, Mutex, PoisonError},
    task::Waker,
};

use libp2p::{Multiaddr, PeerId, core::Endpoint};

/// Most peers on each of the allow, deny and reserved lists.
pub const MAX_LIST_LEN: usize = 65_536;

/// Which peers may connect, besides the deny list that always applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum AccessMode {
    /// Every peer not on the deny list (the default).
    #[default]
    Open,
    /// Only allow-listed and reserved peers (Substrate's *reserved-only* when the allow list
    /// is empty).
    AllowList,
}

/// What a [`ConnectionGate`] says of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it go on.
    Accept,
    /// Refuse it (counted with reason `gate`).
    Reject,
}

/// The application's say over connections (iroh's endpoint hooks are the model). Both
/// methods run on the swarm's task, synchronously: keep them short and never block.
pub trait ConnectionGate: Send + Sync + 'static {
    /// Before any handshake: `remote` is the address an inbound connection comes from, or
    /// the address a dial goes to (`None` when the swarm picks it later).
    fn before_handshake(&self, endpoint: Endpoint, remote: Option<&Multiaddr>) -> Verdict {
        let _ = (endpoint, remote);
        Verdict::Accept
    }

    /// After the transport handshake authenticated `peer_id`, before any protocol runs.
    fn after_handshake(&self, endpoint: Endpoint, peer_id: &PeerId, remote: &Multiaddr) -> Verdict {
        let _ = (endpoint, peer_id, remote);
        Verdict::Accept
    }
}

/// Why the access rules refused a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The node admits only allow-listed and reserved peers, and this is neither.
    #[error("peer is not on the allow list")]
    NotAllowed,
    /// The peer is on the deny list.
    #[error("peer is on the deny list")]
    DenyListed,
    /// The application's [`ConnectionGate`] refused it.
    #[error("refused by the application's connection gate")]
    Gate,
}

/// A list would grow beyond [`MAX_LIST_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {list} list already holds {MAX_LIST_LEN} peers")]
#[non_exhaustive]
pub struct ListFull {
    /// `allow`, `deny` or `reserved`.
    pub list: &'static str,
}

/// The access rules a node starts with.
///
/// | setting | default |
/// |---|---|
/// | [`mode`](Self::with_mode) | [`AccessMode::Open`] |
/// | [`allowed`](Self::with_allowed) | empty |
/// | [`denied`](Self::with_denied) | empty |
/// | [`reserved`](Self::with_reserved) | empty (a composing node adds its bootstrap and reserved peers) |
/// | [`gate`](Self::with_gate) | none |
#[derive(Clone, Default)]
pub struct AccessConfig {
    rules: Rules,
    gate: Option<Arc<dyn ConnectionGate>>,
}

impl fmt::Debug for AccessConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessConfig")
            .field("rules", &self.rules)
            .field("gate", &self.gate.is_some())
            .finish()
    }
}

impl AccessConfig {
    /// Sets the mode.
    pub fn with_mode(mut self, mode: AccessMode) -> Self {
        self.rules.mode = mode;
        self
    }

    /// Adds peers to the allow list.
    pub fn with_allowed(mut self, peers: impl IntoIterator<Item = PeerId>) -> Self {
        self.rules.allowed.extend(peers);
        self
    }

    /// Adds peers to the deny list.
    pub fn with_denied(mut self, peers: impl IntoIterator<Item = PeerId>) -> Self {
        self.rules.denied.extend(peers);
        self
    }

    /// Adds reserved peers: admitted in [`AccessMode::AllowList`] as well.
    pub fn with_reserved(mut self, peers: impl IntoIterator<Item = PeerId>) -> Self {
        self.rules.reserved.extend(peers);
        self
    }

    /// Sets the application's connection gate.
    pub fn with_gate(mut self, gate: Arc<dyn ConnectionGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The mode.
    pub fn mode(&self) -> AccessMode {
        self.rules.mode
    }

    /// Checks the lists' sizes.
    ///
    /// # Errors
    ///
    /// When a list is longer than [`MAX_LIST_LEN`].
    pub fn validate(&self) -> Result<(), crate::InvalidConfig> {
        for (list, len) in self.rules.lens() {
            if len > MAX_LIST_LEN {
                let reason = format!("{len} peers, at most {MAX_LIST_LEN}");
                return Err(crate::invalid(list, reason));
            }
        }
        Ok(())
    }
}

/// The lists and the mode: pure state.
#[derive(Debug, Clone, Default)]
struct Rules {
    mode: AccessMode,
    allowed: HashSet<PeerId>,
    denied: HashSet<PeerId>,
    reserved: HashSet<PeerId>,
}

impl Rules {
    fn admits(&self, peer_id: &PeerId) -> Result<(), Refusal> {
        if self.denied.contains(peer_id) {
            return Err(Refusal::DenyListed);
        }
        let listed = self.allowed.contains(peer_id) || self.reserved.contains(peer_id);
        match self.mode {
            AccessMode::AllowList if !listed => Err(Refusal::NotAllowed),
            _ => Ok(()),
        }
    }

    fn lens(&self) -> [(&'static str, usize); 3] {
        [
            ("allowed", self.allowed.len()),
            ("denied", self.denied.len()),
            ("reserved", self.reserved.len()),
        ]
    }
}

#[derive(Debug, Default)]
struct Shared {
    rules: Rules,
    /// Bumped by every change that can refuse a connected peer.
    generation: u64,
    /// The behaviour's task, woken to close what a change refuses.
    waker: Option<Waker>,
}

/// A handle to a node's access rules, shared with its policy behaviour; cheap to clone.
/// Changes apply to new connections at once, and connections of peers a change refuses are
/// closed the next time the behaviour runs (it is woken for that).
#[derive(Clone)]
pub struct Access {
    shared: Arc<Mutex<Shared>>,
    gate: Option<Arc<dyn ConnectionGate>>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.lock();
        f.debug_struct("Access")
            .field("mode", &shared.rules.mode)
            .field("lists", &shared.rules.lens())
            .field("gate", &self.gate.is_some())
            .finish()
    }
}

impl Access {
    pub(crate) fn new(config: AccessConfig) -> Self {
        let shared = Shared {
            rules: config.rules,
            ..Shared::default()
        };
        Self {
            shared: Arc::new(Mutex::new(shared)),
            gate: config.gate,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // The state stays consistent under a panic (every change is one insert or remove).
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Ok` when the rules (not the gate) admit `peer_id`.
    ///
    /// # Errors
    ///
    /// Why it is refused.
    pub fn admits(&self, peer_id: &PeerId) -> Result<(), Refusal> {
        self.lock().rules.admits(peer_id)
    }

    /// The mode.
    pub fn mode(&self) -> AccessMode {
        self.lock().rules.mode
    }

    /// Sets the mode; switching to [`AccessMode::AllowList`] closes unlisted peers'
    /// connections.
    pub fn set_mode(&self, mode: AccessMode) {
        self.change(|rules| {
            rules.mode = mode;
            ((), true)
        });
    }

    /// Adds `peer_id` to the allow list (it is not taken off the deny list, which wins).
    ///
    /// # Errors
    ///
    /// When the list is full.
    pub fn allow(&self, peer_id: PeerId) -> Result<(), ListFull> {
        self.change(|rules| {
            (
                insert(&mut rules.allowed, peer_id, "allow").map(drop),
                false,
            )
        })
    }

    /// Takes `peer_id` off the allow list (closing its connections in allow-list mode unless
    /// it is reserved). Returns whether it was listed.
    pub fn disallow(&self, peer_id: &PeerId) -> bool {
        self.change(|rules| {
            let removed = rules.allowed.remove(peer_id);
            (removed, removed)
        })
    }

    /// Adds `peer_id` to the deny list and closes its connections.
    ///
    /// # Errors
    ///
    /// When the list is full.
    pub fn deny(&self, peer_id: PeerId) -> Result<(), ListFull> {
        self.change(|rules| {
            let added = insert(&mut rules.denied, peer_id, "deny");
            let new = added == Ok(true);
            (added.map(drop), new)
        })
    }

    /// Takes `peer_id` off the deny list. Returns whether it was listed.
    pub fn undeny(&self, peer_id: &PeerId) -> bool {
        self.change(|rules| (rules.denied.remove(peer_id), false))
    }

    /// Adds a reserved peer (admitted in allow-list mode).
    ///
    /// # Errors
    ///
    /// When the list is full.
    pub fn reserve(&self, peer_id: PeerId) -> Result<(), ListFull> {
        self.change(|rules| {
            (
                insert(&mut rules.reserved, peer_id, "reserved").map(drop),
                false,
            )
        })
    }

    /// Whether `peer_id` is reserved.
    pub fn is_reserved(&self, peer_id: &PeerId) -> bool {
        self.lock().rules.reserved.contains(peer_id)
    }

    /// The allow-listed peers.
    pub fn allowed(&self) -> Vec<PeerId> {
        self.lock().rules.allowed.iter().copied().collect()
    }

    /// The deny-listed peers.
    pub fn denied(&self) -> Vec<PeerId> {
        self.lock().rules.denied.iter().copied().collect()
    }

    /// Before the handshake: the rules when the peer is already known (a dial to a peer id),
    /// then the application's gate.
    pub(crate) fn check_pending(
        &self,
        endpoint: Endpoint,
        peer_id: Option<&PeerId>,
        remote: Option<&Multiaddr>,
    ) -> Result<(), Refusal> {
        if let Some(peer_id) = peer_id {
            self.admits(peer_id)?;
        }
        match &self.gate {
            Some(gate) if gate.before_handshake(endpoint, remote) == Verdict::Reject => {
                Err(Refusal::Gate)
            }
            _ => Ok(()),
        }
    }

    /// The rules, then the gate, once the peer is authenticated.
    pub(crate) fn check_peer(
        &self,
        endpoint: Endpoint,
        peer_id: &PeerId,
        remote: &Multiaddr,
    ) -> Result<(), Refusal> {
        self.admits(peer_id)?;
        match &self.gate {
            Some(gate) if gate.after_handshake(endpoint, peer_id, remote) == Verdict::Reject => {
                Err(Refusal::Gate)
            }
            _ => Ok(()),
        }
    }

    /// The change generation, registering `waker` to be woken by the next change.
    pub(crate) fn generation(&self, waker: &Waker) -> u64 {
        let mut shared = self.lock();
        if !shared.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            shared.waker = Some(waker.clone());
        }
        shared.generation
    }

    /// Applies `change`, which returns its result and whether it may refuse a connected
    /// peer; if so, bumps the generation and wakes the behaviour.
    fn change<T>(&self, change: impl FnOnce(&mut Rules) -> (T, bool)) -> T {
        let mut shared = self.lock();
        let (result, may_refuse) = change(&mut shared.rules);
        if may_refuse {
            shared.generation += 1;
            if let Some(waker) = shared.waker.take() {
                waker.wake();
            }
        }
        result
    }
}

/// Inserts into a bounded list; `Ok(true)` when the peer is new.
fn insert(
    list: &mut HashSet<PeerId>,
    peer_id: PeerId,
    name: &'static str,
) -> Result<bool, ListFull> {
    if list.len() >= MAX_LIST_LEN && !list.contains(&peer_id) {
        return Err(ListFull { list: name });
    }
    Ok(list.insert(peer_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(mode: AccessMode) -> Access {
        Access::new(AccessConfig::default().with_mode(mode))
    }

    #[test]
    fn open_admits_everyone_but_the_deny_list() {
        let a = access(AccessMode::Open);
        let (good, bad) = (PeerId::random(), PeerId::random());
        a.deny(bad).unwrap();
        assert_eq!(a.admits(&good), Ok(()));
        assert_eq!(a.admits(&bad), Err(Refusal::DenyListed));
        assert!(a.undeny(&bad));
        assert_eq!(a.admits(&bad), Ok(()));
    }

    #[test]
    fn allow_list_admits_listed_and_reserved_and_the_deny_list_wins() {
        let a = access(AccessMode::AllowList);
        let (listed, reserved, stranger) = (PeerId::random(), PeerId::random(), PeerId::random());
        a.allow(listed).unwrap();
        a.reserve(reserved).unwrap();
        assert_eq!(a.admits(&listed), Ok(()));
        assert_eq!(a.admits(&reserved), Ok(()));
        assert_eq!(a.admits(&stranger), Err(Refusal::NotAllowed));
        a.deny(reserved).unwrap();
        assert_eq!(a.admits(&reserved), Err(Refusal::DenyListed));
        assert!(a.disallow(&listed));
        assert_eq!(a.admits(&listed), Err(Refusal::NotAllowed));
        a.set_mode(AccessMode::Open);
        assert_eq!(a.admits(&stranger), Ok(()));
    }

    #[test]
    fn changes_that_can_refuse_bump_the_generation_and_wake() {
        let a = access(AccessMode::Open);
        let waker = Waker::noop();
        let start = a.generation(waker);
        a.allow(PeerId::random()).unwrap();
        a.undeny(&PeerId::random());
        assert_eq!(a.generation(waker), start, "widening changes close nothing");
        a.deny(PeerId::random()).unwrap();
        assert_eq!(a.generation(waker), start + 1);
        a.set_mode(AccessMode::AllowList);
        assert_eq!(a.generation(waker), start + 2);
    }

    #[test]
    fn lists_are_bounded() {
        let a = access(AccessMode::Open);
        for _ in 0..MAX_LIST_LEN {
            a.deny(PeerId::random()).unwrap();
        }
        assert_eq!(a.deny(PeerId::random()), Err(ListFull { list: "deny" }));
        let config =
            AccessConfig::default().with_allowed((0..=MAX_LIST_LEN).map(|_| PeerId::random()));
        assert_eq!(config.validate().unwrap_err().field, "allowed");
    }

    struct NoLoopback;

    impl ConnectionGate for NoLoopback {
        fn after_handshake(&self, _: Endpoint, _: &PeerId, remote: &Multiaddr) -> Verdict {
            if remote.to_string().starts_with("/ip4/127.") {
                Verdict::Reject
            } else {
                Verdict::Accept
            }
        }
    }

    #[test]
    fn the_gate_decides_after_the_rules() {
        let a = Access::new(AccessConfig::default().with_gate(Arc::new(NoLoopback)));
        let peer = PeerId::random();
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let remote: Multiaddr = "/ip4/192.0.2.1/tcp/1".parse().unwrap();
        assert_eq!(
            a.check_pending(Endpoint::Listener, None, Some(&local)),
            Ok(())
        );
        assert_eq!(
            a.check_peer(Endpoint::Listener, &peer, &local),
            Err(Refusal::Gate)
        );
        assert_eq!(a.check_peer(Endpoint::Listener, &peer, &remote), Ok(()));
        a.deny(peer).unwrap();
        assert_eq!(
            a.check_peer(Endpoint::Listener, &peer, &remote),
            Err(Refusal::DenyListed)
        );
    }
}
