//! The peer book: peers this node was connected to and their addresses, kept in
//! `<data_dir>/peers.json` so that a restarted node dials them again without mDNS or a
//! bootstrap peer.
//!
//! Writes are atomic (a temporary file in the same directory, synced, then renamed over the
//! old one), so a crash leaves either the old or the new book. A missing book is normal on
//! the first start; a corrupt one is moved aside (`peers.json.corrupt`) with a warning and
//! the node starts with an empty book.

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use codio_network::{Direction, Multiaddr, NetworkEvent, PeerId, policy::Event as PolicyEvent};
use serde::{Deserialize, Serialize};

/// File name inside the data directory.
pub(crate) const FILE: &str = "peers.json";
/// Most peers remembered (the least valuable are forgotten first: fewest successful dials,
/// then least recently seen).
const CAPACITY: usize = 256;
/// Most addresses remembered per peer.
const ADDRESSES_PER_PEER: usize = 8;
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    version: u32,
    peers: Vec<StoredPeer>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredPeer {
    peer_id: String,
    addresses: Vec<String>,
    /// Seconds since the Unix epoch.
    last_seen: u64,
    /// Successful dials of this peer, over every run.
    #[serde(default)]
    connections: u32,
}

#[derive(Debug, Clone)]
struct Entry {
    addresses: Vec<Multiaddr>,
    last_seen: u64,
    connections: u32,
}

impl Entry {
    /// What keeping the entry is worth: peers dialed successfully many times first, then
    /// the most recently seen.
    fn value(&self) -> (u32, u64) {
        (self.connections, self.last_seen)
    }
}

/// The in-memory book, saved on [`PeerBook::save`].
#[derive(Debug)]
pub(crate) struct PeerBook {
    path: PathBuf,
    peers: HashMap<PeerId, Entry>,
    dirty: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PeerBook {
    /// Loads the book of `dir`; never fails (see the module docs).
    pub(crate) fn load(dir: &Path) -> Self {
        let path = dir.join(FILE);
        let mut book = Self {
            path,
            peers: HashMap::new(),
            dirty: false,
        };
        let text = match fs::read_to_string(&book.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return book,
            Err(e) => {
                tracing::warn!(path = %book.path.display(), error = %e, "cannot read the peer book; starting without it");
                return book;
            }
        };
        match serde_json::from_str::<Stored>(&text) {
            Ok(stored) if stored.version == VERSION => {
                for peer in stored.peers {
                    let Ok(peer_id) = peer.peer_id.parse::<PeerId>() else {
                        tracing::warn!(peer = %peer.peer_id, "peer book: skipping a bad peer id");
                        continue;
                    };
                    let addresses: Vec<Multiaddr> = peer
                        .addresses
                        .iter()
                        .filter_map(|a| a.parse().ok())
                        .take(ADDRESSES_PER_PEER)
                        .collect();
                    if !addresses.is_empty() {
                        book.peers.insert(
                            peer_id,
                            Entry {
                                addresses,
                                last_seen: peer.last_seen,
                                connections: peer.connections,
                            },
                        );
                    }
                }
            }
            Ok(stored) => {
                tracing::warn!(
                    version = stored.version,
                    "peer book of an unknown version; ignoring it"
                );
            }
            Err(error) => {
                let aside = book.path.with_extension("json.corrupt");
                let moved = fs::rename(&book.path, &aside).is_ok();
                tracing::warn!(
                    path = %book.path.display(),
                    %error,
                    moved_to = %aside.display(),
                    moved,
                    "the peer book is corrupt; starting with an empty one"
                );
            }
        }
        book
    }

    /// Peers, most recently seen first, each with its addresses ending in `/p2p/<id>`.
    pub(crate) fn dial_addresses(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut peers: Vec<_> = self.peers.iter().collect();
        peers.sort_by_key(|(_, entry)| std::cmp::Reverse(entry.last_seen));
        peers
            .into_iter()
            .map(|(peer, entry)| {
                let addresses = entry
                    .addresses
                    .iter()
                    .map(|a| codio_base::addr::with_p2p(a.clone(), *peer))
                    .collect();
                (*peer, addresses)
            })
            .collect()
    }

    /// Number of peers in the book.
    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }

    /// Marks a peer of the book as seen now.
    pub(crate) fn touch(&mut self, peer: &PeerId) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.last_seen = now();
            self.dirty = true;
        }
    }

    /// Forgets `peer` (the reconnection policy gave up on it).
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        if self.peers.remove(peer).is_some() {
            self.dirty = true;
        }
    }

    /// Remembers that this node dialed `peer` successfully at `addresses` (without `/p2p/`),
    /// now. Only addresses this node itself reached belong here: what a peer says about
    /// itself (identify) or the address an inbound connection came from prove nothing.
    pub(crate) fn record(&mut self, peer: PeerId, addresses: impl IntoIterator<Item = Multiaddr>) {
        let entry = self.peers.entry(peer).or_insert_with(|| Entry {
            addresses: Vec::new(),
            last_seen: 0,
            connections: 0,
        });
        entry.connections = entry.connections.saturating_add(1);
        for address in addresses {
            let address = codio_base::addr::without_p2p(address);
            if let Some(i) = entry.addresses.iter().position(|a| *a == address) {
                entry.addresses.remove(i);
            }
            // Newest first.
            entry.addresses.insert(0, address);
        }
        entry.addresses.truncate(ADDRESSES_PER_PEER);
        entry.last_seen = now();
        if entry.addresses.is_empty() {
            self.peers.remove(&peer);
        }
        while self.peers.len() > CAPACITY {
            let least = self
                .peers
                .iter()
                .min_by_key(|(_, e)| e.value())
                .map(|(p, _)| *p);
            match least {
                Some(least) => self.peers.remove(&least),
                None => break,
            };
        }
        self.dirty = true;
    }

    /// Learns from a network event: a direct connection this node dialed is recorded with its
    /// address; a peer the reconnection policy gave up on is forgotten. Nothing else is taken
    /// in: not inbound connections, relayed ones, nor addresses peers report in identify.
    pub(crate) fn learn(&mut self, event: &NetworkEvent) {
        match event {
            NetworkEvent::PeerConnected {
                peer_id,
                address,
                direction: Direction::Outbound,
                relayed: false,
            } => self.record(*peer_id, [address.clone()]),
            NetworkEvent::Policy(PolicyEvent::GaveUp { peer_id, .. }) => self.forget(peer_id),
            _ => {}
        }
    }

    /// Writes the book if it changed since the last save.
    pub(crate) fn save(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let stored = Stored {
            version: VERSION,
            peers: self
                .peers
                .iter()
                .map(|(peer, entry)| StoredPeer {
                    peer_id: peer.to_string(),
                    addresses: entry.addresses.iter().map(ToString::to_string).collect(),
                    last_seen: entry.last_seen,
                    connections: entry.connections,
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&stored).map_err(io::Error::other)?;
        write_atomically(&self.path, &json)?;
        self.dirty = false;
        Ok(())
    }
}

/// Writes `bytes` to `path` through a synced temporary file (created exclusively, no link
/// followed) renamed over it.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    crate::files::write_replace(path, bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("codio-peerbook-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn saved_peers_come_back_newest_address_first() {
        let dir = temp_dir("roundtrip");
        let peer = PeerId::random();
        let mut book = PeerBook::load(&dir);
        assert_eq!(book.len(), 0);
        book.record(peer, ["/ip4/10.0.0.1/tcp/1".parse().unwrap()]);
        book.record(
            peer,
            [format!("/ip4/10.0.0.2/tcp/2/p2p/{peer}").parse().unwrap()],
        );
        book.save().unwrap();
        assert_eq!(crate::files::remove_temps(&dir), 0, "no temporary left");
        let again = PeerBook::load(&dir);
        let dial = again.dial_addresses();
        assert_eq!(dial.len(), 1);
        assert_eq!(dial[0].0, peer);
        assert_eq!(
            dial[0].1,
            vec![
                format!("/ip4/10.0.0.2/tcp/2/p2p/{peer}")
                    .parse::<Multiaddr>()
                    .unwrap(),
                format!("/ip4/10.0.0.1/tcp/1/p2p/{peer}").parse().unwrap(),
            ]
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_book_is_moved_aside_not_fatal() {
        let dir = temp_dir("corrupt");
        fs::write(dir.join(FILE), b"{ not json").unwrap();
        let mut book = PeerBook::load(&dir);
        assert_eq!(book.len(), 0);
        assert!(dir.join("peers.json.corrupt").exists());
        book.record(PeerId::random(), ["/ip4/10.0.0.1/tcp/1".parse().unwrap()]);
        book.save().unwrap();
        assert_eq!(PeerBook::load(&dir).len(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_book_is_bounded_and_fresh_identities_do_not_flush_proven_peers() {
        let dir = temp_dir("bounded");
        let mut book = PeerBook::load(&dir);
        let proven: Vec<PeerId> = (0..100).map(|_| PeerId::random()).collect();
        for peer in &proven {
            for _ in 0..3 {
                book.record(*peer, ["/ip4/10.0.0.1/tcp/1".parse().unwrap()]);
            }
        }
        for _ in 0..CAPACITY * 4 {
            book.record(PeerId::random(), ["/ip4/10.0.0.2/tcp/1".parse().unwrap()]);
        }
        assert_eq!(book.len(), CAPACITY);
        for peer in &proven {
            assert!(book.peers.contains_key(peer), "a proven peer was evicted");
        }
        book.forget(&proven[0]);
        assert_eq!(book.len(), CAPACITY - 1);
        fs::remove_dir_all(dir).unwrap();
    }

    /// A peer this node reached over QUIC and over TCP on IPv6 is dialed again at both after
    /// a restart.
    #[test]
    fn quic_and_ipv6_addresses_are_kept_across_a_restart() {
        let dir = temp_dir("transports");
        let peer = PeerId::random();
        let mut book = PeerBook::load(&dir);
        for address in [
            "/ip6/2001:db8::1/tcp/4001",
            "/ip4/10.0.0.1/udp/4001/quic-v1",
        ] {
            book.learn(&NetworkEvent::PeerConnected {
                peer_id: peer,
                address: address.parse().unwrap(),
                direction: Direction::Outbound,
                relayed: false,
            });
        }
        book.save().unwrap();
        let dial = PeerBook::load(&dir).dial_addresses();
        assert_eq!(
            dial,
            vec![(
                peer,
                vec![
                    format!("/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{peer}")
                        .parse::<Multiaddr>()
                        .unwrap(),
                    format!("/ip6/2001:db8::1/tcp/4001/p2p/{peer}")
                        .parse()
                        .unwrap(),
                ]
            )]
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_this_nodes_own_direct_dials_are_learned_and_given_up_peers_forgotten() {
        let dir = temp_dir("learn");
        let mut book = PeerBook::load(&dir);
        let address: Multiaddr = "/ip4/10.0.0.1/tcp/1".parse().unwrap();
        let connected = |peer_id, direction, relayed| NetworkEvent::PeerConnected {
            peer_id,
            address: address.clone(),
            direction,
            relayed,
        };
        let (inbound, relayed, identified, dialed) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        book.learn(&connected(inbound, Direction::Inbound, false));
        book.learn(&connected(relayed, Direction::Outbound, true));
        book.learn(&NetworkEvent::PeerIdentified {
            peer_id: identified,
            agent_version: "codio".into(),
            listen_addrs: vec![address.clone()],
        });
        assert_eq!(
            book.len(),
            0,
            "nothing a peer says or an inbound dial is kept"
        );
        book.learn(&connected(dialed, Direction::Outbound, false));
        assert_eq!(book.dial_addresses()[0].0, dialed);
        book.learn(&NetworkEvent::Policy(PolicyEvent::GaveUp {
            peer_id: dialed,
            attempts: 10,
        }));
        assert_eq!(book.len(), 0, "given up, forgotten");
        fs::remove_dir_all(dir).unwrap();
    }
}
