//! Multiaddress helpers: TCP addresses, and `/p2p/<peer id>`-terminated addresses, the form
//! peers are dialed by.

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

/// The TCP multiaddress of `ip:port`.
pub fn tcp(ip: std::net::IpAddr, port: u16) -> Multiaddr {
    let ip = match ip {
        std::net::IpAddr::V4(ip) => Protocol::Ip4(ip),
        std::net::IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    Multiaddr::empty().with(ip).with(Protocol::Tcp(port))
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
}
