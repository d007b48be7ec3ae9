//! A NAT lab in network namespaces (needs root and `nft`).
//!
//! ```text
//!                     public bridge 10.77.100.0/24 (switch namespace)
//!        ┌──────────────┬──────────────┬─────────────────┬─────────────────┐
//!   relay 10.77.100.1  public 10.77.100.2   nat1 wan 10.77.100.11   nat2 wan 10.77.100.12
//!                                          │ masquerade            │ masquerade
//!                                     nat1 lan 10.77.11.1     nat2 lan 10.77.12.1
//!                                          │                       │
//!                                   private1 10.77.11.10     private2 10.77.12.10
//! ```
//!
//! Each router does source NAT (masquerade) for its private /24 and silently drops
//! unsolicited inbound packets (`iifname "wan" ct state new drop`; forward: only from the LAN
//! or established/related) — the kind of NAT hole punching works through. Every namespace is
//! new for each lab (no stale conntrack state) and deleted on drop.

use std::{
    io::Write,
    process::{Command as StdCommand, Stdio},
    sync::atomic::Ordering,
};

use tokio::process::Command;

use crate::netns::{End, LAB_COUNTER, run, veth};

/// A host of the lab.
#[derive(Debug, Clone)]
pub struct LabHost {
    /// Namespace name.
    pub netns: String,
    /// The host's own IPv4 address.
    pub ip: String,
}

/// The NAT lab. See the module docs for the layout.
#[derive(Debug)]
pub struct NatLab {
    namespaces: Vec<String>,
    /// The relay (and bootstrap) host on the public segment.
    pub relay: LabHost,
    /// Another host on the public segment.
    pub public: LabHost,
    /// The host behind router 1.
    pub private1: LabHost,
    /// The host behind router 2.
    pub private2: LabHost,
}

fn nft(netns: &str, ruleset: &str) -> Result<(), String> {
    let mut child = StdCommand::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("nft stdin")?
        .write_all(ruleset.as_bytes())
        .map_err(|e| format!("nft stdin: {e}"))?;
    let output = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl NatLab {
    /// Builds the lab.
    ///
    /// # Errors
    ///
    /// Why it cannot be built here (not root, no `ip` or `nft`, …); whatever was created is
    /// removed.
    pub fn new() -> Result<Self, String> {
        run("nft", &["--version"]).map_err(|e| format!("nftables missing: {e}"))?;
        crate::netns::reap_stale_namespaces();
        let id = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("codio{}n{id}", std::process::id());
        let name = |n: &str| format!("{prefix}{n}");
        let mut lab = NatLab {
            namespaces: Vec::new(),
            relay: LabHost {
                netns: name("r"),
                ip: "10.77.100.1".into(),
            },
            public: LabHost {
                netns: name("p"),
                ip: "10.77.100.2".into(),
            },
            private1: LabHost {
                netns: name("a1"),
                ip: "10.77.11.10".into(),
            },
            private2: LabHost {
                netns: name("a2"),
                ip: "10.77.12.10".into(),
            },
        };
        let sw = name("sw");
        lab.add_netns(&sw)?;
        run("ip", &["-n", &sw, "link", "add", "brp", "type", "bridge"])?;
        run("ip", &["-n", &sw, "link", "set", "brp", "up"])?;

        // Public hosts: a veth into the bridge each.
        for (n, host) in [(1, lab.relay.clone()), (2, lab.public.clone())] {
            lab.add_netns(&host.netns)?;
            veth(
                End {
                    netns: &sw,
                    ifname: &format!("h{n}"),
                    master: Some("brp"),
                    cidr: None,
                },
                End {
                    netns: &host.netns,
                    ifname: "eth0",
                    master: None,
                    cidr: Some(&format!("{}/24", host.ip)),
                },
            )?;
        }

        // Routers and their private hosts.
        for (k, host) in [(1, lab.private1.clone()), (2, lab.private2.clone())] {
            let nat = name(&format!("n{k}"));
            lab.add_netns(&nat)?;
            lab.add_netns(&host.netns)?;
            veth(
                End {
                    netns: &sw,
                    ifname: &format!("n{k}"),
                    master: Some("brp"),
                    cidr: None,
                },
                End {
                    netns: &nat,
                    ifname: "wan",
                    master: None,
                    cidr: Some(&format!("10.77.100.1{k}/24")),
                },
            )?;
            veth(
                End {
                    netns: &nat,
                    ifname: "lan",
                    master: None,
                    cidr: Some(&format!("10.77.1{k}.1/24")),
                },
                End {
                    netns: &host.netns,
                    ifname: "eth0",
                    master: None,
                    cidr: Some(&format!("{}/24", host.ip)),
                },
            )?;
            run(
                "ip",
                &[
                    "-n",
                    &host.netns,
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("10.77.1{k}.1"),
                ],
            )?;
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &nat,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ],
            )?;
            nft(
                &nat,
                &format!(
                    "table ip nat {{
                       chain postrouting {{
                         type nat hook postrouting priority srcnat; policy accept;
                         oifname \"wan\" ip saddr 10.77.1{k}.0/24 masquerade
                       }}
                     }}
                     table inet filter {{
                       chain input {{
                         type filter hook input priority filter; policy accept;
                         iifname \"wan\" ct state new drop
                       }}
                       chain forward {{
                         type filter hook forward priority filter; policy drop;
                         iifname \"lan\" accept
                         ct state established,related accept
                       }}
                     }}"
                ),
            )?;
        }
        Ok(lab)
    }

    fn add_netns(&mut self, name: &str) -> Result<(), String> {
        run("ip", &["netns", "add", name])?;
        self.namespaces.push(name.to_owned());
        run("ip", &["-n", name, "link", "set", "lo", "up"])
    }

    /// A command that runs `program` inside `host`'s namespace.
    pub fn command(&self, host: &LabHost, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &host.netns]).arg(program);
        command
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for netns in self.namespaces.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", netns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}
