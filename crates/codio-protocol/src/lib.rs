//! The `/codio/1.0.0` protocol: typed, versioned messages over a bounded codec.
//!
//! This crate is empty until the protocol issue fills it.
