//! Multiaddress helpers: TCP and QUIC addresses, the addresses to listen on, and `/p2p/<peer id>`-terminated addresses, the form
//! peers are dialed by.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// The addresses a node listens on for `address:port`: TCP, and QUIC (UDP, the same port
/// number) when `quic`. The unspecified IPv4 address `0.0.0.0` stands for every interface of
/// both families, so `::` is added: IPv6 listeners are IPv6-only (`IPV6_V6ONLY`, as libp2p
/// sets it), and a dual-stack host needs both.
pub fn listen_addrs(address: IpAddr, port: u16, quic: bool) -> Vec<Multiaddr> {
    let mut ips = vec![address];
    if address == IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
        ips.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }
    let mut addrs = Vec::new();
    for address in ips {
        addrs.push(tcp(address, port));
        if quic {
            addrs.push(self::quic(address, port));
        }
    }
    addrs
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
    fn unspecified_ipv4_listens_on_both_families_and_both_transports() {
        let addrs = |ip: &str, quic| {
            listen_addrs(ip.parse().unwrap(), 7, quic)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            addrs("0.0.0.0", true),
            [
                "/ip4/0.0.0.0/tcp/7",
                "/ip4/0.0.0.0/udp/7/quic-v1",
                "/ip6/::/tcp/7",
                "/ip6/::/udp/7/quic-v1"
            ]
        );
        assert_eq!(
            addrs("0.0.0.0", false),
            ["/ip4/0.0.0.0/tcp/7", "/ip6/::/tcp/7"]
        );
        assert_eq!(
            addrs("127.0.0.1", true),
            ["/ip4/127.0.0.1/tcp/7", "/ip4/127.0.0.1/udp/7/quic-v1"]
        );
        assert_eq!(addrs("::1", false), ["/ip6/::1/tcp/7"]);
        assert!(is_quic(&quic("::1".parse().unwrap(), 1)));
        assert!(!is_quic(&tcp("::1".parse().unwrap(), 1)));
    }
}
