//! Listening on several addresses at once (TCP and QUIC, IPv4 and IPv6): which addresses a
//! node listens on, which of them it cannot do without, and when starting is done.
//!
//! [`plan`] turns a configuration into addresses, each [`Need::Required`] or
//! [`Need::Optional`]; [`Listening`] follows the listeners a start opened until each reported
//! its first address or failed, then gives the outcome: the bound addresses, or the failure
//! of a required address (or of every address). Pure state: the caller feeds it the swarm's
//! listener events.
//!
//! ```
//! use codio_transport::listen::{Listening, Need, plan};
//! use libp2p::core::transport::ListenerId;
//!
//! let addresses = plan(&[], "0.0.0.0".parse().unwrap(), 0, true);
//! assert_eq!(addresses.len(), 4); // TCP and QUIC, on 0.0.0.0 and ::
//! assert_eq!(addresses[2].1, Need::Optional); // IPv6: the host may not have it
//!
//! let mut listening = Listening::default();
//! let (v4, v6) = (ListenerId::next(), ListenerId::next());
//! listening.expect(v4, addresses[0].0.clone(), addresses[0].1);
//! listening.expect(v6, addresses[2].0.clone(), addresses[2].1);
//! listening.bound(v4, "/ip4/10.0.0.1/tcp/4001".parse().unwrap());
//! assert!(listening.outcome().is_none()); // IPv6 has not answered yet
//! listening.closed(v6, "address family not supported".into());
//! assert_eq!(listening.outcome().unwrap().unwrap().len(), 1);
//! ```

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use libp2p::{Multiaddr, core::transport::ListenerId};

use crate::addr;

/// Whether a node can start without an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Starting fails when this address cannot be listened on.
    Required,
    /// A failure is logged and starting goes on (IPv6 on a host that may have none).
    Optional,
}

/// The addresses to listen on: `explicit` ones when given (each required); otherwise TCP and,
/// with `quic`, QUIC (UDP, the same port number) on `ip:port`. The unspecified IPv4 address
/// `0.0.0.0` stands for every interface of both families, so `::` is added, optional since a
/// host may have no IPv6: IPv6 listeners are IPv6-only (`IPV6_V6ONLY`, as libp2p sets it),
/// and a dual-stack host needs both.
pub fn plan(explicit: &[Multiaddr], ip: IpAddr, port: u16, quic: bool) -> Vec<(Multiaddr, Need)> {
    if !explicit.is_empty() {
        return explicit
            .iter()
            .map(|a| (a.clone(), Need::Required))
            .collect();
    }
    let mut ips = vec![(ip, Need::Required)];
    if ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
        ips.push((IpAddr::V6(Ipv6Addr::UNSPECIFIED), Need::Optional));
    }
    let mut addrs = Vec::new();
    for (ip, need) in ips {
        addrs.push((addr::tcp(ip, port), need));
        if quic {
            addrs.push((addr::quic(ip, port), need));
        }
    }
    addrs
}

/// An address that could not be listened on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenFailure {
    /// The address.
    pub address: Multiaddr,
    /// Whether the node needed it.
    pub need: Need,
    /// Why it failed.
    pub reason: String,
}

/// The listeners of one start, until each reported its first address or failed.
#[derive(Debug, Default)]
pub struct Listening {
    pending: HashMap<ListenerId, (Multiaddr, Need)>,
    bound: Vec<Multiaddr>,
    failed: Vec<ListenFailure>,
}

impl Listening {
    /// A listener opened for `address`, waiting for its first address.
    pub fn expect(&mut self, id: ListenerId, address: Multiaddr, need: Need) {
        self.pending.insert(id, (address, need));
    }

    /// `address` could not even be listened on.
    pub fn refused(&mut self, address: Multiaddr, need: Need, reason: String) {
        self.failed.push(ListenFailure {
            address,
            need,
            reason,
        });
    }

    /// Listener `id` reported `address` (its first, or a further one).
    pub fn bound(&mut self, id: ListenerId, address: Multiaddr) {
        self.pending.remove(&id);
        if !self.bound.contains(&address) {
            self.bound.push(address);
        }
    }

    /// Listener `id` closed: a failure if it never reported an address.
    pub fn closed(&mut self, id: ListenerId, reason: String) {
        if let Some((address, need)) = self.pending.remove(&id) {
            self.refused(address, need, reason);
        }
    }

    /// The failures so far (required and optional).
    pub fn failures(&self) -> &[ListenFailure] {
        &self.failed
    }

    /// `None` while a listener has not answered; then the bound addresses, or the first
    /// failure of a required address (or the first failure, when nothing is bound).
    pub fn outcome(&self) -> Option<Result<Vec<Multiaddr>, ListenFailure>> {
        if !self.pending.is_empty() {
            return None;
        }
        let required = self.failed.iter().find(|f| f.need == Need::Required);
        match (required, self.failed.first()) {
            (Some(failure), _) => Some(Err(failure.clone())),
            (None, Some(failure)) if self.bound.is_empty() => Some(Err(failure.clone())),
            _ => Some(Ok(self.bound.clone())),
        }
    }
}

/// A node's listen addresses, shared between the task that sees listener events (the only
/// writer) and handles that read them; TCP addresses first, then QUIC. Each update is one push
/// or retain, so a poisoned lock still holds a usable list.
#[derive(Debug, Clone, Default)]
pub struct ListenAddrs(std::sync::Arc<std::sync::RwLock<Vec<Multiaddr>>>);

impl ListenAddrs {
    /// The addresses now.
    pub fn get(&self) -> Vec<Multiaddr> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A listener reported `address`.
    pub fn added(&self, address: &Multiaddr) {
        let mut addrs = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !addrs.contains(address) {
            addrs.push(address.clone());
            addrs.sort_by_key(addr::is_quic);
        }
    }

    /// These addresses expired or their listener closed.
    pub fn removed(&self, gone: &[Multiaddr]) {
        let mut addrs = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        addrs.retain(|a| !gone.contains(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn unspecified_ipv4_listens_on_both_families_and_both_transports() {
        let addrs = |ip: &str, quic| {
            plan(&[], ip.parse().unwrap(), 7, quic)
                .iter()
                .map(|(a, _)| a.to_string())
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
        let needs: Vec<Need> = plan(&[], "0.0.0.0".parse().unwrap(), 7, true)
            .into_iter()
            .map(|(_, need)| need)
            .collect();
        assert_eq!(
            needs,
            [
                Need::Required,
                Need::Required,
                Need::Optional,
                Need::Optional
            ]
        );
    }

    #[test]
    fn explicit_addresses_are_all_required_and_replace_the_shorthand() {
        let explicit = [addr("/ip6/::1/udp/5/quic-v1")];
        let plan = plan(&explicit, "0.0.0.0".parse().unwrap(), 4001, true);
        assert_eq!(plan, [(explicit[0].clone(), Need::Required)]);
    }

    #[test]
    fn a_specific_ip_is_required_on_both_transports() {
        let plan = plan(&[], "127.0.0.1".parse().unwrap(), 0, true);
        assert_eq!(plan.len(), 2);
        assert!(plan.iter().all(|(_, need)| *need == Need::Required));
    }

    #[test]
    fn a_required_failure_fails_the_start_and_an_optional_one_does_not() {
        let (a, b) = (ListenerId::next(), ListenerId::next());
        let mut listening = Listening::default();
        listening.expect(a, addr("/ip4/0.0.0.0/tcp/0"), Need::Required);
        listening.refused(addr("/ip6/::/tcp/0"), Need::Optional, "no IPv6".into());
        listening.expect(b, addr("/ip4/0.0.0.0/udp/0/quic-v1"), Need::Required);
        listening.bound(a, addr("/ip4/127.0.0.1/tcp/1"));
        listening.bound(a, addr("/ip4/10.0.0.1/tcp/1"));
        assert_eq!(listening.outcome(), None, "QUIC has not answered");
        listening.closed(b, "port in use".into());
        let failure = listening.outcome().unwrap().unwrap_err();
        assert_eq!(failure.address, addr("/ip4/0.0.0.0/udp/0/quic-v1"));
        assert_eq!(listening.failures().len(), 2);
    }

    #[test]
    fn nothing_bound_is_a_failure_even_when_optional() {
        let mut listening = Listening::default();
        listening.refused(addr("/ip6/::/tcp/0"), Need::Optional, "no IPv6".into());
        assert_eq!(listening.outcome().unwrap().unwrap_err().reason, "no IPv6");
        let mut listening = Listening::default();
        let id = ListenerId::next();
        listening.expect(id, addr("/ip6/::/tcp/0"), Need::Optional);
        listening.closed(id, "gone".into());
        listening.refused(addr("/ip4/0.0.0.0/tcp/0"), Need::Optional, "x".into());
        assert!(listening.outcome().unwrap().is_err());
        let mut ok = Listening::default();
        ok.expect(id, addr("/ip4/0.0.0.0/tcp/0"), Need::Required);
        ok.bound(id, addr("/ip4/127.0.0.1/tcp/9"));
        ok.closed(id, "closed later".into());
        assert_eq!(ok.outcome(), Some(Ok(vec![addr("/ip4/127.0.0.1/tcp/9")])));
    }
}
