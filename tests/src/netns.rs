//! Network namespaces for multi-host tests.
//!
//! Two tools, both leaving nothing behind:
//!
//! - [`in_fresh_netns`] re-executes the running test inside a new, private network namespace
//!   (`unshare -rn`, which works without root), with a bridge interface so that mDNS has a
//!   non-loopback interface. The namespace disappears with the process.
//! - [`NetLab`] builds several hosts (`ip netns`, needs root): a switch namespace with a bridge
//!   and one namespace per host, linked by veth pairs, addresses `10.77.1.<n>/24`. Every
//!   namespace is deleted when the lab is dropped, also when the test panics.
//!
//! Names are unique per process and lab, so tests run in parallel. When namespaces cannot be
//! made, [`skip_or_fail`] prints why and the test is skipped — except under `CI=true`, where a
//! skip is a failure.

use std::{
    process::Stdio,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use tokio::process::Command;

/// Environment variable marking the re-executed child of [`in_fresh_netns`].
pub const CHILD_ENV: &str = "CODIO_NETNS_CHILD";

/// IPv4 address of the bridge inside a fresh namespace made by [`in_fresh_netns`].
pub const FRESH_NETNS_ADDR: &str = "10.77.0.1";

/// Reports that a multi-host test cannot run here: under `CI=true` this panics (a skip is a
/// failure in CI), otherwise it prints the reason and the caller returns.
pub fn skip_or_fail(test: &str, reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} cannot run under CI=true: {reason}");
    }
    eprintln!("SKIPPED {test}: {reason}");
}

/// Whether this process is the re-executed child running inside its own namespace.
pub fn is_netns_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Runs `program args` to its end (standard input closed); an error carries its exit status
/// and standard error.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Runs the test `test_name` of the current test binary again inside a fresh network namespace
/// and returns whether it ran (`false`: skipped, reason printed). Panics when the child fails.
///
/// Call it at the top of the test; in the child ([`is_netns_child`]) first call
/// [`setup_fresh_netns`], then run the test body.
pub async fn in_fresh_netns(test_name: &str, timeout: Duration) -> bool {
    if let Err(reason) = run("unshare", &["-rn", "true"]) {
        skip_or_fail(
            test_name,
            &format!("cannot create a network namespace: {reason}"),
        );
        return false;
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new("unshare")
        .arg("-rn")
        .arg(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn unshare");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let collect = |mut pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut buf).await;
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = collect(Box::new(stdout));
    let err = collect(Box::new(stderr));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.expect("wait for child"),
        Err(_) => {
            let _ = child.kill().await;
            let (out, err) = (out.await.unwrap_or_default(), err.await.unwrap_or_default());
            panic!(
                "{test_name} in a fresh namespace did not finish within {timeout:?}\n{out}\n{err}"
            );
        }
    };
    let (out, err) = (out.await.unwrap_or_default(), err.await.unwrap_or_default());
    assert!(
        status.success(),
        "{test_name} failed inside its namespace ({status}):\n{out}\n{err}"
    );
    assert!(
        out.contains("1 passed"),
        "{test_name} did not run inside its namespace:\n{out}\n{err}"
    );
    true
}

/// Inside the child of [`in_fresh_netns`]: brings `lo` up and creates a bridge `br0` with
/// [`FRESH_NETNS_ADDR`]`/24`, the non-loopback interface mDNS needs.
pub fn setup_fresh_netns() {
    assert!(is_netns_child(), "only inside the namespace child");
    run("ip", &["link", "set", "lo", "up"]).expect("lo up");
    run("ip", &["link", "add", "br0", "type", "bridge"]).expect("add bridge");
    run(
        "ip",
        &[
            "addr",
            "add",
            &format!("{FRESH_NETNS_ADDR}/24"),
            "dev",
            "br0",
        ],
    )
    .expect("address");
    run("ip", &["link", "set", "br0", "up"]).expect("bridge up");
}

/// Adds `address` (with its prefix, e.g. `10.77.0.99/24`) to the fresh namespace's bridge:
/// a second host address on the same link.
pub fn add_fresh_netns_address(address: &str) {
    assert!(is_netns_child(), "only inside the namespace child");
    run("ip", &["addr", "add", address, "dev", "br0"]).expect("second address");
}

/// Deletes namespaces left by earlier test processes that died without cleaning up (killed
/// by a signal, so no `Drop` ran): names `codio<pid>x…` / `codio<pid>n…` whose process no
/// longer exists.
pub(crate) fn reap_stale_namespaces() {
    let Ok(output) = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix("codio") else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let marker = rest[digits.len()..].chars().next();
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        if !matches!(marker, Some('x' | 'n')) || pid == std::process::id() {
            continue;
        }
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing stale namespace {name} of dead process {pid}");
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// One end of a veth pair: its namespace, interface name, optional bridge and address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct End<'a> {
    pub(crate) netns: &'a str,
    pub(crate) ifname: &'a str,
    pub(crate) master: Option<&'a str>,
    pub(crate) cidr: Option<&'a str>,
}

/// Creates a veth pair between `a` and `b`: each end enslaved to its bridge and given its
/// address when set, both up.
pub(crate) fn veth(a: End<'_>, b: End<'_>) -> Result<(), String> {
    run(
        "ip",
        &[
            "-n", a.netns, "link", "add", a.ifname, "type", "veth", "peer", "name", b.ifname,
            "netns", b.netns,
        ],
    )?;
    for end in [a, b] {
        if let Some(master) = end.master {
            run(
                "ip",
                &["-n", end.netns, "link", "set", end.ifname, "master", master],
            )?;
        }
        if let Some(cidr) = end.cidr {
            run(
                "ip",
                &["-n", end.netns, "addr", "add", cidr, "dev", end.ifname],
            )?;
        }
        run("ip", &["-n", end.netns, "link", "set", end.ifname, "up"])?;
    }
    Ok(())
}

pub(crate) static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A host of a [`NetLab`].
#[derive(Debug, Clone)]
pub struct Host {
    /// Its namespace name.
    pub netns: String,
    /// Its IPv4 address on the lab's bridge.
    pub ip: String,
    port: String,
}

/// Several hosts in network namespaces on one bridge. Needs root.
#[derive(Debug)]
pub struct NetLab {
    switch: String,
    hosts: Vec<Host>,
}

impl NetLab {
    /// Creates the switch namespace and `hosts` hosts (`10.77.1.1`, `10.77.1.2`, …).
    ///
    /// # Errors
    ///
    /// Why the namespaces cannot be created here (not root, no `ip`, …). Whatever was created
    /// before the error is removed.
    pub fn new(hosts: u8) -> Result<Self, String> {
        reap_stale_namespaces();
        let id = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("codio{}x{id}", std::process::id());
        let switch = format!("{prefix}sw");
        run("ip", &["netns", "add", &switch])?;
        let mut lab = NetLab {
            switch,
            hosts: Vec::new(),
        };
        let sw = lab.switch.clone();
        run("ip", &["-n", &sw, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "-n",
                &sw,
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        )?;
        run("ip", &["-n", &sw, "link", "set", "br0", "up"])?;
        for n in 1..=hosts {
            let netns = format!("{prefix}h{n}");
            run("ip", &["netns", "add", &netns])?;
            let port = format!("p{n}");
            let host = Host {
                netns: netns.clone(),
                ip: format!("10.77.1.{n}"),
                port: port.clone(),
            };
            lab.hosts.push(host.clone());
            run("ip", &["-n", &netns, "link", "set", "lo", "up"])?;
            veth(
                End {
                    netns: &sw,
                    ifname: &port,
                    master: Some("br0"),
                    cidr: None,
                },
                End {
                    netns: &netns,
                    ifname: "eth0",
                    master: None,
                    cidr: Some(&format!("{}/24", host.ip)),
                },
            )?;
        }
        Ok(lab)
    }

    /// The hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// A command that runs `program` inside `host`'s namespace.
    pub fn command(&self, host: &Host, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &host.netns]).arg(program);
        command
    }

    /// Cuts (`false`) or restores (`true`) `host`'s link to the switch.
    pub fn set_link(&self, host: &Host, up: bool) {
        run(
            "ip",
            &[
                "-n",
                &self.switch,
                "link",
                "set",
                &host.port,
                if up { "up" } else { "down" },
            ],
        )
        .expect("set link state");
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for host in self.hosts.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", &host.netns]) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Err(e) = run("ip", &["netns", "del", &self.switch]) {
            eprintln!("cleanup: {e}");
        }
    }
}
