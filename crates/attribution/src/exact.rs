//! `exact`: ablate one edge at a time and measure the change in loss — the ground truth the
//! gradient approximations chase. Many edges run side by side in one patched pass (one mask per
//! replica of the batch), and the ablated activations are computed once per batch.

use burn::tensor::backend::Backend;
use graph::Graph;
use patching::{Ablation, AblationError, logit_differences, patched_logit_differences};
use tasks::{PairBatch, PreparedPair};
use transformer::{Batch, BatchError, Readout, Transformer};

use crate::scores::{EdgeScores, PassCount};

/// Batch sizes of an exact run.
#[derive(Debug, Clone, Copy)]
pub struct ExactOptions {
    /// Pairs per batch.
    pub batch_size: usize,
    /// Edges ablated side by side in one pass (rows = edges × pairs).
    pub edges_per_pass: usize,
}

impl Default for ExactOptions {
    fn default() -> Self {
        Self { batch_size: 8, edges_per_pass: 16 }
    }
}

/// Why exact patching cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ExactError {
    #[error("no pairs to score on")]
    NoPairs,
    #[error("({fwd}, {bwd}) is not an edge of the graph")]
    NotAnEdge { fwd: usize, bwd: usize },
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Ablation(#[from] AblationError),
}

/// Scores `edges` (all real edges when None) by the mean over `pairs` of m(clean) − m(edge ablated),
/// i.e. the increase in the loss L = −m caused by ablating that edge alone. Edges not scored stay 0.
pub fn exact_scores<B: Backend>(
    model: &Transformer<B>,
    graph: &Graph,
    pairs: &[PreparedPair],
    edges: Option<&[(usize, usize)]>,
    ablation: &Ablation<B>,
    options: ExactOptions,
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
    let device = model.token_embedding.device();
    let keep_all = graph.real_edge_mask();
    let n_bwd = graph.n_bwd();
    let mut totals = vec![0.0f64; edges.len()];
    let mut passes = PassCount::default();

    for chunk in pairs.chunks(options.batch_size.max(1)) {
        let PairBatch { clean, counterfactual, answers } = PairBatch::of(chunk);
        let clean_batch = Batch::new(&clean, &model.config, &device)?;
        let clean_m = logit_differences(model.forward(&clean_batch, &Readout::LastToken).squeeze_dim::<2>(1), &answers, 1);
        let ablated = ablation.ablated_nodes(model, &Batch::new(&counterfactual, &model.config, &device)?)?;
        passes.forward += 1 + ablation.forward_passes();

        for (group_index, group) in edges.chunks(options.edges_per_pass.max(1)).enumerate() {
            let masks: Vec<Vec<bool>> = group
                .iter()
                .map(|&(f, b)| {
                    let mut m = keep_all.clone();
                    m[f * n_bwd + b] = false;
                    m
                })
                .collect();
            let mask_refs: Vec<&[bool]> = masks.iter().map(Vec::as_slice).collect();
            let patched = patched_logit_differences(model, graph, &clean, &answers, ablated.clone(), &mask_refs)?;
            passes.forward += 1;
            for (e, row) in patched.chunks(chunk.len()).enumerate() {
                let change: f64 = row.iter().zip(&clean_m).map(|(p, c)| (c - p) as f64).sum();
                totals[group_index * options.edges_per_pass.max(1) + e] += change;
            }
        }
    }
    let mut values = vec![0.0f32; graph.n_fwd() * n_bwd];
    for (&(f, b), total) in edges.iter().zip(totals) {
        values[f * n_bwd + b] = (total / pairs.len() as f64) as f32;
    }
    Ok(EdgeScores { graph: *graph, values, passes })
}
