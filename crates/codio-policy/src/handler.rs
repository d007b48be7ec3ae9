//! The policy's connection handler: speaks no protocol, only decides whether its connection
//! is kept alive while no protocol uses it.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    core::upgrade::DeniedUpgrade,
    swarm::{
        ConnectionHandler, ConnectionHandlerEvent, SubstreamProtocol, handler::ConnectionEvent,
    },
};

/// Whether the connection should stay open while idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive(pub bool);

/// Keeps its connection alive while the behaviour wants it (a peer's primary connection, up
/// to the low watermark); a released connection closes once idle for the swarm's idle
/// timeout.
#[derive(Debug)]
pub struct Handler {
    keep_alive: bool,
}

impl Handler {
    /// A handler keeping its connection alive until told otherwise.
    pub fn new() -> Self {
        Self { keep_alive: true }
    }
}

impl Default for Handler {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = KeepAlive;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep_alive
    }

    fn on_behaviour_event(&mut self, event: KeepAlive) {
        self.keep_alive = event.0;
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        _: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        // No protocol is spoken: nothing can be negotiated on this handler.
    }
}
