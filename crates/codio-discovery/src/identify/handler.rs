//! One connection's identify: asks the peer once, answers its asks, pushes changes. An idle
//! connection keeps nothing but a pointer to the node-wide state and the peer's address.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use libp2p::{
    Multiaddr, StreamProtocol,
    core::{UpgradeInfo, upgrade::ReadyUpgrade},
    identify::{Info, PROTOCOL_NAME, PUSH_PROTOCOL_NAME},
    swarm::{
        ConnectionHandler, ConnectionHandlerEvent, Stream, SubstreamProtocol,
        handler::{
            ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
            ProtocolSupport, ProtocolsChange,
        },
    },
};

use super::wire::{self, IdentifyError};
use crate::Stats;

/// Streams one connection runs at once (its own ask, a push, the peer's ask and push); more
/// from the peer are closed at once and counted.
const MAX_STREAMS: usize = 4;

/// Distinct protocol names shared between connections, and the longest name shared; other
/// names are still taken, in an allocation of their own per connection.
const MAX_NAMES: usize = 1024;
const MAX_SHARED_NAME: usize = 128;

/// What every connection's handler shares: this node's identity and addresses, written once.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) public_key: Vec<u8>,
    pub(crate) protocol_version: String,
    pub(crate) agent_version: String,
    pub(crate) max_message: usize,
    pub(crate) timeout: Duration,
    pub(crate) stats: Arc<Stats>,
    /// Listen and confirmed external addresses.
    pub(crate) addresses: Mutex<Vec<Multiaddr>>,
    /// The protocols this node's handlers listen on (the same on every connection: handlers
    /// report each change to every connection, and applying it twice changes nothing).
    protocols: Mutex<Vec<StreamProtocol>>,
    /// Protocol names peers reported, one allocation each for all connections.
    names: Mutex<HashMap<String, StreamProtocol>>,
}

impl Shared {
    pub(crate) fn new(
        public_key: Vec<u8>,
        protocol_version: String,
        agent_version: String,
        max_message: usize,
        timeout: Duration,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            public_key,
            protocol_version,
            agent_version,
            max_message,
            timeout,
            stats,
            addresses: Mutex::new(Vec::new()),
            protocols: Mutex::new(Vec::new()),
            names: Mutex::new(HashMap::new()),
        }
    }

    /// This node's message for a peer seen at `observed` (locks `addresses`, then
    /// `protocols`; nothing locks them the other way round).
    fn message(&self, observed: &Multiaddr) -> Vec<u8> {
        let addresses = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let protocols = self
            .protocols
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let local = wire::Local {
            public_key: &self.public_key,
            protocol_version: &self.protocol_version,
            agent_version: &self.agent_version,
            addresses: &addresses,
            protocols: &protocols,
        };
        wire::encode(&local, observed, self.max_message)
    }

    /// `name` as a protocol, sharing the allocation of a name seen before.
    fn name(&self, name: String) -> Option<StreamProtocol> {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = names.get(name.as_str()) {
            return Some(known.clone());
        }
        if names.len() >= MAX_NAMES || name.len() > MAX_SHARED_NAME {
            return StreamProtocol::try_from_owned(name).ok();
        }
        let protocol = StreamProtocol::try_from_owned(name.clone()).ok()?;
        names.insert(name, protocol.clone());
        Some(protocol)
    }

    /// Every protocol name this node knows (its own, and those peers reported) but `listed`:
    /// what a peer's new list says it no longer speaks.
    fn known_except(&self, listed: &HashSet<StreamProtocol>) -> HashSet<StreamProtocol> {
        let own = self
            .protocols
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        own.iter()
            .chain(names.values())
            .filter(|p| !listed.contains(*p))
            .cloned()
            .collect()
    }

    fn local_protocols_changed(&self, change: &ProtocolsChange<'_>) {
        let mut protocols = self
            .protocols
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match change {
            ProtocolsChange::Added(added) => {
                for protocol in added.clone() {
                    if !protocols.contains(protocol) {
                        protocols.push(protocol.clone());
                    }
                }
            }
            ProtocolsChange::Removed(removed) => {
                let removed: Vec<&StreamProtocol> = removed.clone().collect();
                protocols.retain(|p| !removed.contains(&p));
            }
        }
    }
}

/// The two protocols a peer may open.
#[derive(Debug, Clone, Copy)]
pub struct Inbound;

impl UpgradeInfo for Inbound {
    type Info = StreamProtocol;
    type InfoIter = [StreamProtocol; 2];

    fn protocol_info(&self) -> Self::InfoIter {
        [PROTOCOL_NAME, PUSH_PROTOCOL_NAME]
    }
}

impl libp2p::core::upgrade::InboundUpgrade<Stream> for Inbound {
    type Output = (Stream, StreamProtocol);
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        std::future::ready(Ok((stream, protocol)))
    }
}

/// What the behaviour asks a connection's handler.
#[derive(Debug, Clone, Copy)]
pub enum Command {
    /// Send this node's changed information.
    Push,
}

/// What a handler tells the behaviour.
#[derive(Debug)]
pub enum Report {
    /// The peer's information: its answer to our ask, or a push.
    Identified {
        info: Box<Info>,
        pushed: bool,
        /// The peer's address as this node sees it.
        remote: Multiaddr,
    },
    /// Our information went to the peer (an answer or a push).
    Sent,
    /// An exchange failed.
    Failed(IdentifyError),
}

enum Outcome {
    Received(Result<wire::Message, IdentifyError>, bool),
    Sent(Result<(), IdentifyError>),
}

/// One connection's identify (the handler of [`Identify`](super::Identify)).
pub struct Handler {
    shared: Arc<Shared>,
    /// The peer's address as this node sees it: what it is told it was observed at.
    remote: Multiaddr,
    asked: bool,
    push: bool,
    /// Whether the connection's first report of local protocols was seen (later ones are
    /// changes worth a push).
    protocols_seen: bool,
    streams: Vec<BoxFuture<'static, Outcome>>,
    events: VecDeque<ConnectionHandlerEvent<ReadyUpgrade<StreamProtocol>, StreamProtocol, Report>>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("remote", &self.remote)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl Handler {
    pub(crate) fn new(shared: Arc<Shared>, remote: Multiaddr) -> Self {
        Self {
            shared,
            remote,
            asked: false,
            push: false,
            protocols_seen: false,
            streams: Vec::new(),
            events: VecDeque::new(),
        }
    }

    fn run(&mut self, future: BoxFuture<'static, Outcome>) {
        if self.streams.len() >= MAX_STREAMS {
            self.shared.stats.record_identify_refused_stream();
            tracing::debug!("identify stream beyond the per-connection bound closed");
            return;
        }
        self.streams.push(future);
    }

    fn send(&mut self, stream: Stream) {
        let message = self.shared.message(&self.remote);
        let deadline = self.shared.timeout;
        self.run(
            async move { Outcome::Sent(wire::send(stream, &message, deadline).await) }.boxed(),
        );
    }

    fn receive(&mut self, stream: Stream, pushed: bool) {
        let (max, deadline) = (self.shared.max_message, self.shared.timeout);
        self.run(
            async move { Outcome::Received(wire::receive(stream, max, deadline).await, pushed) }
                .boxed(),
        );
    }

    fn on_message(&mut self, message: wire::Message, pushed: bool) {
        let shared = &self.shared;
        let info = match wire::decode(message, |name| shared.name(name)) {
            Ok(info) => info,
            Err(error) => {
                self.events
                    .push_back(ConnectionHandlerEvent::NotifyBehaviour(Report::Failed(
                        error,
                    )));
                return;
            }
        };
        // The swarm keeps the peer's protocols for the other handlers. A push without
        // protocols changes none (libp2p peers push only what changed).
        if !(pushed && info.protocols.is_empty()) {
            let listed: HashSet<StreamProtocol> = info.protocols.iter().cloned().collect();
            let gone = self.shared.known_except(&listed);
            if !gone.is_empty() {
                self.events
                    .push_back(ConnectionHandlerEvent::ReportRemoteProtocols(
                        ProtocolSupport::Removed(gone),
                    ));
            }
            self.events
                .push_back(ConnectionHandlerEvent::ReportRemoteProtocols(
                    ProtocolSupport::Added(listed),
                ));
        }
        self.events
            .push_back(ConnectionHandlerEvent::NotifyBehaviour(
                Report::Identified {
                    info: Box::new(info),
                    pushed,
                    remote: self.remote.clone(),
                },
            ));
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Command;
    type ToBehaviour = Report;
    type InboundProtocol = Inbound;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = StreamProtocol;

    fn listen_protocol(&self) -> SubstreamProtocol<Inbound, ()> {
        SubstreamProtocol::new(Inbound, ())
    }

    fn on_behaviour_event(&mut self, command: Command) {
        match command {
            Command::Push => self.push = true,
        }
    }

    fn connection_keep_alive(&self) -> bool {
        !self.streams.is_empty()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<ReadyUpgrade<StreamProtocol>, StreamProtocol, Report>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        let protocol = if !self.asked {
            self.asked = true;
            Some(PROTOCOL_NAME)
        } else if self.push {
            self.push = false;
            Some(PUSH_PROTOCOL_NAME)
        } else {
            None
        };
        if let Some(protocol) = protocol {
            let upgrade = ReadyUpgrade::new(protocol.clone());
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(upgrade, protocol)
                    .with_timeout(self.shared.timeout),
            });
        }
        let mut index = 0;
        while index < self.streams.len() {
            let Poll::Ready(outcome) = self.streams[index].poll_unpin(cx) else {
                index += 1;
                continue;
            };
            drop(self.streams.swap_remove(index));
            match outcome {
                Outcome::Received(Ok(message), pushed) => self.on_message(message, pushed),
                Outcome::Received(Err(error), _) | Outcome::Sent(Err(error)) => self
                    .events
                    .push_back(ConnectionHandlerEvent::NotifyBehaviour(Report::Failed(
                        error,
                    ))),
                Outcome::Sent(Ok(())) => self
                    .events
                    .push_back(ConnectionHandlerEvent::NotifyBehaviour(Report::Sent)),
            }
        }
        if self.streams.is_empty() {
            // Release what a busy moment grew; an idle connection holds no buffers.
            self.streams = Vec::new();
        }
        match self.events.pop_front() {
            Some(event) => Poll::Ready(event),
            None => {
                self.events = VecDeque::new();
                Poll::Pending
            }
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Inbound, ReadyUpgrade<StreamProtocol>, (), StreamProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, protocol),
                ..
            }) => {
                if protocol == PUSH_PROTOCOL_NAME {
                    self.receive(stream, true);
                } else {
                    self.send(stream);
                }
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info,
            }) => {
                if info == PUSH_PROTOCOL_NAME {
                    self.send(stream);
                } else {
                    self.receive(stream, false);
                }
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                let report = match error {
                    libp2p::swarm::StreamUpgradeError::NegotiationFailed => {
                        Report::Failed(IdentifyError::Unsupported)
                    }
                    libp2p::swarm::StreamUpgradeError::Timeout => {
                        Report::Failed(IdentifyError::Timeout)
                    }
                    libp2p::swarm::StreamUpgradeError::Io(error) => {
                        Report::Failed(IdentifyError::Io(error))
                    }
                    libp2p::swarm::StreamUpgradeError::Apply(never) => match never {},
                };
                self.events
                    .push_back(ConnectionHandlerEvent::NotifyBehaviour(report));
            }
            ConnectionEvent::AddressChange(change) => self.remote = change.new_address.clone(),
            ConnectionEvent::LocalProtocolsChange(change) => {
                self.shared.local_protocols_changed(&change);
                if self.protocols_seen {
                    self.push = true;
                }
                self.protocols_seen = true;
            }
            _ => {}
        }
    }
}
