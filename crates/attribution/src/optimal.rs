//! Optimal ablation (Li & Janson 2024; methods-spec §4): each node's output replaced by the
//! constant c*_u that minimises the task loss when that node alone is ablated,
//! c*_u = argmin_c E_pairs[loss(model with u ← c)], one vector per node (`optimal`) or per node and
//! position (`optimal-positional`).
//!
//! Training goes through the patching engine's patched pass with gradients into the ablated
//! values: one replica per node, replica u's keep mask ablating every edge out of u and its
//! ablated outputs the constants (a tensor that requires gradients), so c_u is reached only
//! through replica u and the nodes train side by side, [`NODES_PER_PASS`] replicas a pass. The
//! loss is the discovery metric's (MIB's logit difference by default) at each pair's read
//! position, on the discovery pairs' clean prompts. It starts at the mean (the per-token mean
//! over real tokens, padding excluded: mean ablation is one of the constants minimised over),
//! takes [`STEPS`] AdamW steps (lr [`LEARNING_RATE`], no weight decay), and then keeps, node by
//! node, whichever of the trained constant, the mean and zero has the lowest loss on all the
//! discovery pairs, so the optimal-ablation loss of every node is at most its mean- and its
//! zero-ablation loss on the pairs it was fitted on, as a minimum over constants must be.
//!
//! Not reproduced: MIB's `oa.py` trains its constants with a language-model loss over whole
//! prompts, starts from a sum over tokens rather than a mean, and its EAP code loads the constant
//! of head 0 only in each layer (heads 1.. get zero: spec §4). Those are defects of the
//! reference, not of optimal ablation, and this trainer has none of them.

use burn::module::{AutodiffModule, Module, Param};
use burn::optim::{AdamWConfig, GradientsAccumulator, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use graph::{Graph, GraphShape};
use patching::{Ablation, AblationKind, EdgeMasks, Metric, MetricReference, PatchHooks};
use tasks::{PairBatch, PreparedPair};
use transformer::{Batch, Readout, Transformer};

use crate::method::MethodError;

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// AdamW steps, one batch of pairs each.
pub const STEPS: usize = 100;
/// AdamW's learning rate (the spec's 1e-3 moves a constant by at most 0.1 per coordinate in
/// [`STEPS`] steps; activations here are of order 1 to 10).
pub const LEARNING_RATE: f64 = 1e-2;
/// Node replicas per patched pass.
pub const NODES_PER_PASS: usize = 16;

/// One batch of clean prompts with its answers and the metric's reference.
struct FitBatch<B: burn::tensor::backend::Backend> {
    clean: Batch<B>,
    answers: Vec<(u32, u32)>,
    reference: MetricReference<B>,
}

/// Learns `kind` (optimal or optimal-positional) on the clean prompts of `pairs` under `metric`.
pub fn fit_optimal<B: AutodiffBackend>(
    kind: AblationKind,
    model: &Transformer<B>,
    pairs: &[PreparedPair],
    batch_size: usize,
    metric: Metric,
) -> Result<Ablation<Inner<B>>, MethodError> {
    let positional = match kind {
        AblationKind::Optimal => false,
        AblationKind::OptimalPositional => true,
        other => unreachable!("{other} is not a learned ablation"),
    };
    if pairs.is_empty() {
        return Err(MethodError::NoPairs);
    }
    let model = model.clone().no_grad();
    let inner = model.valid();
    let device = model.token_embedding.device();
    let c = &model.config;
    let graph = Graph::new(GraphShape { n_layers: c.n_layers, n_heads: c.n_heads }).expect("a loaded model's shape is a graph");
    let reference: Vec<Vec<u32>> = pairs.iter().map(|p| p.clean.clone()).collect();
    let mean_kind = if positional { AblationKind::MeanPositional } else { AblationKind::Mean };
    let mean = Ablation::fit(mean_kind, &inner, &reference, batch_size, &device)?.constants().expect("means are constants"); // [n_fwd, P, d]

    let (mut batches, mut inner_batches) = (Vec::new(), Vec::new());
    for chunk in pairs.chunks(batch_size.max(1)) {
        let PairBatch { clean, answers, reads, .. } = PairBatch::of(chunk);
        let batch = Batch::new(&clean, &inner.config, &device)?.reading_at(&reads)?;
        let full = inner.forward(&batch, &Readout::ReadPosition).squeeze_dim::<2>(1);
        batches.push(FitBatch {
            clean: Batch::from_inner(batch.clone()),
            answers: answers.clone(),
            reference: metric.reference(&Tensor::from_inner(full.clone())),
        });
        inner_batches.push(FitBatch { clean: batch, answers, reference: metric.reference(&full) });
    }

    let mut constants = Param::from_tensor(Tensor::<B, 3>::from_inner(mean.clone()));
    let mut optimiser = AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(0.0).init::<B, Param<Tensor<B, 3>>>();
    let n_fwd = graph.n_fwd();
    for step in 0..STEPS {
        let batch = &batches[step % batches.len()];
        let mut accumulated = GradientsAccumulator::<Param<Tensor<B, 3>>>::new();
        for nodes in (0..n_fwd).collect::<Vec<_>>().chunks(NODES_PER_PASS) {
            let loss = node_losses(&model, &graph, batch, constants.val(), nodes, metric).sum();
            let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &constants);
            accumulated.accumulate(&constants, grads);
        }
        constants = optimiser.step(LEARNING_RATE, constants, accumulated.grads());
    }

    // Node by node, the best of the trained constant, the mean and zero on all the pairs.
    let trained = constants.val().inner();
    let zero = mean.zeros_like();
    let candidates = [trained, mean, zero];
    let losses: Vec<Vec<f64>> = candidates.iter().map(|c| total_node_losses(&inner, &graph, &inner_batches, c.clone(), metric)).collect();
    let [_, p, d] = candidates[0].dims();
    let mut best = candidates[0].clone();
    for u in 0..n_fwd {
        if let Some(&value) = losses.iter().map(|l| &l[u]).find(|l| !l.is_finite()) {
            return Err(MethodError::NonFiniteLoss { step: STEPS, value });
        }
        let winner = (1..candidates.len()).fold(0, |w, c| if losses[c][u] < losses[w][u] { c } else { w });
        if winner != 0 {
            best = best.slice_assign([u..u + 1, 0..p, 0..d], candidates[winner].clone().slice([u..u + 1, 0..p, 0..d]));
        }
    }
    Ok(if positional { Ablation::OptimalPositional(best) } else { Ablation::Optimal(best.squeeze_dim(1)) })
}

/// Each node's loss with it alone ablated to `constants` [n_fwd, P, d], summed over `batches`
/// (the mean over all their pairs).
fn total_node_losses<X: burn::tensor::backend::Backend>(
    model: &Transformer<X>,
    graph: &Graph,
    batches: &[FitBatch<X>],
    constants: Tensor<X, 3>,
    metric: Metric,
) -> Vec<f64> {
    let n_fwd = graph.n_fwd();
    let mut totals = vec![0.0f64; n_fwd];
    let pairs: usize = batches.iter().map(|b| b.answers.len()).sum();
    for batch in batches {
        for nodes in (0..n_fwd).collect::<Vec<_>>().chunks(NODES_PER_PASS) {
            let losses: Vec<f32> =
                node_losses(model, graph, batch, constants.clone(), nodes, metric).into_data().convert::<f32>().to_vec().expect("losses are f32");
            for (&u, &l) in nodes.iter().zip(&losses) {
                totals[u] += f64::from(l) * batch.answers.len() as f64 / pairs as f64;
            }
        }
    }
    totals
}

/// The mean loss over the batch's pairs of each node in `nodes` ablated alone to its constant:
/// one replica per node, [nodes].
fn node_losses<X: burn::tensor::backend::Backend>(
    model: &Transformer<X>,
    graph: &Graph,
    batch: &FitBatch<X>,
    constants: Tensor<X, 3>,
    nodes: &[usize],
    metric: Metric,
) -> Tensor<X, 1> {
    let device = constants.device();
    let (n_fwd, n_bwd) = (graph.n_fwd(), graph.n_bwd());
    let mut keep = vec![1.0f32; nodes.len() * n_fwd * n_bwd];
    for (r, &u) in nodes.iter().enumerate() {
        keep[(r * n_fwd + u) * n_bwd..(r * n_fwd + u + 1) * n_bwd].fill(0.0);
    }
    let keep = Tensor::<X, 3>::from_data(TensorData::new(keep, [nodes.len(), n_fwd, n_bwd]), &device);
    let pairs = batch.answers.len();
    let t = batch.clean.max_len();
    let [_, p, d] = constants.dims();
    // Positional constants cover the longest prompt they were fitted on, these same prompts.
    let per_position = if p == 1 { constants } else { constants.slice([0..n_fwd, 0..t, 0..d]) };
    let ablated: Tensor<X, 4> = per_position.unsqueeze_dim::<4>(1).expand([n_fwd, pairs, t, d]);
    let rows = batch.clean.repeat(nodes.len());
    let mut hooks = PatchHooks::new(*graph, &EdgeMasks::from_tensor(keep), ablated);
    let logits = model.forward_with(&rows, &Readout::ReadPosition, &mut hooks).squeeze_dim::<2>(1);
    let values = metric.per_row_against(logits, &batch.answers, nodes.len(), &batch.reference);
    let losses = if metric.higher_is_better() { values.neg() } else { values };
    losses.reshape([nodes.len(), pairs]).mean_dim(1).squeeze_dim(1)
}
