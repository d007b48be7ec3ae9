//! Connection policy for codio nodes: limits, watermarks, reconnection with backoff and NAT
//! traversal.
//!
//! This crate is empty until the policy issue fills it. Meanwhile the facade enforces
//! `NetworkConfig::max_peers` with libp2p's `connection_limits` behaviour.
