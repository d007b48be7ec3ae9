//! [`Dht`]: DHT operations as `async` calls, for applications that do not want to track
//! query ids. The handle sends each call to the [`Behaviour`](crate::Behaviour), which starts
//! the query, keeps its reply by query id and answers when the query's single final outcome
//! arrives (instead of reporting it as an [`Event`](crate::Event)).

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::{Provider, ProviderStream};

/// Calls queued from handles to the behaviour.
pub(crate) const COMMAND_QUEUE: usize = 64;

/// The outcome of a closest-peers lookup ([`Dht::closest_peers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lookup {
    /// The closest peers found, closest first.
    pub peers: Vec<PeerId>,
    /// Requests sent to other peers during the lookup.
    pub requests: u32,
    /// Requests that were answered.
    pub successes: u32,
    /// How long the lookup took.
    pub duration: Duration,
}

/// Why a DHT call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DhtError {
    /// The query did not finish in time.
    #[error("the DHT query timed out after {after:?}")]
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// The DHT knows no address of the peer.
    #[error("peer {0} was not found in the DHT")]
    NotFound(PeerId),
    /// The routing table is empty: the node knows no DHT peer to ask.
    #[error("no known DHT peers")]
    NoKnownPeers,
    /// The announcement reached no peer (the key stays provided and is announced again
    /// soon).
    #[error("the announcement reached no peer")]
    NoPeerReached,
    /// The local record store refused the record.
    #[error("record store: {0}")]
    Store(String),
    /// The swarm is gone.
    #[error("the network has shut down")]
    ShutDown,
}

type Reply<T> = oneshot::Sender<Result<T, DhtError>>;

/// A call from a [`Dht`] handle.
#[derive(Debug)]
pub(crate) enum DhtCommand {
    ClosestPeers {
        key: Vec<u8>,
        reply: Reply<Lookup>,
    },
    FindAddresses {
        peer: PeerId,
        reply: Reply<Vec<Multiaddr>>,
    },
    Provide {
        key: Vec<u8>,
        reply: Reply<()>,
    },
    StopProviding {
        key: Vec<u8>,
        reply: Reply<()>,
    },
    FindProviders {
        key: Vec<u8>,
        reply: Reply<Vec<Provider>>,
    },
    StreamProviders {
        key: Vec<u8>,
        found: mpsc::Sender<Provider>,
    },
}

impl DhtCommand {
    /// Answers the caller with `error` at once.
    pub(crate) fn fail(self, error: DhtError) {
        let _ = match self {
            DhtCommand::ClosestPeers { reply, .. } => reply.send(Err(error)).map_err(drop),
            DhtCommand::FindAddresses { reply, .. } => reply.send(Err(error)).map_err(drop),
            DhtCommand::Provide { reply, .. } => reply.send(Err(error)).map_err(drop),
            DhtCommand::StopProviding { reply, .. } => reply.send(Err(error)).map_err(drop),
            DhtCommand::FindProviders { reply, .. } => reply.send(Err(error)).map_err(drop),
            // Dropping the sender ends the stream.
            DhtCommand::StreamProviders { .. } => Ok(()),
        };
    }
}

/// A query a caller waits for, by query id.
#[derive(Debug)]
pub(crate) enum Pending {
    ClosestPeers(Reply<Lookup>),
    FindAddresses {
        peer: PeerId,
        reply: Reply<Vec<Multiaddr>>,
    },
    Provide(Reply<()>),
    FindProviders(Reply<Vec<Provider>>),
    StreamProviders(mpsc::Sender<Provider>),
}

/// DHT operations on the node whose swarm runs the behaviour this came from; cheap to clone.
#[derive(Debug, Clone)]
pub struct Dht {
    commands: mpsc::Sender<DhtCommand>,
    query_timeout: Duration,
    stream_buffer: usize,
}

impl Dht {
    pub(crate) fn new(
        commands: mpsc::Sender<DhtCommand>,
        query_timeout: Duration,
        stream_buffer: usize,
    ) -> Self {
        Self {
            commands,
            query_timeout,
            stream_buffer,
        }
    }

    /// The query timeout calls are bounded by.
    pub fn query_timeout(&self) -> Duration {
        self.query_timeout
    }

    async fn call<T>(&self, command: impl FnOnce(Reply<T>) -> DhtCommand) -> Result<T, DhtError> {
        let after = self.query_timeout;
        match codio_base::call::call(&self.commands, command, after).await {
            Ok(result) => result,
            Err(codio_base::call::CallError::Timeout) => Err(DhtError::Timeout { after }),
            Err(_) => Err(DhtError::ShutDown),
        }
    }

    /// The peers closest to `key` in the XOR metric (up to 20), found by an iterative lookup.
    ///
    /// # Errors
    ///
    /// [`DhtError::NoKnownPeers`] with an empty routing table, [`DhtError::Timeout`],
    /// [`DhtError::ShutDown`].
    pub async fn closest_peers(&self, key: Vec<u8>) -> Result<Lookup, DhtError> {
        self.call(|reply| DhtCommand::ClosestPeers { key, reply })
            .await
    }

    /// The addresses of `peer` the DHT knows: found by a lookup of its id, plus those in the
    /// routing table, without `/p2p/` suffixes or duplicates.
    ///
    /// # Errors
    ///
    /// [`DhtError::NotFound`] when nobody knows an address, [`DhtError::NoKnownPeers`],
    /// [`DhtError::Timeout`], [`DhtError::ShutDown`].
    pub async fn find_addresses(&self, peer: PeerId) -> Result<Vec<Multiaddr>, DhtError> {
        self.call(|reply| DhtCommand::FindAddresses { peer, reply })
            .await
    }

    /// Announces this node as a provider of `key` to the peers closest to it. The key stays
    /// provided, and is announced again before peers' records expire (see
    /// [`DiscoveryConfig::with_reprovide`](crate::DiscoveryConfig::with_reprovide)), until
    /// [`stop_providing`](Self::stop_providing).
    ///
    /// # Errors
    ///
    /// [`DhtError::Store`] when the local store is full, [`DhtError::NoPeerReached`] when no
    /// peer took the record (it is retried soon), [`DhtError::Timeout`],
    /// [`DhtError::ShutDown`].
    pub async fn provide(&self, key: Vec<u8>) -> Result<(), DhtError> {
        self.call(|reply| DhtCommand::Provide { key, reply }).await
    }

    /// Stops providing `key`: it is no longer announced nor served from this node's store;
    /// peers' records of it expire after the provider TTL.
    ///
    /// # Errors
    ///
    /// [`DhtError::ShutDown`].
    pub async fn stop_providing(&self, key: Vec<u8>) -> Result<(), DhtError> {
        self.call(|reply| DhtCommand::StopProviding { key, reply })
            .await
    }

    /// The providers of `key` other than this node, with their addresses, nearest first
    /// ([`rank`](crate::rank): connected, then lowest RTT).
    ///
    /// # Errors
    ///
    /// [`DhtError::Timeout`] when the lookup finds nothing in time, [`DhtError::ShutDown`].
    pub async fn find_providers(&self, key: Vec<u8>) -> Result<Vec<Provider>, DhtError> {
        self.call(|reply| DhtCommand::FindProviders { key, reply })
            .await
    }

    /// The providers of `key` other than this node, each as soon as the lookup finds it (with
    /// what is known of its proximity then). The stream ends with the lookup; dropping it
    /// stops the lookup.
    ///
    /// # Errors
    ///
    /// [`DhtError::ShutDown`].
    pub async fn providers_stream(&self, key: Vec<u8>) -> Result<ProviderStream, DhtError> {
        let (found, rx) = mpsc::channel(self.stream_buffer);
        self.commands
            .send(DhtCommand::StreamProviders { key, found })
            .await
            .map_err(|_| DhtError::ShutDown)?;
        Ok(ProviderStream::new(rx))
    }
}
