//! The gradient family — EAP, GIM and its variants, clean-corrupted, EAP-IG over inputs or over
//! activations — as one loop over the patching engine's mask-gradient path: forward passes with
//! the edge mask at 1 (at α on a node group's rows along an integrated-gradients path), one backward
//! each, and score(u→v) = −∂L/∂keep_uv = w · Σ_{batch,pos,d} Δ_u · dL/d(input_v) with
//! Δ_u = ablated_u − clean_u, the passes of a batch summed before one contraction with Δ. No method
//! needs hooks of its own.
//!
//! Loss and scaling: per batch L = Σ_pairs loss, the discovery metric's loss (MIB's: −m with
//! m = logit(correct) − logit(incorrect)); scores are summed over batches and divided by the number
//! of pairs, so a score is the mean first-order change in the loss from ablating that edge — the
//! same units as `exact`. Positive = the edge helps. KL compares each run with the clean run's
//! logits; on the clean run itself (EAP, GIM) it is at its minimum, so its first-order scores are
//! exactly zero there: a property of the metric, not of the method.

use burn::module::{AutodiffModule, Module};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use graph::{EdgeMatrix, Graph};
use patching::{Ablation, AblationError, DestinationGradients, MaskGradientHooks, Metric, PairBatches};
use tasks::PairBatch;
use transformer::{Batch, BatchError, GradientRules, Readout, Transformer};

use crate::method::{Discovery, Progress};
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
    IgInputs {
        /// m, the interpolation steps.
        steps: usize,
    },
    /// Each node group in turn set to α·clean + (1−α)·corrupted, α = k/m, k = 1..m; gradients at
    /// every destination accumulate into every edge; divided by (2L+1)·m.
    IgActivations {
        /// m, the interpolation steps per node group.
        steps: usize,
    },
}

/// Why a gradient method cannot run.
#[derive(Debug, thiserror::Error)]
pub enum GradientError {
    /// Nothing to score on.
    #[error("no pairs to score on")]
    NoPairs,
    /// An integrated-gradients method with m = 0.
    #[error("integrated gradients need at least one step")]
    NoSteps,
    /// Clean-corrupted asked for under an ablation without a corrupted run.
    #[error("clean-corrupted needs counterfactual ablation: there is no corrupted run to take gradients on under {0}")]
    NeedsCounterfactual(patching::AblationKind),
    /// A gradient that is NaN or infinite: the model's forward or backward pass on a batch is not finite.
    #[error(
        "pairs {first_pair}..{end_pair}: the loss gradient at edge {edge} is {value}: the model's forward or backward pass on these prompts is not finite (NaN or infinity in its weights or activations)"
    )]
    NonFinite {
        /// The batch's first pair, by index among those given.
        first_pair: usize,
        /// One past its last pair.
        end_pair: usize,
        /// The first edge whose gradient is not finite.
        edge: String,
        /// The gradient found.
        value: f32,
    },
    /// A batch of prompts does not fit the model.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The ablation could not be applied.
    #[error(transparent)]
    Ablation(#[from] AblationError),
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
/// [`patching::MaskGradientHooks`]). The loss is `metric`'s against `full`, the clean run's logits
/// [pairs, vocab], or this pass's own (detached) when None: the pass is the clean run.
#[allow(clippy::too_many_arguments)]
fn gradient_pass<B: AutodiffBackend>(
    model: &Transformer<B>,
    batch: &Batch<B>,
    answers: &[(u32, u32)],
    metric: Metric,
    full: Option<&Tensor<Inner<B>, 2>>,
    rules: &GradientRules,
    mut hooks: MaskGradientHooks<B>,
    passes: &mut PassCount,
) -> (MaskGradientHooks<B>, B::Gradients) {
    passes.forward += 1;
    passes.backward += 1;
    let logits = model.forward_with_rules(batch, &Readout::ReadPosition, &mut hooks, rules).squeeze_dim::<2>(1);
    let full = match full {
        Some(full) => Tensor::from_inner(full.clone()),
        None => logits.clone().detach(),
    };
    let grads = metric.loss(logits, answers, &full).backward();
    (hooks, grads)
}

/// Scores every edge with `method` on the discovery pairs, batch by batch; Δ_u is ablated_u −
/// clean_u under the discovery's ablation.
pub fn gradient_scores<B: AutodiffBackend>(
    discovery: &Discovery<B>,
    method: GradientMethod,
    progress: &mut dyn FnMut(Progress),
) -> Result<EdgeScores, GradientError> {
    let Discovery { model, graph, pairs, ablation, metric, batch_size, positions, .. } = *discovery;
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
    let plain = GradientRules::IDENTITY;
    let mut scores = EdgeMatrix::filled(*graph, 0.0f64);
    let mut passes = PassCount::default();
    let batch_size = batch_size.max(1);
    let total = pairs.len().div_ceil(batch_size);

    for (done, chunk) in pairs.chunks(batch_size).enumerate() {
        let PairBatch { clean, counterfactual, answers, reads } = PairBatch::of(chunk);
        // Under counterfactual ablation every pass below computes only the positions from the
        // first differing token on (patching::prefix); δ is zero before it.
        let batches = PairBatches::new(&inner, &clean, &counterfactual, &reads, ablation, positions)?;
        let ablated = ablation.ablated_nodes(&inner, &batches.counterfactual)?;
        passes.forward += ablation.forward_passes();
        // EAP and GIM take gradients on the clean run and measure Δ = ablated − clean against that
        // run's own outputs; every other run measures it against a plain clean pass (whose logits
        // are the full model's, for the metric).
        let (full, reference) = match method {
            GradientMethod::Eap(_) => (None, None),
            _ => {
                passes.forward += 1;
                let (logits, nodes) = patching::record_nodes(&inner, &batches.clean);
                (Some(logits), Some(nodes))
            }
        };
        let PairBatches { clean: clean_batch, counterfactual: counterfactual_batch } = batches.into_autodiff::<B>();
        let fixed = |keep: &[f32]| {
            let reference = reference.clone().expect("recorded for every method but EAP");
            MaskGradientHooks::new(*graph, ablated.clone()).with_fixed_reference(reference, keep)
        };
        // Every pass of a batch measures δ against the same outputs, so their destination
        // gradients add up and are contracted with δ once (−∂L/∂keep is each edge's score).
        let mut summed: Option<DestinationGradients<Inner<B>>> = None;
        let mut run = |batch: &Batch<B>, rules: &GradientRules, hooks: MaskGradientHooks<B>, w: f64| {
            let (hooks, grads) = gradient_pass(&model, batch, &answers, metric, full.as_ref(), rules, hooks, &mut passes);
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
                let hooks = MaskGradientHooks::new(*graph, ablated);
                let (hooks, grads) = gradient_pass(&model, &clean_batch, &answers, metric, None, &rules, hooks, &mut passes);
                hooks.keep_gradient(&grads, &inner, &rules)
            }
            GradientMethod::CleanCorrupted => {
                let untouched = vec![1.0; graph.n_fwd()];
                run(&clean_batch, &plain, fixed(&untouched), 0.5);
                run(&counterfactual_batch, &plain, fixed(&untouched), 0.5);
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
        if let Some(((f, b), &value)) = keep_gradient.edge_values().find(|(_, v)| !v.is_finite()) {
            let edge = graph.edge_name(f, b).unwrap_or_else(|_| format!("({f}, {b})"));
            return Err(GradientError::NonFinite { first_pair: done * batch_size, end_pair: done * batch_size + chunk.len(), edge, value });
        }
        for (score, g) in scores.as_mut_slice().iter_mut().zip(keep_gradient.as_slice()) {
            *score -= *g as f64;
        }
        progress(Progress { done: done + 1, total });
    }
    let n = pairs.len() as f64;
    Ok(EdgeScores { values: scores.map(|&s| (s / n) as f32), passes, preferred: None })
}

#[cfg(test)]
mod tests {
    use burn::backend::Autodiff;
    use burn::module::Param;
    use burn::tensor::TensorData;
    use burn::tensor::backend::Backend;
    use graph::GraphShape;
    use patching::Positions;
    use tasks::PreparedPair;
    use transformer::{CpuBackend, LocalModel};

    use super::*;
    use crate::exact::{ExactError, ExactOptions, exact_scores};

    type AD = Autodiff<CpuBackend>;

    /// The tiny Llama fixture with token `token`'s embedding row NaN: every prompt holding it gives
    /// NaN logits, every other prompt finite ones.
    fn tiny_with_nan_token<X: Backend>(token: usize) -> Transformer<X> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transformer/tests/fixtures/llama-tiny");
        let mut model = LocalModel::Dir(dir).load::<X>(&Default::default()).unwrap().model;
        let [vocab, d] = model.token_embedding.dims();
        let mut rows: Vec<f32> = model.token_embedding.val().into_data().convert::<f32>().to_vec().unwrap();
        rows[token * d..(token + 1) * d].fill(f32::NAN);
        model.token_embedding = Param::from_tensor(Tensor::from_data(TensorData::new(rows, [vocab, d]), &Default::default()));
        model
    }

    /// Four pairs; token 1 is only in pair 2's clean prompt, token 61 only in pair 1's counterfactual.
    fn pairs() -> Vec<PreparedPair> {
        let pair = |clean: Vec<u32>, counterfactual: Vec<u32>| PreparedPair { clean, counterfactual, correct: 10, incorrect: 20, read: None };
        vec![pair(vec![5, 17, 42], vec![5, 30, 42]), pair(vec![9, 4, 60], vec![9, 4, 61]), pair(vec![1, 2, 3], vec![4, 2, 3]), pair(vec![8, 8], vec![8, 9])]
    }

    /// What a method is given here: counterfactual ablation, MIB's metric, batches of 2.
    fn discovery<'a>(model: &'a Transformer<AD>, graph: &'a Graph, pairs: &'a [PreparedPair]) -> Discovery<'a, AD> {
        let ablation = &Ablation::Counterfactual;
        Discovery {
            model,
            graph,
            pairs,
            ablation,
            metric: Metric::LogitDifference,
            batch_size: 2,
            edges_per_pass: 16,
            fractions: &[],
            positions: Positions::Suffix,
        }
    }

    fn eap(model: &Transformer<AD>) -> Result<EdgeScores, GradientError> {
        let c = &model.config;
        let graph = Graph::new(GraphShape { n_layers: c.n_layers, n_heads: c.n_heads }).unwrap();
        let pairs = pairs();
        gradient_scores(&discovery(model, &graph, &pairs), GradientMethod::Eap(GradientRules::IDENTITY), &mut |_| {})
    }

    fn exact(model: &Transformer<CpuBackend>) -> Result<EdgeScores, ExactError> {
        let c = &model.config;
        let graph = Graph::new(GraphShape { n_layers: c.n_layers, n_heads: c.n_heads }).unwrap();
        let options = ExactOptions { batch_size: 2, edges_per_pass: 16, positions: Positions::Suffix };
        exact_scores(model, &graph, &pairs(), None, &Ablation::Counterfactual, Metric::LogitDifference, options, &mut |_| {})
    }

    #[test]
    fn nan_gradients_fail_naming_the_batch() {
        // Token 95 is in no prompt: the scores are finite.
        eap(&tiny_with_nan_token(95)).unwrap().validate().unwrap();
        for token in [1, 61] {
            let err = eap(&tiny_with_nan_token(token)).unwrap_err();
            let want = if token == 1 { (2, 4) } else { (0, 2) };
            assert!(
                matches!(&err, GradientError::NonFinite { first_pair, end_pair, value, .. } if (*first_pair, *end_pair) == want && !value.is_finite()),
                "token {token}: {err:?}"
            );
            assert!(err.to_string().contains(&format!("pairs {}..{}", want.0, want.1)), "{err}");
        }
    }

    #[test]
    fn every_method_fails_on_nan_activations() {
        let model = tiny_with_nan_token::<AD>(1);
        let c = &model.config;
        let graph = Graph::new(GraphShape { n_layers: c.n_layers, n_heads: c.n_heads }).unwrap();
        let pairs = pairs();
        // A budget, so that the methods giving one circuit per budget have one to find.
        let discovery = Discovery { fractions: &[0.5, 1.0], ..discovery(&model, &graph, &pairs) };
        for name in crate::METHOD_NAMES {
            let method = crate::Method::parse(name, 2, 0).unwrap();
            let result = crate::run_method(&method, &discovery, &mut |_| {});
            if name == "random" {
                assert!(result.is_ok(), "random reads no model");
                continue;
            }
            let err = result.err().unwrap_or_else(|| panic!("{name} returned scores from NaN activations"));
            assert!(err.to_string().contains("not finite"), "{name}: {err}");
        }
    }

    #[test]
    fn nan_logits_fail_exact_patching_naming_the_run_and_the_pair() {
        exact(&tiny_with_nan_token(95)).unwrap().validate().unwrap();
        let err = exact(&tiny_with_nan_token(1)).unwrap_err();
        assert!(matches!(&err, ExactError::NonFinite { run, pair: 2, .. } if run == "the clean run"), "{err:?}");
        assert!(err.to_string().contains("pair 2"), "{err}");
        // Only pair 1's counterfactual is NaN: the clean run is finite, every patched run of pair 1 is not.
        let err = exact(&tiny_with_nan_token(61)).unwrap_err();
        assert!(matches!(&err, ExactError::NonFinite { run, pair: 1, .. } if run.starts_with("the run ablating edge ")), "{err:?}");
    }
}
