//! GIM's backward rules (Edin et al., arXiv 2505.17630) in forward-only form: each rule is written
//! with stop-gradients (`detach`) so that one ordinary backward pass yields the modified gradients
//! while every forward value stays bit-identical to the plain model.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;

/// How the backward pass is modified (GIM, arXiv 2505.17630); the forward values never change.
///
/// Scales and the temperature must be finite (and the temperature positive): a non-finite one turns
/// `0 · c` into NaN in the forward pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradientRules {
    /// Rule 1: the norm statistic (LayerNorm's σ, RMSNorm's rms) is a constant in backward.
    pub freeze_norm: bool,
    /// Rule 2: the attention softmax back-propagates through softmax(a/T) (None = plain gradient).
    pub softmax_temperature: Option<f64>,
    /// Rule 3: factor on the gradient reaching the projected queries.
    pub q_scale: f64,
    /// Rule 3: factor on the gradient reaching the projected keys.
    pub k_scale: f64,
    /// Rule 3: factor on the gradient reaching the projected values.
    pub v_scale: f64,
    /// Rule 4: factor on the gradient reaching act(x W_gate) in a gated MLP.
    pub gate_scale: f64,
    /// Rule 4: factor on the gradient reaching x W_up in a gated MLP.
    pub up_scale: f64,
}

impl GradientRules {
    /// Plain autodiff: no rule, and no extra operation in the forward pass.
    pub const IDENTITY: Self = Self { freeze_norm: false, softmax_temperature: None, q_scale: 1.0, k_scale: 1.0, v_scale: 1.0, gate_scale: 1.0, up_scale: 1.0 };

    /// All four rules with the paper's defaults: frozen norms, T = 2, q/k × 1/4, v × 1/2, gate/up × 1/2.
    pub const GIM: Self =
        Self { freeze_norm: true, softmax_temperature: Some(2.0), q_scale: 0.25, k_scale: 0.25, v_scale: 0.5, gate_scale: 0.5, up_scale: 0.5 };

    /// The named ablation variants of the GIM paper: `grad` (none), `grad-freeze` (1), `grad-tsg` (2),
    /// `grad-norm` (3+4), `grad-freeze-norm` (1+3+4), `gim` (all); None for any other name.
    pub fn named(name: &str) -> Option<Self> {
        let (id, gim) = (Self::IDENTITY, Self::GIM);
        match name {
            "grad" => Some(id),
            "grad-freeze" => Some(Self { freeze_norm: true, ..id }),
            "grad-tsg" => Some(Self { softmax_temperature: gim.softmax_temperature, ..id }),
            "grad-norm" => Some(Self { freeze_norm: false, softmax_temperature: None, ..gim }),
            "grad-freeze-norm" => Some(Self { softmax_temperature: None, ..gim }),
            "gim" => Some(gim),
            _ => None,
        }
    }

    /// Whether this is plain autodiff, so callers can skip work that only matters under GIM.
    pub fn is_identity(&self) -> bool {
        *self == Self::IDENTITY
    }
}

/// Multiplies the gradient reaching `x` by `c` and leaves its value alone: sg(x) + c·(x − sg(x)).
/// Returns `x` untouched when c = 1, so the identity rules add no operation.
pub fn scale_grad<B: Backend, const D: usize>(x: Tensor<B, D>, c: f64) -> Tensor<B, D> {
    if c == 1.0 {
        return x;
    }
    let frozen = x.clone().detach();
    frozen.clone() + (x - frozen) * c
}

/// Softmax over the last dimension (the keys) whose backward, with `temperature` T, is the softmax
/// VJP of the softer pattern softmax(a/T) without the 1/T factor (GIM's rule 2):
/// sg(softmax(a)) + (T·softmax(a/T) − sg(T·softmax(a/T))). Masked scores may be −∞ as long as each
/// row keeps one finite score.
pub fn attention_softmax<B: Backend, const D: usize>(scores: Tensor<B, D>, temperature: Option<f64>) -> Tensor<B, D> {
    let dim = D - 1;
    let Some(t) = temperature else {
        return softmax(scores, dim);
    };
    let pattern = softmax(scores.clone(), dim).detach();
    let soft = softmax(scores / t, dim) * t;
    pattern + (soft.clone() - soft.detach())
}
