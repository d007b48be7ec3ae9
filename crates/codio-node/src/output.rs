//! What the node reports: log lines through `tracing` (stderr) and, with `--json`, one JSON
//! object per line on stdout for scripts.

use std::{
    io::Write,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use codio_network::{
    NetworkEvent, nat::Event as NatEvent, nat::NatStatus, policy::Event as PolicyEvent,
};
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

    /// Reports a network event: a log line, and a JSON line in JSON mode.
    /// `connected` counts the connected peers; it is asked only for connect and disconnect
    /// events (counting copies the peer table).
    pub(crate) fn network_event(&self, event: &NetworkEvent, connected: impl Fn() -> usize) {
        let connected = match event {
            NetworkEvent::PeerConnected { .. } | NetworkEvent::PeerDisconnected { .. } => {
                connected()
            }
            _ => 0,
        };
        log_event(event, connected);
        if self.json {
            // The event names itself (`event`: its variant in snake case); the node adds the
            // peer count to connects and disconnects.
            let mut fields =
                serde_json::to_value(event).unwrap_or_else(|e| json!({ "error": e.to_string() }));
            let name = fields["event"].as_str().unwrap_or("other").to_owned();
            if matches!(
                event,
                NetworkEvent::PeerConnected { .. } | NetworkEvent::PeerDisconnected { .. }
            ) {
                fields["connected"] = json!(connected);
            }
            self.json(&name, fields);
        }
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

fn log_event(event: &NetworkEvent, connected: usize) {
    match event {
        NetworkEvent::PeerConnected {
            peer_id,
            address,
            direction,
            relayed,
        } => tracing::info!(%peer_id, %address, ?direction, relayed, connected, "peer connected"),
        NetworkEvent::ConnectionVerified {
            peer_id,
            rtt,
            relayed,
        } => tracing::info!(%peer_id, ?rtt, relayed, "ping answered"),
        NetworkEvent::PeerDisconnected { peer_id, cause } => {
            let cause = cause.as_deref().unwrap_or("closed");
            tracing::info!(%peer_id, cause, connected, "peer disconnected");
        }
        NetworkEvent::PeerDiscovered {
            peer_id,
            addresses,
            source,
        } => tracing::info!(%peer_id, ?addresses, ?source, "peer discovered"),
        NetworkEvent::PeerIdentified {
            peer_id,
            agent_version,
            ..
        } => tracing::info!(%peer_id, %agent_version, "peer identified"),
        NetworkEvent::DialFailed { peer_id, error } => {
            tracing::warn!(?peer_id, %error, "dial failed");
        }
        NetworkEvent::Nat(event) => nat_event(event),
        NetworkEvent::Policy(event) => policy_event(event),
        other => tracing::debug!(?other, "event"),
    }
}

fn nat_event(event: &NatEvent) {
    match event {
        NatEvent::StatusChanged(NatStatus::Public { address }) => {
            tracing::info!(%address, "NAT status: public");
        }
        NatEvent::StatusChanged(NatStatus::Private) => tracing::info!("NAT status: private"),
        NatEvent::StatusChanged(_) => tracing::info!("NAT status: unknown"),
        NatEvent::ReservationAccepted { relay, renewal } => {
            tracing::info!(%relay, renewal, "relay reservation accepted");
        }
        NatEvent::HolePunchSucceeded { peer_id } => {
            tracing::info!(%peer_id, "hole punch succeeded: direct connection");
        }
        NatEvent::HolePunchFailed { peer_id, error } => {
            tracing::warn!(%peer_id, %error, "hole punch failed");
        }
        other => tracing::debug!(?other, "nat event"),
    }
}

fn policy_event(event: &PolicyEvent) {
    match event {
        PolicyEvent::Denied {
            peer_id,
            endpoint,
            reason,
            suppressed,
        } => tracing::info!(?peer_id, ?endpoint, %reason, suppressed, "connection denied"),
        PolicyEvent::Trimmed { peer_id, .. } => tracing::info!(%peer_id, "connection trimmed"),
        PolicyEvent::Evicted { peer_id, .. } => {
            tracing::debug!(%peer_id, "connection evicted for a newcomer");
        }
        PolicyEvent::DeadConnection {
            peer_id, failures, ..
        } => tracing::warn!(%peer_id, failures, "peer stopped answering pings"),
        PolicyEvent::Reconnecting {
            peer_id,
            attempt,
            delay,
        } => tracing::info!(%peer_id, attempt, ?delay, "reconnecting"),
        PolicyEvent::Reconnected { peer_id, attempts } => {
            tracing::info!(%peer_id, attempts, "reconnected");
        }
        PolicyEvent::GaveUp { peer_id, attempts } => {
            tracing::warn!(%peer_id, attempts, "gave up reconnecting");
        }
        other => tracing::debug!(?other, "policy event"),
    }
}
