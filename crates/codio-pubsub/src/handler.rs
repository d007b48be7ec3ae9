//! Gossipsub's connection handler, quiet until this node uses pub/sub.
//!
//! libp2p-gossipsub 0.50 queues an extensions message for every new peer, so each connection
//! opens a gossipsub stream in each direction at once and keeps both open: two framed codecs
//! with an 8 KiB read buffer and an 8 KiB write buffer each, 32 KiB on every connection of a
//! node that never joins a topic (docs/performance.md, issue 28). [`Handler`] wraps
//! gossipsub's handler and holds back its request for an outbound stream until the node has
//! joined a topic; streams the peer opens are served as before. A node that joins its first
//! topic wakes every connection's handler ([`HandlerIn::Activate`]); connections that open
//! afterwards start awake.
//!
//! Nothing is lost while a handler sleeps: what gossipsub queued for the peer (only the
//! extensions message: subscriptions, grafts, gossip and messages all need a joined topic)
//! waits in gossipsub's bounded per-peer queue and goes out once the handler wakes.

use std::task::{Context, Poll};

use libp2p::swarm::{
    ConnectionHandler, ConnectionHandlerEvent, SubstreamProtocol, handler::ConnectionEvent,
};

/// An event for a [`Handler`] from the pub/sub behaviour.
#[derive(Debug)]
pub enum HandlerIn<I> {
    /// For gossipsub's handler.
    Gossip(I),
    /// This node uses pub/sub now: the handler may open its outbound stream.
    Activate,
}

/// Gossipsub's connection handler, holding back its outbound stream until activated.
pub struct Handler<H: ConnectionHandler> {
    inner: H,
    active: bool,
    /// The outbound stream request gossipsub's handler made while asleep.
    held: Option<SubstreamProtocol<H::OutboundProtocol, H::OutboundOpenInfo>>,
}

impl<H: ConnectionHandler> std::fmt::Debug for Handler<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("active", &self.active)
            .field("held", &self.held.is_some())
            .finish_non_exhaustive()
    }
}

impl<H: ConnectionHandler> Handler<H> {
    /// Wraps `inner`, asleep until [`HandlerIn::Activate`].
    pub(crate) fn new(inner: H) -> Self {
        Self {
            inner,
            active: false,
            held: None,
        }
    }
}

impl<H: ConnectionHandler> ConnectionHandler for Handler<H> {
    type FromBehaviour = HandlerIn<H::FromBehaviour>;
    type ToBehaviour = H::ToBehaviour;
    type InboundProtocol = H::InboundProtocol;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = H::InboundOpenInfo;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.inner.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.inner.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        if self.active
            && let Some(protocol) = self.held.take()
        {
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { protocol });
        }
        // Bounded: gossipsub's handler asks for an outbound stream only while none is open
        // or being opened, so it asks once while asleep; the loop ends at its next other event.
        loop {
            match self.inner.poll(cx) {
                Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { protocol })
                    if !self.active =>
                {
                    self.held = Some(protocol);
                }
                other => return other,
            }
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.inner.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {
            HandlerIn::Gossip(event) => self.inner.on_behaviour_event(event),
            HandlerIn::Activate => self.active = true,
        }
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
        self.inner.on_connection_event(event);
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use futures::task::noop_waker_ref;
    use libp2p::{
        StreamProtocol,
        core::upgrade::{DeniedUpgrade, ReadyUpgrade},
        swarm::{
            ConnectionHandler, ConnectionHandlerEvent, SubstreamProtocol, handler::ConnectionEvent,
        },
    };

    use super::{Handler, HandlerIn};

    /// Asks for one outbound stream at its first poll, as gossipsub's handler does for the
    /// extensions message it queues for every peer; counts the events it was given.
    #[derive(Default)]
    struct Asks {
        asked: bool,
        events: usize,
    }

    impl ConnectionHandler for Asks {
        type FromBehaviour = ();
        type ToBehaviour = ();
        type InboundProtocol = DeniedUpgrade;
        type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
        type InboundOpenInfo = ();
        type OutboundOpenInfo = ();

        fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade> {
            SubstreamProtocol::new(DeniedUpgrade, ())
        }

        fn poll(
            &mut self,
            _: &mut Context<'_>,
        ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), ()>> {
            if std::mem::replace(&mut self.asked, true) {
                return Poll::Pending;
            }
            Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(
                    ReadyUpgrade::new(StreamProtocol::new("/test/1")),
                    (),
                ),
            })
        }

        fn on_behaviour_event(&mut self, (): ()) {
            self.events += 1;
        }

        fn on_connection_event(
            &mut self,
            _: ConnectionEvent<'_, DeniedUpgrade, Self::OutboundProtocol, (), ()>,
        ) {
        }
    }

    fn poll(
        handler: &mut Handler<Asks>,
    ) -> Poll<ConnectionHandlerEvent<ReadyUpgrade<StreamProtocol>, (), ()>> {
        handler.poll(&mut Context::from_waker(noop_waker_ref()))
    }

    #[test]
    fn holds_the_outbound_stream_until_activated_and_passes_events() {
        let mut handler = Handler::new(Asks::default());
        assert!(
            poll(&mut handler).is_pending(),
            "asleep: no outbound stream"
        );
        assert!(handler.held.is_some());
        assert!(poll(&mut handler).is_pending(), "still asleep");
        handler.on_behaviour_event(HandlerIn::Gossip(()));
        assert_eq!(handler.inner.events, 1, "events reach gossipsub's handler");
        handler.on_behaviour_event(HandlerIn::Activate);
        assert!(matches!(
            poll(&mut handler),
            Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { .. })
        ));
        assert!(poll(&mut handler).is_pending(), "asked once");
    }

    #[test]
    fn an_active_handler_asks_at_once() {
        let mut handler = Handler::new(Asks::default());
        handler.on_behaviour_event(HandlerIn::Activate);
        assert!(matches!(
            poll(&mut handler),
            Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { .. })
        ));
        assert!(handler.held.is_none());
    }
}
