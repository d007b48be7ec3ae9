//! What identify may put into the routing table: at most a few addresses per peer, replaced
//! rather than accumulated, non-global ones only from peers on a non-global network, and one
//! identify per peer per interval (a peer can push identify as often as it likes; above the
//! rate its pushes are dropped and counted).

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId, identify, multiaddr::Protocol};

/// At most one identify per peer per `min_interval`: pure state fed an [`Instant`]. Holds an
/// entry per connected peer only (the behaviour forgets a peer with its last connection).
#[derive(Debug)]
pub struct IdentifyRate {
    min_interval: Duration,
    last: HashMap<PeerId, Instant>,
}

impl IdentifyRate {
    /// At most one identify per peer per `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last: HashMap::new(),
        }
    }

    /// Whether an identify of `peer` arriving at `now` is processed (the first always is).
    pub fn admit(&mut self, peer: PeerId, now: Instant) -> bool {
        match self.last.get(&peer) {
            Some(last) if now.saturating_duration_since(*last) < self.min_interval => false,
            _ => {
                self.last.insert(peer, now);
                true
            }
        }
    }

    /// `peer` is gone: its next identify is processed at once.
    pub fn forget(&mut self, peer: &PeerId) {
        self.last.remove(peer);
    }
}

/// Whether `ip` is reachable only on a local or private network (loopback, RFC 1918, shared
/// address space, link-local, unique-local, unspecified).
fn is_non_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

fn address_is_non_global(address: &Multiaddr) -> bool {
    address.iter().any(|p| match p {
        Protocol::Ip4(ip) => is_non_global(ip.into()),
        Protocol::Ip6(ip) => is_non_global(ip.into()),
        _ => false,
    })
}

/// The listen addresses of `info` worth dialing, at most `max`, in the peer's order:
/// non-global ones only when `private` is set or the peer reached us over a non-global
/// address itself (then it shares a network with us).
pub fn usable_addresses(info: &identify::Info, max: usize, private: bool) -> Vec<Multiaddr> {
    let local = private || address_is_non_global(&info.observed_addr);
    info.listen_addrs
        .iter()
        .filter(|address| local || !address_is_non_global(address))
        .take(max)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(observed: &str, listen: &[&str]) -> identify::Info {
        identify::Info {
            public_key: libp2p::identity::Keypair::generate_ed25519().public(),
            protocol_version: String::new(),
            agent_version: String::new(),
            listen_addrs: listen.iter().map(|a| a.parse().unwrap()).collect(),
            protocols: vec![],
            observed_addr: observed.parse().unwrap(),
            signed_peer_record: None,
        }
    }

    #[test]
    fn one_identify_per_interval_per_peer() {
        let mut rate = IdentifyRate::new(Duration::from_secs(2));
        let (peer, other) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        assert!(rate.admit(peer, t0));
        assert!(!rate.admit(peer, t0 + Duration::from_millis(5)));
        assert!(rate.admit(other, t0 + Duration::from_millis(5)));
        assert!(!rate.admit(peer, t0 + Duration::from_millis(1999)));
        assert!(rate.admit(peer, t0 + Duration::from_secs(2)));
        rate.forget(&peer);
        assert!(rate.admit(peer, t0 + Duration::from_millis(2001)));
    }

    #[test]
    fn addresses_are_capped_and_non_global_ones_need_a_shared_network() {
        let public = ["/ip4/203.0.113.1/tcp/1", "/ip4/203.0.113.2/tcp/1"];
        let private = [
            "/ip4/10.0.0.1/tcp/1",
            "/ip4/127.0.0.1/tcp/1",
            "/ip6/fe80::1/tcp/1",
        ];
        let all: Vec<&str> = private.iter().chain(&public).copied().collect();
        let from_internet = info("/ip4/198.51.100.7/tcp/5", &all);
        let kept = usable_addresses(&from_internet, 8, false);
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(usable_addresses(&from_internet, 8, true).len(), 5);
        let from_lan = info("/ip4/192.168.1.9/tcp/5", &all);
        assert_eq!(usable_addresses(&from_lan, 8, false).len(), 5);
        let many: Vec<String> = (0..300)
            .map(|p| format!("/ip4/203.0.113.9/tcp/{p}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let flood = info("/ip4/198.51.100.7/tcp/5", &many);
        let kept = usable_addresses(&flood, 8, false);
        assert_eq!(kept.len(), 8);
        assert_eq!(kept[0].to_string(), "/ip4/203.0.113.9/tcp/0");
        assert!(is_non_global("100.64.0.1".parse().unwrap()));
        assert!(is_non_global("fd00::1".parse().unwrap()));
        assert!(!is_non_global("2001:db8::1".parse().unwrap()));
    }
}
