//! Child processes of the `codio-node` binary, killed when dropped (also on test failure).

use std::{
    ffi::OsStr,
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

/// Lines kept per stream while nobody reads them; a chatty child blocks instead of growing memory.
const LINE_BUFFER: usize = 4096;

/// A running child process whose stderr (where `codio-node` logs) is read line by line.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
}

impl NodeProcess {
    /// Spawns `program` with `args`, logs at `info` without colours.
    pub fn spawn<I, S>(program: impl AsRef<OsStr>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn_command(Command::new(program), args)
    }

    /// Spawns a prepared `command` (for instance `ip netns exec …`) with extra `args`.
    pub fn spawn_command<I, S>(mut command: Command, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        command
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("CODIO_CHILD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn child process");
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel(LINE_BUFFER);
        let stdout_tx = tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
        // Standard output (`--json` events, `config` output) arrives prefixed, in the same
        // stream of lines.
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if stdout_tx.send(format!("{STDOUT}{line}")).await.is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The child's process id.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits up to `timeout` for a line matching `predicate` and returns it.
    ///
    /// # Panics
    ///
    /// On timeout or end of output, with every line seen so far.
    pub async fn wait_for_line(
        &mut self,
        timeout: Duration,
        what: &str,
        mut predicate: impl FnMut(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if predicate(&line) {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "output ended while waiting for {what}:\n{}",
                    self.seen.join("\n")
                ),
                Err(_) => panic!(
                    "timed out after {timeout:?} waiting for {what}:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Like [`wait_for_line`](Self::wait_for_line), but a matching line already read counts
    /// too (for lines whose order against others is not fixed).
    pub async fn expect_line(
        &mut self,
        timeout: Duration,
        what: &str,
        mut predicate: impl FnMut(&str) -> bool,
    ) -> String {
        if let Some(line) = self.lines_so_far().iter().find(|l| predicate(l)) {
            return line.clone();
        }
        self.wait_for_line(timeout, what, predicate).await
    }

    /// Every line the child wrote so far (without waiting).
    pub fn lines_so_far(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Every line the child wrote, once both of its pipes closed (for a child that exited).
    ///
    /// # Panics
    ///
    /// When the pipes stay open longer than `timeout`.
    pub async fn all_lines(&mut self, timeout: Duration) -> &[String] {
        let rest = tokio::time::timeout(timeout, async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line);
            }
        })
        .await;
        assert!(rest.is_ok(), "output did not end within {timeout:?}");
        &self.seen
    }

    /// Sends `signal` (e.g. `"INT"`, `"TERM"`) to the child with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let pid = self.id().expect("child still running");
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits up to `timeout` for the child to exit; kills it and panics on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait for child"),
            Err(_) => {
                let _ = self.child.start_kill();
                panic!(
                    "child did not exit within {timeout:?}:\n{}",
                    self.seen.join("\n")
                )
            }
        }
    }
}

/// Prefix of the lines a child wrote to standard output.
pub const STDOUT: &str = "[stdout] ";

/// The value of `key=value` in a tracing log line (values end at whitespace).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    line[start..].split_whitespace().next()
}
