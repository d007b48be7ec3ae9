//! A path with a real round trip between two network namespaces, built without `netem`.
//!
//! Two namespaces, `a` (the client end) and `b` (the server end), each with a TUN device
//! `wan0` (`10.99.0.1` and `10.99.0.2`, point to point, MTU 1,500) whose egress is shaped by
//! `tbf` to the path's rate. This process holds both TUN devices: every IP packet one end
//! sends is read from its device, held for the one-way delay (or dropped, with the path's
//! random loss probability) and written into the other end's device. Both ends run the
//! unmodified kernel TCP/UDP stacks, so congestion control, windows and loss recovery act on
//! a real round trip, for every stack alike.
//!
//! Each end's sockets are made by a tokio runtime whose threads were started inside that
//! end's namespace (a thread that enters a network namespace passes it on to the threads it
//! starts). The namespaces are deleted when the [`Path`] is dropped, also after errors;
//! leftovers of a killed run (names carry the process id) are deleted at the next start.

use std::{
    io::Write as _,
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// The client end's address.
pub(crate) const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The server end's address.
pub(crate) const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// Namespace names start with this, then the process id.
const PREFIX: &str = "cbwan";
/// The device in each namespace.
const DEVICE: &str = "wan0";
/// Packets held per direction at most (the path's buffer: 1 Gbit/s x 25 ms is ~2,100
/// full-size packets); a packet arriving at a full relay is dropped and counted.
const HELD: usize = 16_384;
/// How often the relay threads look at the stop flag while idle.
const POLL: Duration = Duration::from_millis(50);

/// What a path looks like.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// Delay added in each direction (the round trip grows by twice this).
    pub(crate) one_way: Duration,
    /// Probability that the relay drops a packet, in each direction.
    pub(crate) loss: f64,
    /// Egress rate of each end, in Mbit/s (`tbf`).
    pub(crate) mbit: u32,
}

/// Packets the relay handled, both directions.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Packets written to the other end.
    pub(crate) forwarded: AtomicU64,
    /// Packets dropped at random (the path's loss).
    pub(crate) lost: AtomicU64,
    /// Packets dropped because the relay held [`HELD`] packets already.
    pub(crate) overflowed: AtomicU64,
}

/// Both namespaces, the relay and a runtime inside each end.
pub(crate) struct Path {
    namespaces: Vec<String>,
    stop: Arc<AtomicBool>,
    relays: Vec<JoinHandle<()>>,
    runtimes: Vec<tokio::runtime::Runtime>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) shape: Shape,
}

impl std::fmt::Debug for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Path")
            .field("namespaces", &self.namespaces)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// Runs `program args` (the test harness's runner), failing with its standard error.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    codio_tests::netns::run(program, args).map_err(anyhow::Error::msg)
}

/// Runs `f` on a new thread inside the namespace `name`; threads `f` starts are inside too.
fn in_namespace<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let file = std::fs::File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("namespace {name}"))?;
    std::thread::Builder::new()
        .name(format!("enter-{name}"))
        .spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("enter the namespace")?;
            f()
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace {name} panicked"))?
}

/// Deletes namespaces a killed run left (their process is gone).
fn delete_leftovers() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", &name]);
        }
    }
}

impl Path {
    /// Builds the path (needs root: `ip netns`, TUN devices, `tc`). An error says why it
    /// could not be built; whatever was made is removed.
    pub(crate) fn open(shape: Shape) -> anyhow::Result<Self> {
        delete_leftovers();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut path = Self {
            namespaces: Vec::new(),
            stop: stop.clone(),
            relays: Vec::new(),
            runtimes: Vec::new(),
            counters: counters.clone(),
            shape,
        };
        let mut devices = Vec::new();
        for (end, (local, remote)) in [("a", (CLIENT, SERVER)), ("b", (SERVER, CLIENT))] {
            let name = format!("{PREFIX}{}{end}", std::process::id());
            run("ip", &["netns", "add", &name])?;
            path.namespaces.push(name.clone());
            run("ip", &["-n", &name, "link", "set", "lo", "up"])?;
            // Kernel buffers sized for the path (1 Gbit/s x 50 ms is 6.25 MB in flight; a
            // fresh namespace allows 4 MiB of send buffer): what limits a stack is then its
            // own windows, as on a host tuned for long paths.
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &name,
                    "sysctl",
                    "-qw",
                    "net.ipv4.tcp_rmem=4096 131072 33554432",
                    "net.ipv4.tcp_wmem=4096 16384 33554432",
                ],
            )?;
            let device = in_namespace(&name, move || {
                let mut config = tun::Configuration::default();
                config
                    .tun_name(DEVICE)
                    .address(local)
                    .destination(remote)
                    .netmask(Ipv4Addr::BROADCAST)
                    .mtu(1500)
                    .up();
                tun::create(&config).context("create the TUN device")
            })?;
            let rate = format!("{}mbit", shape.mbit);
            run(
                "tc",
                &[
                    "-n", &name, "qdisc", "replace", "dev", DEVICE, "root", "tbf", "rate", &rate,
                    "burst", "256kb", "latency", "20ms",
                ],
            )?;
            devices.push(device);
        }
        let (Some(b), Some(a)) = (devices.pop(), devices.pop()) else {
            anyhow::bail!("two devices were made");
        };
        let (a_read, a_write) = a.split();
        let (b_read, b_write) = b.split();
        for (from, to, seed) in [(a_read, b_write, 1), (b_read, a_write, 2)] {
            let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(HELD);
            let (stop_in, stop_out) = (stop.clone(), stop.clone());
            let (count_in, count_out) = (counters.clone(), counters.clone());
            path.relays.push(
                std::thread::Builder::new()
                    .name("wan-in".into())
                    .spawn(move || take(from, tx, shape, seed, &stop_in, &count_in))?,
            );
            path.relays.push(
                std::thread::Builder::new()
                    .name("wan-out".into())
                    .spawn(move || give(to, rx, &stop_out, &count_out))?,
            );
        }
        for end in path.namespaces.clone() {
            let threads = format!("{end}-rt");
            path.runtimes.push(in_namespace(&end, move || {
                Ok(tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(threads)
                    .enable_all()
                    .build()?)
            })?);
        }
        Ok(path)
    }

    /// Runs `future` inside the client end.
    pub(crate) fn client<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtimes[0].spawn(future)
    }

    /// Runs `future` inside the server end.
    pub(crate) fn server<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtimes[1].spawn(future)
    }

    /// Kernel counters of both ends, summed: datagrams dropped at a full UDP receive buffer
    /// and TCP segments retransmitted.
    pub(crate) fn kernel_counts(&self) -> anyhow::Result<KernelCounts> {
        let mut total = KernelCounts::default();
        for name in &self.namespaces {
            let snmp = in_namespace(name, || {
                Ok(std::fs::read_to_string("/proc/thread-self/net/snmp")?)
            })?;
            total.udp_buffer_drops += snmp_field(&snmp, "Udp:", "RcvbufErrors")?;
            total.tcp_retransmits += snmp_field(&snmp, "Tcp:", "RetransSegs")?;
        }
        Ok(total)
    }

    /// The client end's address.
    pub(crate) fn client_ip(&self) -> IpAddr {
        CLIENT.into()
    }

    /// The server end's address.
    pub(crate) fn server_ip(&self) -> IpAddr {
        SERVER.into()
    }
}

impl Drop for Path {
    fn drop(&mut self) {
        for runtime in self.runtimes.drain(..) {
            runtime.shutdown_background();
        }
        self.stop.store(true, Ordering::Relaxed);
        for relay in self.relays.drain(..) {
            let _ = relay.join();
        }
        for name in self.namespaces.drain(..) {
            let _ = run("ip", &["netns", "del", &name]);
        }
    }
}

/// Counters of the kernels at both ends (see [`Path::kernel_counts`]).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KernelCounts {
    pub(crate) udp_buffer_drops: u64,
    pub(crate) tcp_retransmits: u64,
}

impl std::ops::Sub for KernelCounts {
    type Output = Self;

    fn sub(self, earlier: Self) -> Self {
        Self {
            udp_buffer_drops: self
                .udp_buffer_drops
                .saturating_sub(earlier.udp_buffer_drops),
            tcp_retransmits: self.tcp_retransmits.saturating_sub(earlier.tcp_retransmits),
        }
    }
}

/// The value of `field` in the `prefix` lines of `/proc/net/snmp` (a header line of names,
/// then a line of values).
fn snmp_field(snmp: &str, prefix: &str, field: &str) -> anyhow::Result<u64> {
    let mut lines = snmp.lines().filter(|l| l.starts_with(prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        anyhow::bail!("no {prefix} lines in /proc/net/snmp");
    };
    let at = names
        .split_whitespace()
        .position(|n| n == field)
        .with_context(|| format!("no {prefix} {field}"))?;
    Ok(values
        .split_whitespace()
        .nth(at)
        .with_context(|| format!("no {prefix} {field} value"))?
        .parse()?)
}

/// A small deterministic generator for the relay's drops (xorshift64*).
struct Dice(u64);

impl Dice {
    /// A value in `[0, 1)`.
    fn roll(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Reads packets from one end, stamps each with the time it is due at the other end.
fn take(
    from: tun::Reader,
    to: mpsc::SyncSender<(Instant, Vec<u8>)>,
    shape: Shape,
    seed: u64,
    stop: &AtomicBool,
    counters: &Counters,
) {
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ seed);
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let n = match from.recv_timeout(&mut buf, POLL) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(%e, "relay read failed");
                return;
            }
        };
        if shape.loss > 0.0 && dice.roll() < shape.loss {
            counters.lost.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match to.try_send((Instant::now() + shape.one_way, buf[..n].to_vec())) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => {
                counters.overflowed.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return,
        }
    }
}

/// Writes packets into the other end when they are due.
fn give(
    mut to: tun::Writer,
    from: mpsc::Receiver<(Instant, Vec<u8>)>,
    stop: &AtomicBool,
    counters: &Counters,
) {
    while !stop.load(Ordering::Relaxed) {
        let (due, packet) = match from.recv_timeout(POLL) {
            Ok(held) => held,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let wait = due.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        // A packet the kernel refuses is a packet lost on the path; the flow goes on.
        if to.write(&packet).is_ok() {
            counters.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_fields_are_found_by_name() {
        let snmp = "Tcp: RtoAlgorithm RetransSegs InErrs\nTcp: 1 42 0\n\
                    Udp: InDatagrams RcvbufErrors\nUdp: 10 3\n";
        assert_eq!(snmp_field(snmp, "Tcp:", "RetransSegs").ok(), Some(42));
        assert_eq!(snmp_field(snmp, "Udp:", "RcvbufErrors").ok(), Some(3));
        assert!(snmp_field(snmp, "Udp:", "Missing").is_err());
        assert!(snmp_field(snmp, "Icmp:", "InErrors").is_err());
    }

    #[test]
    fn dice_rolls_are_uniform_enough() {
        let mut dice = Dice(7);
        let rolls: Vec<f64> = (0..100_000).map(|_| dice.roll()).collect();
        assert!(rolls.iter().all(|r| (0.0..1.0).contains(r)));
        let below = rolls.iter().filter(|r| **r < 0.005).count();
        // 0.5 % of 100,000 is 500; a fair generator lands within a few standard deviations.
        assert!((400..600).contains(&below), "{below} rolls under 0.005");
    }
}
