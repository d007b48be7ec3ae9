//! The discovery [`NetworkBehaviour`]: mDNS + Kademlia + bootstrap peer upkeep.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use libp2p::{
    Multiaddr, PeerId, StreamProtocol,
    core::Endpoint,
    identify, kad,
    swarm::{
        ConnectionHandlerSelect, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, ToSwarm, behaviour::toggle::Toggle,
    },
};

use tokio::sync::mpsc;

use crate::{
    Dht, DhtError, DiscoveryConfig, DiscoveryError, KadMode, Lookup, Provider, QueryError,
    RttSource,
    dht::{DhtCommand, Pending},
    providers::Reprovider,
    store::Store,
};

/// Most events and dials queued inside the behaviour before the swarm polls them; beyond it the
/// oldest are dropped with a warning (mDNS can report many peers in one burst).
const MAX_QUEUED: usize = 1024;
/// How often the reprovide schedule is looked at (its rate is per second).
const REPROVIDE_TICK: Duration = Duration::from_secs(1);
/// Where a peer was discovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// Multicast DNS on the local network.
    Mdns,
}

/// Events of the discovery behaviour.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A peer was discovered on the local network.
    Discovered {
        /// The peer.
        peer_id: PeerId,
        /// Its addresses.
        addresses: Vec<Multiaddr>,
        /// How it was found.
        source: Source,
    },
    /// A peer's mDNS records expired.
    Expired {
        /// The peer.
        peer_id: PeerId,
    },
    /// The Kademlia routing table gained or updated a peer.
    RoutingUpdated {
        /// The peer.
        peer_id: PeerId,
        /// Its addresses in the routing table.
        addresses: Vec<Multiaddr>,
        /// Whether the peer is new in the table.
        is_new_peer: bool,
    },
    /// A bootstrap (routing table refresh) finished.
    Bootstrapped {
        /// Its outcome.
        result: Result<(), QueryError>,
    },
    /// A closest-peers query finished.
    ClosestPeers {
        /// The query.
        query_id: kad::QueryId,
        /// The closest peers found, with their addresses. On a timeout with partial results
        /// those are returned.
        result: Result<Vec<kad::PeerInfo>, QueryError>,
        /// What the lookup cost.
        stats: kad::QueryStats,
    },
    /// A provider lookup finished.
    Providers {
        /// The query.
        query_id: kad::QueryId,
        /// Every provider found other than this node, nearest first (partial results are
        /// returned on timeout).
        result: Result<Vec<Provider>, QueryError>,
    },
    /// Announcing this node as a provider finished.
    Provided {
        /// The query.
        query_id: kad::QueryId,
        /// Its outcome.
        result: Result<(), QueryError>,
    },
    /// The Kademlia mode changed.
    ModeChanged {
        /// The new mode.
        mode: kad::Mode,
    },
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub(crate) struct Inner {
    mdns: Toggle<crate::mdns::Behaviour>,
    kad: kad::Behaviour<Store>,
}

type Action = ToSwarm<Event, THandlerInEvent<Inner>>;

/// The discovery behaviour. Compose it into a swarm's behaviour; call [`start`](Self::start)
/// once the node listens, and feed it identify results with [`on_identify`](Self::on_identify).
pub struct Behaviour {
    inner: Inner,
    local_peer_id: PeerId,
    kad_protocol: StreamProtocol,
    dial_discovered: bool,
    started: bool,
    bootstrap: HashMap<PeerId, Multiaddr>,
    connections: HashMap<PeerId, usize>,
    queue: VecDeque<Action>,
    /// Providers found so far by running lookups.
    providers: HashMap<kad::QueryId, Vec<Provider>>,
    /// Running announcements: the key, and whether the reprovide schedule started it.
    provides: HashMap<kad::QueryId, (Vec<u8>, bool)>,
    reprovider: Reprovider,
    reprovide_tick: Option<tokio::time::Interval>,
    rtt: Option<RttSource>,
    stream_buffer: usize,
    /// Calls of [`Dht`] handles, and the queries they wait for.
    dht_tx: mpsc::Sender<DhtCommand>,
    dht_rx: mpsc::Receiver<DhtCommand>,
    pending: HashMap<kad::QueryId, Pending>,
    query_timeout: std::time::Duration,
    identify_rate: codio_base::Buckets<PeerId>,
    stats: Arc<crate::Stats>,
    max_addresses: usize,
    private_addresses: bool,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("mdns", &self.inner.mdns.is_enabled())
            .field("kad_mode", &self.inner.kad.mode())
            .field("started", &self.started)
            .field("bootstrap", &self.bootstrap)
            .field("connected", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// Creates the behaviour for `local_peer_id`.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::Mdns`] when mDNS is enabled and its sockets cannot be set up.
    pub fn new(local_peer_id: PeerId, config: DiscoveryConfig) -> Result<Self, DiscoveryError> {
        let stats = Arc::new(crate::Stats::default());
        stats.set_mdns_running(config.mdns);
        let mdns = if config.mdns {
            let mdns = crate::mdns::Behaviour::new(
                local_peer_id,
                config.mdns_config.clone(),
                stats.clone(),
            );
            Some(mdns.map_err(DiscoveryError::Mdns)?)
        } else {
            None
        };
        let mut kad_config = kad::Config::new(config.kad_protocol.clone());
        kad_config
            .set_query_timeout(config.query_timeout)
            .set_periodic_bootstrap_interval(config.bootstrap_interval)
            .set_provider_record_ttl(Some(config.provider_ttl))
            // The reprovide schedule (`crate::providers`) announces instead: bounded in rate,
            // retried soon when nobody took a record.
            .set_provider_publication_interval(None);
        let store = Store::new(local_peer_id, &config.store, stats.clone());
        let mut kad = kad::Behaviour::with_config(local_peer_id, store, kad_config);
        kad.set_mode(match config.kad_mode {
            KadMode::Auto => None,
            KadMode::Server => Some(kad::Mode::Server),
            KadMode::Client => Some(kad::Mode::Client),
        });
        let (dht_tx, dht_rx) = mpsc::channel(crate::dht::COMMAND_QUEUE);
        Ok(Self {
            dht_tx,
            dht_rx,
            pending: HashMap::new(),
            query_timeout: config.query_timeout,
            identify_rate: codio_base::Buckets::new(codio_base::Rate::every(
                config.identify_interval,
                config.identify_burst.max(1),
            )),
            stats,
            max_addresses: config.max_addresses_per_peer,
            private_addresses: config.private_addresses,
            local_peer_id,
            inner: Inner {
                mdns: mdns.into(),
                kad,
            },
            kad_protocol: config.kad_protocol,
            dial_discovered: config.dial_discovered,
            started: false,
            bootstrap: config.bootstrap_peers.into_iter().collect(),
            connections: HashMap::new(),
            queue: VecDeque::new(),
            providers: HashMap::new(),
            provides: HashMap::new(),
            reprovider: Reprovider::new(config.reprovide, Instant::now()),
            reprovide_tick: None,
            rtt: None,
            stream_buffer: config.provider_stream_buffer,
        })
    }

    /// Starts discovery: adds the bootstrap peers to the routing table, dials the peers mDNS
    /// found so far, and bootstraps the DHT (Kademlia's bootstrap query contacts the bootstrap
    /// peers). Calling it again does nothing. Keeping bootstrap peers connected is the
    /// reconnection policy's job (`codio-policy`), not discovery's.
    pub fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        let bootstrap: Vec<_> = self
            .bootstrap
            .iter()
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        for (peer_id, address) in bootstrap {
            self.inner.kad.add_address(&peer_id, address);
        }
        if self.dial_discovered
            && let Some(mdns) = self.inner.mdns.as_mut()
        {
            mdns.start_dialing();
        }
        if let Err(error) = self.bootstrap() {
            tracing::debug!(%error, "no DHT bootstrap at start");
        }
    }

    /// Runs a DHT bootstrap (routing table refresh) now.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::NoKnownPeers`] when the routing table is empty.
    pub fn bootstrap(&mut self) -> Result<kad::QueryId, DiscoveryError> {
        self.inner
            .kad
            .bootstrap()
            .map_err(|_| DiscoveryError::NoKnownPeers)
    }

    /// Feeds an identify result (or push). A burst of `identify_burst` per peer, then one per
    /// `identify_interval`, is processed; the rest are dropped and counted, and `None` is
    /// returned. Of a processed one,
    /// up to `max_addresses_per_peer` usable listen addresses (non-global ones only from peers
    /// whose connection, `remote` its remote address, comes from a non-global network, unless
    /// `private_addresses`) are returned and, for peers that
    /// speak our Kademlia protocol, *replace* the peer's addresses in the routing table
    /// (libp2p learns no addresses of inbound peers otherwise). Relayed (`/p2p-circuit`)
    /// addresses are kept: for a private peer they are the only way in.
    pub fn on_identify(
        &mut self,
        peer_id: PeerId,
        info: &identify::Info,
        remote: &Multiaddr,
    ) -> Option<Vec<Multiaddr>> {
        if !self.identify_rate.admit(peer_id, Instant::now()) {
            self.stats.record_identify_dropped();
            tracing::debug!(%peer_id, "identify above the per-peer rate dropped");
            return None;
        }
        let addresses = crate::identify::usable_addresses(
            info,
            remote,
            self.max_addresses,
            self.private_addresses,
        );
        self.inner
            .kad
            .store_mut()
            .learn_addresses(peer_id, &addresses);
        let dht = info.protocols.contains(&self.kad_protocol);
        let held = if dht && !addresses.is_empty() {
            self.replace_addresses(peer_id, &addresses)
        } else {
            0
        };
        let offered = info.listen_addrs.len();
        tracing::debug!(%peer_id, offered, kept = addresses.len(), dht, held, "identify");
        self.stats
            .record_identify_update(info.listen_addrs.len(), addresses.len(), held);
        Some(addresses)
    }

    /// Puts `addresses` in the routing table as `peer_id`'s and removes its others; returns
    /// how many the table holds for it now.
    fn replace_addresses(&mut self, peer_id: PeerId, addresses: &[Multiaddr]) -> usize {
        let mut wanted = Vec::with_capacity(addresses.len());
        for address in addresses {
            self.inner.kad.add_address(&peer_id, address.clone());
            wanted.extend(address.clone().with_p2p(peer_id).ok());
        }
        let stale: Vec<Multiaddr> = self
            .table_addresses(peer_id)
            .into_iter()
            .filter(|a| !wanted.contains(a))
            .collect();
        for address in &stale {
            self.inner.kad.remove_address(&peer_id, address);
        }
        self.table_addresses(peer_id).len()
    }

    /// `peer_id`'s addresses in the routing table (Kademlia keeps them with `/p2p/<id>`).
    fn table_addresses(&mut self, peer_id: PeerId) -> Vec<Multiaddr> {
        let Some(bucket) = self.inner.kad.kbucket(peer_id) else {
            return Vec::new();
        };
        bucket
            .iter()
            .find(|entry| *entry.node.key.preimage() == peer_id)
            .map(|entry| entry.node.value.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// What the layer refused or left out (identify updates, addresses, records).
    pub fn stats(&self) -> Arc<crate::Stats> {
        self.stats.clone()
    }

    /// Removes a peer from the routing table (for instance after an explicit disconnect).
    pub fn remove_peer(&mut self, peer_id: &PeerId) {
        self.inner.kad.remove_peer(peer_id);
    }

    /// Adds a known address of a peer to the routing table.
    pub fn add_address(&mut self, peer_id: PeerId, address: Multiaddr) {
        self.inner.kad.add_address(&peer_id, address);
    }

    /// Starts a query for the peers closest to `key`; the outcome arrives as
    /// [`Event::ClosestPeers`].
    pub fn closest_peers(&mut self, key: Vec<u8>) -> kad::QueryId {
        self.inner.kad.get_closest_peers(key)
    }

    /// Starts a lookup of `peer_id` (a closest-peers query for its id).
    pub fn find_peer(&mut self, peer_id: PeerId) -> kad::QueryId {
        self.inner.kad.get_closest_peers(peer_id)
    }

    /// Announces this node as a provider of `key`; the outcome arrives as [`Event::Provided`].
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::Store`] when the local provider store is full.
    /// The key stays provided and is announced again before peers' records expire, until
    /// [`stop_providing`](Self::stop_providing).
    pub fn start_providing(&mut self, key: Vec<u8>) -> Result<kad::QueryId, DiscoveryError> {
        self.announce(key, false)
    }

    fn announce(&mut self, key: Vec<u8>, reprovide: bool) -> Result<kad::QueryId, DiscoveryError> {
        let id = self
            .inner
            .kad
            .start_providing(kad::RecordKey::new(&key))
            .map_err(|e| DiscoveryError::Store(e.to_string()))?;
        self.provides.insert(id, (key, reprovide));
        Ok(id)
    }

    /// Stops announcing this node as a provider of `key` and serving it from the store
    /// (remote records expire after the provider TTL).
    pub fn stop_providing(&mut self, key: &[u8]) {
        self.inner.kad.stop_providing(&kad::RecordKey::new(&key));
        self.reprovider.remove(key);
        self.provides.retain(|_, (provided, _)| provided != key);
    }

    /// Keys this node provides.
    pub fn provided_keys(&self) -> usize {
        self.reprovider.len()
    }

    /// Where provider rankings take RTTs from (none by default: providers are ranked by
    /// connection only).
    pub fn set_rtt_source(&mut self, rtt: RttSource) {
        self.rtt = Some(rtt);
    }

    /// Starts a lookup of the providers of `key`; the outcome arrives as [`Event::Providers`].
    pub fn providers(&mut self, key: Vec<u8>) -> kad::QueryId {
        let id = self.inner.kad.get_providers(kad::RecordKey::new(&key));
        self.providers.insert(id, Vec::new());
        id
    }

    /// `peer_id` as a provider: its addresses (the routing table's and those the running
    /// lookups learned, provider records included) and its proximity.
    fn describe(&mut self, peer_id: PeerId) -> Provider {
        // Kademlia answers this from its routing table and its queries' address books; it
        // changes nothing, and no connection is made under this id.
        let known = self
            .inner
            .kad
            .handle_pending_outbound_connection(
                ConnectionId::new_unchecked(usize::MAX),
                Some(peer_id),
                &[],
                Endpoint::Dialer,
            )
            .unwrap_or_default();
        Provider {
            peer_id,
            addresses: without_p2p_deduped(known),
            connected: self.connections.contains_key(&peer_id),
            rtt: self.rtt.as_ref().and_then(|rtt| rtt(&peer_id)),
        }
    }

    /// Starts the announcements the reprovide schedule says are due.
    fn reprovide_due(&mut self) {
        let due = self.reprovider.due(Instant::now());
        if !due.is_empty() {
            tracing::debug!(keys = due.len(), "reproviding");
        }
        for key in due {
            if let Err(error) = self.announce(key, true) {
                tracing::warn!(%error, "reprovide refused by the store");
                self.reprovider.finished();
            }
        }
    }

    /// An announcement finished: schedule the key's next one.
    fn on_provided(&mut self, query_id: kad::QueryId, reached: bool) {
        let Some((key, reprovide)) = self.provides.remove(&query_id) else {
            return;
        };
        if reprovide {
            self.reprovider.finished();
        }
        self.reprovider.announced(key, reached, Instant::now());
    }

    /// The addresses of `peer_id` in the routing table.
    pub fn addresses_of(&mut self, peer_id: &PeerId) -> Vec<Multiaddr> {
        let mut found = Vec::new();
        for bucket in self.inner.kad.kbuckets() {
            for entry in bucket.iter() {
                if entry.node.key.preimage() == peer_id {
                    found.extend(entry.node.value.iter().cloned());
                }
            }
        }
        found
    }

    /// Number of peers in the routing table.
    pub fn routing_table_size(&mut self) -> usize {
        self.inner.kad.kbuckets().map(|b| b.num_entries()).sum()
    }

    /// Whether `peer_id` is a configured bootstrap peer.
    pub fn is_bootstrap_peer(&self, peer_id: &PeerId) -> bool {
        self.bootstrap.contains_key(peer_id)
    }

    /// The current Kademlia mode.
    pub fn kad_mode(&self) -> kad::Mode {
        self.inner.kad.mode()
    }

    /// A handle for DHT operations as `async` calls (see [`Dht`]).
    pub fn dht(&self) -> Dht {
        Dht::new(self.dht_tx.clone(), self.query_timeout, self.stream_buffer)
    }

    /// Starts the query a [`Dht`] handle asked for.
    fn on_dht_command(&mut self, command: DhtCommand) {
        let lookup = matches!(
            command,
            DhtCommand::ClosestPeers { .. } | DhtCommand::FindAddresses { .. }
        );
        if lookup && self.routing_table_size() == 0 {
            command.fail(DhtError::NoKnownPeers);
            return;
        }
        let (id, pending) = match command {
            DhtCommand::ClosestPeers { key, reply } => {
                (self.closest_peers(key), Pending::ClosestPeers(reply))
            }
            DhtCommand::FindAddresses { peer, reply } => {
                (self.find_peer(peer), Pending::FindAddresses { peer, reply })
            }
            DhtCommand::Provide { key, reply } => match self.start_providing(key) {
                Ok(id) => (id, Pending::Provide(reply)),
                Err(error) => {
                    let _ = reply.send(Err(DhtError::Store(error.to_string())));
                    return;
                }
            },
            DhtCommand::StopProviding { key, reply } => {
                self.stop_providing(&key);
                let _ = reply.send(Ok(()));
                return;
            }
            DhtCommand::FindProviders { key, reply } => {
                (self.providers(key), Pending::FindProviders(reply))
            }
            DhtCommand::StreamProviders { key, found } => {
                (self.providers(key), Pending::StreamProviders(found))
            }
        };
        self.pending.insert(id, pending);
    }

    /// Answers the caller waiting for this query's outcome, if any; otherwise the outcome is
    /// an event.
    fn answer(&mut self, event: Event) -> Option<Event> {
        let query_id = match &event {
            Event::ClosestPeers { query_id, .. }
            | Event::Providers { query_id, .. }
            | Event::Provided { query_id, .. } => *query_id,
            _ => return Some(event),
        };
        let Some(pending) = self.pending.remove(&query_id) else {
            return Some(event);
        };
        let timeout = DhtError::Timeout {
            after: self.query_timeout,
        };
        match (pending, event) {
            (Pending::ClosestPeers(reply), Event::ClosestPeers { result, stats, .. }) => {
                let _ = reply.send(
                    result
                        .map(|peers| lookup(peers, &stats))
                        .map_err(|_| timeout),
                );
            }
            (Pending::FindAddresses { peer, reply }, Event::ClosestPeers { result, .. }) => {
                let addresses = self.found_addresses(peer, result.as_deref().unwrap_or(&[]));
                let _ = reply.send(match (addresses.is_empty(), result) {
                    (false, _) => Ok(addresses),
                    (true, Ok(_)) => Err(DhtError::NotFound(peer)),
                    (true, Err(_)) => Err(timeout),
                });
            }
            (Pending::Provide(reply), Event::Provided { result, .. }) => {
                let _ = reply.send(result.map_err(|error| match error {
                    QueryError::NoPeerReached => DhtError::NoPeerReached,
                    _ => timeout,
                }));
            }
            (Pending::FindProviders(reply), Event::Providers { result, .. }) => {
                let _ = reply.send(result.map_err(|_| timeout));
            }
            // The lookup ended: dropping the sender ends the stream.
            (Pending::StreamProviders(_), Event::Providers { .. }) => {}
            (pending, event) => {
                // A query id answers with the event of its kind; keep waiting otherwise.
                self.pending.insert(query_id, pending);
                return Some(event);
            }
        }
        None
    }

    /// What a lookup of `peer` found, plus the routing table's addresses, without `/p2p/`.
    fn found_addresses(&mut self, peer: PeerId, found: &[kad::PeerInfo]) -> Vec<Multiaddr> {
        let lookup = found
            .iter()
            .filter(|p| p.peer_id == peer)
            .flat_map(|p| p.addrs.iter().cloned());
        let known = self.addresses_of(&peer);
        without_p2p_deduped(lookup.chain(known))
    }

    /// The Kademlia behaviour itself, for what this wrapper does not cover.
    pub fn kad_mut(&mut self) -> &mut kad::Behaviour<Store> {
        &mut self.inner.kad
    }

    fn push(&mut self, action: Action) {
        if self.queue.len() >= MAX_QUEUED {
            tracing::warn!("discovery queue full; dropping the oldest action");
            self.queue.pop_front();
        }
        self.queue.push_back(action);
    }

    fn on_inner_event(&mut self, event: InnerEvent) {
        match event {
            // mDNS dials what it finds itself (bounded; see `crate::mdns`); Kademlia learns
            // a peer's addresses from identify once connected, with identify's caps.
            InnerEvent::Mdns(crate::mdns::Event::Discovered { peer_id, addresses }) => {
                self.push(ToSwarm::GenerateEvent(Event::Discovered {
                    peer_id,
                    addresses,
                    source: Source::Mdns,
                }));
            }
            InnerEvent::Mdns(crate::mdns::Event::Expired { peer_id }) => {
                self.push(ToSwarm::GenerateEvent(Event::Expired { peer_id }));
            }
            InnerEvent::Kad(event) => self.on_kad_event(event),
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        let generated = match event {
            kad::Event::RoutingUpdated {
                peer,
                is_new_peer,
                addresses,
                ..
            } => Some(Event::RoutingUpdated {
                peer_id: peer,
                addresses: addresses.into_vec(),
                is_new_peer,
            }),
            kad::Event::ModeChanged { new_mode } => {
                tracing::info!(mode = %new_mode, "Kademlia mode changed");
                Some(Event::ModeChanged { mode: new_mode })
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
            } => self.on_query_progress(id, result, step.last, stats),
            _ => None,
        };
        if let Some(event) = generated.and_then(|event| self.answer(event)) {
            self.push(ToSwarm::GenerateEvent(event));
        }
    }

    fn on_query_progress(
        &mut self,
        query_id: kad::QueryId,
        result: kad::QueryResult,
        last: bool,
        stats: kad::QueryStats,
    ) -> Option<Event> {
        match result {
            kad::QueryResult::Bootstrap(result) => {
                let done = last || matches!(&result, Ok(ok) if ok.num_remaining == 0);
                done.then(|| Event::Bootstrapped {
                    result: result.map(|_| ()).map_err(|_| QueryError::Timeout),
                })
            }
            kad::QueryResult::GetClosestPeers(result) => Some(Event::ClosestPeers {
                query_id,
                result: match result {
                    Ok(ok) => Ok(ok.peers),
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) if !peers.is_empty() => {
                        Ok(peers)
                    }
                    Err(kad::GetClosestPeersError::Timeout { .. }) => Err(QueryError::Timeout),
                },
                stats,
            }),
            kad::QueryResult::GetProviders(result) => {
                let timed_out = result.is_err();
                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result {
                    self.found_providers(query_id, providers);
                }
                if !last && !timed_out {
                    return None;
                }
                let mut found = self.providers.remove(&query_id).unwrap_or_default();
                crate::rank(&mut found);
                Some(Event::Providers {
                    query_id,
                    result: if timed_out && found.is_empty() {
                        Err(QueryError::Timeout)
                    } else {
                        Ok(found)
                    },
                })
            }
            kad::QueryResult::StartProviding(result) => {
                let reached = stats.num_successes() > 0;
                self.on_provided(query_id, result.is_ok() && reached);
                Some(Event::Provided {
                    query_id,
                    result: match result {
                        Ok(_) if reached => Ok(()),
                        Ok(_) => Err(QueryError::NoPeerReached),
                        Err(_) => Err(QueryError::Timeout),
                    },
                })
            }
            _ => None,
        }
    }
}

impl Behaviour {
    /// A lookup step found `providers`: keep the new ones (described now, while the query
    /// still holds the addresses the answers carried) and hand them to a waiting stream.
    fn found_providers(&mut self, query_id: kad::QueryId, providers: HashSet<PeerId>) {
        let known: HashSet<PeerId> = self
            .providers
            .get(&query_id)
            .map(|found| found.iter().map(|p| p.peer_id).collect())
            .unwrap_or_default();
        let local = self.local_peer_id;
        let fresh: Vec<Provider> = providers
            .into_iter()
            .filter(|peer| !known.contains(peer) && *peer != local)
            .map(|peer| self.describe(peer))
            .collect();
        if let Some(Pending::StreamProviders(found)) = self.pending.get(&query_id) {
            for provider in &fresh {
                if found.try_send(provider.clone()).is_err() {
                    self.stats.record_stream_dropped();
                }
            }
            if found.is_closed() {
                // The reader dropped the stream: stop the lookup.
                if let Some(mut query) = self.inner.kad.query_mut(&query_id) {
                    query.finish();
                }
            }
        }
        self.providers.entry(query_id).or_default().extend(fresh);
    }
}

/// `addresses` without `/p2p/` suffixes or duplicates, in their order.
fn without_p2p_deduped(addresses: impl IntoIterator<Item = Multiaddr>) -> Vec<Multiaddr> {
    let mut deduped: Vec<Multiaddr> = Vec::new();
    for address in addresses {
        let address = codio_base::addr::without_p2p(address);
        if !deduped.contains(&address) {
            deduped.push(address);
        }
    }
    deduped
}

fn lookup(peers: Vec<kad::PeerInfo>, stats: &kad::QueryStats) -> Lookup {
    Lookup {
        peers: peers.into_iter().map(|p| p.peer_id).collect(),
        requests: stats.num_requests(),
        successes: stats.num_successes(),
        duration: stats.duration().unwrap_or_default(),
    }
}

impl NetworkBehaviour for Behaviour {
    // The handler the derive generates for `Inner`, spelled out so that `Inner` stays private.
    type ConnectionHandler = ConnectionHandlerSelect<
        THandler<Toggle<crate::mdns::Behaviour>>,
        THandler<kad::Behaviour<Store>>,
    >;
    type ToSwarm = Event;

    codio_base::delegate_to!(inner);

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionEstablished(established) => {
                *self.connections.entry(established.peer_id).or_default() += 1;
            }
            FromSwarm::ConnectionClosed(closed) if closed.remaining_established == 0 => {
                self.connections.remove(&closed.peer_id);
                self.identify_rate.forget(&closed.peer_id);
            }
            FromSwarm::ConnectionClosed(closed) => {
                if let Some(count) = self.connections.get_mut(&closed.peer_id) {
                    *count = count.saturating_sub(1);
                }
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        // Bounded by the command queue's capacity.
        while let Poll::Ready(Some(command)) = self.dht_rx.poll_recv(cx) {
            self.on_dht_command(command);
        }
        let tick = self
            .reprovide_tick
            .get_or_insert_with(|| tokio::time::interval(REPROVIDE_TICK));
        if tick.poll_tick(cx).is_ready() {
            self.reprovide_due();
        }
        // Bounded: every iteration either returns or consumes one inner event.
        loop {
            if let Some(action) = self.queue.pop_front() {
                return Poll::Ready(action);
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => self.on_inner_event(event),
                Poll::Ready(other) => {
                    return Poll::Ready(
                        other
                            .map_out(|_| unreachable!("GenerateEvent is handled in the arm above")),
                    );
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identify_info(ports: std::ops::Range<u16>) -> identify::Info {
        identify::Info {
            public_key: libp2p::identity::Keypair::generate_ed25519().public(),
            protocol_version: String::new(),
            agent_version: String::new(),
            listen_addrs: ports
                .map(|p| format!("/ip4/203.0.113.5/tcp/{p}").parse().unwrap())
                .collect(),
            protocols: vec![kad::PROTOCOL_NAME],
            observed_addr: "/ip4/198.51.100.1/tcp/1".parse().unwrap(),
            signed_peer_record: None,
        }
    }

    #[test]
    fn identify_replaces_a_peers_addresses_within_the_cap() {
        let config = DiscoveryConfig::default()
            .with_mdns(false)
            .with_identify_interval(std::time::Duration::ZERO, 1);
        let mut behaviour = Behaviour::new(PeerId::random(), config).unwrap();
        let peer = PeerId::random();
        let remote: Multiaddr = "/ip4/203.0.113.5/tcp/40000".parse().unwrap();
        let kept = behaviour
            .on_identify(peer, &identify_info(0..300), &remote)
            .unwrap();
        assert_eq!(kept.len(), 8);
        assert_eq!(behaviour.table_addresses(peer).len(), 8);
        let kept = behaviour
            .on_identify(peer, &identify_info(1000..1003), &remote)
            .unwrap();
        let table = behaviour.table_addresses(peer);
        assert_eq!(table.len(), 3, "{table:?}");
        assert!(
            kept.iter()
                .all(|a| table.contains(&a.clone().with_p2p(peer).unwrap()))
        );
        let stats = behaviour.stats();
        assert_eq!(stats.addresses_dropped(), 292);
        assert_eq!(stats.max_addresses_per_peer(), 8);
    }
}
