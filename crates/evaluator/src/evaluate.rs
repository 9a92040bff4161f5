//! Running circuits on a task: m(N), m(∅) and m(C) for many circuits over the same pairs, with the
//! ablated activations computed once per batch and shared by every circuit.

use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use graph::{EdgeMatrix, Graph};
use patching::{Ablation, AblationError, Metric, NonFiniteMetric, PairBatches, Positions, patched_logits};
use tasks::{PairBatch, PreparedPair};
use transformer::{BatchError, Readout, Transformer};

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
    /// Which positions each pass computes (see [`patching::prefix`]): the same numbers either way.
    pub positions: Positions,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { batch_size: 16, masks_per_pass: 1, metric: Metric::LogitDifference, positions: Positions::Suffix }
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
    /// The metric on the full model for each pair, in the order given (`m_full` is their mean):
    /// what bootstrap intervals over the pairs resample.
    pub full_per_pair: Vec<f64>,
    /// The metric with every edge ablated for each pair, in the order given.
    pub empty_per_pair: Vec<f64>,
    /// For each circuit, in the order given, the metric for each pair, in the order given.
    pub circuits_per_pair: Vec<Vec<f64>>,
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
    /// A metric value that is NaN or infinite: the model's logits on that pair are not finite.
    #[error("{run}, pair {pair}: {metric} is {value}: the model's logits are not finite numbers (NaN or infinity in its weights or activations)")]
    NonFinite {
        /// Which run: the full model's, the every-edge-ablated one, or a circuit's patched run.
        run: String,
        /// The pair's index among those given.
        pair: usize,
        /// The metric read.
        metric: Metric,
        /// The value found.
        value: f32,
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

/// Appends one replica's values per pair (row `replica` of replica-major `m`) to `values`.
fn extend_replica(values: &mut Vec<f64>, m: &[f32], pairs: usize, replica: usize) {
    values.extend(m[replica * pairs..(replica + 1) * pairs].iter().map(|&x| x as f64));
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
    let metric = options.metric;
    let empty = EdgeMatrix::filled(*graph, false);
    // m(∅) comes from the ablation's own run when it gives the every-edge-ablated logits
    // (counterfactual ablation: the counterfactual run); otherwise the empty circuit is patched
    // like any other, as mask 0 before the circuits.
    let mut empty_sum = 0.0;
    let mut full_sum = 0.0;
    let mut sums = vec![0.0f64; circuits.len()];
    let (mut full_values, mut empty_values) = (Vec::with_capacity(pairs.len()), Vec::with_capacity(pairs.len()));
    let mut circuit_values = vec![Vec::with_capacity(pairs.len()); circuits.len()];
    let (mut plain_forward, mut patched_forward, mut passes) = (Duration::ZERO, Duration::ZERO, 0);
    let start = Instant::now();
    let batch_size = options.batch_size.max(1);
    let total = pairs.len().div_ceil(batch_size);

    for (done, chunk) in pairs.chunks(batch_size).enumerate() {
        let PairBatch { clean, counterfactual, answers, reads } = PairBatch::of(chunk);
        // A non-finite value names the run and the pair's index among all pairs.
        let first_pair = done * batch_size;
        let non_finite = |run: String| move |e: NonFiniteMetric| EvalError::NonFinite { run, pair: first_pair + e.pair, metric: e.metric, value: e.value };

        let t = Instant::now();
        // Under counterfactual ablation every run below computes only the positions from the
        // first differing token on (patching::prefix).
        let batches = PairBatches::new(model, &clean, &counterfactual, &reads, ablation, options.positions)?;
        let full = model.forward(&batches.clean, &Readout::ReadPosition).squeeze_dim::<2>(1);
        let m_full = metric.finite_values(full.clone(), &answers, 1, &full).map_err(non_finite("the full model's run".into()))?;
        full_sum += replica_sums(&m_full, answers.len())[0];
        extend_replica(&mut full_values, &m_full, answers.len(), 0);
        let (ablated, empty_logits) = ablation.ablated_run(model, &batches.counterfactual)?;
        // The masks to patch, and how many of them (0 or 1) come before the circuits: the empty one.
        let (masks, before_circuits): (Vec<&EdgeMatrix<bool>>, usize) = match empty_logits {
            Some(logits) => {
                let m_empty = metric.finite_values(logits, &answers, 1, &full).map_err(non_finite("the every-edge-ablated run".into()))?;
                empty_sum += replica_sums(&m_empty, answers.len())[0];
                extend_replica(&mut empty_values, &m_empty, answers.len(), 0);
                (circuits.to_vec(), 0)
            }
            None => (std::iter::once(&empty).chain(circuits.iter().copied()).collect(), 1),
        };
        plain_forward += t.elapsed();
        passes += 1 + ablation.forward_passes();

        let mut patched = 0;
        for group in masks.chunks(options.masks_per_pass.max(1)) {
            let t = Instant::now();
            let logits = patched_logits(model, graph, &batches.clean, ablated.clone(), group);
            let m = metric.finite_values(logits, &answers, group.len(), &full).map_err(|e| {
                let run = match (patched + e.row / answers.len()).checked_sub(before_circuits) {
                    Some(circuit) => format!("circuit {circuit}'s patched run"),
                    None => "the empty circuit's patched run".into(),
                };
                non_finite(run)(e)
            })?;
            for (r, s) in replica_sums(&m, answers.len()).into_iter().enumerate() {
                match (patched + r).checked_sub(before_circuits) {
                    Some(circuit) => {
                        sums[circuit] += s;
                        extend_replica(&mut circuit_values[circuit], &m, answers.len(), r);
                    }
                    None => {
                        empty_sum += s;
                        extend_replica(&mut empty_values, &m, answers.len(), r);
                    }
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
        full_per_pair: full_values,
        empty_per_pair: empty_values,
        circuits_per_pair: circuit_values,
        plain_forward,
        patched_forward,
        other: start.elapsed().saturating_sub(plain_forward + patched_forward),
        passes,
    })
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::{Tensor, TensorData};
    use transformer::{CpuBackend, LocalModel};

    use super::*;

    type B = CpuBackend;

    /// The tiny Llama fixture with token `token`'s embedding row NaN: every prompt holding it gives
    /// NaN logits, every other prompt finite ones.
    fn tiny_with_nan_token(token: usize) -> Transformer<B> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transformer/tests/fixtures/llama-tiny");
        let mut model = LocalModel::Dir(dir).load::<B>(&Default::default()).unwrap().model;
        let [vocab, d] = model.token_embedding.dims();
        let mut rows: Vec<f32> = model.token_embedding.val().into_data().to_vec().unwrap();
        rows[token * d..(token + 1) * d].fill(f32::NAN);
        model.token_embedding = Param::from_tensor(Tensor::from_data(TensorData::new(rows, [vocab, d]), &Default::default()));
        model
    }

    fn pairs() -> Vec<PreparedPair> {
        let pair = |clean: Vec<u32>, counterfactual: Vec<u32>| PreparedPair { clean, counterfactual, correct: 10, incorrect: 20, read: None };
        vec![pair(vec![5, 17, 42], vec![5, 30, 42]), pair(vec![9, 4, 60], vec![9, 4, 61]), pair(vec![1, 2, 3], vec![4, 2, 3]), pair(vec![8, 8], vec![8, 9])]
    }

    fn run(model: &Transformer<B>, ablation: &Ablation<B>) -> Result<EvalResult, EvalError> {
        let c = &model.config;
        let graph = Graph::new(graph::GraphShape { n_layers: c.n_layers, n_heads: c.n_heads }).unwrap();
        let full = EdgeMatrix::filled(graph, true);
        let options = EvalOptions { batch_size: 2, ..EvalOptions::default() };
        evaluate_circuits(model, &graph, &pairs(), &[&full], ablation, options, &mut |_, _| {})
    }

    #[test]
    fn nan_logits_fail_naming_the_run_and_the_pair() {
        // Token 95, the last of the fixture's vocabulary, is in no prompt: every run is finite.
        let model = tiny_with_nan_token(95);
        let result = run(&model, &Ablation::Counterfactual).unwrap();
        assert!(result.m_full.is_finite() && result.m_empty.is_finite() && result.m_circuits[0].is_finite(), "{result:?}");

        // Token 1 is only in pair 2's clean prompt (second batch): the full model's run fails there.
        let err = run(&tiny_with_nan_token(1), &Ablation::Counterfactual).unwrap_err();
        assert!(matches!(&err, EvalError::NonFinite { run, pair: 2, value, .. } if run == "the full model's run" && value.is_nan()), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("pair 2") && message.contains("logit-diff is NaN") && message.contains("not finite"), "{message}");

        // Token 61 is only in pair 1's counterfactual prompt: the clean runs are finite, the ablated one is not.
        let err = run(&tiny_with_nan_token(61), &Ablation::Counterfactual).unwrap_err();
        assert!(matches!(&err, EvalError::NonFinite { run, pair: 1, .. } if run == "the every-edge-ablated run"), "{err:?}");

        // A mean ablation of NaN: the clean runs are finite, the empty circuit's patched run (the
        // first patched, for an ablation without a run of its own) is not.
        let model = tiny_with_nan_token(95);
        let graph = Graph::new(graph::GraphShape { n_layers: model.config.n_layers, n_heads: model.config.n_heads }).unwrap();
        let nan_means = Tensor::<B, 2>::full([graph.n_fwd(), model.config.d_model], f32::NAN, &Default::default());
        let err = run(&model, &Ablation::Mean(nan_means)).unwrap_err();
        assert!(matches!(&err, EvalError::NonFinite { run, pair: 0, .. } if run == "the empty circuit's patched run"), "{err:?}");
    }
}
