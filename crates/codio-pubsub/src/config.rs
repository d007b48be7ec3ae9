//! [`PubsubConfig`]: bounds, rates and scoring of the pub/sub layer, with their defaults.

use std::{collections::HashSet, net::IpAddr, time::Duration};

use libp2p::gossipsub::{PeerScoreParams, PeerScoreThresholds, TopicScoreParams};

use crate::PubsubError;

/// Room for the framing around one message in a gossipsub RPC (signature, key, topic,
/// sequence number, protobuf tags): the RPC size limit is the message bound plus this.
pub(crate) const RPC_OVERHEAD: usize = 2048;

/// Configuration of the pub/sub layer.
///
/// | setting | default | bounds |
/// |---|---|---|
/// | [`max_message_bytes`](Self::with_max_message_bytes) | 64 KiB | a message's payload; larger RPCs are dropped by gossipsub's codec, larger publishes refused |
/// | [`peer_rate`](Self::with_peer_rate) | 100 messages/s after a burst of 200, per propagation source | messages a peer forwards us; the rest are ignored (not forwarded) and counted |
/// | [`max_topics`](Self::with_max_topics) | 64 joined topics | topics this node joins |
/// | [`max_peer_topics`](Self::with_max_peer_topics) | 64 topics per peer | subscriptions a peer may announce (gossipsub's subscription filter) |
/// | [`topic_buffer`](Self::with_topic_buffer) | 256 events per topic handle | a slow reader loses the oldest and sees [`TopicEvent::Lagged`](crate::TopicEvent::Lagged) |
/// | [`heartbeat`](Self::with_heartbeat) | 1 s | gossipsub's heartbeat; mesh changes are checked as often |
/// | mesh size | 8 (6 to 12) | gossipsub's `D` defaults |
/// | [`duplicate_cache`](Self::with_duplicate_cache) | 2 min | how long a message id is remembered, so a replay within it is dropped |
/// | send time limits | 5 s to publish, 1 s to forward | gossipsub's: a message queued longer for a slow peer is dropped, and the peer reported slow |
/// | [`scoring`](Self::with_scoring) | on, [`crate::score`]'s parameters | |
///
/// Messages are signed by their author and checked (gossipsub's strict validation mode):
/// unsigned or forged messages are rejected before the application sees them.
#[derive(Debug, Clone)]
pub struct PubsubConfig {
    pub(crate) max_message_bytes: usize,
    pub(crate) peer_rate: (u32, u32),
    pub(crate) max_topics: usize,
    pub(crate) max_peer_topics: usize,
    pub(crate) topic_buffer: usize,
    pub(crate) heartbeat: Duration,
    pub(crate) duplicate_cache: Duration,
    pub(crate) scoring: bool,
    pub(crate) colocation_whitelist: HashSet<IpAddr>,
    pub(crate) peer_score: Option<(PeerScoreParams, PeerScoreThresholds)>,
    pub(crate) topic_score: TopicScoreParams,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            peer_rate: (100, 200),
            max_topics: 64,
            max_peer_topics: 64,
            topic_buffer: 256,
            heartbeat: Duration::from_secs(1),
            duplicate_cache: Duration::from_secs(120),
            scoring: true,
            colocation_whitelist: HashSet::new(),
            peer_score: None,
            topic_score: crate::score::default_topic_params(),
        }
    }
}

impl PubsubConfig {
    /// Sets the largest message payload.
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// Sets the messages a second each peer may forward us, after a burst (0 turns it off).
    pub fn with_peer_rate(mut self, per_second: u32, burst: u32) -> Self {
        self.peer_rate = (per_second, burst);
        self
    }

    /// Sets how many topics this node may join.
    pub fn with_max_topics(mut self, max: usize) -> Self {
        self.max_topics = max;
        self
    }

    /// Sets how many topic subscriptions a peer may announce.
    pub fn with_max_peer_topics(mut self, max: usize) -> Self {
        self.max_peer_topics = max;
        self
    }

    /// Sets how many events a topic handle buffers before the oldest are dropped.
    pub fn with_topic_buffer(mut self, events: usize) -> Self {
        self.topic_buffer = events;
        self
    }

    /// Sets gossipsub's heartbeat interval.
    pub fn with_heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Sets how long message ids are remembered to drop duplicates and replays.
    pub fn with_duplicate_cache(mut self, time: Duration) -> Self {
        self.duplicate_cache = time;
        self
    }

    /// Turns peer scoring on or off.
    pub fn with_scoring(mut self, scoring: bool) -> Self {
        self.scoring = scoring;
        self
    }

    /// Exempts addresses from the IP colocation penalty (for instance a lab on loopback).
    pub fn with_colocation_whitelist(mut self, ips: impl IntoIterator<Item = IpAddr>) -> Self {
        self.colocation_whitelist = ips.into_iter().collect();
        self
    }

    /// Replaces the peer score parameters and thresholds ([`crate::score`]'s by default).
    pub fn with_peer_score(
        mut self,
        params: PeerScoreParams,
        thresholds: PeerScoreThresholds,
    ) -> Self {
        self.peer_score = Some((params, thresholds));
        self
    }

    /// Replaces the score parameters each joined topic gets.
    pub fn with_topic_score(mut self, params: TopicScoreParams) -> Self {
        self.topic_score = params;
        self
    }

    /// The largest message payload.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`PubsubError::InvalidConfig`] naming the setting that cannot work.
    pub fn validate(&self) -> Result<(), PubsubError> {
        let invalid = |field: &'static str, reason: &str| {
            Err(PubsubError::InvalidConfig(codio_base::InvalidConfig::new(
                "pubsub", field, reason,
            )))
        };
        if self.max_message_bytes == 0 {
            return invalid("max_message_bytes", "must be at least 1");
        }
        if self.max_topics == 0 || self.max_peer_topics == 0 {
            return invalid("max_topics", "must be at least 1");
        }
        if self.topic_buffer == 0 {
            return invalid("topic_buffer", "must be at least 1");
        }
        if self.heartbeat.is_zero() {
            return invalid("heartbeat", "must be positive");
        }
        if let Err(reason) = self.topic_score.validate() {
            return invalid("topic_score", reason);
        }
        if let Some((params, thresholds)) = &self.peer_score {
            if let Err(reason) = params.validate() {
                return invalid("peer_score", &reason);
            }
            if let Err(reason) = thresholds.validate() {
                return invalid("peer_score", reason);
            }
        }
        Ok(())
    }

    /// The score parameters and thresholds in force.
    pub(crate) fn score(&self) -> (PeerScoreParams, PeerScoreThresholds) {
        self.peer_score.clone().unwrap_or_else(|| {
            (
                crate::score::default_peer_params(self.colocation_whitelist.clone()),
                crate::score::default_thresholds(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zeroes_are_refused() {
        PubsubConfig::default().validate().unwrap();
        for config in [
            PubsubConfig::default().with_max_message_bytes(0),
            PubsubConfig::default().with_max_topics(0),
            PubsubConfig::default().with_topic_buffer(0),
            PubsubConfig::default().with_heartbeat(Duration::ZERO),
        ] {
            assert!(matches!(
                config.validate(),
                Err(PubsubError::InvalidConfig(_))
            ));
        }
    }
}
