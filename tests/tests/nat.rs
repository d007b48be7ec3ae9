//! NAT traversal on a NAT lab: AutoNAT, automatic relay reservations, relayed connections
//! upgraded to direct ones by hole punching, DHT lookups of relayed peers.

// Test code: a failed expectation panics and fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use codio_tests::{
    natlab::NatLab,
    netns, node_binary,
    process::{NodeProcess, field},
};

const WAIT: Duration = Duration::from_secs(45);

/// Flags every lab node gets: lab addresses are private, so AutoNAT must accept them; probes
/// and dial-backs are quick.
const LAB: [&str; 11] = [
    "--no-mdns",
    "--listen-ip",
    "0.0.0.0",
    "--listen-port",
    "4001",
    "--autonat-private-ips",
    "--autonat-boot-delay-ms",
    "500",
    "--autonat-retry-ms",
    "2000",
    "--connect-timeout-ms=3000",
];

async fn peer_id(node: &mut NodeProcess, what: &str) -> String {
    let line = node
        .wait_for_line(WAIT, &format!("{what} peer id"), |l| {
            l.contains("local peer id")
        })
        .await;
    field(&line, "peer_id").unwrap().to_owned()
}

/// The relay, A (private: reserved on the relay) and B (connected to A through the relay) of
/// one lab; A and B bootstrap from the relay at `relay_addr` and get `flags`, B `b_flags`
/// too.
struct Relayed {
    relay: NodeProcess,
    a: NodeProcess,
    b: NodeProcess,
    a_id: String,
    bootstrap: String,
}

impl Relayed {
    /// Starts the three and waits until B reports its relayed connection to A.
    async fn start(lab: &NatLab, relay_addr: &str, flags: &[String]) -> Self {
        let binary = node_binary();
        let mut relay = NodeProcess::spawn_command(
            lab.command(&lab.relay, &binary),
            LAB.iter().copied().chain([
                "--relay-server",
                "--kad-server",
                "--external-addr",
                relay_addr,
            ]),
        );
        let relay_id = peer_id(&mut relay, "relay").await;
        let bootstrap = format!("{relay_addr}/p2p/{relay_id}");
        let args = |extra: &[&str]| {
            LAB.iter()
                .copied()
                .chain(["--bootstrap", &bootstrap])
                .chain(flags.iter().map(String::as_str))
                .chain(extra.iter().copied())
                .map(str::to_owned)
                .collect::<Vec<String>>()
        };
        let mut a = NodeProcess::spawn_command(lab.command(&lab.private1, &binary), args(&[]));
        let a_id = peer_id(&mut a, "A").await;
        a.wait_for_line(WAIT, "A private", |l| {
            l.contains("nat status") && l.contains("status=private")
        })
        .await;
        a.wait_for_line(WAIT, "A reservation", |l| l.contains("relay reservation"))
            .await;
        let circuit = format!("{bootstrap}/p2p-circuit/p2p/{a_id}");
        let mut b = NodeProcess::spawn_command(
            lab.command(&lab.private2, &binary),
            args(&["--dial", &circuit]),
        );
        b.wait_for_line(WAIT, "B relayed connection to A", |l| {
            l.contains("peer connected") && l.contains(&a_id) && l.contains("relayed=true")
        })
        .await;
        Self {
            relay,
            a,
            b,
            a_id,
            bootstrap,
        }
    }
}

/// A (behind NAT 1) and B (behind NAT 2), configured with nothing but the bootstrap address,
/// find out they are private, reserve on the relay, B reaches A through the relay, hole
/// punching upgrades the connection to a direct one and a ping crosses it; a node on the public
/// segment reports itself public, makes no reservation, and finds A through the DHT.
#[tokio::test]
async fn hole_punching_through_two_nats() {
    let lab = match NatLab::new() {
        Ok(lab) => lab,
        Err(reason) => {
            netns::skip_or_fail("hole_punching_through_two_nats", &reason);
            return;
        }
    };
    // A: private, reserves on the relay; B: dials A through the relay (both transports).
    let relay_addr = format!("/ip4/{}/tcp/4001", lab.relay.ip);
    let Relayed {
        mut relay,
        mut a,
        mut b,
        a_id,
        bootstrap,
    } = Relayed::start(&lab, &relay_addr, &[]).await;
    let with_bootstrap = |extra: Vec<String>| {
        LAB.iter()
            .map(|s| (*s).to_owned())
            .chain(["--bootstrap".to_owned(), bootstrap.clone()])
            .chain(extra)
            .collect::<Vec<String>>()
    };
    // The connection is upgraded by hole punching.
    b.expect_line(WAIT, "B hole punch", |l| {
        l.contains("hole punch succeeded") && l.contains(&a_id)
            || l.contains("direct connection added") && l.contains(&a_id)
    })
    .await;
    let ping = b
        .expect_line(WAIT, "B ping over the direct connection", |l| {
            l.contains("ping answered") && l.contains(&a_id) && l.contains("relayed=false")
        })
        .await;
    assert!(ping.contains("rtt_us="), "{ping}");
    b.expect_line(WAIT, "B private", |l| {
        l.contains("nat status") && l.contains("status=private")
    })
    .await;
    b.expect_line(WAIT, "B reservation", |l| l.contains("relay reservation"))
        .await;

    // A public node: public, no reservation; finds A through the DHT (a relayed address).
    let mut public = NodeProcess::spawn_command(
        lab.command(&lab.public, node_binary()),
        with_bootstrap(vec!["--find-peer".into(), a_id.clone()]),
    );
    public
        .expect_line(WAIT, "public node is public", |l| {
            l.contains("nat status") && l.contains("status=public")
        })
        .await;
    let found = public
        .expect_line(WAIT, "public node finds A", |l| {
            l.contains(&a_id) && (l.contains("found peer") || l.contains("find peer failed"))
        })
        .await;
    assert!(
        found.contains("found peer") && found.contains("p2p-circuit"),
        "{found}"
    );
    public
        .expect_line(WAIT, "public node connected to A", |l| {
            l.contains("peer connected") && l.contains(&a_id)
        })
        .await;
    let lines = public.lines_so_far();
    assert!(
        !lines.iter().any(|l| l.contains("relay reservation")),
        "the public node made a reservation:\n{}",
        lines.join("\n")
    );

    for node in [&mut public, &mut b, &mut a, &mut relay] {
        node.signal("TERM");
        let status = node.wait_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "exit {status}");
    }
}

/// The transport a hole punch is tried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Punch {
    Tcp,
    Quic,
}

impl Punch {
    /// Flags of the private nodes: listen on this transport only (TCP: QUIC off).
    fn flags(self) -> Vec<String> {
        let flags: &[&str] = match self {
            Self::Tcp => &["--quic=false"],
            Self::Quic => &["--listen", "/ip4/0.0.0.0/udp/4001/quic-v1"],
        };
        flags.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The relay's address on this transport.
    fn relay_addr(self, ip: &str) -> String {
        match self {
            Self::Tcp => format!("/ip4/{ip}/tcp/4001"),
            Self::Quic => format!("/ip4/{ip}/udp/4001/quic-v1"),
        }
    }

    fn matches(self, line: &str) -> bool {
        let quic = line.contains("/quic-v1");
        match self {
            Self::Tcp => line.contains("/tcp/") && !quic,
            Self::Quic => quic,
        }
    }
}

/// One hole punch over `punch` in a fresh lab: A and B behind their NATs, bootstrapped
/// through the relay on that transport only; B dials A through the relay. The time from
/// B's relayed connection to the direct connection on `punch`, or why there was none.
async fn punch_once(punch: Punch) -> Result<Duration, String> {
    let lab = NatLab::new()?;
    let Relayed {
        mut relay,
        mut a,
        mut b,
        a_id,
        ..
    } = Relayed::start(&lab, &punch.relay_addr(&lab.relay.ip), &punch.flags()).await;
    let relayed = std::time::Instant::now();
    let direct = b
        .wait_for_line(WAIT, "B direct connection to A", |l| {
            l.contains(&a_id)
                && (l.contains("direct connection added") || l.contains("hole punch failed"))
        })
        .await;
    let took = relayed.elapsed();
    for node in [&mut b, &mut a, &mut relay] {
        node.signal("TERM");
        let _ = node.wait_exit(Duration::from_secs(20)).await;
    }
    if direct.contains("direct connection added") && punch.matches(&direct) {
        Ok(took)
    } else {
        Err(direct)
    }
}

/// Hole punching over QUIC and over TCP, each behind the drop-style NATs of the lab: a
/// relayed connection between A and B becomes a direct one on the transport the nodes
/// listen on. `CODIO_PUNCH_RUNS=N` repeats each N times (a fresh lab every time) and prints
/// the success count and the time from relayed to direct connection (docs/performance.md).
#[tokio::test]
async fn hole_punching_over_quic_and_over_tcp() {
    if let Err(reason) = NatLab::new() {
        netns::skip_or_fail("hole_punching_over_quic_and_over_tcp", &reason);
        return;
    }
    let runs: usize = std::env::var("CODIO_PUNCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .clamp(1, 50);
    for punch in [Punch::Quic, Punch::Tcp] {
        let mut times = Vec::new();
        let mut failures = Vec::new();
        for _ in 0..runs {
            match punch_once(punch).await {
                Ok(took) => times.push(took),
                Err(why) => failures.push(why),
            }
        }
        times.sort();
        eprintln!(
            "hole punching over {punch:?}: {}/{runs} direct; relayed -> direct: {:?}",
            times.len(),
            times
        );
        assert!(failures.is_empty(), "{punch:?}: {failures:?}");
    }
}
