//! Running circuits on a task: m(N), m(∅) and m(C) for many circuits over the same pairs, with the
//! ablated activations computed once per batch and shared by every circuit.

use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use graph::{EdgeMatrix, Graph};
use patching::{Ablation, AblationError, Metric, patched_logits};
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
    /// The metric measured (MIB's logit difference by default).
    pub metric: Metric,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { batch_size: 16, masks_per_pass: 1, metric: Metric::LogitDifference }
    }
}

/// Means of a metric over the pairs (the logit difference m unless asked otherwise), and where
/// time went.
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
    /// Nothing to evaluate on.
    #[error("no pairs to evaluate on")]
    NoPairs,
    /// A pair whose prompts cannot be patched position by position.
    #[error("pair {index}: clean and counterfactual prompts differ in length ({clean} vs {counterfactual} tokens)")]
    UnequalLengths {
        /// The pair's index among those given.
        index: usize,
        /// Clean prompt tokens.
        clean: usize,
        /// Counterfactual prompt tokens.
        counterfactual: usize,
    },
    /// A circuit of another model's graph.
    #[error("a circuit is of a graph of {found:?}, the model's is {expected:?}")]
    GraphMismatch {
        /// The circuit's graph shape.
        found: graph::GraphShape,
        /// The model's.
        expected: graph::GraphShape,
    },
    /// A method gave a number of circuits that is not one per budget.
    #[error("{found} circuits were given for {expected} budgets: a circuit-producing method gives one per budget")]
    CircuitCount {
        /// Circuits given.
        found: usize,
        /// Budgets asked for.
        expected: usize,
    },
    /// m(N) and m(∅) too close for faithfulness to mean anything.
    #[error(transparent)]
    Faithfulness(#[from] crate::FaithfulnessUndefined),
    /// A batch of prompts does not fit the model.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The ablation could not be applied.
    #[error(transparent)]
    Ablation(#[from] AblationError),
}

/// Σ of the metric over the pairs of each replica, from values per row (replica-major).
fn replica_sums(m: &[f32], pairs: usize) -> Vec<f64> {
    m.chunks(pairs).map(|row| row.iter().map(|&x| x as f64).sum()).collect()
}

/// Evaluates `circuits` (keep masks) on `pairs` under `ablation` with the options' metric, along
/// with the full model and the empty circuit; `progress` hears after every batch (done, total).
pub fn evaluate_circuits<B: Backend>(
    model: &Transformer<B>,
    graph: &Graph,
    pairs: &[PreparedPair],
    circuits: &[&EdgeMatrix<bool>],
    ablation: &Ablation<B>,
    options: EvalOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalResult, EvalError> {
    if pairs.is_empty() {
        return Err(EvalError::NoPairs);
    }
    for (index, p) in pairs.iter().enumerate() {
        if p.clean.len() != p.counterfactual.len() {
            return Err(EvalError::UnequalLengths { index, clean: p.clean.len(), counterfactual: p.counterfactual.len() });
        }
    }
    if let Some(bad) = circuits.iter().find(|c| c.graph() != *graph) {
        return Err(EvalError::GraphMismatch { found: bad.graph().shape(), expected: graph.shape() });
    }
    let device = model.token_embedding.device();
    let metric = options.metric;
    let empty = EdgeMatrix::filled(*graph, false);
    // m(∅) comes from the ablation's own run when it gives the every-edge-ablated logits
    // (counterfactual ablation: the counterfactual run); otherwise the empty circuit is patched
    // like any other, as mask 0 before the circuits.
    let mut empty_sum = 0.0;
    let mut full_sum = 0.0;
    let mut sums = vec![0.0f64; circuits.len()];
    let (mut plain_forward, mut patched_forward, mut passes) = (Duration::ZERO, Duration::ZERO, 0);
    let start = Instant::now();
    let batch_size = options.batch_size.max(1);
    let total = pairs.len().div_ceil(batch_size);

    for (done, chunk) in pairs.chunks(batch_size).enumerate() {
        let PairBatch { clean, counterfactual, answers } = PairBatch::of(chunk);

        let t = Instant::now();
        let clean_batch = Batch::new(&clean, &model.config, &device)?;
        let full = model.forward(&clean_batch, &Readout::LastToken).squeeze_dim::<2>(1);
        full_sum += replica_sums(&metric.values(full.clone(), &answers, 1, &full), answers.len())[0];
        let (ablated, empty_logits) = ablation.ablated_run(model, &Batch::new(&counterfactual, &model.config, &device)?)?;
        // The masks to patch, and how many of them (0 or 1) come before the circuits: the empty one.
        let (masks, before_circuits): (Vec<&EdgeMatrix<bool>>, usize) = match empty_logits {
            Some(logits) => {
                empty_sum += replica_sums(&metric.values(logits, &answers, 1, &full), answers.len())[0];
                (circuits.to_vec(), 0)
            }
            None => (std::iter::once(&empty).chain(circuits.iter().copied()).collect(), 1),
        };
        plain_forward += t.elapsed();
        passes += 1 + ablation.forward_passes();

        let mut patched = 0;
        for group in masks.chunks(options.masks_per_pass.max(1)) {
            let t = Instant::now();
            let logits = patched_logits(model, graph, &clean, ablated.clone(), group)?;
            let m = metric.values(logits, &answers, group.len(), &full);
            for (r, s) in replica_sums(&m, answers.len()).into_iter().enumerate() {
                match (patched + r).checked_sub(before_circuits) {
                    Some(circuit) => sums[circuit] += s,
                    None => empty_sum += s,
                }
            }
            patched += group.len();
            patched_forward += t.elapsed();
            passes += 1;
        }
        progress(done + 1, total);
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
