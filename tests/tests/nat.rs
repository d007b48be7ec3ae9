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
    let binary = node_binary();
    let mut relay = NodeProcess::spawn_command(
        lab.command(&lab.relay, &binary),
        LAB.iter().copied().chain([
            "--relay-server",
            "--kad-server",
            "--external-addr",
            "/ip4/10.77.100.1/tcp/4001",
        ]),
    );
    let relay_id = peer_id(&mut relay, "relay").await;
    let bootstrap = format!("/ip4/{}/tcp/4001/p2p/{relay_id}", lab.relay.ip);
    let with_bootstrap = |extra: Vec<String>| {
        LAB.iter()
            .map(|s| (*s).to_owned())
            .chain(["--bootstrap".to_owned(), bootstrap.clone()])
            .chain(extra)
            .collect::<Vec<String>>()
    };

    // A: private, reserves on the relay.
    let mut a =
        NodeProcess::spawn_command(lab.command(&lab.private1, &binary), with_bootstrap(vec![]));
    let a_id = peer_id(&mut a, "A").await;
    a.wait_for_line(WAIT, "A private", |l| l.contains("NAT status: private"))
        .await;
    a.wait_for_line(WAIT, "A reservation", |l| {
        l.contains("relay reservation accepted")
    })
    .await;

    // B: dials A through the relay; the connection is upgraded by hole punching.
    let circuit = format!("{bootstrap}/p2p-circuit/p2p/{a_id}");
    let mut b = NodeProcess::spawn_command(
        lab.command(&lab.private2, &binary),
        with_bootstrap(vec!["--dial".into(), circuit]),
    );
    b.wait_for_line(WAIT, "B relayed connection to A", |l| {
        l.contains("peer connected") && l.contains(&a_id) && l.contains("relayed=true")
    })
    .await;
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
    assert!(ping.contains("rtt="), "{ping}");
    b.expect_line(WAIT, "B private", |l| l.contains("NAT status: private"))
        .await;
    b.expect_line(WAIT, "B reservation", |l| {
        l.contains("relay reservation accepted")
    })
    .await;

    // A public node: public, no reservation; finds A through the DHT (a relayed address).
    let mut public = NodeProcess::spawn_command(
        lab.command(&lab.public, &binary),
        with_bootstrap(vec!["--find-peer".into(), a_id.clone()]),
    );
    public
        .expect_line(WAIT, "public node is public", |l| {
            l.contains("NAT status: public")
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
