//! The check every number read back from a forward pass goes through before it is printed or
//! stored: a model whose weights or activations overflow gives NaN or infinite logits, and those
//! must fail the command, naming the model and the prompt, instead of reaching a table as null.

/// Values read back from a forward pass that are NaN or infinite.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{what}: {count} of {len} values are not finite numbers (the first, at index {index}, is {value}); the model's weights or activations overflow or hold NaN"
)]
pub struct NonFinite {
    /// What the values are: the model, the prompt and the quantity, as the caller names them.
    pub what: String,
    /// Index of the first non-finite value.
    pub index: usize,
    /// That value: NaN, inf or -inf.
    pub value: f32,
    /// How many of the values are not finite.
    pub count: usize,
    /// How many values were checked.
    pub len: usize,
}

/// Fails when any of `values` is NaN or infinite; `what` (called only then) names what they are,
/// e.g. ``model `gpt2`, prompt "Hello": last-position logits``.
pub fn ensure_finite(values: &[f32], what: impl FnOnce() -> String) -> Result<(), NonFinite> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(NonFinite { what: what(), index, value: values[index], count: values.iter().filter(|v| !v.is_finite()).count(), len: values.len() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finite_values_pass_and_the_first_bad_one_is_named() {
        assert_eq!(ensure_finite(&[0.0, -1.5, f32::MAX], || unreachable!()), Ok(()));
        let err = ensure_finite(&[1.0, f32::NEG_INFINITY, f32::NAN, 2.0], || "model `m`, prompt \"p\"".into()).unwrap_err();
        assert_eq!((err.index, err.count, err.len), (1, 2, 4));
        assert_eq!(err.value, f32::NEG_INFINITY);
        let message = err.to_string();
        for part in ["model `m`", "prompt \"p\"", "2 of 4", "index 1", "-inf"] {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
        assert!(ensure_finite(&[f32::NAN], String::new).unwrap_err().value.is_nan());
    }
}
