//! Serialization helpers for the events applications print (feature `serde`): durations as
//! whole milliseconds or microseconds, endpoints as a connection direction, reasons as text.

use std::{fmt::Display, time::Duration};

use libp2p::core::Endpoint;
use serde::Serializer;

/// A duration as whole milliseconds.
///
/// # Errors
///
/// Those of the serializer.
pub fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration as whole microseconds.
///
/// # Errors
///
/// Those of the serializer.
pub fn micros<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// An endpoint as the direction of its connection: `outbound` (we dialed) or `inbound`.
pub(crate) fn direction<S: Serializer>(endpoint: &Endpoint, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match endpoint {
        Endpoint::Dialer => "outbound",
        Endpoint::Listener => "inbound",
    })
}

/// A value as its `Display` text.
pub(crate) fn display<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}
