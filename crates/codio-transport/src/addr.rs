//! Multiaddress helpers: TCP and QUIC addresses. (`/p2p/<peer id>` suffixes and the IP of an
//! address: `codio_base::addr`.)

use std::net::IpAddr;

use libp2p::{Multiaddr, multiaddr::Protocol};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_addresses_are_told_from_tcp_ones() {
        assert!(is_quic(&quic("::1".parse().unwrap(), 1)));
        assert!(!is_quic(&tcp("::1".parse().unwrap(), 1)));
    }
}
