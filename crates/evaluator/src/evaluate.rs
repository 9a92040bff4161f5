//! Running circuits on a task: m(N), m(∅) and m(C) for many circuits over the same pairs, with the
//! ablated activations computed once per batch and shared by every circuit.

use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use graph::Graph;
use patching::{Ablation, AblationError, logit_differences, patched_logit_differences};
use tasks::{PairBatch, PreparedPair};
use transformer::{Batch, BatchError, Readout, Transformer};

/// Sizes of the work units of an evaluation.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Pairs per batch.
    pub batch_size: usize,
    /// Masks run side by side in one patched pass (rows = masks × pairs). One is fastest on a
    /// CPU: the engine's buffers stay contiguous and no work is shared across masks anyway.
    pub masks_per_pass: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { batch_size: 16, masks_per_pass: 1 }
    }
}

/// Means of the metric m = logit(correct) − logit(incorrect) over the pairs, and where time went.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalResult {
    /// m(N): the clean model.
    pub m_full: f64,
    /// m(∅): every edge ablated.
    pub m_empty: f64,
    /// m(C) for each circuit, in the order given.
    pub m_circuits: Vec<f64>,
    /// Unpatched forward passes (clean runs, and counterfactual runs recording node outputs).
    pub plain_forward: Duration,
    /// Patched forward passes.
    pub patched_forward: Duration,
    /// Everything else: batching, masks, metric reads.
    pub other: Duration,
    /// Forward passes run, counting each patched pass once whatever its number of masks.
    pub passes: usize,
}

/// Why an evaluation cannot run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("no pairs to evaluate on")]
    NoPairs,
    #[error("pair {index}: clean and counterfactual prompts differ in length ({clean} vs {counterfactual} tokens)")]
    UnequalLengths { index: usize, clean: usize, counterfactual: usize },
    #[error("a circuit mask has {found} cells, the graph needs {expected}")]
    MaskSize { found: usize, expected: usize },
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Ablation(#[from] AblationError),
}

/// Σ m over the pairs of each replica, from m per row (replica-major).
fn replica_sums(m: &[f32], pairs: usize) -> Vec<f64> {
    m.chunks(pairs).map(|row| row.iter().map(|&x| x as f64).sum()).collect()
}

/// Evaluates `circuits` (row-major [n_fwd × n_bwd] keep masks) on `pairs` under `ablation`, along
/// with the full model and the empty circuit.
pub fn evaluate_circuits<B: Backend>(
    model: &Transformer<B>,
    graph: &Graph,
    pairs: &[PreparedPair],
    circuits: &[&[bool]],
    ablation: &Ablation<B>,
    options: EvalOptions,
) -> Result<EvalResult, EvalError> {
    if pairs.is_empty() {
        return Err(EvalError::NoPairs);
    }
    for (index, p) in pairs.iter().enumerate() {
        if p.clean.len() != p.counterfactual.len() {
            return Err(EvalError::UnequalLengths { index, clean: p.clean.len(), counterfactual: p.counterfactual.len() });
        }
    }
    let expected = graph.n_fwd() * graph.n_bwd();
    if let Some(bad) = circuits.iter().find(|c| c.len() != expected) {
        return Err(EvalError::MaskSize { found: bad.len(), expected });
    }
    let device = model.token_embedding.device();
    let empty = vec![false; expected];
    // m(∅) comes from the ablation's own run when it gives the every-edge-ablated logits
    // (counterfactual ablation: the counterfactual run); otherwise the empty circuit is patched
    // like any other, as mask 0 before the circuits.
    let mut empty_sum = 0.0;
    let mut full_sum = 0.0;
    let mut sums = vec![0.0f64; circuits.len()];
    let (mut plain_forward, mut patched_forward, mut passes) = (Duration::ZERO, Duration::ZERO, 0);
    let start = Instant::now();

    for chunk in pairs.chunks(options.batch_size.max(1)) {
        let PairBatch { clean, counterfactual, answers } = PairBatch::of(chunk);

        let t = Instant::now();
        let clean_batch = Batch::new(&clean, &model.config, &device)?;
        let logits = model.forward(&clean_batch, &Readout::LastToken).squeeze_dim::<2>(1);
        full_sum += replica_sums(&logit_differences(logits, &answers, 1), answers.len())[0];
        let (ablated, empty_logits) = ablation.ablated_run(model, &Batch::new(&counterfactual, &model.config, &device)?)?;
        // The masks to patch, and how many of them (0 or 1) come before the circuits: the empty one.
        let (masks, before_circuits): (Vec<&[bool]>, usize) = match empty_logits {
            Some(logits) => {
                empty_sum += replica_sums(&logit_differences(logits, &answers, 1), answers.len())[0];
                (circuits.to_vec(), 0)
            }
            None => (std::iter::once(empty.as_slice()).chain(circuits.iter().copied()).collect(), 1),
        };
        plain_forward += t.elapsed();
        passes += 1 + ablation.forward_passes();

        let mut done = 0;
        for group in masks.chunks(options.masks_per_pass.max(1)) {
            let t = Instant::now();
            let m = patched_logit_differences(model, graph, &clean, &answers, ablated.clone(), group)?;
            for (r, s) in replica_sums(&m, answers.len()).into_iter().enumerate() {
                match (done + r).checked_sub(before_circuits) {
                    Some(circuit) => sums[circuit] += s,
                    None => empty_sum += s,
                }
            }
            done += group.len();
            patched_forward += t.elapsed();
            passes += 1;
        }
    }
    let n = pairs.len() as f64;
    Ok(EvalResult {
        m_full: full_sum / n,
        m_empty: empty_sum / n,
        m_circuits: sums.iter().map(|s| s / n).collect(),
        plain_forward,
        patched_forward,
        other: start.elapsed().saturating_sub(plain_forward + patched_forward),
        passes,
    })
}
