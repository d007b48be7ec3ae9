//! Inbound connections counted by where they come from: per source address and per subnet,
//! the keys of [`Source`] (IPv4 address or IPv6 /56; IPv4 /24 or IPv6 /48), the same the
//! transport's inbound gate counts pending handshakes by.

use std::{collections::HashMap, net::IpAddr};

use codio_base::Source;

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
        let Source {
            address: source,
            subnet,
        } = Source::of(ip);
        if self.per_source.get(&source).copied().unwrap_or(0) >= per_source {
            return Err(Full::Source(per_source));
        }
        if self.per_subnet.get(&subnet).copied().unwrap_or(0) >= per_subnet {
            return Err(Full::Subnet(per_subnet));
        }
        Ok(())
    }

    pub(crate) fn add(&mut self, ip: IpAddr) {
        let Source {
            address: source,
            subnet,
        } = Source::of(ip);
        *self.per_source.entry(source).or_default() += 1;
        *self.per_subnet.entry(subnet).or_default() += 1;
    }

    pub(crate) fn remove(&mut self, ip: IpAddr) {
        let Source {
            address: source,
            subnet,
        } = Source::of(ip);
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
        self.per_source
            .get(&Source::of(ip).address)
            .copied()
            .unwrap_or(0)
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
    }
}
