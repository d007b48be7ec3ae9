//! Configurations are built with consuming `with_*` methods; [`Edit`] applies them to a
//! configuration that lives inside another, in place, without cloning it.

/// Edits a value in place with a function from the old value to the new one (the layers'
/// `with_*` builders): `config.policy.limits_mut().edit(|l| l.with_max_established(8))`.
pub trait Edit: Default {
    /// Replaces `self` with `change(self)` and returns it for further edits.
    fn edit(&mut self, change: impl FnOnce(Self) -> Self) -> &mut Self {
        let old = std::mem::take(self);
        *self = change(old);
        self
    }
}

impl<T: Default> Edit for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq)]
    struct Inner {
        a: u32,
        b: u32,
    }

    impl Inner {
        fn with_a(self, a: u32) -> Self {
            Self { a, ..self }
        }
        fn with_b(self, b: u32) -> Self {
            Self { b, ..self }
        }
    }

    #[derive(Debug, Default)]
    struct Outer {
        inner: Inner,
    }

    #[test]
    fn edits_a_nested_value_in_place_keeping_the_rest() {
        let mut outer = Outer::default();
        outer.inner.edit(|i| i.with_a(1)).edit(|i| i.with_b(2));
        outer.inner.edit(|i| i.with_a(3));
        assert_eq!(outer.inner, Inner { a: 3, b: 2 });
    }
}
