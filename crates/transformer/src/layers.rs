//! The small building blocks every architecture shares: linear maps, norms, MLPs, rotary embedding.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::config::{Llama3RopeScaling, PositionEncoding, RopeLayout};
use crate::rules::{GradientRules, scale_grad};

/// Builds a parameter from row-major f32 data, the form every loader produces.
pub fn param<B: Backend, const D: usize>(data: Vec<f32>, shape: [usize; D], device: &B::Device) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), device))
}

/// `x @ W + b` with W stored as [d_in, d_out], so per-head slices are plain reshapes of the columns.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// W as [d_in, d_out].
    pub weight: Param<Tensor<B, 2>>,
    /// b, one entry per output, when the map has one.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

/// `x @ w` over the last dimension of `x`, as one 2-D product: burn-ndarray runs a batched
/// product as one GEMM per batch entry, each packing `w` again, so [b, t, d] @ [1, d, n] would pack
/// the weight b times (measured: packing outweighed the arithmetic for SmolLM2's MLP and unembedding).
/// The product reads `w` in place even when it is a transposed view (a tied unembedding).
pub fn matmul_last<B: Backend, const D: usize>(x: Tensor<B, D>, w: Tensor<B, 2>) -> Tensor<B, D> {
    let mut dims = x.dims();
    let rows = dims[..D - 1].iter().product();
    dims[D - 1] = w.dims()[1];
    crate::products::matmul(x.reshape([rows, w.dims()[0]]), w).reshape(dims)
}

impl<B: Backend> Linear<B> {
    /// Applies the map to the last dimension of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let y = matmul_last(x, self.weight.val());
        match &self.bias {
            Some(b) => y + b.val().unsqueeze(),
            None => y,
        }
    }

    /// Output width of the map.
    pub fn d_out(&self) -> usize {
        self.weight.dims()[1]
    }
}

/// Pre-norm of the residual stream; GPT-2 uses LayerNorm, the Llama family RMSNorm.
#[derive(Module, Debug)]
pub enum Norm<B: Backend> {
    /// GPT-2's.
    Layer(LayerNorm<B>),
    /// The Llama family's.
    Rms(RmsNorm<B>),
    /// None at all (tracr-compiled models).
    Identity(NoNorm),
}

/// The absent norm of a model without normalisation: every method of [`Norm`] passes its input
/// through (its statistic is 1).
#[derive(Module, Clone, Debug, Default)]
pub struct NoNorm;

impl<B: Backend> Norm<B> {
    /// Normalises the last dimension; works on any rank, so per-head input copies need no reshaping.
    /// With `rules.freeze_norm` the statistic (σ or rms) is a constant in backward (GIM rule 1).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>, rules: &GradientRules) -> Tensor<B, D> {
        match self {
            Norm::Layer(n) => n.forward(x, rules.freeze_norm),
            Norm::Rms(n) => n.forward(x, rules.freeze_norm),
            Norm::Identity(_) => x,
        }
    }

    /// 1/σ (LayerNorm) or 1/rms (RMSNorm) of each row of `x` over its last dimension, [.., 1]:
    /// with the statistic frozen (GIM rule 1) the norm's backward is
    /// `frozen_linear(g, last) * inverse_statistic(x)`.
    pub fn inverse_statistic<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let last = D - 1;
        let statistic = match self {
            Norm::Layer(n) => (x.var_bias(last) + n.eps).sqrt(),
            Norm::Rms(n) => (x.square().mean_dim(last) + n.eps).sqrt(),
            Norm::Identity(_) => return x.sum_dim(last).ones_like(),
        };
        statistic.recip()
    }

    /// The linear part of the backward with the statistic frozen, along dimension `dim` of `g`
    /// (d_model wide): g ∘ w, then centred along `dim` for LayerNorm. Being linear it can be
    /// applied to a projection's weight [d_model, n] along dimension 0 instead of to the much wider
    /// product of an output gradient with that weight's transpose.
    pub fn frozen_linear<const D: usize>(&self, g: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
        let weight = |w: &Param<Tensor<B, 1>>| {
            let mut shape = [1; D];
            shape[dim] = w.dims()[0];
            w.val().reshape(shape)
        };
        match self {
            Norm::Layer(n) => {
                let a = g * weight(&n.weight);
                a.clone() - a.mean_dim(dim)
            }
            Norm::Rms(n) => g * weight(&n.weight),
            Norm::Identity(_) => g,
        }
    }

    /// The norm's backward on its own: ∂L/∂x from ∂L/∂y at input x, for hooks that probe after the
    /// norm (x broadcasts against g). `freeze` treats σ or rms as a constant, as `forward` does.
    pub fn input_gradient<const D: usize>(&self, x: Tensor<B, D>, g: Tensor<B, D>, freeze: bool) -> Tensor<B, D> {
        let last = D - 1;
        match self {
            Norm::Identity(_) => g,
            _ if freeze => self.frozen_linear(g, last) * self.inverse_statistic(x),
            Norm::Layer(n) => {
                let (var, mean) = x.clone().var_mean_bias(last);
                let sigma = (var + n.eps).sqrt();
                let a = g * n.weight.val().unsqueeze();
                let centred = a.clone() - a.clone().mean_dim(last);
                let normed = (x - mean) / sigma.clone();
                (centred - normed.clone() * (a * normed).mean_dim(last)) / sigma
            }
            Norm::Rms(n) => {
                let rms = (x.clone().square().mean_dim(last) + n.eps).sqrt();
                let a = g * n.weight.val().unsqueeze();
                let d = x.dims()[last] as f64;
                let coupling = (a.clone() * x.clone()).sum_dim(last) / (rms.clone().powi_scalar(3) * d);
                a / rms - x * coupling
            }
        }
    }
}

/// LayerNorm with affine weight and bias (biased variance, as PyTorch).
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// γ, the scale of each coordinate after normalising.
    pub weight: Param<Tensor<B, 1>>,
    /// β, the shift of each coordinate after scaling.
    pub bias: Param<Tensor<B, 1>>,
    /// Added to the variance before the square root.
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    fn forward<const D: usize>(&self, x: Tensor<B, D>, freeze: bool) -> Tensor<B, D> {
        let (var, mean) = x.clone().var_mean_bias(D - 1);
        let sigma = (var + self.eps).sqrt();
        let sigma = if freeze { sigma.detach() } else { sigma };
        let normed = (x - mean) / sigma;
        normed * self.weight.val().unsqueeze() + self.bias.val().unsqueeze()
    }
}

/// RMSNorm: x / sqrt(mean(x²) + eps) · w.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// The scale of each coordinate after normalising.
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square before the square root.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    fn forward<const D: usize>(&self, x: Tensor<B, D>, freeze: bool) -> Tensor<B, D> {
        let rms = (x.clone().square().mean_dim(D - 1) + self.eps).sqrt();
        let rms = if freeze { rms.detach() } else { rms };
        (x / rms) * self.weight.val().unsqueeze()
    }
}

/// The MLP of a block; its output (bias included) is one MIB node.
// One per block, so the variants' size difference costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Mlp<B: Backend> {
    /// GPT-2's: GELU (tanh) between the two maps.
    Gelu(DenseMlp<B>),
    /// The Llama family's.
    Gated(GatedMlp<B>),
    /// tracr's: ReLU between the two maps.
    Relu(DenseMlp<B>),
}

/// Two biased maps with an activation between them: act(x W_in + b_in) W_out + b_out (GPT-2's
/// GELU, tracr's ReLU).
#[derive(Module, Debug)]
pub struct DenseMlp<B: Backend> {
    /// [d_model, d_mlp] with bias (Hugging Face `c_fc`).
    pub fc_in: Linear<B>,
    /// [d_mlp, d_model] with bias (Hugging Face `c_proj`).
    pub fc_out: Linear<B>,
}

/// The Llama family's MLP: (SiLU(x W_gate) ⊙ x W_up) W_down.
#[derive(Module, Debug)]
pub struct GatedMlp<B: Backend> {
    /// [d_model, d_mlp], the activated operand.
    pub gate: Linear<B>,
    /// [d_model, d_mlp], the linear operand.
    pub up: Linear<B>,
    /// [d_mlp, d_model], back to the residual stream.
    pub down: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// Maps the normalised MLP input to the MLP's contribution to the residual stream:
    /// [`Mlp::hidden`] then [`Mlp::project`].
    pub fn forward(&self, x: Tensor<B, 3>, rules: &GradientRules) -> Tensor<B, 3> {
        self.project(self.hidden(x, rules))
    }

    /// The hidden activations [batch, pos, d_mlp] of the normalised MLP input, before the down
    /// projection: GELU(x W_in + b_in), ReLU(x W_in + b_in), or SiLU(x W_gate) ⊙ x W_up with each operand of the
    /// product getting its gradient scaled by `rules` (GIM rule 4).
    pub fn hidden(&self, x: Tensor<B, 3>, rules: &GradientRules) -> Tensor<B, 3> {
        match self {
            Mlp::Gelu(m) => gelu_tanh(m.fc_in.forward(x)),
            Mlp::Relu(m) => burn::tensor::activation::relu(m.fc_in.forward(x)),
            Mlp::Gated(m) => {
                let gate = scale_grad(silu(m.gate.forward(x.clone())), rules.gate_scale);
                let up = scale_grad(m.up.forward(x), rules.up_scale);
                gate * up
            }
        }
    }

    /// The down (out) projection of the hidden activations, its bias included: the MLP's output.
    pub fn project(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        self.down().forward(hidden)
    }

    /// The map from the hidden layer back to the residual stream (GPT-2's `c_proj`, Llama's `down_proj`).
    pub fn down(&self) -> &Linear<B> {
        match self {
            Mlp::Gelu(m) | Mlp::Relu(m) => &m.fc_out,
            Mlp::Gated(m) => &m.down,
        }
    }
}

/// Largest exponent the activations pass to `exp`: e^80 is finite in f32, so the backward never
/// meets 0 × ∞ (the activations are flat there, their gradient below f32's resolution anyway).
const MAX_EXPONENT: f64 = 80.0;

/// `x / (1 + e^{-z})`, the product of x and σ(z) with one exponential: burn's sigmoid takes
/// three transcendental passes (exp, log, exp) and its tanh runs in f64 on burn-ndarray.
fn times_sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>, z: Tensor<B, D>) -> Tensor<B, D> {
    x / (z.neg().clamp_max(MAX_EXPONENT).exp() + 1.0)
}

/// GPT-2's GELU (tanh approximation), written as x σ(2u) with u = √(2/π)(x + 0.044715 x³) — the
/// same function as ½x(1 + tanh u), at a fraction of burn-ndarray's cost (training the MCQA model
/// spent a fifth of its time in f64 tanh and powf).
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2;
    let cube = x.clone() * x.clone() * x.clone();
    let z = (x.clone() + cube * 0.044715) * TWO_SQRT_2_OVER_PI;
    times_sigmoid(x, z)
}

/// SiLU, x σ(x), with one exponential (see `times_sigmoid`).
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    times_sigmoid(x.clone(), x)
}

/// The rotary embedding at given positions as x·cos + (x R)·sin: cos and sin [rows, 1, positions,
/// d_head] (one row shared by the batch, or one per row) hold each frequency at both coordinates
/// of its pair, and R [d_head, d_head] maps every pair (a, b) to
/// (−b, a). One small GEMM instead of slicing x into halves and concatenating the rotated halves
/// (burn-ndarray copies a slice element by element: 6–11% of SmolLM2 attribution time).
pub struct RopeTables<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
    rotation: Tensor<B, 2>,
}

/// Inverse frequencies θ^(−2i/d), with Llama-3's correction when the config asks for it.
fn inverse_frequencies(d_head: usize, theta: f64, scaling: Option<Llama3RopeScaling>) -> Vec<f64> {
    (0..d_head / 2)
        .map(|i| {
            let freq = theta.powf(-((2 * i) as f64) / d_head as f64);
            match scaling {
                None => freq,
                Some(s) => llama3_scaled(freq, s),
            }
        })
        .collect()
}

/// Llama-3.1's frequency correction: long wavelengths slowed by `factor`, a smooth blend between.
fn llama3_scaled(freq: f64, s: Llama3RopeScaling) -> f64 {
    let original = s.original_max_position_embeddings as f64;
    let wavelen = 2.0 * std::f64::consts::PI / freq;
    let low_freq_wavelen = original / s.low_freq_factor;
    let high_freq_wavelen = original / s.high_freq_factor;
    if wavelen < high_freq_wavelen {
        freq
    } else if wavelen > low_freq_wavelen {
        freq / s.factor
    } else {
        let smooth = (original / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * freq / s.factor + smooth * freq
    }
}

impl<B: Backend> RopeTables<B> {
    /// Tables for a rotary config at the absolute `positions` of `rows` rows (row-major; one row
    /// when every row of the batch has the same positions, as a full pass does; a pass over
    /// suffixes has one per row), or None for models with learned positions.
    pub fn new(positions: &PositionEncoding, d_head: usize, rows: usize, at: &[usize], device: &B::Device) -> Option<Self> {
        let PositionEncoding::Rope { theta, layout, scaling } = *positions else {
            return None;
        };
        let inv = inverse_frequencies(d_head, theta, scaling);
        let half = d_head / 2;
        // The two coordinates of frequency i's pair: (i, i + half) or (2i, 2i + 1).
        let pair = |i: usize| match layout {
            RopeLayout::HalfSplit => (i, i + half),
            RopeLayout::Interleaved => (2 * i, 2 * i + 1),
        };
        let len = at.len();
        let (mut cos, mut sin) = (vec![0f32; len * d_head], vec![0f32; len * d_head]);
        for (row, &pos) in at.iter().enumerate() {
            for (i, f) in inv.iter().enumerate() {
                let angle = pos as f64 * f;
                let (a, b) = pair(i);
                for c in [a, b] {
                    cos[row * d_head + c] = angle.cos() as f32;
                    sin[row * d_head + c] = angle.sin() as f32;
                }
            }
        }
        let mut rotation = vec![0f32; d_head * d_head];
        for i in 0..half {
            let (a, b) = pair(i);
            rotation[b * d_head + a] = -1.0; // out[a] = −x[b]
            rotation[a * d_head + b] = 1.0; // out[b] = x[a]
        }
        Some(Self {
            cos: Tensor::from_data(TensorData::new(cos, [rows, 1, len / rows, d_head]), device),
            sin: Tensor::from_data(TensorData::new(sin, [rows, 1, len / rows, d_head]), device),
            rotation: Tensor::from_data(TensorData::new(rotation, [d_head, d_head]), device),
        })
    }

    /// Rotates x of shape [batch, heads, len, d_head] position by position.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let rotated = matmul_last(x.clone(), self.rotation.clone());
        // The GEMM's output first: burn-ndarray computes element-wise ops in place in the left
        // operand's layout, so the result is contiguous even when x is a permuted view, and the
        // attention product that follows need not copy it again.
        rotated * self.sin.clone() + x * self.cos.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::activation;

    type AD = Autodiff<crate::CpuBackend>;

    /// Inputs from the flat tails to the curved middle of both activations.
    fn inputs() -> Tensor<AD, 1> {
        let xs: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.05).chain([-1e4, -200.0, -90.0, 90.0, 200.0, 1e4]).collect();
        let n = xs.len();
        Tensor::from_data(TensorData::new(xs, [n]), &Default::default()).require_grad()
    }

    /// Values and gradients of `ours` against burn's own activation, within `tol` (absolute).
    fn assert_same(ours: fn(Tensor<AD, 1>) -> Tensor<AD, 1>, theirs: fn(Tensor<AD, 1>) -> Tensor<AD, 1>, tol: f32) {
        let run = |f: fn(Tensor<AD, 1>) -> Tensor<AD, 1>| {
            let x = inputs();
            let y = f(x.clone());
            let grads = y.clone().sum().backward();
            let grad: Vec<f32> = x.grad(&grads).expect("leaf gradient").into_data().to_vec().unwrap();
            (y.into_data().to_vec::<f32>().unwrap(), grad)
        };
        let ((y1, g1), (y2, g2)) = (run(ours), run(theirs));
        for (i, (a, b)) in y1.iter().zip(&y2).chain(g1.iter().zip(&g2)).enumerate() {
            assert!(a.is_finite() && (a - b).abs() <= tol * (1.0 + b.abs()), "entry {i}: {a} vs {b}");
        }
    }

    #[test]
    fn one_exponential_activations_match_burns() {
        assert_same(gelu_tanh, activation::gelu_approximate, 2e-6);
        assert_same(silu, activation::silu, 2e-6);
    }

    #[test]
    fn llama3_scaling_matches_transformers() {
        // transformers 4.57 `_compute_llama3_parameters` for Llama-3.1-8B's rope settings.
        let scaling = Llama3RopeScaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 };
        let inv = inverse_frequencies(128, 500_000.0, Some(scaling));
        let expected = [
            (0, 1.0),
            (20, 0.016560440883040428),
            (40, 3.428102354519069e-05),
            (45, 1.2297638932068367e-05),
            (50, 4.411534519022098e-06),
            (63, 3.068925877869333e-07),
        ];
        for (i, want) in expected {
            let rel = (inv[i] - want).abs() / want;
            assert!(rel < 1e-6, "frequency {i}: {} vs {want}", inv[i]);
        }
    }
}
