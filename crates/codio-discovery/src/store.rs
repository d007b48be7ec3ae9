//! The Kademlia record store: remote peers' records and provider records kept apart from
//! this node's own provider records, each within its own limits, so that a flood of remote
//! provider records can never make the node's own `provide()` fail (libp2p's `MemoryStore`
//! counts both against one `max_provided_keys`).

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

use crate::Stats;

use libp2p::{
    Multiaddr, PeerId,
    kad::{
        ProviderRecord, Record, RecordKey,
        store::{self, MemoryStore, MemoryStoreConfig, RecordStore},
    },
};

/// Limits of the record store.
///
/// | setting | default |
/// |---|---|
/// | [`max_records`](Self::with_max_records) | 1,024 value records (libp2p's default) |
/// | [`max_value_bytes`](Self::with_max_value_bytes) | 65 KiB per value record (libp2p's default) |
/// | [`max_providers_per_key`](Self::with_max_providers_per_key) | 20 remote providers per key (Kademlia's replication factor); more are ignored |
/// | [`max_remote_provided_keys`](Self::with_max_remote_provided_keys) | 1,024 keys with remote providers; further ones are refused and counted |
/// | [`max_local_provided_keys`](Self::with_max_local_provided_keys) | 4,096 keys this node provides, apart from the remote ones |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLimits {
    max_records: usize,
    max_value_bytes: usize,
    max_providers_per_key: usize,
    max_remote_provided_keys: usize,
    max_local_provided_keys: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        let memory = MemoryStoreConfig::default();
        Self {
            max_records: memory.max_records,
            max_value_bytes: memory.max_value_bytes,
            max_providers_per_key: memory.max_providers_per_key,
            max_remote_provided_keys: memory.max_provided_keys,
            max_local_provided_keys: 4096,
        }
    }
}

impl StoreLimits {
    /// Sets the bound on value records.
    pub fn with_max_records(mut self, max: usize) -> Self {
        self.max_records = max;
        self
    }

    /// Sets the largest value record accepted.
    pub fn with_max_value_bytes(mut self, max: usize) -> Self {
        self.max_value_bytes = max;
        self
    }

    /// Sets how many remote providers are kept per key.
    pub fn with_max_providers_per_key(mut self, max: usize) -> Self {
        self.max_providers_per_key = max;
        self
    }

    /// Sets the bound on keys with remote providers.
    pub fn with_max_remote_provided_keys(mut self, max: usize) -> Self {
        self.max_remote_provided_keys = max;
        self
    }

    /// Sets the bound on keys this node provides.
    pub fn with_max_local_provided_keys(mut self, max: usize) -> Self {
        self.max_local_provided_keys = max;
        self
    }
}

/// The record store codio's Kademlia runs on (see the module docs).
pub struct Store {
    local_id: PeerId,
    /// Value records and remote peers' provider records.
    remote: MemoryStore,
    /// This node's own provider records.
    local: MemoryStore,
    /// Keys with remote providers (what `remote` bounds; kept to report it).
    remote_keys: HashSet<RecordKey>,
    /// Listen addresses identify reported, newest peers last, at most [`MAX_KNOWN_PEERS`].
    known: HashMap<PeerId, Vec<Multiaddr>>,
    known_order: VecDeque<PeerId>,
    stats: Arc<Stats>,
}

/// Peers whose identify addresses the store remembers to complete provider records.
const MAX_KNOWN_PEERS: usize = 4096;

impl Store {
    /// A store for `local_id` within `limits`, counting refusals into `stats`.
    pub fn new(local_id: PeerId, limits: &StoreLimits, stats: Arc<Stats>) -> Self {
        let remote = MemoryStoreConfig {
            max_records: limits.max_records,
            max_value_bytes: limits.max_value_bytes,
            max_providers_per_key: limits.max_providers_per_key,
            max_provided_keys: limits.max_remote_provided_keys,
        };
        let local = MemoryStoreConfig {
            max_records: 0,
            max_value_bytes: 0,
            max_providers_per_key: 1,
            max_provided_keys: limits.max_local_provided_keys,
        };
        Self {
            local_id,
            remote: MemoryStore::with_config(local_id, remote),
            local: MemoryStore::with_config(local_id, local),
            remote_keys: HashSet::new(),
            known: HashMap::new(),
            known_order: VecDeque::new(),
            stats,
        }
    }
}

impl Store {
    /// Remembers `peer`'s listen addresses (from identify) to complete its provider records.
    ///
    /// A provider announces only its *confirmed external* addresses, so the records of a node
    /// without any (behind NAT, on a LAN, in a lab) carry none, and libp2p-kad serves such a
    /// record only when the provider is in the server's routing table — otherwise the
    /// provider is silently left out of the answer. Records are completed with these
    /// addresses when served. Bounded: the oldest peers are forgotten first.
    pub fn learn_addresses(&mut self, peer: PeerId, addresses: &[Multiaddr]) {
        if addresses.is_empty() {
            return;
        }
        if self.known.insert(peer, addresses.to_vec()).is_none() {
            self.known_order.push_back(peer);
            if self.known_order.len() > MAX_KNOWN_PEERS
                && let Some(oldest) = self.known_order.pop_front()
            {
                self.known.remove(&oldest);
            }
        }
    }

    /// `record` with the remembered addresses of its provider if it came without any.
    fn completed(&self, mut record: ProviderRecord) -> ProviderRecord {
        if record.addresses.is_empty()
            && record.provider != self.local_id
            && let Some(addresses) = self.known.get(&record.provider)
        {
            record.addresses = addresses.clone();
        }
        record
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("records", &self.remote.records().count())
            .field("provided", &self.local.provided().count())
            .finish_non_exhaustive()
    }
}

impl RecordStore for Store {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, key: &RecordKey) -> Option<Cow<'_, Record>> {
        self.remote.get(key)
    }

    fn put(&mut self, record: Record) -> store::Result<()> {
        self.remote
            .put(record)
            .inspect_err(|_| self.stats.record_refused_record())
    }

    fn remove(&mut self, key: &RecordKey) {
        self.remote.remove(key);
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.remote.records()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> store::Result<()> {
        if record.provider == self.local_id {
            return self.local.add_provider(record);
        }
        let key = record.key.clone();
        self.remote
            .add_provider(record)
            .inspect_err(|_| self.stats.record_refused_provider())?;
        self.remote_keys.insert(key);
        self.stats.set_remote_provider_keys(self.remote_keys.len());
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let mut providers = self.local.providers(key);
        let remote = self.remote.providers(key).into_iter();
        providers.extend(remote.map(|record| self.completed(record)));
        providers
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.local.provided()
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if *provider == self.local_id {
            self.local.remove_provider(key, provider);
        } else {
            self.remote.remove_provider(key, provider);
            if self.remote.providers(key).is_empty() {
                self.remote_keys.remove(key);
                self.stats.set_remote_provider_keys(self.remote_keys.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(key: u32, provider: PeerId) -> ProviderRecord {
        ProviderRecord::new(RecordKey::new(&key.to_be_bytes()), provider, vec![])
    }

    #[test]
    fn remote_floods_never_block_our_own_provides() {
        let me = PeerId::random();
        let limits = StoreLimits::default()
            .with_max_remote_provided_keys(100)
            .with_max_local_provided_keys(10);
        let stats = Arc::new(Stats::default());
        let mut store = Store::new(me, &limits, stats.clone());
        for key in 0..150 {
            let _ = store.add_provider(provider(key, PeerId::random()));
        }
        assert_eq!(stats.refused_providers(), 50);
        assert_eq!(stats.remote_provider_keys(), 100);
        // A key remote peers provide too, then 9 more: our own bound is ours alone.
        store.add_provider(provider(5, me)).unwrap();
        for key in 1000..1009 {
            store.add_provider(provider(key, me)).unwrap();
        }
        assert!(
            store.add_provider(provider(2000, me)).is_err(),
            "our own bound"
        );
        assert_eq!(store.provided().count(), 10);
        let key = RecordKey::new(&5u32.to_be_bytes());
        assert!(store.providers(&key).iter().any(|p| p.provider == me));
        store.remove_provider(&key, &me);
        assert!(store.providers(&key).iter().all(|p| p.provider != me));
    }

    #[test]
    fn address_less_provider_records_are_completed_with_identify_addresses() {
        let me = PeerId::random();
        let mut store = Store::new(me, &StoreLimits::default(), Arc::new(Stats::default()));
        let (known, stranger) = (PeerId::random(), PeerId::random());
        let key = RecordKey::new(&b"content");
        for provider in [known, stranger] {
            store
                .add_provider(ProviderRecord::new(key.clone(), provider, vec![]))
                .unwrap();
        }
        let address: Multiaddr = "/ip4/192.0.2.7/tcp/4001".parse().unwrap();
        store.learn_addresses(known, std::slice::from_ref(&address));
        let served = store.providers(&key);
        let of = |peer| {
            served
                .iter()
                .find(|r| r.provider == peer)
                .unwrap()
                .addresses
                .clone()
        };
        assert_eq!(of(known), vec![address]);
        assert!(of(stranger).is_empty());
        // Bounded: the oldest peers are forgotten first.
        for _ in 0..MAX_KNOWN_PEERS {
            store.learn_addresses(PeerId::random(), &["/ip4/192.0.2.8/tcp/1".parse().unwrap()]);
        }
        assert_eq!(store.known.len(), MAX_KNOWN_PEERS);
        assert!(!store.known.contains_key(&known));
    }
}
