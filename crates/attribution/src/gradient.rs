//! The gradient family — EAP, GIM and its variants, clean-corrupted, EAP-IG over inputs or over
//! activations — as one loop over the patching engine's mask-gradient path: forward passes with
//! the edge mask at 1 (at α on a node group's rows along an integrated-gradients path), one backward
//! each, and score(u→v) = −∂L/∂keep_uv = w · Σ_{batch,pos,d} Δ_u · dL/d(input_v) with
//! Δ_u = ablated_u − clean_u, the passes of a batch summed before one contraction with Δ. No method
//! needs hooks of its own.
//!
//! Loss and scaling: per batch L = −Σ_pairs m (m = logit(correct) − logit(incorrect)); scores are
//! summed over batches and divided by the number of pairs, so a score is the mean first-order
//! change in −m from ablating that edge — the same units as `exact`. Positive = the edge helps.

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use graph::Graph;
use patching::{Ablation, AblationError, DestinationGradients, MaskGradientHooks};
use tasks::{PairBatch, PreparedPair};
use transformer::{Batch, BatchError, GradientRules, Readout, Transformer};

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

/// A group of source nodes that EAP-IG interpolates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeGroup {
    Input,
    Heads(usize),
    Mlp(usize),
}

/// The node groups of EAP-IG-activations, in forward order: input, then per layer heads and MLP.
fn node_groups(n_layers: usize) -> Vec<NodeGroup> {
    std::iter::once(NodeGroup::Input).chain((0..n_layers).flat_map(|l| [NodeGroup::Heads(l), NodeGroup::Mlp(l)])).collect()
}

/// Keep values of every source's row: 1 everywhere (the unpatched run), except α on the sources of
/// `group`, which sets that group's outputs to α·clean + (1 − α)·ablated for everything downstream.
fn keep_rows(graph: &Graph, interpolate: Option<(NodeGroup, f64)>) -> Vec<f32> {
    let mut keep = vec![1.0f32; graph.n_fwd()];
    if let Some((group, alpha)) = interpolate {
        let sources = match group {
            NodeGroup::Input => 0..1,
            NodeGroup::Heads(l) => graph.layer(l).expect("groups come from the graph").heads_fwd,
            NodeGroup::Mlp(l) => {
                let f = graph.layer(l).expect("groups come from the graph").mlp_fwd;
                f..f + 1
            }
        };
        keep[sources].fill(alpha as f32);
    }
    keep
}

/// One forward/backward pass through the engine's mask-gradient path, counted in `passes`: the
/// hooks (which hold the pass's probes and δ) and the gradients to read them with (see
/// [`patching::MaskGradientHooks`]).
fn gradient_pass<B: AutodiffBackend>(
    model: &Transformer<B>,
    batch: &Batch<B>,
    answers: &[(u32, u32)],
    rules: &GradientRules,
    mut hooks: MaskGradientHooks<B>,
    passes: &mut PassCount,
) -> (MaskGradientHooks<B>, B::Gradients) {
    passes.forward += 1;
    passes.backward += 1;
    let logits = model.forward_with_rules(batch, &Readout::LastToken, &mut hooks, rules);
    let grads = loss(logits, answers).backward();
    (hooks, grads)
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
        let ablated = ablation.ablated_nodes(&inner, &Batch::new(&counterfactual, &model.config, &device)?)?;
        passes.forward += ablation.forward_passes();
        // EAP and GIM take gradients on the clean run and measure Δ = ablated − clean against that
        // run's own outputs; every other run measures it against a plain clean pass.
        let reference = match method {
            GradientMethod::Eap(_) => None,
            _ => {
                passes.forward += 1;
                Some(patching::record_nodes(&inner, &Batch::new(&clean, &model.config, &device)?).1)
            }
        };
        let fixed = |keep: &[f32]| {
            let reference = reference.clone().expect("recorded for every method but EAP");
            MaskGradientHooks::new(*graph, ablated.clone()).with_fixed_reference(reference, keep)
        };
        // Every pass of a batch measures δ against the same outputs, so their destination
        // gradients add up and are contracted with δ once (−∂L/∂keep is each edge's score).
        let mut summed: Option<DestinationGradients<Inner<B>>> = None;
        let mut run = |batch: &Batch<B>, rules: &GradientRules, hooks: MaskGradientHooks<B>, w: f64| {
            let (hooks, grads) = gradient_pass(&model, batch, &answers, rules, hooks, &mut passes);
            let pass = hooks.destination_gradients(&grads, &inner, rules, w);
            summed = Some(match summed.take() {
                Some(sum) => sum + pass,
                None => pass,
            });
        };
        let keep_gradient = match method {
            GradientMethod::Eap(rules) => {
                // One pass: its destinations' gradients are contracted block by block as they
                // are formed, never all held at once.
                let (hooks, grads) = gradient_pass(&model, &clean_batch, &answers, &rules, MaskGradientHooks::new(*graph, ablated), &mut passes);
                hooks.keep_gradient(&grads, &inner, &rules)
            }
            GradientMethod::CleanCorrupted => {
                let untouched = vec![1.0; graph.n_fwd()];
                run(&clean_batch, &plain, fixed(&untouched), 0.5);
                run(&Batch::new(&counterfactual, &model.config, &device)?, &plain, fixed(&untouched), 0.5);
                summed.expect("two passes ran").keep_gradient()
            }
            GradientMethod::IgInputs { steps } | GradientMethod::IgActivations { steps } => {
                let (groups, alphas): (Vec<NodeGroup>, Vec<f64>) = match method {
                    GradientMethod::IgInputs { .. } => (vec![NodeGroup::Input], (0..steps).map(|k| k as f64 / steps as f64).collect()),
                    _ => (node_groups(graph.shape().n_layers), (1..=steps).map(|k| k as f64 / steps as f64).collect()),
                };
                let w = 1.0 / (groups.len() * steps) as f64;
                for &group in &groups {
                    for &alpha in &alphas {
                        run(&clean_batch, &plain, fixed(&keep_rows(graph, Some((group, alpha)))), w);
                    }
                }
                summed.expect("steps > 0 passes ran").keep_gradient()
            }
        };
        for (score, g) in scores.iter_mut().zip(keep_gradient) {
            *score -= g as f64;
        }
    }
    let n = pairs.len() as f64;
    Ok(EdgeScores { graph: *graph, values: scores.iter().map(|&s| (s / n) as f32).collect(), passes })
}
