//! `exact`: ablate one edge at a time and measure the change in loss — the ground truth the
//! gradient approximations chase. Many edges run side by side in one patched pass (one mask per
//! replica of the batch), and the ablated activations are computed once per batch.

use burn::tensor::backend::Backend;
use graph::{EdgeMatrix, Graph};
use patching::{Ablation, AblationError, Metric, NonFiniteMetric, PairBatches, Positions, patched_logits};
use tasks::{PairBatch, PreparedPair};
use transformer::{BatchError, Readout, Transformer};

use crate::method::Progress;
use crate::scores::{EdgeScores, PassCount};

/// Batch sizes of an exact run.
#[derive(Debug, Clone, Copy)]
pub struct ExactOptions {
    /// Pairs per batch.
    pub batch_size: usize,
    /// Edges ablated side by side in one pass (rows = edges × pairs).
    pub edges_per_pass: usize,
    /// Which positions each pass computes (see [`patching::prefix`]).
    pub positions: Positions,
}

/// Edges ablated side by side in one pass unless a caller says otherwise.
pub const EDGES_PER_PASS: usize = 16;

impl Default for ExactOptions {
    fn default() -> Self {
        Self { batch_size: 8, edges_per_pass: EDGES_PER_PASS, positions: Positions::Suffix }
    }
}

/// Why exact patching cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ExactError {
    /// Nothing to score on.
    #[error("no pairs to score on")]
    NoPairs,
    /// An edge asked for that the graph does not have.
    #[error("({fwd}, {bwd}) is not an edge of the graph")]
    NotAnEdge {
        /// Its forward (source) index.
        fwd: usize,
        /// Its backward (destination slot) index.
        bwd: usize,
    },
    /// A metric value that is NaN or infinite: the model's logits on that pair are not finite.
    #[error(
        "exact patching, {run}, pair {pair}: {metric} is {value}: the model's logits are not finite numbers (NaN or infinity in its weights or activations)"
    )]
    NonFinite {
        /// The clean run, or the patched run of the edge named.
        run: String,
        /// The pair's index among those given.
        pair: usize,
        /// The metric read.
        metric: Metric,
        /// The value found.
        value: f32,
    },
    /// A batch of prompts does not fit the model.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The ablation could not be applied.
    #[error(transparent)]
    Ablation(#[from] AblationError),
}

/// Scores `edges` (all real edges when None) by the mean over `pairs` of loss(edge ablated) −
/// loss(clean) under `metric` (for the logit difference m(clean) − m(edge ablated)): the increase in
/// the loss caused by ablating that edge alone. Edges not scored stay 0. `progress` hears after
/// every batch of pairs.
#[allow(clippy::too_many_arguments)]
pub fn exact_scores<B: Backend>(
    model: &Transformer<B>,
    graph: &Graph,
    pairs: &[PreparedPair],
    edges: Option<&[(usize, usize)]>,
    ablation: &Ablation<B>,
    metric: Metric,
    options: ExactOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<EdgeScores, ExactError> {
    if pairs.is_empty() {
        return Err(ExactError::NoPairs);
    }
    let edges: Vec<(usize, usize)> = match edges {
        Some(e) => e.to_vec(),
        None => graph.edges().collect(),
    };
    if let Some(&(fwd, bwd)) = edges.iter().find(|&&(f, b)| !graph.is_edge(f, b)) {
        return Err(ExactError::NotAnEdge { fwd, bwd });
    }
    let keep_all = graph.real_edge_mask();
    let mut totals = vec![0.0f64; edges.len()];
    let mut passes = PassCount::default();
    let batch_size = options.batch_size.max(1);
    let total = pairs.len().div_ceil(batch_size);

    for (done, chunk) in pairs.chunks(batch_size).enumerate() {
        let PairBatch { clean, counterfactual, answers, reads } = PairBatch::of(chunk);
        let batches = PairBatches::new(model, &clean, &counterfactual, &reads, ablation, options.positions)?;
        let full = model.forward(&batches.clean, &Readout::ReadPosition).squeeze_dim::<2>(1);
        let first_pair = done * batch_size;
        let non_finite = |run: String, e: NonFiniteMetric| ExactError::NonFinite { run, pair: first_pair + e.pair, metric: e.metric, value: e.value };
        let clean_values = metric.finite_values(full.clone(), &answers, 1, &full).map_err(|e| non_finite("the clean run".into(), e))?;
        let clean_loss: Vec<f64> = clean_values.iter().map(|&v| metric.loss_of(v as f64)).collect();
        let ablated = ablation.ablated_nodes(model, &batches.counterfactual)?;
        passes.forward += 1 + ablation.forward_passes();

        for (group_index, group) in edges.chunks(options.edges_per_pass.max(1)).enumerate() {
            let masks: Vec<EdgeMatrix<bool>> = group
                .iter()
                .map(|&edge| {
                    let mut m = keep_all.clone();
                    m[edge] = false;
                    m
                })
                .collect();
            let mask_refs: Vec<&EdgeMatrix<bool>> = masks.iter().collect();
            let logits = patched_logits(model, graph, &batches.clean, ablated.clone(), &mask_refs);
            let patched = metric.finite_values(logits, &answers, masks.len(), &full).map_err(|e| {
                let (f, b) = group[e.row / answers.len()];
                non_finite(format!("the run ablating edge {}", graph.edge_name(f, b).unwrap_or_else(|_| format!("({f}, {b})"))), e)
            })?;
            passes.forward += 1;
            for (e, row) in patched.chunks(chunk.len()).enumerate() {
                let change: f64 = row.iter().zip(&clean_loss).map(|(&p, c)| metric.loss_of(p as f64) - c).sum();
                totals[group_index * options.edges_per_pass.max(1) + e] += change;
            }
        }
        progress(Progress { done: done + 1, total });
    }
    let mut values = EdgeMatrix::filled(*graph, 0.0f32);
    for (&edge, total) in edges.iter().zip(totals) {
        values[edge] = (total / pairs.len() as f64) as f32;
    }
    Ok(EdgeScores { values, passes, preferred: None })
}
