//! `NetworkEvent` serialized for logs and scripts: the layers' events nested in it print as
//! the flat objects codio-node has always printed (`{"event": "dead_peer", …}`).

// Test code: a failed expectation panics and fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use codio_network::{
    NetworkEvent, PeerId, nat::Event as NatEvent, nat::NatStatus, policy::Denial,
    policy::Event as PolicyEvent,
};
use libp2p::{core::Endpoint, swarm::ConnectionId};
use serde_json::{Value, json};

fn json_of(event: NetworkEvent) -> Value {
    serde_json::to_value(event).unwrap()
}

#[test]
fn layer_events_serialize_flat_with_their_names() {
    let peer = PeerId::random();
    let id = peer.to_string();
    let denied = PolicyEvent::Denied {
        peer_id: None,
        endpoint: Endpoint::Listener,
        reason: Denial::PendingIncoming { limit: 64 },
        suppressed: 3,
    };
    assert_eq!(
        json_of(NetworkEvent::Policy(denied)),
        json!({"event": "connection_denied", "peer_id": null, "direction": "inbound",
               "reason": "too many pending inbound connections (limit 64)", "suppressed": 3})
    );
    let dead = PolicyEvent::DeadConnection {
        peer_id: peer,
        connection_id: ConnectionId::new_unchecked(7),
        failures: 3,
    };
    assert_eq!(
        json_of(NetworkEvent::Policy(dead)),
        json!({"event": "dead_peer", "peer_id": id, "failures": 3})
    );
    let reconnecting = PolicyEvent::Reconnecting {
        peer_id: peer,
        attempt: 2,
        delay: Duration::from_millis(1500),
    };
    assert_eq!(
        json_of(NetworkEvent::Policy(reconnecting)),
        json!({"event": "reconnecting", "peer_id": id, "attempt": 2, "delay_ms": 1500})
    );
    let gave_up = PolicyEvent::GaveUp {
        peer_id: peer,
        attempts: 5,
    };
    assert_eq!(
        json_of(NetworkEvent::Policy(gave_up))["event"],
        "reconnect_gave_up"
    );
    let address: libp2p::Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().unwrap();
    let public = NatEvent::StatusChanged(NatStatus::Public {
        address: address.clone(),
    });
    assert_eq!(
        json_of(NetworkEvent::Nat(public)),
        json!({"event": "nat_status", "status": "public", "address": address.to_string()})
    );
    let reservation = NatEvent::ReservationAccepted {
        relay: peer,
        renewal: false,
    };
    assert_eq!(
        json_of(NetworkEvent::Nat(reservation)),
        json!({"event": "relay_reservation", "relay": id, "renewal": false})
    );
    let verified = NetworkEvent::ConnectionVerified {
        peer_id: peer,
        rtt: Duration::from_micros(250),
        relayed: true,
    };
    assert_eq!(
        json_of(verified),
        json!({"event": "ping_answered", "peer_id": id, "rtt_us": 250, "relayed": true})
    );
}
