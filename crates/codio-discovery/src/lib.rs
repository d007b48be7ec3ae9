//! Peer discovery for codio nodes: mDNS, Kademlia and bootstrap peers.
//!
//! This crate is empty until the discovery issue fills it; the facade does not use it yet and
//! `NetworkConfig::enable_mdns` is logged as unsupported meanwhile.
