//! Multiaddress and IP helpers: the IP of an address, the `/p2p/<id>` suffix peers are dialed
//! by, and the one rule for which addresses reach only a local network.

use std::net::IpAddr;

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

/// The first IP address in `address` (`None` for addresses without one: DNS names, memory
/// addresses, a relayed address's circuit part has the relay's IP first).
pub fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    address.iter().find_map(|protocol| match protocol {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

/// The IP of a direct connection's remote address: `None` for relayed addresses (the IP
/// there is the relay's, not the peer's) and addresses without one.
pub fn direct_ip_of(address: &Multiaddr) -> Option<IpAddr> {
    if is_relayed(address) {
        return None;
    }
    ip_of(address)
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

/// `address` ending in `/p2p/<peer>`: the form a peer is dialed by (an existing `/p2p/`
/// suffix is replaced).
pub fn with_p2p(address: Multiaddr, peer: PeerId) -> Multiaddr {
    without_p2p(address).with(Protocol::P2p(peer))
}

/// Whether `address` goes through a relay (`/p2p-circuit`).
pub fn is_relayed(address: &Multiaddr) -> bool {
    address.iter().any(|p| p == Protocol::P2pCircuit)
}

/// Whether `ip` reaches only a local or private network: loopback, unspecified, RFC 1918
/// private, shared address space (CGNAT, 100.64.0.0/10), link-local (IPv4 and IPv6) and
/// unique-local (fc00::/7). The one rule every layer judges addresses by.
pub fn is_non_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_private()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_non_global(v4.into());
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn non_global_addresses() {
        for local in [
            "127.0.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_non_global(ip(local)), "{local} is non-global");
        }
        for global in [
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "198.51.100.7",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_non_global(ip(global)), "{global} is global");
        }
    }

    #[test]
    fn p2p_suffixes() {
        let peer = PeerId::random();
        let bare: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let full = with_p2p(bare.clone(), peer);
        assert_eq!(peer_id_of(&full), Some(peer));
        assert_eq!(peer_id_of(&bare), None);
        assert_eq!(without_p2p(full.clone()), bare);
        assert_eq!(without_p2p(bare.clone()), bare);
        let other = PeerId::random();
        assert_eq!(peer_id_of(&with_p2p(full, other)), Some(other));
        assert_eq!(ip_of(&bare), Some(ip("127.0.0.1")));
        assert_eq!(ip_of(&"/dns4/example.com/tcp/1".parse().unwrap()), None);
        assert!(!is_relayed(&bare));
        let relayed: Multiaddr = format!("/ip4/1.2.3.4/tcp/1/p2p/{peer}/p2p-circuit")
            .parse()
            .unwrap();
        assert!(is_relayed(&relayed));
        assert_eq!(ip_of(&relayed), Some(ip("1.2.3.4")));
        assert_eq!(direct_ip_of(&relayed), None);
        assert_eq!(direct_ip_of(&bare), Some(ip("127.0.0.1")));
    }
}
