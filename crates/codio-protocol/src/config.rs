//! [`ProtocolConfig`]: the settings of the protocol layer, with their defaults.

use std::time::Duration;

/// Settings of the protocol layer: requests on `/codio/1.0.0` and `/codio/rpc/1.0.0`, bulk
/// streams on `/codio/bulk/1.0.0`.
///
/// | setting | default |
/// |---|---|
/// | `request_timeout` | 30 s: covers sending the request, the responder's work and reading the response; inbound requests that are not fully read in time are dropped (slow senders) |
/// | `open_timeout` | 10 s: time a request may spend dialing the peer and opening its stream, on top of `request_timeout` |
/// | `max_concurrent_streams` | 128 concurrent `/codio/1.0.0` requests per connection (inbound + outbound) |
/// | `max_outbound_requests` | 1,024 requests in flight across all peers; further callers wait for a slot |
/// | `inbound_request_buffer` | 256 inbound requests queued for the handler; beyond it requests are answered `Overloaded` at once |
/// | `bulk_stream_buffer` | 16 inbound bulk streams queued for the receiver; beyond it they are refused |
/// | `bulk_idle_timeout` | 30 s: a bulk transfer fails when a read or write makes no progress this long |
/// | `max_requests_per_peer` | 64: one peer's requests queued for or held by the handler; beyond it that peer (only) is answered `Overloaded`, so one peer cannot take the whole queue |
/// | `max_streams_per_peer` | 32 inbound `/codio/1.0.0` streams per peer in flight (request read, answer not yet written), over all its connections; beyond it the peer's further requests are answered `Overloaded` at once |
/// | `max_sessions_per_peer` | 4 inbound `/codio/rpc/1.0.0` sessions per peer; a fifth ends the peer's oldest |
/// | `write_timeout` | 10 s: an answer (RPC) not written within this ends the session (a peer that does not read) |
/// | `response_budget` | 64 MiB of answers handed over by responders but not yet written, across every session and `/codio/1.0.0` stream; responders wait beyond it |
/// | `session_response_budget` | 8 MiB of such answers per RPC session (within `response_budget`) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolConfig {
    /// See the table above.
    pub request_timeout: Duration,
    /// See the table above.
    pub open_timeout: Duration,
    /// See the table above.
    pub max_concurrent_streams: usize,
    /// See the table above.
    pub max_outbound_requests: usize,
    /// See the table above.
    pub inbound_request_buffer: usize,
    /// See the table above.
    pub bulk_stream_buffer: usize,
    /// See the table above.
    pub bulk_idle_timeout: Duration,
    /// See the table above.
    pub max_requests_per_peer: usize,
    /// See the table above.
    pub max_streams_per_peer: usize,
    /// See the table above.
    pub max_sessions_per_peer: usize,
    /// See the table above.
    pub write_timeout: Duration,
    /// See the table above.
    pub response_budget: usize,
    /// See the table above.
    pub session_response_budget: usize,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            open_timeout: Duration::from_secs(10),
            max_concurrent_streams: 128,
            max_outbound_requests: 1024,
            inbound_request_buffer: 256,
            bulk_stream_buffer: 16,
            bulk_idle_timeout: Duration::from_secs(30),
            max_requests_per_peer: 64,
            max_streams_per_peer: 32,
            max_sessions_per_peer: 4,
            write_timeout: Duration::from_secs(10),
            response_budget: 64 * 1024 * 1024,
            session_response_budget: 8 * 1024 * 1024,
        }
    }
}

pub use codio_base::InvalidConfig;

impl ProtocolConfig {
    /// Sets the request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the time a request may spend opening its stream.
    pub fn with_open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// Sets the concurrent `/codio/1.0.0` streams per connection.
    pub fn with_max_concurrent_streams(mut self, streams: usize) -> Self {
        self.max_concurrent_streams = streams;
        self
    }

    /// Sets the outbound requests in flight across all peers.
    pub fn with_max_outbound_requests(mut self, requests: usize) -> Self {
        self.max_outbound_requests = requests;
        self
    }

    /// Sets the inbound request queue's capacity.
    pub fn with_inbound_request_buffer(mut self, requests: usize) -> Self {
        self.inbound_request_buffer = requests;
        self
    }

    /// Sets the inbound bulk queue's capacity.
    pub fn with_bulk_stream_buffer(mut self, streams: usize) -> Self {
        self.bulk_stream_buffer = streams;
        self
    }

    /// Sets the bulk idle timeout.
    pub fn with_bulk_idle_timeout(mut self, timeout: Duration) -> Self {
        self.bulk_idle_timeout = timeout;
        self
    }

    /// Sets one peer's share of the inbound request queue.
    pub fn with_max_requests_per_peer(mut self, requests: usize) -> Self {
        self.max_requests_per_peer = requests;
        self
    }

    /// Sets the inbound `/codio/1.0.0` streams one peer may have in flight.
    pub fn with_max_streams_per_peer(mut self, streams: usize) -> Self {
        self.max_streams_per_peer = streams;
        self
    }

    /// Sets the inbound RPC sessions one peer may hold.
    pub fn with_max_sessions_per_peer(mut self, sessions: usize) -> Self {
        self.max_sessions_per_peer = sessions;
        self
    }

    /// Sets the time an answer may take to be written.
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets the bytes of answers waiting to be written, in total and per RPC session.
    pub fn with_response_budget(mut self, total: usize, per_session: usize) -> Self {
        self.response_budget = total;
        self.session_response_budget = per_session;
        self
    }

    /// Checks for values that cannot work.
    ///
    /// # Errors
    ///
    /// The first [`InvalidConfig`] found.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let positive = [
            ("request_timeout", self.request_timeout.is_zero()),
            ("open_timeout", self.open_timeout.is_zero()),
            ("bulk_idle_timeout", self.bulk_idle_timeout.is_zero()),
            ("max_concurrent_streams", self.max_concurrent_streams == 0),
            ("max_outbound_requests", self.max_outbound_requests == 0),
            ("inbound_request_buffer", self.inbound_request_buffer == 0),
            ("bulk_stream_buffer", self.bulk_stream_buffer == 0),
            ("max_requests_per_peer", self.max_requests_per_peer == 0),
            ("max_streams_per_peer", self.max_streams_per_peer == 0),
            ("max_sessions_per_peer", self.max_sessions_per_peer == 0),
            ("write_timeout", self.write_timeout.is_zero()),
            ("response_budget", self.response_budget == 0),
            ("session_response_budget", self.session_response_budget == 0),
        ];
        match positive.into_iter().find(|(_, zero)| *zero) {
            Some((field, _)) => Err(InvalidConfig::new(
                "protocol",
                field,
                "must be greater than zero",
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_zero_is_named() {
        assert!(ProtocolConfig::default().validate().is_ok());
        let error = ProtocolConfig::default()
            .with_inbound_request_buffer(0)
            .validate()
            .unwrap_err();
        assert_eq!(error.field, "inbound_request_buffer");
    }
}
