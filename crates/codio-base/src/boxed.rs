//! Connection handlers on the heap, once.
//!
//! libp2p-swarm runs each connection as a task whose future holds the connection's handler
//! inline, and the compiler's layout of that future keeps room for it more than once (the
//! handler moves between states of the task). A composed behaviour's handler is every
//! sub-handler side by side: several KiB for a full node (identify's alone is 3.4 KiB), so
//! each idle connection pays for it about three times. [`Boxed`] wraps a behaviour so that
//! each connection's handler is one heap allocation and the task holds a pointer: the same
//! behaviour, a few KiB less per connection (docs/performance.md has the measurement).
//!
//! ```
//! use codio_base::boxed::Boxed;
//! use libp2p::ping;
//!
//! let behaviour = Boxed::new(ping::Behaviour::default());
//! // Use it where the behaviour was used; fields and methods are reached through it.
//! let _: &ping::Behaviour = &behaviour;
//! ```

use std::{
    ops::{Deref, DerefMut},
    task::{Context, Poll},
};

use libp2p::swarm::{
    ConnectionHandler, ConnectionHandlerEvent, FromSwarm, NetworkBehaviour, SubstreamProtocol,
    THandlerInEvent, ToSwarm, handler::ConnectionEvent,
};

/// A behaviour whose connection handlers are boxed; derefs to the behaviour.
#[derive(Debug)]
pub struct Boxed<B>(B);

impl<B> Boxed<B> {
    /// Wraps `behaviour`.
    pub fn new(behaviour: B) -> Self {
        Self(behaviour)
    }

    /// The behaviour.
    pub fn into_inner(self) -> B {
        self.0
    }
}

impl<B> Deref for Boxed<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.0
    }
}

impl<B> DerefMut for Boxed<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.0
    }
}

/// A connection handler on the heap.
#[derive(Debug)]
pub struct BoxedHandler<H>(Box<H>);

impl<H: ConnectionHandler> ConnectionHandler for BoxedHandler<H> {
    type FromBehaviour = H::FromBehaviour;
    type ToBehaviour = H::ToBehaviour;
    type InboundProtocol = H::InboundProtocol;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = H::InboundOpenInfo;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.0.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.0.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        self.0.poll(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.0.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        self.0.on_behaviour_event(event);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            '_,
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        self.0.on_connection_event(event);
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Boxed<B> {
    type ConnectionHandler = BoxedHandler<B::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    crate::delegate_to!(0, |handler| BoxedHandler(Box::new(handler)));

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.0.on_swarm_event(event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.0.poll(cx)
    }
}
