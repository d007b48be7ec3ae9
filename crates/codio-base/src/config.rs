//! The error of a setting that cannot work.

/// A setting of a layer's configuration that cannot work (each layer's `validate` returns
/// it, naming the layer, the setting and why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {layer} setting `{field}`: {reason}")]
#[non_exhaustive]
pub struct InvalidConfig {
    /// The layer (`"transport"`, `"policy"`, …).
    pub layer: &'static str,
    /// The setting.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl InvalidConfig {
    /// `field` of `layer` cannot work, because of `reason`.
    pub fn new(layer: &'static str, field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            layer,
            field,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_layer_the_setting_and_why() {
        let error = InvalidConfig::new("policy", "max_peers", "must be at least 1");
        assert_eq!(
            error.to_string(),
            "invalid policy setting `max_peers`: must be at least 1"
        );
    }
}
