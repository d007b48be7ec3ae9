//! The inbox's rules, as pure state: who may send, how much one transfer, one sender and the
//! whole inbox may take, the free space that must stay on the disk, and how long a transfer
//! may last. `transfer.rs` does the I/O and asks this module at each step.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use codio_network::PeerId;

/// Transfers received at once, over all senders.
pub(crate) const MAX_TRANSFERS: usize = 4;
/// Transfers one sender may have in flight at once.
pub(crate) const MAX_TRANSFERS_PER_PEER: usize = 2;

/// Who may send files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Senders {
    /// Anyone (`--inbox-allow-any`).
    Any,
    /// Only these peers.
    Only(HashSet<PeerId>),
}

/// The inbox's limits.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) senders: Senders,
    /// Largest file.
    pub(crate) max_file: u64,
    /// Most bytes held in the inbox (stored files and transfers in flight).
    pub(crate) quota: u64,
    /// Free bytes that must stay on the inbox's file system.
    pub(crate) min_free: u64,
    /// The deadline of a transfer: this much time...
    pub(crate) deadline_base: Duration,
    /// ...plus its size at this rate (bytes per second).
    pub(crate) min_rate: u64,
}

/// Why the inbox refused a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The sender is not allowed to send files.
    NotAllowed,
    /// The sender has its share of transfers in flight.
    Busy,
    /// The file is larger than the inbox takes.
    TooLarge,
    /// The inbox's quota would be exceeded.
    Quota,
    /// The disk would fall below the free-space floor.
    DiskSpace,
}

impl Refusal {
    /// Every refusal, in label order.
    pub(crate) const ALL: [Refusal; 5] = [
        Refusal::NotAllowed,
        Refusal::Busy,
        Refusal::TooLarge,
        Refusal::Quota,
        Refusal::DiskSpace,
    ];

    /// The metrics label and JSON value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not_allowed",
            Refusal::Busy => "busy",
            Refusal::TooLarge => "too_large",
            Refusal::Quota => "quota",
            Refusal::DiskSpace => "disk_space",
        }
    }
}

/// What the inbox holds and has promised: the quota and the free-space floor are checked
/// against stored bytes plus the full size of every transfer in flight.
#[derive(Debug)]
pub(crate) struct Ledger {
    rules: Rules,
    stored: u64,
    reserved: u64,
    in_flight: HashMap<PeerId, usize>,
}

impl Ledger {
    /// A ledger for an inbox that already holds `stored` bytes.
    pub(crate) fn new(rules: Rules, stored: u64) -> Self {
        Self {
            rules,
            stored,
            reserved: 0,
            in_flight: HashMap::new(),
        }
    }

    /// A new stream from `peer`: allowed, and within its share of transfers? On `Ok` the
    /// caller must call [`end`](Self::end) for it.
    pub(crate) fn begin(&mut self, peer: &PeerId) -> Result<(), Refusal> {
        if let Senders::Only(allowed) = &self.rules.senders
            && !allowed.contains(peer)
        {
            return Err(Refusal::NotAllowed);
        }
        let count = self.in_flight.entry(*peer).or_default();
        if *count >= MAX_TRANSFERS_PER_PEER {
            return Err(Refusal::Busy);
        }
        *count += 1;
        Ok(())
    }

    /// The stream from `peer` ended (whatever happened to it).
    pub(crate) fn end(&mut self, peer: &PeerId) {
        if let Some(count) = self.in_flight.get_mut(peer) {
            *count -= 1;
            if *count == 0 {
                self.in_flight.remove(peer);
            }
        }
    }

    /// Reserves room for a file of `size` bytes when `free` bytes are free on the disk now.
    /// On `Ok`, the caller must call [`settle`](Self::settle) with the same size.
    pub(crate) fn reserve(&mut self, size: u64, free: u64) -> Result<(), Refusal> {
        if size > self.rules.max_file {
            return Err(Refusal::TooLarge);
        }
        let held = self.stored.saturating_add(self.reserved);
        if held.saturating_add(size) > self.rules.quota {
            return Err(Refusal::Quota);
        }
        // Reserved bytes are not written yet: they still count as free on the disk.
        let free_after = free.saturating_sub(self.reserved).saturating_sub(size);
        if free_after < self.rules.min_free {
            return Err(Refusal::DiskSpace);
        }
        self.reserved += size;
        Ok(())
    }

    /// A reserved transfer ended: `stored` says whether its file was kept.
    pub(crate) fn settle(&mut self, size: u64, stored: bool) {
        self.reserved = self.reserved.saturating_sub(size);
        if stored {
            self.stored = self.stored.saturating_add(size);
        }
    }

    /// How long a transfer of `size` bytes may take from its header to its last byte.
    pub(crate) fn deadline(&self, size: u64) -> Duration {
        let rate = self.rules.min_rate.max(1);
        self.rules.deadline_base + Duration::from_secs(size.div_ceil(rate))
    }

    /// Bytes stored in the inbox.
    pub(crate) fn stored(&self) -> u64 {
        self.stored
    }
}

/// Refusal reports (log line and JSON event) at the log's rate: a sender that is refused in a
/// loop cannot flood the output; the reports suppressed are counted in the next one written,
/// and every refusal is counted in the metrics.
pub(crate) fn report_rate(now: Instant) -> codio_base::Throttle {
    codio_base::Throttle::new(crate::logs::RATE, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn rules(senders: Senders) -> Rules {
        Rules {
            senders,
            max_file: 10 * MIB,
            quota: 16 * MIB,
            min_free: 4 * MIB,
            deadline_base: Duration::from_secs(60),
            min_rate: MIB,
        }
    }

    #[test]
    fn only_allowed_senders_and_each_within_its_share() {
        let friend = PeerId::random();
        let mut ledger = Ledger::new(rules(Senders::Only([friend].into())), 0);
        assert_eq!(ledger.begin(&PeerId::random()), Err(Refusal::NotAllowed));
        assert_eq!(ledger.begin(&friend), Ok(()));
        assert_eq!(ledger.begin(&friend), Ok(()));
        assert_eq!(ledger.begin(&friend), Err(Refusal::Busy));
        ledger.end(&friend);
        assert_eq!(ledger.begin(&friend), Ok(()));
        let mut open = Ledger::new(rules(Senders::Any), 0);
        assert_eq!(open.begin(&PeerId::random()), Ok(()));
    }

    #[test]
    fn quota_counts_stored_and_in_flight_bytes() {
        let mut ledger = Ledger::new(rules(Senders::Any), 4 * MIB);
        let disk = 1 << 40;
        assert_eq!(ledger.reserve(11 * MIB, disk), Err(Refusal::TooLarge));
        assert_eq!(ledger.reserve(8 * MIB, disk), Ok(()));
        assert_eq!(ledger.reserve(5 * MIB, disk), Err(Refusal::Quota));
        ledger.settle(8 * MIB, false);
        assert_eq!(ledger.reserve(5 * MIB, disk), Ok(()));
        ledger.settle(5 * MIB, true);
        assert_eq!(ledger.stored(), 9 * MIB);
        assert_eq!(ledger.reserve(8 * MIB, disk), Err(Refusal::Quota));
    }

    #[test]
    fn the_free_space_floor_counts_promised_bytes() {
        let mut ledger = Ledger::new(rules(Senders::Any), 0);
        assert_eq!(ledger.reserve(6 * MIB, 12 * MIB), Ok(()));
        // 12 free - 6 promised - 3 = 3 < 4.
        assert_eq!(ledger.reserve(3 * MIB, 12 * MIB), Err(Refusal::DiskSpace));
        assert_eq!(ledger.reserve(2 * MIB, 12 * MIB), Ok(()));
    }

    #[test]
    fn the_deadline_grows_with_the_size() {
        let ledger = Ledger::new(rules(Senders::Any), 0);
        assert_eq!(ledger.deadline(0), Duration::from_secs(60));
        assert_eq!(ledger.deadline(MIB + 1), Duration::from_secs(62));
    }

    #[test]
    fn refusal_reports_are_rate_limited_and_suppressed_ones_counted() {
        const BURST: usize = 20;
        const INTERVAL: Duration = Duration::from_millis(100);
        let start = Instant::now();
        let mut rate = report_rate(start);
        for _ in 0..BURST {
            assert_eq!(rate.report(start), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(rate.report(start), None);
        }
        assert_eq!(rate.report(start + INTERVAL / 2), None);
        assert_eq!(rate.report(start + INTERVAL), Some(6));
        assert_eq!(rate.report(start + INTERVAL), None);
        // A quiet hour refills the burst, no more.
        let later = start + Duration::from_secs(3600);
        for _ in 0..BURST {
            assert!(rate.report(later).is_some());
        }
        assert_eq!(rate.report(later), None);
    }
}
