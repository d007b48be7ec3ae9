//! [`Stats`]: what the protocol layer counts, for metrics and tests.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of the protocol layer, shared by its codec copies, sessions and handles. Cheap
/// to read at any time (relaxed atomics).
#[derive(Debug, Default)]
pub struct Stats {
    rejected_requests: AtomicU64,
    inbound_requests: AtomicU64,
    refused_requests: AtomicU64,
    bulk_received: AtomicU64,
    bulk_sent: AtomicU64,
    refused_bulk: AtomicU64,
}

impl Stats {
    /// Inbound requests rejected while reading (malformed, oversized, truncated, wrong
    /// version, too slow); their streams were dropped.
    pub fn rejected_requests(&self) -> u64 {
        self.rejected_requests.load(Relaxed)
    }

    /// Inbound requests read in full (on either protocol), answered or not.
    pub fn inbound_requests(&self) -> u64 {
        self.inbound_requests.load(Relaxed)
    }

    /// Inbound requests answered at once with `NotFound` (no handler) or `Overloaded`
    /// (handler queue full).
    pub fn refused_requests(&self) -> u64 {
        self.refused_requests.load(Relaxed)
    }

    /// Payload bytes received by completed inbound bulk transfers.
    pub fn bulk_received(&self) -> u64 {
        self.bulk_received.load(Relaxed)
    }

    /// Payload bytes sent by completed outbound bulk transfers.
    pub fn bulk_sent(&self) -> u64 {
        self.bulk_sent.load(Relaxed)
    }

    /// Inbound bulk streams refused (no receiver, or its queue full).
    pub fn refused_bulk(&self) -> u64 {
        self.refused_bulk.load(Relaxed)
    }

    pub(crate) fn record_rejected(&self) {
        self.rejected_requests.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_inbound(&self) {
        self.inbound_requests.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_refused(&self) {
        self.refused_requests.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_bulk(&self, inbound: bool, bytes: u64) {
        let counter = if inbound {
            &self.bulk_received
        } else {
            &self.bulk_sent
        };
        counter.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn record_refused_bulk(&self) {
        self.refused_bulk.fetch_add(1, Relaxed);
    }
}
