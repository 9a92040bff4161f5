//! The gradient family — EAP, GIM and its variants, clean-corrupted, EAP-IG over inputs or over
//! activations — as one loop: forward passes with gradient probes, one backward each, and
//! score(u→v) += w · Σ_{batch,pos,d} Δ_u · dL/d(input_v) with Δ_u = ablated_u − clean_u.
//!
//! Loss and scaling: per batch L = −Σ_pairs m (m = logit(correct) − logit(incorrect)); scores are
//! summed over batches and divided by the number of pairs, so a score is the mean first-order
//! change in −m from ablating that edge — the same units as `exact`. Positive = the edge helps.

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use graph::Graph;
use patching::{Ablation, AblationError};
use tasks::{PairBatch, PreparedPair};
use transformer::{Batch, BatchError, GradientRules, Readout, Transformer};

use crate::probes::{GradientProbes, Interpolation, NodeGroup};
use crate::scores::{EdgeScores, PassCount};

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// Which gradient-based method, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GradientMethod {
    /// Δa_u · gradient at input_v on the clean run, under the given backward rules (identity = EAP,
    /// GIM and its named variants otherwise).
    Eap(GradientRules),
    /// Δa_u · ½(gradient on the clean run + gradient on the counterfactual run).
    CleanCorrupted,
    /// Token embeddings interpolated e_corr + (k/m)(e_clean − e_corr), k = 0..m−1, gradients averaged.
    IgInputs { steps: usize },
    /// Each node group in turn set to α·clean + (1−α)·corrupted, α = k/m, k = 1..m; gradients at
    /// every destination accumulate into every edge; divided by (2L+1)·m.
    IgActivations { steps: usize },
}

/// Why a gradient method cannot run.
#[derive(Debug, thiserror::Error)]
pub enum GradientError {
    #[error("no pairs to score on")]
    NoPairs,
    #[error("integrated gradients need at least one step")]
    NoSteps,
    #[error("clean-corrupted needs counterfactual ablation: there is no corrupted run to take gradients on under {0}")]
    NeedsCounterfactual(patching::AblationKind),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Ablation(#[from] AblationError),
}

/// Pairs per batch.
#[derive(Debug, Clone, Copy)]
pub struct GradientOptions {
    pub batch_size: usize,
}

impl Default for GradientOptions {
    fn default() -> Self {
        Self { batch_size: 8 }
    }
}

/// −Σ m over the rows of last-token logits [b, 1, vocab].
fn loss<B: Backend>(logits: Tensor<B, 3>, answers: &[(u32, u32)]) -> Tensor<B, 1> {
    let b = answers.len();
    let idx: Vec<i64> = answers.iter().flat_map(|&(c, i)| [c as i64, i as i64]).collect();
    let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(idx, [b, 2]), &logits.device());
    let picked = logits.squeeze_dim::<2>(1).gather(1, idx);
    let [correct, incorrect]: [Tensor<B, 2>; 2] = picked.chunk(2, 1).try_into().expect("two columns");
    (incorrect - correct).sum()
}

/// Gradient [b, t, H, d] of a per-head leaf as [H, b·t·d].
fn heads_rows<B: Backend>(g: Tensor<B, 4>) -> Tensor<B, 2> {
    let [b, t, h, d] = g.dims();
    g.permute([2, 0, 1, 3]).reshape([h, b * t * d])
}

/// Adds w · Δ[0..up] @ Gᵀ into the host score matrix at columns `cols`.
fn add_block<B: Backend>(scores: &mut [f64], n_bwd: usize, delta: &Tensor<B, 2>, up: usize, grads: Tensor<B, 2>, cols: std::ops::Range<usize>, w: f64) {
    let btd = delta.dims()[1];
    let block = delta.clone().slice([0..up, 0..btd]).matmul(grads.transpose());
    let values: Vec<f32> = block.into_data().to_vec().expect("f32 scores");
    let width = cols.len();
    for (f, row) in values.chunks(width).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            scores[f * n_bwd + cols.start + j] += w * v as f64;
        }
    }
}

/// Node outputs [n, b, t, d] as [n, b·t·d].
fn flatten<B: Backend>(nodes: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, b, t, d] = nodes.dims();
    nodes.reshape([n, b * t * d])
}

/// One forward/backward pass with probes, adding w · Δ·∇ for every edge, Δ = ablated − clean.
/// `clean` = None takes the clean outputs from this very pass (it is the clean run). Returns the
/// pass's node outputs, flattened.
#[allow(clippy::too_many_arguments)]
fn gradient_pass<B: AutodiffBackend>(
    model: &Transformer<B>,
    graph: &Graph,
    batch: &Batch<B>,
    answers: &[(u32, u32)],
    rules: &GradientRules,
    interpolation: Option<Interpolation<B>>,
    ablated: &Tensor<Inner<B>, 2>,
    clean: Option<&Tensor<Inner<B>, 2>>,
    w: f64,
    scores: &mut [f64],
) -> Tensor<Inner<B>, 2> {
    let mut probes = GradientProbes::new(graph.shape().n_heads, interpolation);
    let logits = model.forward_with_rules(batch, &Readout::LastToken, &mut probes, rules);
    let grads = loss(logits, answers).backward();
    let nodes = flatten(probes.nodes());
    let delta = ablated.clone() - clean.unwrap_or(&nodes).clone();
    let btd = delta.dims()[1];
    let n_bwd = graph.n_bwd();
    let heads = |leaf: &Tensor<B, 4>| heads_rows(leaf.grad(&grads).expect("probe leaves take part in the loss"));
    let single = |leaf: &Tensor<B, 3>| leaf.grad(&grads).expect("probe leaves take part in the loss").reshape([1, btd]);
    for (layer, leaves) in graph.layers().zip(&probes.qkv) {
        let g = Tensor::cat(leaves.iter().map(heads).collect(), 0);
        add_block(scores, n_bwd, &delta, layer.heads_fwd.start, g, layer.q_bwd.start..layer.v_bwd.end, w);
    }
    for (layer, leaf) in graph.layers().zip(&probes.mlp) {
        add_block(scores, n_bwd, &delta, layer.mlp_fwd, single(leaf), layer.mlp_bwd..layer.mlp_bwd + 1, w);
    }
    let last = probes.last.as_ref().expect("the final input is probed");
    add_block(scores, n_bwd, &delta, graph.n_fwd(), single(last), n_bwd - 1..n_bwd, w);
    nodes
}

/// The node groups of EAP-IG-activations, in forward order: input, then per layer heads and MLP.
fn node_groups(n_layers: usize) -> Vec<NodeGroup> {
    std::iter::once(NodeGroup::Input)
        .chain((0..n_layers).flat_map(|l| [NodeGroup::Heads(l), NodeGroup::Mlp(l)]))
        .collect()
}

/// Scores every edge with `method` on `pairs`; Δ_u is ablated_u − clean_u under `ablation`.
pub fn gradient_scores<B: AutodiffBackend>(
    model: &Transformer<B>,
    graph: &Graph,
    pairs: &[PreparedPair],
    method: GradientMethod,
    ablation: &Ablation<Inner<B>>,
    options: GradientOptions,
) -> Result<EdgeScores, GradientError> {
    if pairs.is_empty() {
        return Err(GradientError::NoPairs);
    }
    if let GradientMethod::IgInputs { steps: 0 } | GradientMethod::IgActivations { steps: 0 } = method {
        return Err(GradientError::NoSteps);
    }
    if method == GradientMethod::CleanCorrupted && !matches!(ablation, Ablation::Counterfactual) {
        return Err(GradientError::NeedsCounterfactual(ablation.kind()));
    }
    let model = model.clone().no_grad();
    let inner = model.valid();
    let device = model.token_embedding.device();
    let plain = GradientRules::IDENTITY;
    let mut scores = vec![0.0f64; graph.n_fwd() * graph.n_bwd()];
    let mut passes = PassCount::default();

    for chunk in pairs.chunks(options.batch_size.max(1)) {
        let PairBatch { clean, counterfactual, answers } = PairBatch::of(chunk);
        let clean_batch = Batch::<B>::new(&clean, &model.config, &device)?;
        let cf_batch = Batch::<B>::new(&counterfactual, &model.config, &device)?;
        let ablated_nodes = ablation.ablated_nodes(&inner, &Batch::new(&counterfactual, &model.config, &device)?)?;
        passes.forward += ablation.forward_passes();
        // IG runs record the clean outputs in a plain pass of their own.
        passes.forward += usize::from(matches!(method, GradientMethod::IgInputs { .. } | GradientMethod::IgActivations { .. }));
        let ablated = flatten(ablated_nodes.clone());
        let ablated_ad = || Tensor::<B, 4>::from_inner(ablated_nodes.clone());
        let mut run = |batch: &Batch<B>, rules: &GradientRules, interp, clean: Option<&Tensor<Inner<B>, 2>>, w: f64| {
            passes.forward += 1;
            passes.backward += 1;
            gradient_pass(&model, graph, batch, &answers, rules, interp, &ablated, clean, w, &mut scores)
        };
        match method {
            GradientMethod::Eap(rules) => {
                run(&clean_batch, &rules, None, None, 1.0);
            }
            GradientMethod::CleanCorrupted => {
                let clean_nodes = run(&clean_batch, &plain, None, None, 0.5);
                run(&cf_batch, &plain, None, Some(&clean_nodes), 0.5);
            }
            GradientMethod::IgInputs { steps } | GradientMethod::IgActivations { steps } => {
                let clean_nodes = flatten(patching::record_nodes(&inner, &Batch::new(&clean, &model.config, &device)?).1);
                let (groups, alphas): (Vec<NodeGroup>, Vec<f64>) = match method {
                    GradientMethod::IgInputs { .. } => (vec![NodeGroup::Input], (0..steps).map(|k| k as f64 / steps as f64).collect()),
                    _ => (node_groups(graph.shape().n_layers), (1..=steps).map(|k| k as f64 / steps as f64).collect()),
                };
                let w = 1.0 / (groups.len() * steps) as f64;
                for &group in &groups {
                    for &alpha in &alphas {
                        let interp = Interpolation { group, alpha, corrupted: ablated_ad() };
                        run(&clean_batch, &plain, Some(interp), Some(&clean_nodes), w);
                    }
                }
            }
        }
    }
    let n = pairs.len() as f64;
    Ok(EdgeScores { graph: *graph, values: scores.iter().map(|&s| (s / n) as f32).collect(), passes })
}
