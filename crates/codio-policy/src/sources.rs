//! Inbound connections counted by where they come from: per source address (IPv4 address,
//! IPv6 /56) and per subnet (IPv4 /24, IPv6 /48), the granularities of go-libp2p's resource
//! manager. Peer ids are free to mint; addresses are not.

use std::{collections::HashMap, net::IpAddr};

/// The source address and subnet keys of `ip`.
pub(crate) fn keys(ip: IpAddr) -> (IpAddr, IpAddr) {
    match ip {
        IpAddr::V4(v4) => (ip, IpAddr::V4((u32::from(v4) & 0xffff_ff00).into())),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let prefix = |len: u32| IpAddr::V6((bits & !(u128::MAX >> len)).into());
            (prefix(56), prefix(48))
        }
    }
}

/// Why a source was refused one more connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    Source(usize),
    Subnet(usize),
}

/// Established inbound connections per source address and per subnet.
#[derive(Debug, Default)]
pub(crate) struct SourceCounts {
    per_source: HashMap<IpAddr, usize>,
    per_subnet: HashMap<IpAddr, usize>,
}

impl SourceCounts {
    /// Whether one more connection from `ip` stays within `per_source` and `per_subnet`.
    pub(crate) fn check(
        &self,
        ip: IpAddr,
        per_source: usize,
        per_subnet: usize,
    ) -> Result<(), Full> {
        let (source, subnet) = keys(ip);
        if self.per_source.get(&source).copied().unwrap_or(0) >= per_source {
            return Err(Full::Source(per_source));
        }
        if self.per_subnet.get(&subnet).copied().unwrap_or(0) >= per_subnet {
            return Err(Full::Subnet(per_subnet));
        }
        Ok(())
    }

    pub(crate) fn add(&mut self, ip: IpAddr) {
        let (source, subnet) = keys(ip);
        *self.per_source.entry(source).or_default() += 1;
        *self.per_subnet.entry(subnet).or_default() += 1;
    }

    pub(crate) fn remove(&mut self, ip: IpAddr) {
        let (source, subnet) = keys(ip);
        for (map, key) in [
            (&mut self.per_source, source),
            (&mut self.per_subnet, subnet),
        ] {
            if let Some(count) = map.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    map.remove(&key);
                }
            }
        }
    }

    /// Established inbound connections from the source address of `ip`.
    pub(crate) fn count(&self, ip: IpAddr) -> usize {
        self.per_source.get(&keys(ip).0).copied().unwrap_or(0)
    }

    /// The most established inbound connections from one source address.
    pub(crate) fn busiest(&self) -> usize {
        self.per_source.values().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_subnets_are_bounded_and_released() {
        let mut counts = SourceCounts::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for _ in 0..2 {
            counts.check(ip("10.0.0.1"), 2, 3).unwrap();
            counts.add(ip("10.0.0.1"));
        }
        assert_eq!(counts.check(ip("10.0.0.1"), 2, 3), Err(Full::Source(2)));
        counts.add(ip("10.0.0.2"));
        assert_eq!(counts.check(ip("10.0.0.3"), 2, 3), Err(Full::Subnet(3)));
        counts.check(ip("10.0.1.3"), 2, 3).unwrap();
        assert_eq!(counts.busiest(), 2);
        counts.remove(ip("10.0.0.1"));
        counts.check(ip("10.0.0.1"), 2, 3).unwrap();
        assert_eq!(keys(ip("2001:db8:1:2ff::1")).0, ip("2001:db8:1:200::"));
        assert_eq!(keys(ip("2001:db8:1:2ff::1")).1, ip("2001:db8:1::"));
    }
}
