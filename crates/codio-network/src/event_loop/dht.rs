//! DHT queries the handles asked for, and what discovery reports.

use std::collections::{HashMap, HashSet};

use codio_discovery::{Event as DiscoveryEvent, QueryId};
use libp2p::{
    Multiaddr, PeerId,
    swarm::dial_opts::{DialOpts, PeerCondition},
};
use tokio::sync::oneshot;

use super::{EventLoop, dials::DialReply};
use crate::{DhtError, DiscoverySource, Lookup, NetworkEvent, without_p2p};

/// A DHT query a caller waits for.
pub(super) enum PendingQuery {
    FindPeer {
        peer_id: PeerId,
        reply: oneshot::Sender<Result<Vec<Multiaddr>, DhtError>>,
    },
    ClosestPeers(oneshot::Sender<Result<Lookup, DhtError>>),
    Provide(oneshot::Sender<Result<(), DhtError>>),
    FindProviders(oneshot::Sender<Result<HashSet<PeerId>, DhtError>>),
}

/// The queries callers wait for.
pub(super) type Queries = HashMap<QueryId, PendingQuery>;

impl EventLoop {
    /// Whether a lookup has anybody to ask.
    fn knows_dht_peers(&mut self) -> bool {
        self.swarm.behaviour_mut().discovery.routing_table_size() > 0
    }

    pub(super) fn find_peer(
        &mut self,
        peer_id: PeerId,
        reply: oneshot::Sender<Result<Vec<Multiaddr>, DhtError>>,
    ) {
        self.swarm.behaviour_mut().policy.allow_dials(&peer_id);
        if let Some(info) = self.shared.peer(&peer_id) {
            let _ = reply.send(Ok(info.addresses));
        } else if !self.knows_dht_peers() {
            let _ = reply.send(Err(DhtError::NoKnownPeers));
        } else {
            let id = self.swarm.behaviour_mut().discovery.find_peer(peer_id);
            self.queries
                .insert(id, PendingQuery::FindPeer { peer_id, reply });
        }
    }

    pub(super) fn closest_peers(
        &mut self,
        key: Vec<u8>,
        reply: oneshot::Sender<Result<Lookup, DhtError>>,
    ) {
        if !self.knows_dht_peers() {
            let _ = reply.send(Err(DhtError::NoKnownPeers));
            return;
        }
        let id = self.swarm.behaviour_mut().discovery.closest_peers(key);
        self.queries.insert(id, PendingQuery::ClosestPeers(reply));
    }

    pub(super) fn provide(&mut self, key: Vec<u8>, reply: oneshot::Sender<Result<(), DhtError>>) {
        match self.swarm.behaviour_mut().discovery.start_providing(key) {
            Ok(id) => {
                self.queries.insert(id, PendingQuery::Provide(reply));
            }
            Err(error) => {
                let _ = reply.send(Err(DhtError::Store(error.to_string())));
            }
        }
    }

    pub(super) fn find_providers(
        &mut self,
        key: Vec<u8>,
        reply: oneshot::Sender<Result<HashSet<PeerId>, DhtError>>,
    ) {
        let id = self.swarm.behaviour_mut().discovery.providers(key);
        self.queries.insert(id, PendingQuery::FindProviders(reply));
    }

    pub(super) fn on_discovery_event(&mut self, event: DiscoveryEvent) {
        match event {
            DiscoveryEvent::Discovered {
                peer_id, addresses, ..
            } => {
                tracing::info!(%peer_id, ?addresses, "discovered via mDNS");
                self.emit(NetworkEvent::PeerDiscovered {
                    peer_id,
                    addresses,
                    source: DiscoverySource::Mdns,
                });
            }
            DiscoveryEvent::RoutingUpdated {
                peer_id,
                addresses,
                is_new_peer: true,
            } => {
                tracing::debug!(%peer_id, "new peer in the DHT routing table");
                self.emit(NetworkEvent::PeerDiscovered {
                    peer_id,
                    addresses,
                    source: DiscoverySource::Dht,
                });
            }
            DiscoveryEvent::ClosestPeers {
                query_id,
                result,
                stats,
            } => self.on_closest_peers(query_id, result, &stats),
            DiscoveryEvent::Providers { query_id, result } => {
                if let Some(PendingQuery::FindProviders(reply)) = self.queries.remove(&query_id) {
                    let _ = reply.send(result.map_err(|_| self.query_timeout_error()));
                }
            }
            DiscoveryEvent::Provided { query_id, result } => {
                if let Some(PendingQuery::Provide(reply)) = self.queries.remove(&query_id) {
                    let _ = reply.send(result.map_err(|_| self.query_timeout_error()));
                }
            }
            other => tracing::trace!(?other, "discovery event"),
        }
    }

    fn on_closest_peers(
        &mut self,
        query_id: QueryId,
        result: Result<Vec<codio_discovery::PeerInfo>, codio_discovery::QueryError>,
        stats: &codio_discovery::QueryStats,
    ) {
        match self.queries.remove(&query_id) {
            Some(PendingQuery::FindPeer { peer_id, reply }) => {
                self.on_find_peer_result(peer_id, result, reply);
            }
            Some(PendingQuery::ClosestPeers(reply)) => {
                let lookup = result
                    .map(|peers| Lookup {
                        peers: peers.into_iter().map(|p| p.peer_id).collect(),
                        requests: stats.num_requests(),
                        successes: stats.num_successes(),
                        duration: stats.duration().unwrap_or_default(),
                    })
                    .map_err(|_| self.query_timeout_error());
                let _ = reply.send(lookup);
            }
            Some(other) => {
                self.queries.insert(query_id, other);
            }
            None => {}
        }
    }

    fn query_timeout_error(&self) -> DhtError {
        DhtError::Timeout {
            after: self.timeouts.query,
        }
    }

    /// The DHT answered a `find_peer` lookup: dial the peer at the addresses found.
    fn on_find_peer_result(
        &mut self,
        peer_id: PeerId,
        result: Result<Vec<codio_discovery::PeerInfo>, codio_discovery::QueryError>,
        reply: oneshot::Sender<Result<Vec<Multiaddr>, DhtError>>,
    ) {
        let found = match &result {
            Ok(peers) => peers
                .iter()
                .filter(|p| p.peer_id == peer_id)
                .flat_map(|p| p.addrs.iter().cloned())
                .collect(),
            Err(_) => Vec::new(),
        };
        let known = self.swarm.behaviour_mut().discovery.addresses_of(&peer_id);
        let mut addresses: Vec<Multiaddr> = Vec::new();
        for address in found.into_iter().chain(known).map(without_p2p) {
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        if self.swarm.is_connected(&peer_id) {
            let _ = reply.send(Ok(addresses));
            return;
        }
        let Some(display) = addresses.first().cloned() else {
            let error = match result {
                Err(_) => self.query_timeout_error(),
                Ok(_) => DhtError::NotFound(peer_id),
            };
            let _ = reply.send(Err(error));
            return;
        };
        tracing::debug!(%peer_id, ?addresses, "found in the DHT; dialing");
        let opts = DialOpts::peer_id(peer_id)
            .addresses(addresses.clone())
            .condition(PeerCondition::Always)
            .build();
        let reply = DialReply::FindPeer { addresses, reply };
        self.dial_with(opts, display, Some(peer_id), reply);
    }
}
