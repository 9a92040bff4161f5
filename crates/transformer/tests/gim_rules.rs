//! GIM's backward rules: forward values never change, the identity rules are plain autodiff, and
//! each rule's backward matches its closed form (gim-spec "Tests worth having").

mod common;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use common::fixture;
use transformer::layers::{LayerNorm, Norm, RmsNorm, param};
use transformer::rules::{GradientRules, attention_softmax, scale_grad};
use transformer::{AttentionInput, Batch, CpuBackend, Hooks, LocalModel, Readout, Transformer};

type AD = Autodiff<CpuBackend>;

const NAMES: [&str; 6] = ["grad", "grad-freeze", "grad-tsg", "grad-norm", "grad-freeze-norm", "gim"];

fn load(name: &str) -> Transformer<AD> {
    LocalModel::Dir(fixture(name)).load::<AD>(&Default::default()).expect("fixture loads").model
}

/// Three right-padded rows of different lengths, so masked keys and padded queries are exercised.
fn padded_batch(model: &Transformer<AD>) -> Batch<AD> {
    let seqs = [vec![5, 17, 42, 8, 3, 11], vec![9, 4], vec![30, 2, 7, 60]];
    Batch::new(&seqs, &model.config, &Default::default()).unwrap()
}

fn vec1(values: &[f32]) -> Tensor<AD, 1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), &Default::default())
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// Gradient of `f` w.r.t. its input `x`, evaluated at `x`.
fn grad_of<const D: usize>(x: Tensor<AD, D>, f: impl Fn(Tensor<AD, D>) -> Tensor<AD, 1>) -> Vec<f32> {
    let leaf = x.detach().require_grad();
    let grads = f(leaf.clone()).backward();
    values(leaf.grad(&grads).expect("the leaf has a gradient"))
}

/// A loss reading two logits of every row, so every row and position matters.
fn logit_loss(logits: Tensor<AD, 3>) -> Tensor<AD, 1> {
    let [b, n, _] = logits.dims();
    logits.clone().slice([0..b, 0..n, 7..8]).sum() - logits.slice([0..b, 0..n, 9..10]).sum()
}

/// Adds a zero leaf to the token embedding (the `input` node's output).
struct ProbeInput(Tensor<AD, 3>);

impl Hooks<AD> for ProbeInput {
    fn input_output(&mut self, embedding: Tensor<AD, 3>) -> Tensor<AD, 3> {
        embedding + self.0.clone()
    }
}

/// Gradient of `logit_loss` at the input embedding under `rules`.
fn input_gradient(model: &Transformer<AD>, batch: &Batch<AD>, rules: &GradientRules) -> Vec<f32> {
    let [b, t] = batch.ids.dims();
    let leaf = Tensor::<AD, 3>::zeros([b, t, model.config.d_model], &Default::default()).require_grad();
    let logits = model.forward_with_rules(batch, &Readout::ReadPosition, &mut ProbeInput(leaf.clone()), rules);
    let grads = logit_loss(logits).backward();
    values(leaf.grad(&grads).expect("input leaf has a gradient"))
}

fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

#[test]
fn named_configs() {
    assert_eq!(GradientRules::named("grad"), Some(GradientRules::IDENTITY));
    assert_eq!(GradientRules::named("gim"), Some(GradientRules::GIM));
    assert!(GradientRules::IDENTITY.is_identity());
    assert!(NAMES[1..].iter().all(|n| !GradientRules::named(n).unwrap().is_identity()));
    assert_eq!(GradientRules::named("GIM"), None);
    assert_eq!(GradientRules::named(""), None);
    let norm = GradientRules::named("grad-norm").unwrap();
    assert!(!norm.freeze_norm && norm.softmax_temperature.is_none() && norm.v_scale == 0.5 && norm.up_scale == 0.5);
    let tsg = GradientRules::named("grad-tsg").unwrap();
    assert_eq!(GradientRules { softmax_temperature: None, ..tsg }, GradientRules::IDENTITY);
}

#[test]
fn logits_are_bit_identical_under_every_rule() {
    for name in ["llama-tiny", "gpt2-tiny", "qwen2-tiny"] {
        let model = load(name);
        let batch = padded_batch(&model);
        let plain = values(model.forward(&batch, &Readout::All));
        for rule in NAMES {
            let rules = GradientRules::named(rule).unwrap();
            let got = values(model.forward_with_rules(&batch, &Readout::All, &mut transformer::NoHooks, &rules));
            assert!(got == plain, "{name} {rule}: logits changed");
        }
    }
}

#[test]
fn identity_rules_are_plain_autodiff() {
    let model = load("llama-tiny");
    let batch = padded_batch(&model);
    let [b, t] = batch.ids.dims();
    let leaf = Tensor::<AD, 3>::zeros([b, t, model.config.d_model], &Default::default()).require_grad();
    let grads = logit_loss(model.forward_with(&batch, &Readout::ReadPosition, &mut ProbeInput(leaf.clone()))).backward();
    let plain = values(leaf.grad(&grads).unwrap());
    assert!(plain.iter().any(|g| *g != 0.0));
    assert_eq!(input_gradient(&model, &batch, &GradientRules::IDENTITY), plain);

    // TSG at T = 1 is the plain softmax VJP, computed along another path.
    let t1 = GradientRules { softmax_temperature: Some(1.0), ..GradientRules::IDENTITY };
    let diff = rel_diff(&input_gradient(&model, &batch, &t1), &plain);
    println!("T = 1 vs plain, max relative difference {diff:e}");
    assert!(diff < 1e-5);
}

#[test]
fn every_rule_changes_the_gradient_and_stays_finite() {
    for name in ["llama-tiny", "gpt2-tiny", "qwen2-tiny"] {
        let model = load(name);
        let batch = padded_batch(&model);
        let plain = input_gradient(&model, &batch, &GradientRules::IDENTITY);
        for rule in &NAMES[1..] {
            let got = input_gradient(&model, &batch, &GradientRules::named(rule).unwrap());
            assert!(got.iter().all(|g| g.is_finite()), "{name} {rule}: non-finite gradient");
            let diff = rel_diff(&got, &plain);
            println!("{name} {rule}: max |g - g_plain| / max |g_plain| = {diff:.4}");
            assert!(diff > 1e-3, "{name} {rule}: gradient unchanged");
        }
    }
}

/// Adds a zero leaf to the token embedding and feeds every layer per-head q/k/v copies.
struct ProbeInputPerHead(Tensor<AD, 3>, usize);

impl Hooks<AD> for ProbeInputPerHead {
    fn input_output(&mut self, embedding: Tensor<AD, 3>) -> Tensor<AD, 3> {
        embedding + self.0.clone()
    }

    fn attention_input(&mut self, _layer: usize, resid: Tensor<AD, 3>) -> AttentionInput<AD> {
        AttentionInput::per_head(&resid, self.1)
    }
}

#[test]
fn per_head_path_follows_the_same_rules() {
    for name in ["llama-tiny", "gpt2-tiny"] {
        let model = load(name);
        let batch = padded_batch(&model);
        let [b, t] = batch.ids.dims();
        let rules = GradientRules::GIM;
        let leaf = Tensor::<AD, 3>::zeros([b, t, model.config.d_model], &Default::default()).require_grad();
        let mut probe = ProbeInputPerHead(leaf.clone(), model.config.n_heads);
        let grads = logit_loss(model.forward_with_rules(&batch, &Readout::ReadPosition, &mut probe, &rules)).backward();
        let per_head = values(leaf.grad(&grads).unwrap());
        let diff = rel_diff(&per_head, &input_gradient(&model, &batch, &rules));
        println!("{name} GIM: per-head vs shared input gradient, max relative difference {diff:e}");
        assert!(diff < 1e-5);
    }
}

#[test]
fn scale_grad_scales_the_gradient_only() {
    let device = Default::default();
    let x = Tensor::<AD, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<AD, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), &device);
    let wv = values(w.clone());
    for c in [1.0, 0.5, 0.25, -3.0, 0.0] {
        assert_eq!(values(scale_grad(x.clone(), c)), values(x.clone()));
        let g = grad_of(x.clone(), |x| (scale_grad(x, c) * w.clone()).sum());
        let want: Vec<f32> = wv.iter().map(|w| (c as f32) * w).collect();
        assert_eq!(g, want, "c = {c}");
    }
}

#[test]
fn tsg_softmax_matches_its_closed_form() {
    let device = Default::default();
    let a = Tensor::<AD, 2>::random([4, 6], Distribution::Normal(0.0, 3.0), &device);
    // Mask the last two keys of row 0 with −∞, as attention does.
    let mask = Tensor::<AD, 2, burn::tensor::Bool>::from_data(TensorData::new((0..24).map(|i| i == 4 || i == 5).collect::<Vec<_>>(), [4, 6]), &device);
    let a = a.mask_fill(mask, f32::NEG_INFINITY);
    let w = Tensor::<AD, 2>::random([4, 6], Distribution::Normal(0.0, 1.0), &device);
    let f = |t: Option<f64>| {
        let w = w.clone();
        move |a: Tensor<AD, 2>| (attention_softmax(a, t) * w.clone()).sum()
    };

    assert_eq!(values(attention_softmax(a.clone(), Some(2.0))), values(attention_softmax(a.clone(), None)));
    let plain = grad_of(a.clone(), f(None));
    let t1 = grad_of(a.clone(), f(Some(1.0)));
    assert!(rel_diff(&t1, &plain) < 1e-6, "T = 1 differs from the plain VJP");

    // T = 2: s^T ⊙ (w − Σ s^T w) per row, s^T = softmax(a / 2).
    let tsg = grad_of(a.clone(), f(Some(2.0)));
    let soft = values(burn::tensor::activation::softmax(a / 2.0, 1));
    let wv = values(w);
    let mut want = vec![0.0f32; 24];
    for r in 0..4 {
        let row = r * 6..r * 6 + 6;
        let dot: f32 = row.clone().map(|i| soft[i] * wv[i]).sum();
        for i in row {
            want[i] = soft[i] * (wv[i] - dot);
        }
    }
    assert!(tsg.iter().all(|g| g.is_finite()));
    assert_eq!((tsg[4], tsg[5]), (0.0, 0.0), "masked keys get no gradient");
    assert!(rel_diff(&tsg, &want) < 1e-6, "{tsg:?} vs {want:?}");
}

#[test]
fn self_repair_toy() {
    // One saturated row: two keys share the mass; the readout sums their probabilities.
    let mut scores = vec![0.0f32; 12];
    scores[..2].copy_from_slice(&[8.0, 8.0]);
    let mut readout = vec![0.0f32; 12];
    readout[..2].copy_from_slice(&[1.0, 1.0]);
    let (a, delta) = (vec1(&scores), vec1(&readout));
    let f = |t: Option<f64>| {
        let delta = delta.clone();
        move |a: Tensor<AD, 1>| (attention_softmax(a, t) * delta.clone()).sum()
    };

    let value: f32 = f(None)(a.clone()).into_scalar();
    let ablated: f32 = f(None)(vec1(&[0.0; 12])).into_scalar();
    let plain = grad_of(a.clone(), f(None));
    let tsg = grad_of(a, f(Some(2.0)));
    // Ablating keys 0 and 1 from 8 to 0: Δ = −8 each.
    let linear = |g: &[f32]| -8.0 * (g[0] + g[1]);
    println!(
        "f = {value:.5}, true change {:.4}, plain ∂f/∂a0 = {:.3e} (Σ gΔ {:.4}), TSG ∂f/∂a0 = {:.3e} (Σ gΔ {:.4})",
        ablated - value,
        plain[0],
        linear(&plain),
        tsg[0],
        linear(&tsg)
    );
    let close = |got: f32, want: f32, tol: f32| assert!((got - want).abs() < tol, "{got} vs {want}");
    close(value, 0.99833, 1e-5);
    close(ablated - value, -0.8317, 1e-4);
    close(plain[0], 8.36e-4, 1e-6);
    close(tsg[0], 3.84e-2, 1e-4);
    close(linear(&plain), -0.0134, 1e-4);
    close(linear(&tsg), -0.6149, 1e-4);
}

/// Jacobian of a norm at `x` (rows: outputs), by one backward pass per output.
fn norm_jacobian(norm: &Norm<AD>, x: &[f32], rules: &GradientRules) -> Vec<Vec<f32>> {
    (0..x.len())
        .map(|i| {
            let mut onehot = vec![0.0f32; x.len()];
            onehot[i] = 1.0;
            let e = vec1(&onehot);
            grad_of(vec1(x), |x| (norm.forward(x, rules) * e.clone()).sum())
        })
        .collect()
}

#[test]
fn frozen_norms_match_their_closed_forms() {
    let device = Default::default();
    let x = [0.7f32, -1.3, 2.1, 0.2, -0.4];
    let w = [1.5f32, -0.5, 0.8, 2.0, 1.1];
    let d = x.len();
    let eps = 1e-5;
    let frozen = GradientRules { freeze_norm: true, ..GradientRules::IDENTITY };
    let weight = || param(w.to_vec(), [d], &device);

    let rms = Norm::Rms(RmsNorm { weight: weight(), eps });
    let r = ((x.iter().map(|v| v * v).sum::<f32>() / d as f32) as f64 + eps).sqrt() as f32;
    let jac = norm_jacobian(&rms, &x, &frozen);
    for (i, row) in jac.iter().enumerate() {
        for (j, g) in row.iter().enumerate() {
            let want = if i == j { w[i] / r } else { 0.0 };
            assert!((g - want).abs() < 1e-6, "RMSNorm J[{i}][{j}] = {g}, want {want}");
        }
    }

    let ln = Norm::Layer(LayerNorm { weight: weight(), bias: param(vec![0.3; d], [d], &device), eps });
    let mean = x.iter().sum::<f32>() / d as f32;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / d as f32;
    let sigma = ((var as f64) + eps).sqrt() as f32;
    let jac = norm_jacobian(&ln, &x, &frozen);
    for (i, row) in jac.iter().enumerate() {
        for (j, g) in row.iter().enumerate() {
            let centre = if i == j { 1.0 } else { 0.0 } - 1.0 / d as f32;
            let want = w[i] / sigma * centre;
            assert!((g - want).abs() < 1e-6, "LayerNorm J[{i}][{j}] = {g}, want {want}");
        }
    }

    // The unfrozen norms differ: the statistic's own derivative is back.
    let plain = GradientRules::IDENTITY;
    assert!(rel_diff(&norm_jacobian(&rms, &x, &plain).concat(), &jac.concat()) > 1e-2);
    assert_ne!(norm_jacobian(&ln, &x, &plain), jac);
}

/// Per-head q/k/v copies of layer `layer`, each with its own zero leaf [h, b, t, d].
struct ProbeQkv {
    layer: usize,
    n_heads: usize,
    leaves: [Tensor<AD, 4>; 3],
}

impl Hooks<AD> for ProbeQkv {
    fn attention_input(&mut self, layer: usize, resid: Tensor<AD, 3>) -> AttentionInput<AD> {
        match AttentionInput::per_head(&resid, self.n_heads) {
            AttentionInput::PerHead { q, k, v } if layer == self.layer => {
                let [lq, lk, lv] = self.leaves.clone();
                AttentionInput::PerHead { q: q + lq, k: k + lk, v: v + lv }
            }
            other => other,
        }
    }
}

/// Gradients at the q, k and v copies of the last layer under `rules`.
fn last_layer_qkv_gradients(model: &Transformer<AD>, batch: &Batch<AD>, rules: &GradientRules) -> [Vec<f32>; 3] {
    let [b, t] = batch.ids.dims();
    let (h, d) = (model.config.n_heads, model.config.d_model);
    let leaf = || Tensor::<AD, 4>::zeros([h, b, t, d], &Default::default()).require_grad();
    let mut probe = ProbeQkv { layer: model.config.n_layers - 1, n_heads: h, leaves: [leaf(), leaf(), leaf()] };
    let grads = logit_loss(model.forward_with_rules(batch, &Readout::ReadPosition, &mut probe, rules)).backward();
    probe.leaves.map(|l| values(l.grad(&grads).expect("copy leaf has a gradient")))
}

#[test]
fn qkv_scales_are_exact_in_the_last_layer() {
    // llama-tiny is GQA (4 query heads, 2 KV heads); qwen2-tiny adds q/k/v biases; gpt2-tiny LayerNorm.
    for name in ["llama-tiny", "qwen2-tiny", "gpt2-tiny"] {
        let model = load(name);
        let batch = padded_batch(&model);
        let plain = last_layer_qkv_gradients(&model, &batch, &GradientRules::IDENTITY);
        let id = GradientRules::IDENTITY;
        let cases = [
            (0, GradientRules { q_scale: 0.25, ..id }, 0.25f32),
            (1, GradientRules { k_scale: 0.25, ..id }, 0.25),
            (2, GradientRules { v_scale: 0.5, ..id }, 0.5),
        ];
        for (slot, rules, c) in cases {
            let got = last_layer_qkv_gradients(&model, &batch, &rules);
            for other in 0..3 {
                let want: Vec<f32> = plain[other].iter().map(|g| if other == slot { c * g } else { *g }).collect();
                assert!(want.iter().any(|g| *g != 0.0));
                let diff = rel_diff(&got[other], &want);
                println!("{name} slot {slot} scaled by {c}: slot {other} max relative deviation {diff:e}");
                assert!(diff <= 1e-6, "{name}: slot {other} with slot {slot} scaled");
            }
        }
    }
}

/// Adds a zero leaf to what MLP `layer` reads.
struct ProbeMlp(usize, Tensor<AD, 3>);

impl Hooks<AD> for ProbeMlp {
    fn mlp_input(&mut self, layer: usize, resid: Tensor<AD, 3>) -> Tensor<AD, 3> {
        if layer == self.0 { resid + self.1.clone() } else { resid }
    }
}

#[test]
fn gated_mlp_rule_halves_the_last_mlp_input_gradient() {
    let model = load("llama-tiny");
    let batch = padded_batch(&model);
    let [b, t] = batch.ids.dims();
    let mlp_gradient = |rules: &GradientRules| {
        let leaf = Tensor::<AD, 3>::zeros([b, t, model.config.d_model], &Default::default()).require_grad();
        let mut probe = ProbeMlp(model.config.n_layers - 1, leaf.clone());
        let grads = logit_loss(model.forward_with_rules(&batch, &Readout::ReadPosition, &mut probe, rules)).backward();
        values(leaf.grad(&grads).unwrap())
    };
    let plain = mlp_gradient(&GradientRules::IDENTITY);
    let halved: Vec<f32> = plain.iter().map(|g| 0.5 * g).collect();
    let both = GradientRules { gate_scale: 0.5, up_scale: 0.5, ..GradientRules::IDENTITY };
    let diff = rel_diff(&mlp_gradient(&both), &halved);
    println!("gate = up = 1/2: last MLP input max relative deviation from 0.5 × plain {diff:e}");
    assert!(diff <= 1e-6);
    // One operand alone gives neither the plain nor the halved gradient.
    let gate_only = mlp_gradient(&GradientRules { gate_scale: 0.5, ..GradientRules::IDENTITY });
    assert!(rel_diff(&gate_only, &plain) > 1e-3 && rel_diff(&gate_only, &halved) > 1e-3);
}

/// `Norm::input_gradient` (the norm's backward on its own, used by probes placed after the norm)
/// equals autodiff through `Norm::forward`, plain and with the statistic frozen, for LayerNorm and
/// RMSNorm, with x broadcast against several gradients.
#[test]
fn norm_input_gradient_is_the_norms_backward() {
    let device = Default::default();
    <CpuBackend as Backend>::seed(&device, 5);
    let d = 6;
    let weight = || param::<AD, 1>((0..d).map(|i| 0.5 + 0.25 * i as f32).collect(), [d], &device);
    let norms = [
        Norm::Layer(LayerNorm { weight: weight(), bias: param((0..d).map(|i| 0.1 * i as f32).collect(), [d], &device), eps: 1e-5 }),
        Norm::Rms(RmsNorm { weight: weight(), eps: 1e-5 }),
    ];
    for norm in &norms {
        for freeze in [false, true] {
            let x = Tensor::<AD, 3>::random([1, 4, d], Distribution::Normal(0.3, 1.0), &device);
            let g = Tensor::<AD, 3>::random([3, 4, d], Distribution::Normal(0.0, 1.0), &device);
            let leaf = x.clone().require_grad();
            let rules = GradientRules { freeze_norm: freeze, ..GradientRules::IDENTITY };
            let y = norm.forward(leaf.clone().expand([3, 4, d]), &rules);
            let grads = (y * g.clone()).sum().backward();
            let expected: Vec<f32> = leaf.grad(&grads).unwrap().into_data().to_vec().unwrap();
            // The closed form per gradient row, summed over the broadcast rows as autodiff does.
            let got: Vec<f32> = norm.input_gradient(x, g, freeze).sum_dim(0).into_data().to_vec().unwrap();
            let worst = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "freeze {freeze}: closed form differs from autodiff by {worst}");
        }
    }
}
