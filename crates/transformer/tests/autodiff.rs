//! The forward pass runs on burn's autodiff backend, and each head's q/k/v input copy can carry its
//! own gradient: the property attribution methods and learned masks build on.

mod common;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use common::fixture;
use transformer::{AttentionInput, Batch, CpuBackend, Hooks, LocalModel, Readout};

type AD = Autodiff<CpuBackend>;

/// Gives layer `layer`'s per-head q copies a trainable perturbation leaf `delta` [h, b, t, d].
struct ProbeQ {
    layer: usize,
    n_heads: usize,
    delta: Tensor<AD, 4>,
}

impl Hooks<AD> for ProbeQ {
    fn attention_input(&mut self, layer: usize, resid: Tensor<AD, 3>) -> AttentionInput<AD> {
        let input = AttentionInput::per_head(&resid, self.n_heads);
        match input {
            AttentionInput::PerHead { q, k, v } if layer == self.layer => AttentionInput::PerHead { q: q + self.delta.clone(), k, v },
            other => other,
        }
    }
}

#[test]
fn per_head_q_gradients_match_finite_differences() {
    let device = Default::default();
    <AD as Backend>::seed(&device, 7);
    let model = LocalModel::Dir(fixture("llama-tiny")).load::<AD>(&device).unwrap().model;
    let cfg = model.config.clone();
    let batch = Batch::<AD>::new(&[vec![5, 17, 42, 8, 3]], &cfg, &device).unwrap();
    let (t, h, d) = (5, cfg.n_heads, cfg.d_model);
    let loss_at = |delta: Tensor<AD, 4>| {
        let mut probe = ProbeQ { layer: 1, n_heads: h, delta };
        let logits = model.forward_with(&batch, &Readout::ReadPosition, &mut probe);
        logits.clone().slice([0..1, 0..1, 7..8]).sum() - logits.slice([0..1, 0..1, 9..10]).sum()
    };

    let leaf = Tensor::<AD, 4>::zeros([h, 1, t, d], &device).require_grad();
    let grads = loss_at(leaf.clone()).backward();
    let grad = leaf.grad(&grads).expect("the probe leaf has a gradient");
    let grad: Vec<f32> = grad.into_data().to_vec().unwrap();

    // Head 2's copy only: a direction confined to one slot.
    let direction = Tensor::<AD, 4>::random([h, 1, t, d], Distribution::Normal(0.0, 1.0), &device);
    let mask_values: Vec<f32> = (0..h * t * d).map(|i| if i / (t * d) == 2 { 1.0 } else { 0.0 }).collect();
    let mask = Tensor::<AD, 4>::from_data(burn::tensor::TensorData::new(mask_values, [h, 1, t, d]), &device);
    let direction = direction * mask;
    let dir_values: Vec<f32> = direction.clone().into_data().to_vec().unwrap();
    let analytic: f32 = grad.iter().zip(&dir_values).map(|(g, u)| g * u).sum();

    let eps = 1e-2;
    let plus: f32 = loss_at(direction.clone() * eps).into_scalar();
    let minus: f32 = loss_at(direction * -eps).into_scalar();
    let numeric = (plus - minus) / (2.0 * eps);
    assert!(analytic.abs() > 1e-3, "gradient into head 2's q copy is not trivially zero");
    assert!((analytic - numeric).abs() < 1e-2 * analytic.abs().max(1.0), "analytic {analytic} vs numeric {numeric}");

    // Other heads' copies got their own (different) gradients.
    let head_grad = |hh: usize| -> Vec<f32> { grad[hh * t * d..(hh + 1) * t * d].to_vec() };
    assert_ne!(head_grad(0), head_grad(2));
}
