//! Multiaddress helpers: TCP and QUIC addresses, and `/p2p/<peer id>`-terminated addresses,
//! the form peers are dialed by.

use std::net::IpAddr;

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

fn ip(ip: IpAddr) -> Multiaddr {
    Multiaddr::empty().with(match ip {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    })
}

/// The TCP multiaddress of `ip:port`.
pub fn tcp(address: IpAddr, port: u16) -> Multiaddr {
    ip(address).with(Protocol::Tcp(port))
}

/// The QUIC (v1) multiaddress of `ip:port`.
pub fn quic(address: IpAddr, port: u16) -> Multiaddr {
    ip(address).with(Protocol::Udp(port)).with(Protocol::QuicV1)
}

/// Whether `address` is a QUIC one.
pub fn is_quic(address: &Multiaddr) -> bool {
    address.iter().any(|p| matches!(p, Protocol::QuicV1))
}

/// The peer id of a `/p2p/<id>`-terminated address.
pub fn peer_id_of(address: &Multiaddr) -> Option<PeerId> {
    match address.iter().last() {
        Some(Protocol::P2p(peer_id)) => Some(peer_id),
        _ => None,
    }
}

/// `address` without a trailing `/p2p/<id>`.
pub fn without_p2p(mut address: Multiaddr) -> Multiaddr {
    if peer_id_of(&address).is_some() {
        address.pop();
    }
    address
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_suffix() {
        let peer = PeerId::random();
        let with: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}").parse().unwrap();
        let without: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert_eq!(peer_id_of(&with), Some(peer));
        assert_eq!(peer_id_of(&without), None);
        assert_eq!(without_p2p(with), without.clone());
        assert_eq!(without_p2p(without.clone()), without);
    }

    #[test]
    fn quic_addresses_are_told_from_tcp_ones() {
        assert!(is_quic(&quic("::1".parse().unwrap(), 1)));
        assert!(!is_quic(&tcp("::1".parse().unwrap(), 1)));
    }
}
