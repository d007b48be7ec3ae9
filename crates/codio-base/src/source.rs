//! Where a connection comes from, at the granularities every per-source bound counts by (those
//! of go-libp2p's resource manager): the IPv4 address or IPv6 /56, and the IPv4 /24 or IPv6
//! /48. Peer ids are free to mint; addresses are not. The inbound gate (pending handshakes) and
//! the policy (established connections) count by the same keys, so they agree on what one
//! source is.

use std::net::IpAddr;

use libp2p::Multiaddr;

/// A connection's source address and subnet keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    /// The address (IPv4) or /56 (IPv6).
    pub address: IpAddr,
    /// The /24 (IPv4) or /48 (IPv6).
    pub subnet: IpAddr,
}

impl Source {
    /// The source of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self {
                address: ip,
                subnet: IpAddr::V4((u32::from(v4) & 0xffff_ff00).into()),
            },
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let prefix = |len: u32| IpAddr::V6((bits & !(u128::MAX >> len)).into());
                Self {
                    address: prefix(56),
                    subnet: prefix(48),
                }
            }
        }
    }

    /// The source of the first IP address in `address` (`None` for addresses without one, such
    /// as memory addresses).
    pub fn of_multiaddr(address: &Multiaddr) -> Option<Self> {
        crate::addr::ip_of(address).map(Self::of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn sources_group_by_address_and_subnet() {
        let a = Source::of(ip("203.0.113.7"));
        assert_eq!(a.address, ip("203.0.113.7"));
        assert_eq!(a.subnet, ip("203.0.113.0"));
        assert_eq!(a.subnet, Source::of(ip("203.0.113.200")).subnet);
        assert_ne!(a.subnet, Source::of(ip("203.0.114.7")).subnet);
        let b = Source::of(ip("2001:db8:1:2:3::9"));
        assert_eq!(b.address, ip("2001:db8:1::"));
        assert_eq!(b.subnet, ip("2001:db8:1::"));
        let c = Source::of(ip("2001:db8:1:ff03::1"));
        assert_eq!(c.address, ip("2001:db8:1:ff00::"));
        assert_eq!(c.subnet, b.subnet);
        assert_eq!(
            Source::of_multiaddr(&"/ip6/2001:db8:1:ff03::1/udp/1/quic-v1".parse().unwrap()),
            Some(c)
        );
        assert_eq!(Source::of_multiaddr(&"/memory/5".parse().unwrap()), None);
    }
}
