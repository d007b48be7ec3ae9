//! The error of a policy setting that cannot work.

pub use codio_base::InvalidConfig;

/// A setting of the policy layer that cannot work.
pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidConfig {
    InvalidConfig::new("policy", field, reason)
}
