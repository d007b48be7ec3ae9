//! The pub/sub [`NetworkBehaviour`]: gossipsub, plus the per-peer rate, the application's
//! validators, topic handles and mesh-change reports.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use libp2p::{
    PeerId,
    gossipsub::{
        self, AllowAllSubscriptionFilter, IdentTopic, MaxCountSubscriptionFilter,
        MessageAcceptance, MessageAuthenticity, MessageId, TopicHash, ValidationMode,
    },
    identity::Keypair,
    swarm::{
        ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler, THandlerInEvent,
        ToSwarm,
    },
};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use crate::{
    Acceptance, MeshChange, Message, PubsubConfig, PubsubError, Refusal, Stats, TopicEvent,
    Validator,
    config::RPC_OVERHEAD,
    handler::{Handler, HandlerIn},
    mesh::Meshes,
    topic::{COMMAND_QUEUE, Command, Pubsub},
};

type Gossipsub = gossipsub::Behaviour<gossipsub::IdentityTransform, Filter>;
type Filter = MaxCountSubscriptionFilter<AllowAllSubscriptionFilter>;

/// Commands taken from the handles per poll before other work gets a turn.
const COMMANDS_PER_POLL: usize = 64;
/// Events queued for the swarm; beyond it the oldest are dropped.
const MAX_QUEUED: usize = 1024;

/// Events of the pub/sub behaviour (a topic's messages go to its [`Topic`](crate::Topic)
/// handles, not here).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A joined topic's mesh changed.
    MeshChanged {
        /// The topic.
        topic: Arc<str>,
        /// How.
        #[serde(flatten)]
        change: MeshChange,
    },
    /// A peer is too slow to take the messages queued for it (gossipsub dropped some).
    SlowPeer {
        /// The peer.
        #[serde(serialize_with = "crate::ser::peer")]
        peer_id: PeerId,
    },
}

/// A joined topic: its name, its handles' channel and its validator.
struct Joined {
    name: Arc<str>,
    events: broadcast::Sender<TopicEvent>,
    validator: Option<Validator>,
}

/// The pub/sub behaviour. Compose it into a swarm's behaviour and join topics through its
/// [`Pubsub`] handle ([`Behaviour::pubsub`]).
pub struct Behaviour {
    gossipsub: Gossipsub,
    config: PubsubConfig,
    commands_tx: mpsc::Sender<Command>,
    commands_rx: mpsc::Receiver<Command>,
    topics: HashMap<TopicHash, Joined>,
    meshes: Meshes,
    mesh_tick: Option<tokio::time::Interval>,
    rate: codio_base::Buckets<PeerId>,
    queue: VecDeque<Event>,
    stats: Arc<Stats>,
    /// Whether this node has joined a topic: until then gossipsub's handlers open no
    /// outbound stream (see [`Handler`]).
    active: bool,
    /// Every established connection, to wake its handler when the node joins its first topic.
    connections: HashMap<ConnectionId, PeerId>,
    /// Handlers to wake, at most one per established connection.
    to_activate: VecDeque<(PeerId, ConnectionId)>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("topics", &self.topics.len())
            .field("mesh_peers", &self.meshes.total())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// Creates the behaviour; messages this node publishes are signed with `keypair`.
    ///
    /// # Errors
    ///
    /// [`PubsubError::InvalidConfig`] when a setting cannot work.
    pub fn new(keypair: &Keypair, config: PubsubConfig) -> Result<Self, PubsubError> {
        config.validate()?;
        let invalid = |reason: &str| {
            PubsubError::InvalidConfig(codio_base::InvalidConfig::new(
                "pubsub",
                "gossipsub",
                reason,
            ))
        };
        let gossip_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(config.heartbeat)
            .max_transmit_size(config.max_message_bytes + RPC_OVERHEAD)
            .duplicate_cache_time(config.duplicate_cache)
            .validation_mode(ValidationMode::Strict)
            .validate_messages()
            .build()
            .map_err(|e| invalid(&e.to_string()))?;
        let filter = MaxCountSubscriptionFilter {
            filter: AllowAllSubscriptionFilter {},
            max_subscribed_topics: config.max_peer_topics,
            max_subscriptions_per_request: config.max_peer_topics,
        };
        let mut gossipsub = Gossipsub::new_with_subscription_filter(
            MessageAuthenticity::Signed(keypair.clone()),
            gossip_config,
            filter,
        )
        .map_err(invalid)?;
        if config.scoring {
            let (params, thresholds) = config.score();
            gossipsub
                .with_peer_score(params, thresholds)
                .map_err(|e| invalid(&e))?;
        }
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        Ok(Self {
            gossipsub,
            rate: codio_base::Buckets::new(codio_base::Rate::per_second(
                config.peer_rate.0,
                config.peer_rate.1.max(1),
            )),
            config,
            commands_tx,
            commands_rx,
            topics: HashMap::new(),
            meshes: Meshes::default(),
            mesh_tick: None,
            queue: VecDeque::new(),
            stats: Arc::new(Stats::default()),
            active: false,
            connections: HashMap::new(),
            to_activate: VecDeque::new(),
        })
    }

    /// A handle to join topics with.
    pub fn pubsub(&self) -> Pubsub {
        Pubsub::new(self.commands_tx.clone())
    }

    /// What the layer delivered and refused.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Gossipsub itself, for what this wrapper does not cover.
    pub fn gossipsub_mut(&mut self) -> &mut Gossipsub {
        &mut self.gossipsub
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Join {
                name,
                validator,
                reply,
            } => {
                let _ = reply.send(self.join(name, validator));
            }
            Command::Leave(topic) => self.leave_if_unread(&topic),
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(topic, data));
            }
            Command::MeshPeers { topic, reply } => {
                let _ = reply.send(Ok(self.gossipsub.mesh_peers(&topic).copied().collect()));
            }
            Command::Subscribers { topic, reply } => {
                let peers = self.gossipsub.all_peers();
                let subscribed = peers.filter(|(_, topics)| topics.contains(&&topic));
                let _ = reply.send(Ok(subscribed.map(|(peer, _)| *peer).collect()));
            }
            Command::Score { peer, reply } => {
                let _ = reply.send(Ok(self.gossipsub.peer_score(&peer)));
            }
        }
    }

    fn join(
        &mut self,
        name: String,
        validator: Option<Validator>,
    ) -> Result<(broadcast::Receiver<TopicEvent>, Arc<str>), PubsubError> {
        let topic = IdentTopic::new(name);
        let hash = topic.hash();
        if let Some(joined) = self.topics.get_mut(&hash) {
            if validator.is_some() {
                joined.validator = validator;
            }
            return Ok((joined.events.subscribe(), joined.name.clone()));
        }
        if self.topics.len() >= self.config.max_topics {
            return Err(PubsubError::TooManyTopics(self.config.max_topics));
        }
        self.gossipsub
            .subscribe(&topic)
            .map_err(|e| PubsubError::InvalidTopic(e.to_string()))?;
        if self.config.scoring
            && let Err(error) = self
                .gossipsub
                .set_topic_params(topic, self.config.topic_score.clone())
        {
            tracing::warn!(%error, "topic score parameters refused");
        }
        let (events, rx) = broadcast::channel(self.config.topic_buffer);
        let name: Arc<str> = hash.as_str().into();
        tracing::debug!(topic = %name, "joined");
        self.topics.insert(
            hash,
            Joined {
                name: name.clone(),
                events,
                validator,
            },
        );
        self.update_stats();
        Ok((rx, name))
    }

    /// Leaves `topic` if no handle reads it any more.
    fn leave_if_unread(&mut self, topic: &TopicHash) {
        let unread = self
            .topics
            .get(topic)
            .is_some_and(|joined| joined.events.receiver_count() == 0);
        if !unread {
            return;
        }
        self.topics.remove(topic);
        self.meshes.forget(topic);
        self.gossipsub.unsubscribe(&IdentTopic::new(topic.as_str()));
        tracing::debug!(topic = topic.as_str(), "left");
        self.update_stats();
    }

    fn publish(&mut self, topic: TopicHash, data: Bytes) -> Result<MessageId, PubsubError> {
        let too_large = PubsubError::TooLarge {
            size: data.len(),
            max: self.config.max_message_bytes,
        };
        let result = if data.len() > self.config.max_message_bytes {
            Err(too_large)
        } else {
            self.gossipsub
                .publish(topic, data.to_vec())
                .map_err(|error| match error {
                    gossipsub::PublishError::MessageTooLarge => too_large,
                    other => PubsubError::from(other),
                })
        };
        self.stats.record_published(result.is_ok());
        result
    }

    fn on_gossip_event(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => self.on_message(propagation_source, message_id, message),
            gossipsub::Event::Subscribed { peer_id, topic, .. } => {
                self.tell_topic(&topic, TopicEvent::PeerSubscribed(peer_id));
            }
            gossipsub::Event::Unsubscribed { peer_id, topic } => {
                self.tell_topic(&topic, TopicEvent::PeerUnsubscribed(peer_id));
            }
            gossipsub::Event::SlowPeer { peer_id, .. } => {
                self.stats.record_slow_peer();
                self.push(Event::SlowPeer { peer_id });
            }
            _ => {}
        }
    }

    /// Judges a received message (rate, size, validator), reports the verdict to gossipsub
    /// (which forwards accepted messages and penalises rejected ones) and delivers it.
    fn on_message(&mut self, from: PeerId, id: MessageId, message: gossipsub::Message) {
        let verdict = self.judge(from, &id, message);
        let acceptance = match &verdict {
            Ok(_) => MessageAcceptance::Accept,
            Err(Refusal::Rejected | Refusal::TooLarge) => MessageAcceptance::Reject,
            Err(_) => MessageAcceptance::Ignore,
        };
        self.gossipsub
            .report_message_validation_result(&id, &from, acceptance);
        match verdict {
            Ok(message) => {
                self.stats.record_delivered();
                let topic = TopicHash::from_raw(&*message.topic);
                self.tell_topic(&topic, TopicEvent::Message(message));
            }
            Err(reason) => {
                self.stats.record_refused(reason);
                tracing::debug!(peer = %from, reason = reason.as_str(), "message refused");
            }
        }
    }

    fn judge(
        &mut self,
        from: PeerId,
        id: &MessageId,
        message: gossipsub::Message,
    ) -> Result<Message, Refusal> {
        if !self.rate.admit(from, Instant::now()) {
            return Err(Refusal::PeerRate);
        }
        if message.data.len() > self.config.max_message_bytes {
            return Err(Refusal::TooLarge);
        }
        let joined = self
            .topics
            .get(&message.topic)
            .filter(|joined| joined.events.receiver_count() > 0);
        let Some(joined) = joined else {
            let topic = message.topic.clone();
            self.leave_if_unread(&topic);
            return Err(Refusal::NotJoined);
        };
        let message = Message {
            topic: joined.name.clone(),
            author: message.source,
            from,
            id: id.clone(),
            data: Bytes::from(message.data),
        };
        match joined.validator.as_ref().map(|validate| validate(&message)) {
            None | Some(Acceptance::Accept) => Ok(message),
            Some(Acceptance::Ignore) => Err(Refusal::Ignored),
            Some(Acceptance::Reject) => Err(Refusal::Rejected),
        }
    }

    /// Sends `event` to the handles of `topic`, counting what slow readers lose.
    fn tell_topic(&self, topic: &TopicHash, event: TopicEvent) {
        if let Some(joined) = self.topics.get(topic) {
            let before = joined.events.len();
            // An error only means no handle reads the topic now.
            let _ = joined.events.send(event);
            if before + 1 > self.config.topic_buffer {
                self.stats.record_lagged(1);
            }
        }
    }

    /// Compares each topic's mesh with the last look and reports the changes.
    fn check_meshes(&mut self) {
        let topics: Vec<TopicHash> = self.topics.keys().cloned().collect();
        for topic in topics {
            let peers: Vec<PeerId> = self.gossipsub.mesh_peers(&topic).copied().collect();
            let Some(change) = self.meshes.update(&topic, peers) else {
                continue;
            };
            tracing::debug!(
                topic = topic.as_str(),
                added = change.added.len(),
                removed = change.removed.len(),
                size = change.size,
                "mesh changed"
            );
            self.tell_topic(&topic, TopicEvent::MeshChanged(change.clone()));
            if let Some(joined) = self.topics.get(&topic) {
                let topic = joined.name.clone();
                self.push(Event::MeshChanged { topic, change });
            }
        }
        self.update_stats();
    }

    fn update_stats(&self) {
        self.stats
            .set_topics(self.topics.len(), self.meshes.total());
    }

    fn push(&mut self, event: Event) {
        if self.queue.len() >= MAX_QUEUED {
            self.queue.pop_front();
        }
        self.queue.push_back(event);
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler<THandler<Gossipsub>>;
    type ToSwarm = Event;

    codio_base::delegate_to!(gossipsub, Handler::new);

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionEstablished(established) => {
                self.connections
                    .insert(established.connection_id, established.peer_id);
                if self.active {
                    self.to_activate
                        .push_back((established.peer_id, established.connection_id));
                }
            }
            FromSwarm::ConnectionClosed(closed) => {
                self.connections.remove(&closed.connection_id);
                if closed.remaining_established == 0 {
                    self.rate.forget(&closed.peer_id);
                }
            }
            _ => {}
        }
        self.gossipsub.on_swarm_event(event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        for taken in 0.. {
            if taken == COMMANDS_PER_POLL {
                cx.waker().wake_by_ref();
                break;
            }
            match self.commands_rx.poll_recv(cx) {
                Poll::Ready(Some(command)) => self.on_command(command),
                _ => break,
            }
        }
        let heartbeat = self.config.heartbeat;
        let tick = self
            .mesh_tick
            .get_or_insert_with(|| tokio::time::interval(heartbeat));
        if tick.poll_tick(cx).is_ready() {
            self.check_meshes();
        }
        // Joined through a handle or through `gossipsub_mut`: wake every handler once.
        if !self.active && self.gossipsub.topics().next().is_some() {
            self.active = true;
            self.to_activate.extend(
                self.connections
                    .iter()
                    .map(|(connection, peer)| (*peer, *connection)),
            );
        }
        if let Some((peer_id, connection)) = self.to_activate.pop_front() {
            return Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: HandlerIn::Activate,
            });
        }
        // Bounded: every iteration either returns or consumes one gossipsub event.
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(event));
            }
            match self.gossipsub.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => self.on_gossip_event(event),
                Poll::Ready(other) => {
                    return Poll::Ready(
                        other
                            .map_out(|_| unreachable!("GenerateEvent is handled in the arm above"))
                            .map_in(HandlerIn::Gossip),
                    );
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
