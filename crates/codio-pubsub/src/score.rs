//! Peer scoring defaults, shaped after Lighthouse's tuned gossipsub parameters (Ethereum's
//! consensus client, `gossipsub_scoring_parameters.rs`) with a CDN control plane's time base:
//! one-second decay intervals (a gossipsub heartbeat) instead of a 12-second slot, and no
//! expected message rate per topic.
//!
//! | parameter | default | why |
//! |---|---|---|
//! | thresholds gossip / publish / graylist | -4,000 / -8,000 / -16,000 | Lighthouse's |
//! | accept PX / opportunistic graft | 100 / 5 | Lighthouse's |
//! | P1 time in mesh | weight 10 / 3,600, quantum 1 s, cap 3,600 | at most +10 after an hour in the mesh (Lighthouse: +10 after 300 slots) |
//! | P2 first deliveries | weight 1, cap 40, decays to 1 % in 10 min | at most +40 for delivering first |
//! | P3 mesh delivery rate | off | control-plane topics are bursty: no rate can be expected of a mesh peer |
//! | P4 invalid messages | weight -[`MAX_POSITIVE_SCORE`] (-50), decays to 1 % in 1 h | one rejected message outweighs everything a peer earned, so it is pruned at the next heartbeat; 10 take it below the gossip threshold, 18 below the graylist |
//! | P6 IP colocation | weight -50 above 8 peers from one IP | Lighthouse's threshold; loopback is not exempt unless whitelisted |
//! | P7 behaviour penalty | weight -10 above 6, decays to 1 % in 10 min | 20 broken promises beyond the threshold reach the gossip threshold |
//!
//! "Decays to 1 % in T" is gossipsub's `score_parameter_decay`: a factor `0.01^(1 s / T)`
//! applied every decay interval.

use std::{collections::HashSet, net::IpAddr, time::Duration};

use libp2p::gossipsub::{PeerScoreParams, PeerScoreThresholds, TopicScoreParams};

/// The highest score a peer can earn on one topic: P1's +10 and P2's +40 (the topic weight
/// is 1). Invalid messages and colocation cost this much each, as in Lighthouse.
pub const MAX_POSITIVE_SCORE: f64 = 50.0;
/// The decay interval: one gossipsub heartbeat.
const DECAY_INTERVAL: Duration = Duration::from_secs(1);

/// The factor that, applied every [`DECAY_INTERVAL`], brings a counter to 1 % in `period`.
fn decay(period: Duration) -> f64 {
    0.01f64.powf(DECAY_INTERVAL.as_secs_f64() / period.as_secs_f64())
}

/// The score thresholds (Lighthouse's).
pub fn default_thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds {
        gossip_threshold: -4000.0,
        publish_threshold: -8000.0,
        graylist_threshold: -16000.0,
        accept_px_threshold: 100.0,
        opportunistic_graft_threshold: 5.0,
    }
}

/// The peer score parameters; `whitelist` is exempt from the IP colocation penalty.
pub fn default_peer_params(whitelist: HashSet<IpAddr>) -> PeerScoreParams {
    let gossip = default_thresholds().gossip_threshold;
    PeerScoreParams {
        topic_score_cap: 10.0 * MAX_POSITIVE_SCORE,
        app_specific_weight: 1.0,
        ip_colocation_factor_weight: -MAX_POSITIVE_SCORE,
        ip_colocation_factor_threshold: 8.0,
        ip_colocation_factor_whitelist: whitelist,
        behaviour_penalty_weight: gossip / (20.0 * 20.0),
        behaviour_penalty_threshold: 6.0,
        behaviour_penalty_decay: decay(Duration::from_secs(600)),
        decay_interval: DECAY_INTERVAL,
        decay_to_zero: 0.01,
        retain_score: Duration::from_secs(3600),
        ..PeerScoreParams::default()
    }
}

/// The parameters every joined topic gets.
pub fn default_topic_params() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 10.0 / 3600.0,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 3600.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: decay(Duration::from_secs(600)),
        first_message_deliveries_cap: 40.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -MAX_POSITIVE_SCORE,
        invalid_message_deliveries_decay: decay(Duration::from_secs(3600)),
        ..TopicScoreParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_hold_their_promises() {
        default_thresholds().validate().unwrap();
        default_peer_params(HashSet::new()).validate().unwrap();
        let topic = default_topic_params();
        topic.validate().unwrap();
        // The most a peer earns on a topic.
        let earned = topic.time_in_mesh_weight * topic.time_in_mesh_cap
            + topic.first_message_deliveries_weight * topic.first_message_deliveries_cap;
        assert!((earned - MAX_POSITIVE_SCORE).abs() < 1e-9);
        // One invalid message (P4 counts squared) leaves it below zero: pruned.
        assert!(earned + topic.invalid_message_deliveries_weight < 1e-9);
        // Ten take it below the gossip threshold, eighteen below the graylist.
        let p4 = |n: f64| earned + topic.invalid_message_deliveries_weight * n * n;
        let thresholds = default_thresholds();
        assert!(p4(9.0) >= thresholds.gossip_threshold && p4(10.0) < thresholds.gossip_threshold);
        assert!(p4(18.0) < thresholds.graylist_threshold);
        // Decay: 1 % after the period.
        let factor = decay(Duration::from_secs(600));
        assert!((factor.powi(600) - 0.01).abs() < 1e-9);
    }
}
