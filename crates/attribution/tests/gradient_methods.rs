//! The gradient family against independent computations on tiny checkpoints: EAP against exact
//! patching where the first-order approximation must hold, IG completeness, GIM wiring, IFR sanity.

use attribution::exact::{ExactOptions, exact_scores};
use attribution::gradient::{GradientError, GradientMethod, gradient_scores};
use attribution::ifr::ifr_scores;
use attribution::{Discovery, EdgeScores, Progress};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Tensor};
use graph::{Dest, EdgeMatrix, Graph, GraphShape, Qkv};
use patching::{Ablation, Metric, record_nodes};
use tasks::PreparedPair;
use transformer::{Batch, CpuBackend, GradientRules, LocalModel, Transformer};

type B = CpuBackend;
type AD = Autodiff<CpuBackend>;

fn load(name: &str) -> Transformer<AD> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transformer/tests/fixtures").join(name);
    LocalModel::Dir(dir).load::<AD>(&Default::default()).unwrap().model
}

fn graph_of<X: burn::tensor::backend::Backend>(m: &Transformer<X>) -> Graph {
    Graph::new(GraphShape { n_layers: m.config.n_layers, n_heads: m.config.n_heads }).unwrap()
}

fn pairs() -> Vec<PreparedPair> {
    vec![
        PreparedPair { clean: vec![5, 17, 42, 8, 3], counterfactual: vec![5, 30, 42, 8, 3], correct: 10, incorrect: 20, read: None },
        PreparedPair { clean: vec![9, 9, 4, 60, 2, 7], counterfactual: vec![9, 11, 4, 61, 2, 7], correct: 33, incorrect: 44, read: None },
        PreparedPair { clean: vec![70, 71, 72, 73], counterfactual: vec![70, 12, 72, 73], correct: 3, incorrect: 4, read: None },
    ]
}

/// `method`'s scores under `metric`, in batches of `batch_size`, with the progress it reported.
fn grad_with(
    model: &Transformer<AD>,
    graph: &Graph,
    pairs: &[PreparedPair],
    method: GradientMethod,
    ablation: &Ablation<B>,
    batch_size: usize,
    metric: Metric,
) -> Result<(EdgeScores, Vec<Progress>), GradientError> {
    let discovery = Discovery { model, graph, pairs, ablation, metric, batch_size, edges_per_pass: 16, fractions: &[], positions: patching::Positions::Suffix };
    let mut reports = Vec::new();
    let scores = gradient_scores(&discovery, method, &mut |p| reports.push(p))?;
    Ok((scores, reports))
}

/// `method`'s scores under MIB's logit difference, 8 pairs per batch.
fn grad(model: &Transformer<AD>, graph: &Graph, pairs: &[PreparedPair], method: GradientMethod, ablation: &Ablation<B>) -> Result<EdgeScores, GradientError> {
    Ok(grad_with(model, graph, pairs, method, ablation, 8, Metric::LogitDifference)?.0)
}

/// Exact patching of every edge under `metric`.
fn exact(model: &Transformer<B>, graph: &Graph, pairs: &[PreparedPair], ablation: &Ablation<B>, metric: Metric) -> EdgeScores {
    exact_scores(model, graph, pairs, None, ablation, metric, ExactOptions { batch_size: 1, edges_per_pass: 64, ..ExactOptions::default() }, &mut |_| {})
        .unwrap()
}

/// An ablation a small step ε·r away from the clean run of a single pair, per position, so every
/// edge's ablation effect is first order and EAP must agree with exact patching edge by edge.
fn nearby_ablation(model: &Transformer<B>, pair: &PreparedPair, eps: f32) -> Ablation<B> {
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 11);
    let batch = Batch::new(std::slice::from_ref(&pair.clean), &model.config, &device).unwrap();
    let nodes = record_nodes(model, &batch).1; // [n, 1, t, d]
    let noise = Tensor::random(nodes.dims(), Distribution::Normal(0.0, 1.0), &device);
    Ablation::MeanPositional((nodes + noise * eps).squeeze_dim(1))
}

#[test]
fn eap_equals_exact_patching_to_first_order_on_every_edge() {
    for name in ["gpt2-tiny", "llama-tiny"] {
        let model = load(name);
        let inner = model.valid();
        let graph = graph_of(&model);
        let pair = pairs().remove(0);
        let ablation = nearby_ablation(&inner, &pair, 1e-3);
        let pairs = vec![pair];
        let eap = grad(&model, &graph, &pairs, GradientMethod::Eap(GradientRules::IDENTITY), &ablation).unwrap();
        let exact = exact(&inner, &graph, &pairs, &ablation, Metric::LogitDifference);
        let scale = exact.values.as_slice().iter().fold(0.0f32, |a, x| a.max(x.abs()));
        let worst = exact.values.edge_values().map(|(e, x)| (eap.values[e] - x).abs()).fold(0.0f32, f32::max);
        assert!(scale > 1e-5, "{name}: the ablation has an effect");
        assert!(worst < 0.05 * scale, "{name}: EAP and exact differ by {worst} (largest score {scale})");
        assert_eq!((eap.passes.forward, eap.passes.backward), (1, 1), "mean ablation: one forward/backward on the clean run, whose own outputs give Δ");
    }
}

#[test]
fn ig_inputs_completeness_improves_with_steps() {
    let model = load("llama-tiny");
    let inner = model.valid();
    let graph = graph_of(&model);
    let pairs = pairs();
    // Total effect of replacing the token embedding: mean over pairs of m(clean) − m(clean with the
    // counterfactual's embedding) = the exact score of ablating every edge out of `input` at once.
    let input_edges: Vec<(usize, usize)> = graph.edges().filter(|&(f, _)| f == 0).collect();
    let mut all_but_input = graph.real_edge_mask();
    for &edge in &input_edges {
        all_but_input[edge] = false;
    }
    let r = evaluator_free_total_effect(&inner, &graph, &pairs, &all_but_input);
    let errors: Vec<f64> = [1usize, 4, 32]
        .iter()
        .map(|&steps| {
            let s = grad(&model, &graph, &pairs, GradientMethod::IgInputs { steps }, &Ablation::Counterfactual).unwrap();
            let sum: f64 = input_edges.iter().map(|&edge| s.values[edge] as f64).sum();
            (sum - r).abs()
        })
        .collect();
    assert!(errors[1] < errors[0] && errors[2] < errors[1], "completeness error must shrink: {errors:?}");
    assert!(errors[2] < 0.05 * r.abs().max(1e-3), "32 steps: {errors:?} vs total effect {r}");
}

/// Mean over pairs of m(clean) − m(patched with `mask`), via the engine.
fn evaluator_free_total_effect(model: &Transformer<B>, graph: &Graph, pairs: &[PreparedPair], mask: &EdgeMatrix<bool>) -> f64 {
    let device = Default::default();
    let clean: Vec<Vec<u32>> = pairs.iter().map(|p| p.clean.clone()).collect();
    let cf: Vec<Vec<u32>> = pairs.iter().map(|p| p.counterfactual.clone()).collect();
    let answers: Vec<(u32, u32)> = pairs.iter().map(|p| (p.correct, p.incorrect)).collect();
    let ablated = record_nodes(model, &Batch::new(&cf, &model.config, &device).unwrap()).1;
    let keep = graph.real_edge_mask();
    let logits = patching::patched_logits(model, graph, &Batch::new(&clean, &model.config, &device).unwrap(), ablated, &[&keep, mask]);
    let full = logits.clone().narrow(0, 0, pairs.len());
    let m = Metric::LogitDifference.values(logits, &answers, 2, &full);
    let n = pairs.len();
    (0..n).map(|i| (m[i] - m[n + i]) as f64).sum::<f64>() / n as f64
}

#[test]
fn value_scaling_halves_last_layer_v_scores_exactly() {
    let model = load("llama-tiny");
    let graph = graph_of(&model);
    let pairs = pairs();
    let half_v = GradientRules { v_scale: 0.5, ..GradientRules::IDENTITY };
    let plain = grad(&model, &graph, &pairs, GradientMethod::Eap(GradientRules::IDENTITY), &Ablation::Counterfactual).unwrap();
    let scaled = grad(&model, &graph, &pairs, GradientMethod::Eap(half_v), &Ablation::Counterfactual).unwrap();
    let last = graph.shape().n_layers - 1;
    let mut checked = 0;
    for (f, b) in graph.edges() {
        if let Some(Dest::Head { layer, qkv: Qkv::V, .. }) = graph.dest_at(b)
            && layer == last
        {
            let (p, s) = (plain.values[(f, b)], scaled.values[(f, b)]);
            assert!((s - 0.5 * p).abs() <= 1e-6 * p.abs().max(1e-6), "v edge: {s} vs half of {p}");
            checked += 1;
        }
    }
    assert!(checked > 0);
    assert_ne!(plain.values, scaled.values, "earlier layers see the scaled value path");
}

#[test]
fn every_gradient_method_runs_and_is_deterministic() {
    let model = load("qwen2-tiny");
    let graph = graph_of(&model);
    let pairs = pairs();
    let methods = [
        GradientMethod::Eap(GradientRules::IDENTITY),
        GradientMethod::Eap(GradientRules::GIM),
        GradientMethod::CleanCorrupted,
        GradientMethod::IgInputs { steps: 3 },
        GradientMethod::IgActivations { steps: 2 },
    ];
    for method in methods {
        let (a, reports) = grad_with(&model, &graph, &pairs, method, &Ablation::Counterfactual, 2, Metric::LogitDifference).unwrap();
        let (b, _) = grad_with(&model, &graph, &pairs, method, &Ablation::Counterfactual, 2, Metric::LogitDifference).unwrap();
        assert_eq!(a.values, b.values, "{method:?} is deterministic");
        a.validate().unwrap();
        assert!(a.values.as_slice().iter().any(|&v| v != 0.0), "{method:?} scores something");
        assert_eq!(reports, vec![Progress { done: 1, total: 2 }, Progress { done: 2, total: 2 }], "{method:?} reports each of its batches");
    }
    let err = grad(&model, &graph, &pairs, GradientMethod::CleanCorrupted, &Ablation::Zero).unwrap_err();
    assert!(err.to_string().contains("counterfactual"), "{err}");
}

#[test]
fn ifr_importances_are_shares_of_each_destination() {
    let model = load("gpt2-tiny").valid();
    let graph = graph_of(&model);
    let scores = ifr_scores(&model, &graph, &pairs(), 2, &mut |_| {}).unwrap();
    for b in 0..graph.n_bwd() {
        let column: f32 = (0..graph.n_fwd()).filter(|&f| graph.is_edge(f, b)).map(|f| scores.values[(f, b)]).sum();
        assert!((0.0..=1.0 + 1e-5).contains(&column), "slot {b}: importances sum to {column}");
        assert!(column > 0.5, "slot {b}: some upstream node is close to the input");
    }
    assert!(scores.values.as_slice().iter().all(|&v| v >= 0.0));
}

/// The metric reaches every method: under the answer's negative log-probability EAP still equals
/// exact patching to first order, and its scores are not the logit difference's.
#[test]
fn eap_equals_exact_to_first_order_under_every_metric() {
    let model = load("llama-tiny");
    let inner = model.valid();
    let graph = graph_of(&model);
    let pair = pairs().remove(1);
    let ablation = nearby_ablation(&inner, &pair, 1e-3);
    let pairs = vec![pair];
    let eap = |metric| grad_with(&model, &graph, &pairs, GradientMethod::Eap(GradientRules::IDENTITY), &ablation, 8, metric).unwrap().0;
    for metric in [Metric::AnswerNll, Metric::ProbabilityDifference] {
        let (first_order, exact) = (eap(metric), exact(&inner, &graph, &pairs, &ablation, metric));
        let scale = exact.values.as_slice().iter().fold(0.0f32, |a, x| a.max(x.abs()));
        let worst = exact.values.edge_values().map(|(e, x)| (first_order.values[e] - x).abs()).fold(0.0f32, f32::max);
        assert!(scale > 1e-7, "{metric}: the ablation has an effect");
        assert!(worst < 0.05 * scale, "{metric}: EAP and exact differ by {worst} (largest score {scale})");
        assert_ne!(first_order.values, eap(Metric::LogitDifference).values, "{metric} is not the logit difference");
    }
    // KL(clean ‖ clean + δ) has a minimum at the clean run: every first-order score there is zero,
    // while exact patching sees the second-order divergence.
    let kl = eap(Metric::Kl);
    assert!(kl.values.as_slice().iter().all(|&v| v.abs() < 1e-6), "EAP under KL is zero on the clean run");
    let farther = nearby_ablation(&inner, &pairs[0], 0.1);
    let exact_kl = exact(&inner, &graph, &pairs, &farther, Metric::Kl);
    let (low, high) = exact_kl.values.edge_values().fold((f32::MAX, f32::MIN), |(lo, hi), (_, &v)| (lo.min(v), hi.max(v)));
    assert!(low >= -1e-6, "ablating an edge never lowers KL below the full model's 0 (beyond rounding): {low}");
    assert!(high > 1e-4, "some edge's ablation diverges from the full model: {high}");
}
