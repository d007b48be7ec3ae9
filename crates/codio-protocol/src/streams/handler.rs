//! The per-connection handler: negotiates outbound streams on request and queues inbound ones.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
};

use libp2p::{
    PeerId, Stream, StreamProtocol,
    core::upgrade::ReadyUpgrade,
    swarm::{
        ConnectionHandler, ConnectionHandlerEvent, StreamUpgradeError, SubstreamProtocol,
        handler::{
            ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
        },
    },
};
use tokio::sync::mpsc;

use super::{Counters, OpenReply, OpenStreamError};

/// Handles the streams of one connection.
#[derive(Debug)]
pub struct Handler {
    remote: PeerId,
    protocol: StreamProtocol,
    inbound: mpsc::Sender<(PeerId, Stream)>,
    counters: Arc<Counters>,
    /// Open requests not yet handed to the connection. Bounded by the behaviour's request
    /// queue: each entry has a caller waiting on it.
    requested: VecDeque<OpenReply>,
    /// Outbound streams being negotiated.
    negotiating: usize,
}

impl Handler {
    pub(crate) fn new(
        remote: PeerId,
        protocol: StreamProtocol,
        inbound: mpsc::Sender<(PeerId, Stream)>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            remote,
            protocol,
            inbound,
            counters,
            requested: VecDeque::new(),
            negotiating: 0,
        }
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = OpenReply;
    type ToBehaviour = Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = OpenReply;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(self.protocol.clone()), ())
    }

    fn connection_keep_alive(&self) -> bool {
        // Open streams keep the connection alive by themselves (the swarm counts them).
        !self.requested.is_empty() || self.negotiating > 0
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, OpenReply, Self::ToBehaviour>> {
        match self.requested.pop_front() {
            Some(reply) => {
                self.negotiating += 1;
                Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(
                        ReadyUpgrade::new(self.protocol.clone()),
                        reply,
                    ),
                })
            }
            None => Poll::Pending,
        }
    }

    fn on_behaviour_event(&mut self, reply: OpenReply) {
        self.requested.push_back(reply);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol, (), OpenReply>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => match self.inbound.try_send((self.remote, stream)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.counters
                        .dropped_inbound
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        peer = %self.remote,
                        protocol = %self.protocol,
                        "inbound stream queue full; resetting the stream"
                    );
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::debug!(protocol = %self.protocol, "nobody accepts inbound streams");
                }
            },
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info: reply,
            }) => {
                self.negotiating = self.negotiating.saturating_sub(1);
                let _ = reply.send(Ok(stream));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info: reply, error }) => {
                self.negotiating = self.negotiating.saturating_sub(1);
                let error = match error {
                    StreamUpgradeError::Timeout => OpenStreamError::Timeout,
                    StreamUpgradeError::NegotiationFailed => {
                        OpenStreamError::UnsupportedProtocol(self.protocol.clone())
                    }
                    StreamUpgradeError::Io(error) => OpenStreamError::Io(error),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                let _ = reply.send(Err(error));
            }
            _ => {}
        }
    }
}
