//! What the node reports: log lines through `tracing` (stderr) and, with `--json`, one JSON
//! object per line on stdout for scripts.

use std::{
    io::Write,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use codio_network::NetworkEvent;
use serde_json::{Value, json};

/// Writes events; cheap to clone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    json: bool,
}

impl Output {
    pub(crate) fn new(json: bool) -> Self {
        Self { json }
    }

    /// Prints `fields` (an object) with `event` and a timestamp as one line on stdout, in
    /// JSON mode; does nothing otherwise.
    pub(crate) fn json(&self, event: &str, fields: Value) {
        if !self.json {
            return;
        }
        let mut object = match fields {
            Value::Object(map) => map,
            other => {
                let mut map = serde_json::Map::new();
                map.insert("value".into(), other);
                map
            }
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        object.insert("ts_ms".into(), json!(ts));
        object.insert("event".into(), json!(event));
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (the reader went away) must not stop the node.
        let _ = writeln!(stdout, "{}", Value::Object(object));
        let _ = stdout.flush();
    }

    /// Reports a network event: one log line, and a JSON line in JSON mode, both made from
    /// the event's own `Serialize` form (its `event` name and fields). `connected` counts the
    /// connected peers; it is asked only for connect and disconnect events (counting copies
    /// the peer table).
    pub(crate) fn network_event(&self, event: &NetworkEvent, connected: impl Fn() -> usize) {
        let mut fields = serde_json::to_value(event)
            .unwrap_or_else(|e| json!({ "event": "unprintable", "error": e.to_string() }));
        if matches!(
            event,
            NetworkEvent::PeerConnected { .. } | NetworkEvent::PeerDisconnected { .. }
        ) {
            fields["connected"] = json!(connected());
        }
        let name = fields["event"].as_str().unwrap_or("event").to_owned();
        log_event(&name, &fields);
        self.json(&name, fields);
    }
}

/// One log line for a network event: its name as the message (`peer_connected` → "peer
/// connected") followed by its other fields as `key=value` (strings bare, the rest as JSON);
/// warnings for what an operator should look at, debug for what happens all the time under
/// load.
fn log_event(name: &str, fields: &Value) {
    let message = name.replace('_', " ");
    let mut line = message;
    if let Value::Object(map) = fields {
        for (key, value) in map.iter().filter(|(key, _)| *key != "event") {
            match value {
                Value::String(text) => line.push_str(&format!(" {key}={text}")),
                other => line.push_str(&format!(" {key}={other}")),
            }
        }
    }
    match name {
        "dial_failed"
        | "hole_punch_failed"
        | "dead_peer"
        | "reconnect_gave_up"
        | "inbound_request_failed" => tracing::warn!("{line}"),
        "peer_evicted" | "pong" | "listening" => tracing::debug!("{line}"),
        _ => tracing::info!("{line}"),
    }
}

/// Throttled progress of one transfer: at most one report a second, plus the last.
#[derive(Debug)]
pub(crate) struct Progress {
    output: Output,
    direction: &'static str,
    peer: String,
    content: String,
    total: u64,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    pub(crate) fn new(
        output: Output,
        direction: &'static str,
        peer: String,
        content: String,
        total: u64,
    ) -> Self {
        Self {
            output,
            direction,
            peer,
            content,
            total,
            started: Instant::now(),
            last: None,
        }
    }

    pub(crate) fn update(&mut self, bytes: u64) {
        let now = Instant::now();
        let due = self
            .last
            .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1));
        if !due && bytes < self.total {
            return;
        }
        self.last = Some(now);
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        let percent = if self.total == 0 {
            100.0
        } else {
            bytes as f64 * 100.0 / self.total as f64
        };
        let mib_s = bytes as f64 / elapsed / f64::from(1u32 << 20);
        tracing::info!(
            direction = self.direction,
            peer = %self.peer,
            content = %self.content,
            bytes,
            total = self.total,
            percent = format!("{percent:.1}"),
            mib_s = format!("{mib_s:.1}"),
            "transfer progress"
        );
        self.output.json(
            "transfer_progress",
            json!({
                "direction": self.direction,
                "peer_id": self.peer,
                "content": self.content,
                "bytes": bytes,
                "total": self.total,
                "mib_per_s": (mib_s * 10.0).round() / 10.0,
            }),
        );
    }
}
