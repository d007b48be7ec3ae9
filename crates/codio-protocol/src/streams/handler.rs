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

use super::{Counters, OpenStreamError, Pending};

/// Handles the streams of one connection.
#[derive(Debug)]
pub struct Handler {
    remote: PeerId,
    protocol: StreamProtocol,
    inbound: mpsc::Sender<(PeerId, Stream)>,
    counters: Arc<Counters>,
    /// Open requests not yet handed to the connection. Bounded by the behaviour's request
    /// queue: each entry has a caller waiting on it.
    requested: VecDeque<Pending>,
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
    type FromBehaviour = Pending;
    type ToBehaviour = Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Pending;

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
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Pending, Self::ToBehaviour>> {
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

    fn on_behaviour_event(&mut self, open: Pending) {
        self.requested.push_back(open);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol, (), Pending>,
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
                info: open,
            }) => {
                self.negotiating = self.negotiating.saturating_sub(1);
                open.send(Ok(stream));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info: open, error }) => {
                self.negotiating = self.negotiating.saturating_sub(1);
                if matches!(error, StreamUpgradeError::Io(_)) && open.returns() {
                    tracing::debug!(peer = %self.remote, protocol = %self.protocol, "connection lost while opening a stream; routing it again");
                    // Dropped unanswered, it goes back to the behaviour.
                    return;
                }
                let error = match error {
                    StreamUpgradeError::Timeout => OpenStreamError::Timeout,
                    StreamUpgradeError::NegotiationFailed => {
                        OpenStreamError::UnsupportedProtocol(self.protocol.clone())
                    }
                    StreamUpgradeError::Io(error) => OpenStreamError::Io(error),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                open.send(Err(error));
            }
            _ => {}
        }
    }
}
