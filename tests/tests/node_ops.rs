//! `codio-node` for operators: configuration layers and validation, the peer book across a
//! restart, the metrics endpoint, `--json` events and file transfers with progress. Every
//! node listens on 127.0.0.1 with mDNS off.

// Test code: a failed expectation panics and fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use codio_tests::{
    TempDir, http_get, node_binary,
    process::{NodeProcess, STDOUT, field},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    process::Command,
};

const LOG_TIMEOUT: Duration = Duration::from_secs(20);

const LOCAL: [&str; 4] = ["--no-mdns", "--listen-ip", "127.0.0.1", "--no-relay"];

fn node(args: &[&str]) -> NodeProcess {
    NodeProcess::spawn(
        node_binary(),
        LOCAL.iter().copied().chain(args.iter().copied()),
    )
}

fn node_with_env(args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
    let mut command = Command::new(node_binary());
    command.envs(env.iter().copied());
    NodeProcess::spawn_command(command, LOCAL.iter().copied().chain(args.iter().copied()))
}

/// The node's dialable address, from its "listening on" line.
async fn address_of(node: &mut NodeProcess) -> String {
    let line = node
        .expect_line(LOG_TIMEOUT, "listen address", |l| {
            l.contains("listening on")
        })
        .await;
    field(&line, "address").unwrap().to_owned()
}

fn peer_of(address: &str) -> String {
    address.rsplit('/').next().unwrap().to_owned()
}

async fn stop(mut node: NodeProcess) {
    node.signal("TERM");
    let status = node.wait_exit(LOG_TIMEOUT).await;
    assert!(status.success(), "node exited with {status}");
}

/// The peer id of the identity in `dir` (created if missing), from `codio-node id`.
async fn peer_id_of_data_dir(dir: &str) -> String {
    let (lines, code) = run_to_exit(node(&["--data-dir", dir, "id"])).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(STDOUT))
        .expect("the peer id on stdout")
        .to_owned()
}

/// Runs the node to completion (a command that exits by itself); returns its lines and code.
async fn run_to_exit(mut node: NodeProcess) -> (Vec<String>, Option<i32>) {
    let status = node.wait_exit(LOG_TIMEOUT).await;
    let lines = node.all_lines(LOG_TIMEOUT).await.to_vec();
    (lines, status.code())
}

#[tokio::test]
async fn configuration_layers_and_validation_name_the_bad_field() {
    let dir = TempDir::new("config");
    // `config example` prints a file that `config check` accepts as is.
    let (lines, code) = run_to_exit(node(&["config", "example"])).await;
    assert_eq!(code, Some(0));
    let example: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(STDOUT))
        .collect();
    assert!(example.iter().any(|l| l.starts_with("listen_port = 0")));
    std::fs::write(dir.path("example.toml"), example.join("\n")).unwrap();
    let (lines, code) = run_to_exit(node(&[
        "--config",
        &dir.arg("example.toml"),
        "config",
        "check",
    ]))
    .await;
    assert_eq!(code, Some(0), "{lines:#?}");

    // File < environment < flags.
    std::fs::write(dir.path("node.toml"), "listen_port = 4001\nmax_peers = 7\n").unwrap();
    let check = |env: &'static [(&'static str, &'static str)], flags: &'static [&'static str]| {
        let config = dir.arg("node.toml");
        async move {
            let mut args = vec!["--config", config.as_str()];
            args.extend_from_slice(flags);
            args.extend_from_slice(&["config", "check"]);
            run_to_exit(node_with_env(&args, env)).await
        }
    };
    let (lines, code) = check(&[], &[]).await;
    assert_eq!(code, Some(0));
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("{STDOUT}listen_port = 4001"))
    );
    let (lines, _) = check(&[("CODIO_LISTEN_PORT", "5001")], &[]).await;
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("{STDOUT}listen_port = 5001"))
    );
    let (lines, _) = check(&[("CODIO_LISTEN_PORT", "5001")], &["--listen-port", "6001"]).await;
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("{STDOUT}listen_port = 6001"))
    );
    assert!(lines.iter().any(|l| l == &format!("{STDOUT}max_peers = 7")));

    // Bad values: every one reported, each naming its field; exit code 2.
    let peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    std::fs::write(
        dir.path("bad.key"),
        "/key/swarm/psk/1.0.0/\n/base16/\nxyz\n",
    )
    .unwrap();
    std::fs::write(
        dir.path("bad.toml"),
        format!(
            "bootstrap = [\"/ip4/10.0.0.1/tcp/1/p2p/{peer}\", \"/ip4/10.0.0.2/tcp/1/p2p/{peer}\", \
             \"/ip4/10.0.0.3/tcp/1\", \"/ip4/300.0.0.1/tcp/1\"]\nping_failures = 0\n\
             max_memory_percent = 101\nswarm_key = {:?}\n",
            dir.arg("bad.key")
        ),
    )
    .unwrap();
    let (lines, code) = run_to_exit(node(&["--config", &dir.arg("bad.toml")])).await;
    assert_eq!(code, Some(2), "{lines:#?}");
    let text = lines.join("\n");
    for expected in [
        "bootstrap[1]: duplicate peer",
        "bootstrap[2] = \"/ip4/10.0.0.3/tcp/1\": missing /p2p/<peer id>",
        "bootstrap[3] = \"/ip4/300.0.0.1/tcp/1\": not a multiaddr",
        "ping_failures = 0: must be at least 1",
        "max_memory_percent = 101: must be at most 100",
        "not a swarm key file",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // Out of range, wrong types and unknown keys: every one named, exit code 2.
    std::fs::write(
        dir.path("parse.toml"),
        "listen_port = 70000\nlisten_prot = 1\njson = \"yes\"\n",
    )
    .unwrap();
    let (lines, code) = run_to_exit(node(&["--config", &dir.arg("parse.toml")])).await;
    assert_eq!(code, Some(2), "{lines:#?}");
    for key in ["listen_port", "listen_prot", "json"] {
        assert!(lines.join("\n").contains(key), "{key}: {lines:#?}");
    }
    // Booleans go both ways: a file's `json = true` and `mdns = false` are undone by a
    // variable and by a flag.
    std::fs::write(dir.path("bools.toml"), "json = true\nmdns = false\n").unwrap();
    let config = dir.arg("bools.toml");
    let args = ["--config", config.as_str(), "config", "check"];
    let (lines, _) = run_to_exit(node_with_env(&args, &[("CODIO_JSON", "false")])).await;
    assert!(
        lines.iter().any(|l| l == &format!("{STDOUT}json = false")),
        "{lines:#?}"
    );
    let flags = [
        "--config",
        config.as_str(),
        "--json=false",
        "--mdns",
        "config",
        "check",
    ];
    let (lines, _) = run_to_exit(node(&flags)).await;
    assert!(
        lines.iter().any(|l| l == &format!("{STDOUT}json = false")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l == &format!("{STDOUT}mdns = true")),
        "{lines:#?}"
    );
    let (lines, code) = run_to_exit(node_with_env(&[], &[("CODIO_LISTEN_PORT", "70000")])).await;
    assert_eq!(code, Some(2));
    assert!(lines.join("\n").contains("--listen-port"), "{lines:#?}");
}

/// B dials A; SIGTERM makes B exit 0 with A in its peer book; B restarted with only its data
/// directory (no dial, no bootstrap, no mDNS) reconnects to A, under the same peer id.
/// `key generate` writes an owner-only key and never overwrites one; a second node on a data
/// directory in use exits 2 naming the problem, and the first keeps running; leftovers of a
/// crash (temporary files) are removed at the next start.
#[tokio::test]
async fn swarm_keys_and_one_node_per_data_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("datadir");
    let key = dir.arg("swarm.key");
    let (lines, code) = run_to_exit(node(&["key", "generate", &key])).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let written = std::fs::read_to_string(&key).unwrap();
    assert!(
        written.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"),
        "{written}"
    );
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (lines, code) = run_to_exit(node(&["key", "generate", &key])).await;
    assert_eq!(code, Some(1), "never overwrites: {lines:#?}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), written);

    std::fs::create_dir_all(dir.path("data")).unwrap();
    // What a crash between the steps of writing the identity key and the peer book leaves:
    // temporary files, no key. The node starts, removes them and creates its key.
    std::fs::write(dir.path("data/.peers.json.tmp-1-00"), b"half").unwrap();
    std::fs::write(dir.path("data/.identity.key.tmp-1-00"), b"\x08\x01").unwrap();
    let mut first = node(&["--data-dir", &dir.arg("data"), "--swarm-key", &key]);
    address_of(&mut first).await;
    assert!(
        !dir.path("data/.peers.json.tmp-1-00").exists(),
        "leftover removed"
    );
    // A temporary file of the running node (as if it were writing its peer book): neither a
    // `config check` nor a refused second node may remove it, only the lock's holder.
    let in_progress = dir.path("data/.peers.json.tmp-2-00");
    std::fs::write(&in_progress, b"being written").unwrap();
    let (lines, code) =
        run_to_exit(node(&["--data-dir", &dir.arg("data"), "config", "check"])).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let (lines, code) = run_to_exit(node(&["--data-dir", &dir.arg("data")])).await;
    assert_eq!(code, Some(2), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("is in use by another codio-node")),
        "{lines:#?}"
    );
    assert!(
        in_progress.exists(),
        "the running node's temporary file was left alone"
    );
    stop(first).await;
    // Released with the process: the directory can be used again.
    let mut again = node(&["--data-dir", &dir.arg("data")]);
    address_of(&mut again).await;
    assert!(
        !in_progress.exists(),
        "removed by the next holder of the lock"
    );
    stop(again).await;
}

/// The peer book: only the peers this node dialed are kept (not a peer that dialed it and
/// told its address in identify); a restarted node dials them again; SIGTERM saves it; a
/// corrupt book is moved aside.
#[tokio::test]
async fn restart_reconnects_through_the_peer_book_and_sigterm_flushes_it() {
    let dir = TempDir::new("peerbook");
    let mut a = node(&["--data-dir", &dir.arg("a")]);
    let a_address = address_of(&mut a).await;
    let a_id = peer_of(&a_address);

    let mut b = node(&["--data-dir", &dir.arg("b"), "--dial", &a_address]);
    let b_address = address_of(&mut b).await;
    let b_id = peer_of(&b_address);
    b.expect_line(LOG_TIMEOUT, "b connected to a", |l| {
        l.contains("peer connected") && l.contains(&a_id)
    })
    .await;
    // c dials b (without /p2p/: warned) and reports its listen address in identify: b's book
    // keeps only the peer b dialed itself.
    let b_without_id = b_address.rsplit_once("/p2p/").unwrap().0.to_owned();
    let mut c = node(&["--data-dir", &dir.arg("c"), "--dial", &b_without_id]);
    c.expect_line(LOG_TIMEOUT, "warning", |l| {
        l.contains("WARN") && l.contains("dialing without /p2p/<peer id>")
    })
    .await;
    let c_id = peer_of(&address_of(&mut c).await);
    b.expect_line(LOG_TIMEOUT, "b identified c", |l| {
        l.contains("peer identified") && l.contains(&c_id)
    })
    .await;
    stop(c).await;
    stop(b).await;
    let book = std::fs::read_to_string(dir.path("b/peers.json")).expect("peer book written");
    assert!(book.contains(&a_id), "peer book lacks {a_id}:\n{book}");
    assert!(!book.contains(&c_id), "an inbound peer was booked:\n{book}");
    a.wait_for_line(LOG_TIMEOUT, "a sees b leave", |l| {
        l.contains("peer disconnected") && l.contains(&b_id)
    })
    .await;

    let mut b = node(&["--data-dir", &dir.arg("b")]);
    let line = b
        .wait_for_line(LOG_TIMEOUT, "restarted b's peer id", |l| {
            l.contains("local peer id")
        })
        .await;
    assert_eq!(
        field(&line, "peer_id"),
        Some(b_id.as_str()),
        "identity changed"
    );
    b.wait_for_line(LOG_TIMEOUT, "b reconnects from the peer book", |l| {
        l.contains("reconnected to a peer from the peer book") && l.contains(&a_id)
    })
    .await;
    a.wait_for_line(LOG_TIMEOUT, "a sees b again", |l| {
        l.contains("peer connected") && l.contains(&b_id)
    })
    .await;
    stop(b).await;
    stop(a).await;

    // A corrupt book: a warning, the node runs.
    std::fs::write(dir.path("b/peers.json"), b"{ corrupt").unwrap();
    let mut b = node(&["--data-dir", &dir.arg("b")]);
    b.wait_for_line(LOG_TIMEOUT, "corrupt book warning", |l| {
        l.contains("WARN") && l.contains("peer book is corrupt")
    })
    .await;
    address_of(&mut b).await;
    stop(b).await;
}

#[tokio::test]
async fn metrics_endpoint_serves_libp2p_and_codio_metrics() {
    let mut a = node(&["--metrics-addr", "127.0.0.1:0"]);
    let line = a
        .wait_for_line(LOG_TIMEOUT, "metrics address", |l| {
            l.contains("serving metrics")
        })
        .await;
    let metrics_address = field(&line, "addr").unwrap().to_owned();
    let a_address = address_of(&mut a).await;
    let a_id = peer_of(&a_address);
    let mut b = node(&["--dial", &a_address]);
    b.expect_line(LOG_TIMEOUT, "b connected", |l| {
        l.contains("peer connected") && l.contains(&a_id)
    })
    .await;
    a.expect_line(LOG_TIMEOUT, "a identified b", |l| {
        l.contains("peer identified")
    })
    .await;

    let response = http_get(&metrics_address, "/metrics", LOG_TIMEOUT)
        .await
        .expect("metrics response in time");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    for name in [
        "codio_connected_peers 1",
        "codio_peers_connected_total 1",
        "codio_dial_failures_total",
        "codio_reconnects_total",
        "codio_connections_denied_total",
        "codio_request_duration_seconds_bucket",
        "codio_bulk_bytes_total",
        "codio_inbound_requests_total",
        "libp2p_swarm_connections_established_total",
        "libp2p_identify_",
        "libp2p_ping_",
        "libp2p_bandwidth_bytes_total",
    ] {
        assert!(response.contains(name), "no {name} in:\n{response}");
    }
    assert!(
        http_get(&metrics_address, "/", LOG_TIMEOUT)
            .await
            .expect("a response in time")
            .starts_with("HTTP/1.1 404")
    );

    // 32 clients that stall (16 silent, 16 mid-head) do not stop a scrape: the oldest are
    // closed to make room, well before their 5 s read limit.
    let mut stalled = Vec::new();
    for i in 0..32 {
        let mut socket = tokio::net::TcpStream::connect(&metrics_address)
            .await
            .unwrap();
        if i % 2 == 1 {
            socket
                .write_all(b"GET /metrics HTTP/1.1\r\n")
                .await
                .unwrap();
        }
        stalled.push(socket);
    }
    let started = std::time::Instant::now();
    let response = http_get(&metrics_address, "/metrics", Duration::from_secs(3))
        .await
        .expect("a scrape is answered while 32 clients stall");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A head that does not end within 8 KiB is refused (exactly 8 KiB sent: the endpoint
    // reads all of it, so closing leaves nothing unread that would reset the connection).
    let mut socket = tokio::net::TcpStream::connect(&metrics_address)
        .await
        .unwrap();
    let mut long = format!("GET /metrics HTTP/1.1\r\nX-Pad: {}", "a".repeat(8192));
    long.truncate(8192);
    socket.write_all(long.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(LOG_TIMEOUT, socket.read_to_string(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    drop(stalled);
    stop(b).await;
    stop(a).await;
}

/// `--json` prints one JSON object per line; a file sent with `codio-node send` lands in the
/// receiver's inbox under its SHA-256, with progress reported on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_events_and_a_file_transfer_with_progress() {
    let dir = TempDir::new("transfer");
    let sender_id = peer_id_of_data_dir(&dir.arg("sender")).await;
    let (mut receiver, address) = inbox_node(&dir, &["--inbox-allow", &sender_id]).await;

    // 3 MiB of patterned bytes.
    let content: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(dir.path("file.bin"), &content).unwrap();
    let (lines, code) = run_to_exit(node(&[
        "--json",
        "--data-dir",
        &dir.arg("sender"),
        "send",
        "--to",
        &address,
        &dir.arg("file.bin"),
    ]))
    .await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let events: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(STDOUT))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let progress: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "transfer_progress")
        .map(|e| e["bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(progress.first(), Some(&0));
    assert_eq!(progress.last(), Some(&(3 << 20)));
    let complete = events
        .iter()
        .find(|e| e["event"] == "transfer_complete")
        .expect("transfer_complete event");
    let digest = complete["content"].as_str().unwrap().to_owned();

    let done = receiver
        .wait_for_line(LOG_TIMEOUT, "receiver completes", |l| {
            l.starts_with(STDOUT) && l.contains("\"transfer_complete\"")
        })
        .await;
    assert!(done.contains(&digest));
    let stored = dir.path("inbox").join(&digest);
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        content,
        "stored bytes differ"
    );
    // Every stdout line of the receiver is one JSON object with an event name.
    for line in receiver
        .lines_so_far()
        .iter()
        .filter_map(|l| l.strip_prefix(STDOUT))
    {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            value["event"].is_string() && value["ts_ms"].is_u64(),
            "{line}"
        );
    }
    stop(receiver).await;
}

/// Starts a `--json` receiver with an inbox in `dir/inbox` and `extra` flags; its address.
async fn inbox_node(dir: &TempDir, extra: &[&str]) -> (NodeProcess, String) {
    let inbox = dir.arg("inbox");
    let mut args = vec!["--json", "--inbox", inbox.as_str()];
    args.extend_from_slice(extra);
    let mut receiver = node(&args);
    let started = receiver
        .wait_for_line(LOG_TIMEOUT, "started event", |l| {
            l.starts_with(STDOUT) && l.contains("\"started\"")
        })
        .await;
    let started: serde_json::Value =
        serde_json::from_str(started.strip_prefix(STDOUT).unwrap()).unwrap();
    let address = started["listen_addrs"][0].as_str().unwrap().to_owned();
    (receiver, address)
}

/// The names in `dir`, sorted.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `codio-node send` of `file` to `to` from the identity in `data_dir`.
fn sender(data_dir: &str, to: &str, file: &str) -> NodeProcess {
    node(&["--data-dir", data_dir, "send", "--to", to, file])
}

/// A stranger's file is refused before a byte is stored (nothing is left in the inbox) and
/// counted; an allowed sender's file is stored meanwhile; `send` to an address without the
/// receiver's id is refused unless `--any-peer`.
#[tokio::test]
async fn an_inbox_refuses_a_strangers_file_and_keeps_nothing() {
    let dir = TempDir::new("inbox-stranger");
    let friend = peer_id_of_data_dir(&dir.arg("friend")).await;
    // A partial file an interrupted transfer left: removed when the inbox opens.
    std::fs::create_dir_all(dir.path("inbox")).unwrap();
    std::fs::write(dir.path("inbox/.00ff.tmp-1-00"), b"half a file").unwrap();
    let (mut receiver, address) = inbox_node(&dir, &["--inbox-allow", &friend]).await;
    std::fs::write(dir.path("file.bin"), vec![7u8; 3 << 20]).unwrap();
    let stranger = sender(&dir.arg("stranger"), &address, &dir.arg("file.bin"));
    let (lines, code) = run_to_exit(stranger).await;
    assert_eq!(code, Some(1), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("not_allowed")),
        "{lines:#?}"
    );
    receiver
        .expect_line(LOG_TIMEOUT, "refusal event", |l| {
            l.contains("\"transfer_refused\"") && l.contains("\"not_allowed\"")
        })
        .await;
    assert!(
        names_in(&dir.path("inbox")).is_empty(),
        "nothing stored, the leftover removed"
    );

    let (lines, code) =
        run_to_exit(sender(&dir.arg("friend"), &address, &dir.arg("file.bin"))).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    receiver
        .expect_line(LOG_TIMEOUT, "friend's file stored", |l| {
            l.contains("\"transfer_complete\"")
        })
        .await;
    assert_eq!(names_in(&dir.path("inbox")).len(), 1);

    let without_id = address.rsplit_once("/p2p/").unwrap().0.to_owned();
    let (lines, code) = run_to_exit(sender(
        &dir.arg("friend"),
        &without_id,
        &dir.arg("file.bin"),
    ))
    .await;
    assert_eq!(code, Some(2), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("--any-peer")), "{lines:#?}");
    stop(receiver).await;
}

/// Two senders send the same content at once: both are confirmed, the inbox ends with one
/// correct file under its digest and no partial file.
#[tokio::test]
async fn the_same_content_sent_twice_at_once_ends_as_one_correct_file() {
    let dir = TempDir::new("inbox-twice");
    let (mut receiver, address) = inbox_node(&dir, &["--inbox-allow-any"]).await;
    let content: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(dir.path("file.bin"), &content).unwrap();
    let first = sender(&dir.arg("a"), &address, &dir.arg("file.bin"));
    let second = sender(&dir.arg("b"), &address, &dir.arg("file.bin"));
    let (first, second) = tokio::join!(run_to_exit(first), run_to_exit(second));
    assert_eq!(first.1, Some(0), "{:#?}", first.0);
    assert_eq!(second.1, Some(0), "{:#?}", second.0);
    for n in 0..2 {
        receiver
            .wait_for_line(LOG_TIMEOUT, &format!("transfer {n} complete"), |l| {
                l.contains("\"transfer_complete\"")
            })
            .await;
    }
    let names = names_in(&dir.path("inbox"));
    assert_eq!(names.len(), 1, "one file: {names:?}");
    let stored = std::fs::read(dir.path("inbox").join(&names[0])).unwrap();
    assert!(stored == content, "stored bytes differ");
    stop(receiver).await;
}

/// A sender that drips its file (a byte every 50 ms) is cut off at the transfer's deadline
/// (1 s + its size at the minimum rate, here 2 s) and its partial file removed, while an
/// allowed sender's file is stored during the drip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_drip_sender_is_cut_off_at_the_deadline() {
    use futures::TryStreamExt;
    let dir = TempDir::new("inbox-drip");
    let friend = peer_id_of_data_dir(&dir.arg("friend")).await;
    let dripper = codio_tests::loopback_node().await;
    let dripper_id = dripper.local_peer_id().to_string();
    let (mut receiver, address) = inbox_node(
        &dir,
        &[
            "--inbox-allow",
            &friend,
            "--inbox-allow",
            &dripper_id,
            "--inbox-deadline-ms",
            "1000",
        ],
    )
    .await;
    let receiver_id = dripper
        .connect_peer(address.parse().unwrap())
        .await
        .unwrap();
    let drip = futures::stream::unfold(0u32, |n| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((Ok::<_, std::io::Error>(vec![n as u8]), n + 1))
    });
    let mut source = Box::pin(drip).into_async_read();
    let header = codio_network::protocol::BulkHeader {
        content: codio_network::protocol::ContentId([1; 32]),
        size: 1000,
        topic: "drip".into(),
    };
    let started = std::time::Instant::now();
    let dripping = dripper.send_bulk(receiver_id, header, &mut source, |_| {});
    let friend_sends = async {
        std::fs::write(dir.path("file.bin"), vec![3u8; 1 << 20]).unwrap();
        run_to_exit(sender(&dir.arg("friend"), &address, &dir.arg("file.bin"))).await
    };
    let (dripped, (lines, code)) = tokio::join!(dripping, friend_sends);
    assert_eq!(
        code,
        Some(0),
        "the friend is served during the drip: {lines:#?}"
    );
    assert!(dripped.is_err(), "the drip is cut off: {dripped:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "cut off near its 2 s deadline, not after 50 s: {:?}",
        started.elapsed()
    );
    receiver
        .expect_line(LOG_TIMEOUT, "deadline message", |l| {
            l.contains("not complete within its deadline")
        })
        .await;
    let names = names_in(&dir.path("inbox"));
    assert_eq!(
        names.len(),
        1,
        "the friend's file only, no partial: {names:?}"
    );
    assert!(!names[0].starts_with('.'), "{names:?}");
    dripper.shutdown().await;
    stop(receiver).await;
}

/// The inbox's metrics address, from its `--json` `metrics_listening` event.
async fn metrics_of(receiver: &mut NodeProcess) -> String {
    let line = receiver
        .expect_line(LOG_TIMEOUT, "metrics address", |l| {
            l.contains("\"metrics_listening\"")
        })
        .await;
    let event: serde_json::Value =
        serde_json::from_str(line.strip_prefix(STDOUT).unwrap()).unwrap();
    event["address"].as_str().unwrap().to_owned()
}

/// The value of the metric line starting with `name` (labels included) in a scrape.
async fn metric(address: &str, name: &str) -> String {
    let response = http_get(address, "/metrics", LOG_TIMEOUT)
        .await
        .expect("a scrape in time");
    response
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in:\n{response}"))
        .to_owned()
}

/// Refuses `file` from the identity `a` at `receiver` for `reason`: the sender is told, the
/// refusal counted, nothing is added to the inbox.
async fn refused(dir: &TempDir, receiver: &mut NodeProcess, to: &str, file: &str, reason: &str) {
    let before = names_in(&dir.path("inbox"));
    let (lines, code) = run_to_exit(sender(&dir.arg("a"), to, &dir.arg(file))).await;
    assert_eq!(code, Some(1), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains(reason)), "{lines:#?}");
    receiver
        .expect_line(LOG_TIMEOUT, "refusal", |l| {
            l.contains("\"transfer_refused\"") && l.contains(&format!("\"{reason}\""))
        })
        .await;
    assert_eq!(names_in(&dir.path("inbox")), before, "nothing stored");
}

/// The inbox keeps within its quota (counted again from disk after a restart) and its
/// free-space floor: a transfer past either is refused before a byte is stored, counted by
/// reason, and the file already stored is untouched.
#[tokio::test]
async fn an_inbox_keeps_within_its_quota_and_its_free_space_floor() {
    let dir = TempDir::new("inbox-quota");
    let quota = [
        "--inbox-allow-any",
        "--inbox-max-bytes",
        "4194304",
        "--inbox-quota-bytes",
        "5242880",
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    let first = vec![1u8; 3 << 20];
    std::fs::write(dir.path("first.bin"), &first).unwrap();
    std::fs::write(dir.path("second.bin"), vec![2u8; 3 << 20]).unwrap();
    std::fs::write(dir.path("small.bin"), vec![3u8; 1024]).unwrap();
    let (mut receiver, address) = inbox_node(&dir, &quota).await;
    let (lines, code) = run_to_exit(sender(&dir.arg("a"), &address, &dir.arg("first.bin"))).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    receiver
        .expect_line(LOG_TIMEOUT, "first stored", |l| {
            l.contains("\"transfer_complete\"")
        })
        .await;
    let stored = names_in(&dir.path("inbox"));
    assert_eq!(stored.len(), 1, "{stored:?}");

    // 3 MiB stored + 3 MiB > 5 MiB: refused, in this run and after a restart.
    for run in 0..2 {
        let address = match run {
            0 => address.clone(),
            _ => {
                stop(receiver).await;
                let restarted;
                (receiver, restarted) = inbox_node(&dir, &quota).await;
                restarted
            }
        };
        refused(&dir, &mut receiver, &address, "second.bin", "quota").await;
        let metrics = metrics_of(&mut receiver).await;
        let quota_refusals = "codio_inbox_refused_total{reason=\"quota\"}";
        assert_eq!(metric(&metrics, quota_refusals).await, "1", "run {run}");
        let stored_bytes = metric(&metrics, "codio_inbox_stored_bytes").await;
        assert_eq!(stored_bytes, "3145728", "run {run}");
    }
    stop(receiver).await;

    // A free-space floor no disk meets (4 EiB): even 1 KiB is refused.
    let floor = [
        quota.as_slice(),
        &["--inbox-min-free-bytes", "4611686018427387904"],
    ]
    .concat();
    let (mut receiver, address) = inbox_node(&dir, &floor).await;
    refused(&dir, &mut receiver, &address, "small.bin", "disk_space").await;
    let metrics = metrics_of(&mut receiver).await;
    let space_refusals = "codio_inbox_refused_total{reason=\"disk_space\"}";
    assert_eq!(metric(&metrics, space_refusals).await, "1");
    assert_eq!(
        std::fs::read(dir.path("inbox").join(&stored[0])).unwrap(),
        first,
        "the stored file is untouched"
    );
    stop(receiver).await;
}
