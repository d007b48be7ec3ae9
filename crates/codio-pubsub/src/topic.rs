//! The handles: [`Pubsub`] joins topics, a [`Topic`] publishes to one and reads its events.
//! Both send commands to the [`Behaviour`](crate::Behaviour) over one bounded queue; a topic's
//! events come back over a bounded broadcast channel that drops the oldest for a slow reader.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use libp2p::{
    PeerId,
    gossipsub::{MessageId, TopicHash},
};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{MeshChange, PubsubError};

/// Commands queued from handles to the behaviour.
pub(crate) const COMMAND_QUEUE: usize = 256;
/// How long a handle waits for the behaviour to answer, plus the reply grace (10 s in all; the
/// behaviour answers at once, so only a stalled swarm reaches it).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(8);

/// What the application says of a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Acceptance {
    /// Valid: delivered and forwarded.
    Accept,
    /// Neither delivered nor forwarded, without penalty (for instance stale).
    Ignore,
    /// Invalid: dropped, and the peer that forwarded it is penalised (gossipsub's P4).
    Reject,
}

/// The application's check of a topic's messages, run on the swarm's task for every message
/// before it is delivered or forwarded: keep it quick (a signature check, a size or schema
/// check), never blocking.
pub type Validator = Arc<dyn Fn(&Message) -> Acceptance + Send + Sync>;

/// A message received on a topic.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Message {
    /// The topic.
    pub topic: Arc<str>,
    /// Who published and signed it.
    #[serde(serialize_with = "crate::ser::option_peer")]
    pub author: Option<PeerId>,
    /// The peer it came from.
    #[serde(serialize_with = "crate::ser::peer")]
    pub from: PeerId,
    /// Its gossipsub id (author and sequence number).
    #[serde(serialize_with = "crate::ser::message_id")]
    pub id: MessageId,
    /// The payload.
    #[serde(skip)]
    pub data: Bytes,
}

/// What a topic handle reads.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TopicEvent {
    /// A message, accepted by the topic's validator.
    Message(Message),
    /// The topic's mesh changed.
    MeshChanged(MeshChange),
    /// A peer subscribed to the topic.
    PeerSubscribed(PeerId),
    /// A peer unsubscribed from the topic.
    PeerUnsubscribed(PeerId),
    /// This handle read too slowly: this many of the oldest events were dropped for it.
    Lagged(u64),
}

type Reply<T> = oneshot::Sender<Result<T, PubsubError>>;

/// A call from a handle.
pub(crate) enum Command {
    Join {
        name: String,
        validator: Option<Validator>,
        reply: Reply<(broadcast::Receiver<TopicEvent>, Arc<str>)>,
    },
    Leave(TopicHash),
    Publish {
        topic: TopicHash,
        data: Bytes,
        reply: Reply<MessageId>,
    },
    MeshPeers {
        topic: TopicHash,
        reply: Reply<Vec<PeerId>>,
    },
    Subscribers {
        topic: TopicHash,
        reply: Reply<Vec<PeerId>>,
    },
    Score {
        peer: PeerId,
        reply: Reply<Option<f64>>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Command::Join { .. } => "Join",
            Command::Leave(_) => "Leave",
            Command::Publish { .. } => "Publish",
            Command::MeshPeers { .. } => "MeshPeers",
            Command::Subscribers { .. } => "Subscribers",
            Command::Score { .. } => "Score",
        };
        f.write_str(name)
    }
}

async fn call<T>(
    commands: &mpsc::Sender<Command>,
    command: impl FnOnce(Reply<T>) -> Command,
) -> Result<T, PubsubError> {
    match codio_base::call::call(commands, command, ANSWER_TIMEOUT).await {
        Ok(result) => result,
        Err(codio_base::call::CallError::Timeout) => Err(PubsubError::Timeout),
        Err(_) => Err(PubsubError::ShutDown),
    }
}

/// Joins topics on the node whose swarm runs the behaviour this came from; cheap to clone.
#[derive(Debug, Clone)]
pub struct Pubsub {
    commands: mpsc::Sender<Command>,
}

impl Pubsub {
    pub(crate) fn new(commands: mpsc::Sender<Command>) -> Self {
        Self { commands }
    }

    /// Subscribes to `topic` (once per topic, however many handles) and returns a handle that
    /// publishes to it and reads its events; every message is accepted.
    ///
    /// # Errors
    ///
    /// [`PubsubError::TooManyTopics`], [`PubsubError::InvalidTopic`], [`PubsubError::ShutDown`].
    pub async fn join(&self, topic: &str) -> Result<Topic, PubsubError> {
        self.join_inner(topic, None).await
    }

    /// As [`join`](Self::join), with `validator` judging the topic's messages (it replaces the
    /// topic's validator if the topic was joined already).
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join).
    pub async fn join_with(&self, topic: &str, validator: Validator) -> Result<Topic, PubsubError> {
        self.join_inner(topic, Some(validator)).await
    }

    async fn join_inner(
        &self,
        topic: &str,
        validator: Option<Validator>,
    ) -> Result<Topic, PubsubError> {
        let name = topic.to_owned();
        let (events, name) = call(&self.commands, |reply| Command::Join {
            name,
            validator,
            reply,
        })
        .await?;
        Ok(Topic {
            hash: TopicHash::from_raw(&*name),
            name,
            events,
            commands: self.commands.clone(),
        })
    }

    /// `peer`'s gossipsub score as this node sees it (`None` without scoring or for an
    /// unknown peer).
    ///
    /// # Errors
    ///
    /// [`PubsubError::ShutDown`], [`PubsubError::Timeout`].
    pub async fn peer_score(&self, peer: PeerId) -> Result<Option<f64>, PubsubError> {
        call(&self.commands, |reply| Command::Score { peer, reply }).await
    }
}

/// A joined topic: publish to it, read its messages and mesh changes. Dropping the last
/// handle of a topic leaves it.
#[derive(Debug)]
pub struct Topic {
    name: Arc<str>,
    hash: TopicHash,
    events: broadcast::Receiver<TopicEvent>,
    commands: mpsc::Sender<Command>,
}

impl Topic {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Publishes `data`, signed by this node, to the topic's subscribers.
    ///
    /// # Errors
    ///
    /// [`PubsubError::TooLarge`], [`PubsubError::NoPeers`] when no connected peer is
    /// subscribed, [`PubsubError::Duplicate`], [`PubsubError::QueuesFull`],
    /// [`PubsubError::ShutDown`], [`PubsubError::Timeout`].
    pub async fn publish(&self, data: impl Into<Bytes>) -> Result<MessageId, PubsubError> {
        let (topic, data) = (self.hash.clone(), data.into());
        call(&self.commands, |reply| Command::Publish {
            topic,
            data,
            reply,
        })
        .await
    }

    /// The next event; `None` once the node has shut down.
    pub async fn next(&mut self) -> Option<TopicEvent> {
        match self.events.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(TopicEvent::Lagged(missed)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next message, skipping other events; `None` once the node has shut down.
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            if let TopicEvent::Message(message) = self.next().await? {
                return Some(message);
            }
        }
    }

    /// The peers in this node's mesh for the topic.
    ///
    /// # Errors
    ///
    /// [`PubsubError::ShutDown`], [`PubsubError::Timeout`].
    pub async fn mesh_peers(&self) -> Result<Vec<PeerId>, PubsubError> {
        let topic = self.hash.clone();
        call(&self.commands, |reply| Command::MeshPeers { topic, reply }).await
    }

    /// The connected peers subscribed to the topic.
    ///
    /// # Errors
    ///
    /// [`PubsubError::ShutDown`], [`PubsubError::Timeout`].
    pub async fn subscribers(&self) -> Result<Vec<PeerId>, PubsubError> {
        let topic = self.hash.clone();
        call(&self.commands, |reply| Command::Subscribers {
            topic,
            reply,
        })
        .await
    }
}

impl Drop for Topic {
    fn drop(&mut self) {
        // Best effort: with the queue full, the behaviour notices the topic has no reader the
        // next time a message for it arrives.
        let _ = self.commands.try_send(Command::Leave(self.hash.clone()));
    }
}
