//! The `codio-node` binary: two processes on loopback, one dials the other's printed address.

// Test code: a failed expectation panics and fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use codio_tests::{
    node_binary,
    process::{NodeProcess, field},
};

const LOG_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn second_node_dials_the_first_and_both_log_the_connection() {
    let binary = node_binary();
    let mut first = NodeProcess::spawn(
        &binary,
        [
            "--no-mdns",
            "--listen-ip",
            "127.0.0.1",
            "--listen-port",
            "0",
        ],
    );
    let line = first
        .wait_for_line(LOG_TIMEOUT, "first node's listen address", |l| {
            l.contains("listening on")
        })
        .await;
    let address = field(&line, "address").expect("address field").to_owned();
    let first_id = address.rsplit('/').next().unwrap().to_owned();

    let mut second = NodeProcess::spawn(
        &binary,
        [
            "--no-mdns",
            "--listen-ip",
            "127.0.0.1",
            "--listen-port",
            "0",
            "--dial",
            &address,
        ],
    );
    let line = second
        .wait_for_line(LOG_TIMEOUT, "second node's peer id", |l| {
            l.contains("local peer id")
        })
        .await;
    let second_id = field(&line, "peer_id").expect("peer_id field").to_owned();

    second
        .wait_for_line(LOG_TIMEOUT, "second logs the connection", |l| {
            l.contains("peer connected") && l.contains(&first_id)
        })
        .await;
    first
        .wait_for_line(LOG_TIMEOUT, "first logs the connection", |l| {
            l.contains("peer connected") && l.contains(&second_id)
        })
        .await;

    // Ctrl-C on the second: it exits 0 and the first logs the disconnect.
    second.signal("INT");
    let status = second.wait_exit(LOG_TIMEOUT).await;
    assert!(status.success(), "second node exited with {status}");
    first
        .wait_for_line(LOG_TIMEOUT, "first logs the disconnect", |l| {
            l.contains("peer disconnected") && l.contains(&second_id)
        })
        .await;
    first.signal("TERM");
    let status = first.wait_exit(LOG_TIMEOUT).await;
    assert!(status.success(), "first node exited with {status}");
}

#[tokio::test]
async fn bad_dial_address_is_rejected_with_a_clear_message() {
    let binary = node_binary();
    let mut node = NodeProcess::spawn(&binary, ["--no-mdns", "--dial", "not-a-multiaddr"]);
    node.wait_for_line(LOG_TIMEOUT, "configuration error", |l| {
        l.contains("dial[0] = \"not-a-multiaddr\": not a multiaddr")
    })
    .await;
    let status = node.wait_exit(LOG_TIMEOUT).await;
    assert_eq!(status.code(), Some(2), "an invalid configuration exits 2");
}

#[tokio::test]
async fn identity_persists_across_restarts_in_the_data_dir() {
    let dir = std::env::temp_dir().join(format!("codio-node-identity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.to_str().unwrap().to_owned();
    let binary = node_binary();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut node = NodeProcess::spawn(
            &binary,
            [
                "--no-mdns",
                "--listen-ip",
                "127.0.0.1",
                "--data-dir",
                &dir_arg,
            ],
        );
        let line = node
            .wait_for_line(LOG_TIMEOUT, "peer id", |l| l.contains("local peer id"))
            .await;
        ids.push(field(&line, "peer_id").unwrap().to_owned());
        node.signal("TERM");
        assert!(node.wait_exit(LOG_TIMEOUT).await.success());
    }
    assert_eq!(ids[0], ids[1], "the peer id changed across a restart");
    // A corrupt key is refused, not replaced.
    std::fs::write(dir.join("identity.key"), b"garbage").unwrap();
    let mut node = NodeProcess::spawn(&binary, ["--no-mdns", "--data-dir", &dir_arg]);
    node.wait_for_line(LOG_TIMEOUT, "corrupt key error", |l| {
        l.contains("refusing to replace")
    })
    .await;
    assert!(!node.wait_exit(LOG_TIMEOUT).await.success());
    assert_eq!(std::fs::read(dir.join("identity.key")).unwrap(), b"garbage");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--subscribe` prints a topic's messages as JSON events; `codio-node publish` sends one
/// (text, then a file's content) and exits 0 once a peer subscribed.
#[tokio::test]
async fn published_messages_reach_a_subscribed_node_as_json_events() {
    let binary = node_binary();
    let loopback = [
        "--no-mdns",
        "--listen-ip",
        "127.0.0.1",
        "--listen-port",
        "0",
    ];
    let mut subscriber = NodeProcess::spawn(
        &binary,
        loopback
            .iter()
            .copied()
            .chain(["--json", "--subscribe", "cdn/announce"]),
    );
    let line = subscriber
        .wait_for_line(LOG_TIMEOUT, "subscriber's listen address", |l| {
            l.contains("listening on")
        })
        .await;
    let address = field(&line, "address").expect("address field").to_owned();
    let dir = std::env::temp_dir().join(format!("codio-cli-publish-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("purge.txt");
    std::fs::write(&file, "purge /videos/7").unwrap();
    for message in ["new /videos/42", file.to_str().unwrap()] {
        let mut publisher = NodeProcess::spawn(
            &binary,
            loopback.iter().copied().chain([
                "--json",
                "--dial",
                &address,
                "publish",
                "--topic",
                "cdn/announce",
                message,
            ]),
        );
        let status = publisher.wait_exit(LOG_TIMEOUT).await;
        assert!(status.success(), "publish exited with {status}");
        publisher
            .expect_line(LOG_TIMEOUT, "published event", |l| {
                l.contains("\"event\":\"published\"")
            })
            .await;
    }
    for text in ["new /videos/42", "purge /videos/7"] {
        let line = subscriber
            .wait_for_line(LOG_TIMEOUT, "message event", |l| {
                l.contains("\"event\":\"message\"") && l.contains(text)
            })
            .await;
        let event: serde_json::Value =
            serde_json::from_str(line.trim_start_matches(codio_tests::process::STDOUT)).unwrap();
        assert_eq!(event["topic"], "cdn/announce", "{event}");
        assert_eq!(event["text"], text, "{event}");
        assert_eq!(event["from"], event["author"], "{event}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    subscriber.signal("TERM");
    let status = subscriber.wait_exit(LOG_TIMEOUT).await;
    assert!(status.success(), "subscriber exited with {status}");
}
