//! Identify: the protocol ([`Identify`], wire-compatible with libp2p-identify, lean per
//! connection) and what its results may put into the routing table
//! ([`usable_addresses`]): at most a few addresses per peer, replaced rather than
//! accumulated, non-global ones only from peers this node reaches over a non-global network
//! (judged by the connection's own remote address, never by what the peer claims), and a
//! burst of identifies per peer, then one per interval (a peer can push identify as often as
//! it likes; above the rate its pushes are dropped and counted).

mod behaviour;
mod handler;
mod wire;

pub use behaviour::{Event, Identify, IdentifyConfig};
pub use wire::IdentifyError;

use libp2p::{Multiaddr, identify};

use codio_base::addr::is_non_global;

/// How far an address reaches: what decides whether another peer can use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Through a relay (`/p2p-circuit`): usable wherever the relay is.
    Relayed,
    /// Loopback: this host only.
    Loopback,
    /// A private, shared, link-local or unique-local network.
    Local,
    /// Anywhere (or not an IP address at all: DNS names).
    Global,
}

fn scope(address: &Multiaddr) -> Scope {
    if codio_base::addr::is_relayed(address) {
        return Scope::Relayed;
    }
    match codio_base::addr::ip_of(address) {
        Some(ip) if ip.is_loopback() => Scope::Loopback,
        Some(ip) if is_non_global(ip) => Scope::Local,
        _ => Scope::Global,
    }
}

/// The listen addresses of `info` worth dialing, at most `max`, in the peer's order:
/// relayed and global ones always; loopback ones only from a peer whose connection comes
/// from loopback (`remote`, the connection's remote address: it runs on this host); other
/// non-global ones only when `private` is set or the connection comes from a non-global
/// address (the peer shares a network with us). The `observed_addr` the peer writes into
/// its message is not used: a peer at a global address could claim anything there.
pub fn usable_addresses(
    info: &identify::Info,
    remote: &Multiaddr,
    max: usize,
    private: bool,
) -> Vec<Multiaddr> {
    let observed = scope(remote);
    let local = private || matches!(observed, Scope::Local | Scope::Loopback);
    info.listen_addrs
        .iter()
        .filter(|address| match scope(address) {
            Scope::Relayed | Scope::Global => true,
            Scope::Loopback => observed == Scope::Loopback,
            Scope::Local => local,
        })
        .take(max)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use libp2p::PeerId;

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
    fn a_burst_then_one_identify_per_interval_per_peer() {
        let mut rate = codio_base::Buckets::new(codio_base::Rate::every(Duration::from_secs(2), 3));
        let (peer, other) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        for n in 0..3 {
            assert!(rate.admit(peer, ms(n)), "burst {n}");
        }
        assert!(!rate.admit(peer, ms(5)));
        assert!(rate.admit(other, ms(5)), "buckets are per peer");
        assert!(!rate.admit(peer, ms(1999)));
        assert!(rate.admit(peer, ms(2000)));
        assert!(!rate.admit(peer, ms(2001)));
        // A flood for 60 s gets 30 through, one per interval.
        let admitted = (0..12_000u64)
            .filter(|n| rate.admit(peer, ms(2005 + n * 5)))
            .count();
        assert_eq!(admitted, 30);
        // After a quiet minute the burst is back, whole.
        let later = t0 + Duration::from_secs(180);
        let burst = (0..5).filter(|_| rate.admit(peer, later)).count();
        assert_eq!(burst, 3);
        rate.forget(&peer);
        assert!(rate.admit(peer, later));
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
        let kept = usable_addresses(&from_internet, &from_internet.observed_addr, 8, false);
        assert_eq!(kept.len(), 2, "{kept:?}");
        // Configured: private networks yes, but never another host's loopback.
        assert_eq!(
            usable_addresses(&from_internet, &from_internet.observed_addr, 8, true).len(),
            4
        );
        let from_lan = info("/ip4/192.168.1.9/tcp/5", &all);
        assert_eq!(
            usable_addresses(&from_lan, &from_lan.observed_addr, 8, false).len(),
            4
        );
        // What the peer writes as the address it sees us at does not count: a peer at a
        // global address claiming loopback gets no loopback or private address in.
        let liar = info("/ip4/127.0.0.1/tcp/5", &all);
        let from_afar: Multiaddr = "/ip4/198.51.100.7/tcp/5".parse().unwrap();
        assert_eq!(usable_addresses(&liar, &from_afar, 8, false).len(), 2);
        let from_this_host = info("/ip4/127.0.0.1/tcp/5", &all);
        assert_eq!(
            usable_addresses(&from_this_host, &from_this_host.observed_addr, 8, false).len(),
            5
        );
        // A relayed address is usable wherever its relay is, whatever the relay's IP.
        let circuit = "/ip4/10.77.100.1/tcp/4001/p2p/12D3KooWHPQrmHchXM9yTdtfsBqLUsTCf2uhqdbTyiMGnz9tm1yW/p2p-circuit";
        let through_relay = info("/p2p-circuit", &[circuit, "/ip4/10.0.0.5/tcp/1"]);
        let kept = usable_addresses(&through_relay, &through_relay.observed_addr, 8, false);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0].to_string(), circuit);
        let many: Vec<String> = (0..300)
            .map(|p| format!("/ip4/203.0.113.9/tcp/{p}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let flood = info("/ip4/198.51.100.7/tcp/5", &many);
        let kept = usable_addresses(&flood, &flood.observed_addr, 8, false);
        assert_eq!(kept.len(), 8);
        assert_eq!(kept[0].to_string(), "/ip4/203.0.113.9/tcp/0");
        assert!(is_non_global("100.64.0.1".parse().unwrap()));
        assert!(is_non_global("fd00::1".parse().unwrap()));
        assert!(!is_non_global("2001:db8::1".parse().unwrap()));
    }
}
