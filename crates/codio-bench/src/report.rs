//! The report: a table on stdout and the same figures as JSON.

use serde::Serialize;

/// One measured figure for each stack (`null`/`NaN` where a stack has no equivalent).
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    group: &'static str,
    metric: String,
    unit: &'static str,
    raw: Option<f64>,
    /// Raw TCP with AES-128-GCM records: the ceiling of an encrypted stream here.
    pipe_aes: Option<f64>,
    /// Raw TCP with ChaCha20-Poly1305 records.
    pipe_chacha: Option<f64>,
    /// Stock rust-libp2p, TCP + Noise + Yamux.
    stock: Option<f64>,
    /// Stock rust-libp2p, TCP + TLS 1.3 + Yamux.
    stock_tls: Option<f64>,
    codio: Option<f64>,
    /// Stock rust-libp2p over QUIC.
    stock_quic: Option<f64>,
    /// codio over QUIC.
    codio_quic: Option<f64>,
    higher_is_better: bool,
    /// codio / stock.
    codio_vs_stock: Option<f64>,
    /// codio / the AES pipe.
    codio_vs_ceiling: Option<f64>,
    /// codio / raw TCP.
    codio_vs_raw: Option<f64>,
    /// codio over QUIC / stock over QUIC.
    quic_vs_stock_quic: Option<f64>,
    target: Option<String>,
    target_met: Option<bool>,
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

impl Row {
    fn new(
        group: &'static str,
        metric: String,
        unit: &'static str,
        values: [f64; 8],
        higher_is_better: bool,
    ) -> Self {
        let [
            raw,
            pipe_aes,
            pipe_chacha,
            stock,
            stock_tls,
            codio,
            stock_quic,
            codio_quic,
        ] = values.map(finite);
        Self {
            group,
            metric,
            unit,
            raw,
            pipe_aes,
            pipe_chacha,
            stock,
            stock_tls,
            codio,
            stock_quic,
            codio_quic,
            higher_is_better,
            codio_vs_stock: ratio(codio, stock),
            codio_vs_ceiling: ratio(codio, pipe_aes),
            codio_vs_raw: ratio(codio, raw),
            quic_vs_stock_quic: ratio(codio_quic, stock_quic),
            target: None,
            target_met: None,
        }
    }

    pub(crate) fn higher(
        group: &'static str,
        metric: String,
        unit: &'static str,
        values: [f64; 8],
    ) -> Self {
        Self::new(group, metric, unit, values, true)
    }

    pub(crate) fn lower(
        group: &'static str,
        metric: String,
        unit: &'static str,
        values: [f64; 8],
    ) -> Self {
        Self::new(group, metric, unit, values, false)
    }

    pub(crate) fn target(mut self, target: String, met: bool) -> Self {
        self.target = Some(target);
        self.target_met = Some(met);
        self
    }
}

/// The whole run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    smoke: bool,
    machine: Machine,
    /// ring ChaCha20-Poly1305, one core, 64 KiB frames.
    pub(crate) cipher_mib_s: f64,
    pub(crate) rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    kernel: String,
}

impl Machine {
    fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|m| m.trim().to_string())
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }
}

fn cell(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn times(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}x"))
}

impl Report {
    pub(crate) fn new(smoke: bool) -> Self {
        Self {
            smoke,
            machine: Machine::read(),
            cipher_mib_s: f64::NAN,
            rows: Vec::new(),
        }
    }

    /// Prints the table (markdown, so it can be pasted into `docs/performance.md`).
    #[allow(clippy::print_stdout)] // The benchmark's report is its output.
    pub(crate) fn print_table(&self) {
        println!(
            "machine: {} cpus, {}, Linux {}{}",
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.kernel,
            if self.smoke {
                " (SMOKE: sizes too small to mean anything)"
            } else {
                ""
            }
        );
        println!(
            "cipher ceiling: ring ChaCha20-Poly1305, one core: {:.0} MiB/s",
            self.cipher_mib_s
        );
        println!();
        println!(
            "| group | metric | unit | raw TCP | AES pipe | ChaCha pipe | stock (Noise) | stock TLS | codio | codio/stock | codio/ceiling | codio/raw | stock QUIC | codio QUIC | codio QUIC/stock QUIC | target | met |"
        );
        println!("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|");
        for row in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.group,
                row.metric,
                row.unit,
                cell(row.raw),
                cell(row.pipe_aes),
                cell(row.pipe_chacha),
                cell(row.stock),
                cell(row.stock_tls),
                cell(row.codio),
                times(row.codio_vs_stock),
                times(row.codio_vs_ceiling),
                times(row.codio_vs_raw),
                cell(row.stock_quic),
                cell(row.codio_quic),
                times(row.quic_vs_stock_quic),
                row.target.as_deref().unwrap_or(""),
                match row.target_met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "",
                },
            );
        }
    }
}
