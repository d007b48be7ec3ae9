//! A behaviour that wraps another delegates the connection set-up methods of
//! `NetworkBehaviour` and its handlers' events to it; [`delegate_to!`] writes them.

/// Writes the methods of a `NetworkBehaviour` impl that a wrapping behaviour passes to the
/// behaviour in field `$field` unchanged: the four connection set-up methods
/// (`handle_pending_inbound_connection`, `handle_established_inbound_connection`,
/// `handle_pending_outbound_connection`, `handle_established_outbound_connection`) and
/// `on_connection_handler_event`. The wrapper writes `on_swarm_event` and `poll` itself. With a
/// second argument, each established connection's handler is passed through it (a function or
/// closure from the inner handler to `Self::ConnectionHandler`).
///
/// ```
/// use std::task::{Context, Poll};
///
/// use libp2p::{
///     ping,
///     swarm::{FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, ToSwarm},
/// };
///
/// /// Ping, counting the connections it saw.
/// struct Counted {
///     inner: ping::Behaviour,
///     seen: usize,
/// }
///
/// impl NetworkBehaviour for Counted {
///     type ConnectionHandler = THandler<ping::Behaviour>;
///     type ToSwarm = ping::Event;
///
///     codio_base::delegate_to!(inner);
///
///     fn on_swarm_event(&mut self, event: FromSwarm) {
///         if let FromSwarm::ConnectionEstablished(_) = event {
///             self.seen += 1;
///         }
///         self.inner.on_swarm_event(event);
///     }
///
///     fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
///         self.inner.poll(cx)
///     }
/// }
/// ```
#[macro_export]
macro_rules! delegate_to {
    ($field:tt) => {
        $crate::delegate_to!($field, |handler| handler);
    };
    ($field:tt, $wrap:expr) => {
        fn handle_pending_inbound_connection(
            &mut self,
            connection_id: $crate::__libp2p::swarm::ConnectionId,
            local_addr: &$crate::__libp2p::Multiaddr,
            remote_addr: &$crate::__libp2p::Multiaddr,
        ) -> ::std::result::Result<(), $crate::__libp2p::swarm::ConnectionDenied> {
            $crate::__libp2p::swarm::NetworkBehaviour::handle_pending_inbound_connection(
                &mut self.$field,
                connection_id,
                local_addr,
                remote_addr,
            )
        }

        fn handle_established_inbound_connection(
            &mut self,
            connection_id: $crate::__libp2p::swarm::ConnectionId,
            peer: $crate::__libp2p::PeerId,
            local_addr: &$crate::__libp2p::Multiaddr,
            remote_addr: &$crate::__libp2p::Multiaddr,
        ) -> ::std::result::Result<
            $crate::__libp2p::swarm::THandler<Self>,
            $crate::__libp2p::swarm::ConnectionDenied,
        > {
            let handler =
                $crate::__libp2p::swarm::NetworkBehaviour::handle_established_inbound_connection(
                    &mut self.$field,
                    connection_id,
                    peer,
                    local_addr,
                    remote_addr,
                )?;
            ::std::result::Result::Ok(($wrap)(handler))
        }

        fn handle_pending_outbound_connection(
            &mut self,
            connection_id: $crate::__libp2p::swarm::ConnectionId,
            maybe_peer: ::std::option::Option<$crate::__libp2p::PeerId>,
            addresses: &[$crate::__libp2p::Multiaddr],
            effective_role: $crate::__libp2p::core::Endpoint,
        ) -> ::std::result::Result<
            ::std::vec::Vec<$crate::__libp2p::Multiaddr>,
            $crate::__libp2p::swarm::ConnectionDenied,
        > {
            $crate::__libp2p::swarm::NetworkBehaviour::handle_pending_outbound_connection(
                &mut self.$field,
                connection_id,
                maybe_peer,
                addresses,
                effective_role,
            )
        }

        fn handle_established_outbound_connection(
            &mut self,
            connection_id: $crate::__libp2p::swarm::ConnectionId,
            peer: $crate::__libp2p::PeerId,
            addr: &$crate::__libp2p::Multiaddr,
            role_override: $crate::__libp2p::core::Endpoint,
            port_use: $crate::__libp2p::core::transport::PortUse,
        ) -> ::std::result::Result<
            $crate::__libp2p::swarm::THandler<Self>,
            $crate::__libp2p::swarm::ConnectionDenied,
        > {
            let handler =
                $crate::__libp2p::swarm::NetworkBehaviour::handle_established_outbound_connection(
                    &mut self.$field,
                    connection_id,
                    peer,
                    addr,
                    role_override,
                    port_use,
                )?;
            ::std::result::Result::Ok(($wrap)(handler))
        }

        fn on_connection_handler_event(
            &mut self,
            peer_id: $crate::__libp2p::PeerId,
            connection_id: $crate::__libp2p::swarm::ConnectionId,
            event: $crate::__libp2p::swarm::THandlerOutEvent<Self>,
        ) {
            $crate::__libp2p::swarm::NetworkBehaviour::on_connection_handler_event(
                &mut self.$field,
                peer_id,
                connection_id,
                event,
            );
        }
    };
}
