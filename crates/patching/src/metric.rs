//! Task metrics read at each pair's answer position (the last real token of the clean prompt), as a
//! type chosen by name: MIB's logit difference, ACDC's / Edge Pruning's / UGS's KL divergence from
//! the full model, the probability difference and the answer's negative log-probability.
//!
//! Every metric has a value (what tables report, in its natural units) and a loss (what methods
//! minimise and what edge scores are a change in): the value when lower is better, its negation
//! when higher is better. Faithfulness (m(C) − m(∅)) / (m(N) − m(∅)) reads values and is the same
//! whichever orientation the metric has.

use std::fmt;
use std::str::FromStr;

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// A task metric, per pair, at the answer position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// m = logit(correct) − logit(incorrect): MIB's metric, the default everywhere.
    LogitDifference,
    /// KL(full model ‖ this run) over the vocabulary: 0 for the full model, higher is worse.
    Kl,
    /// p(correct) − p(incorrect) under the softmax over the vocabulary.
    ProbabilityDifference,
    /// −log p(correct): the answer's negative log-probability, lower is better.
    AnswerNll,
    /// m = logit(correct): the output column itself, for a model whose output is a number (a
    /// tracr program's numerical output) rather than a choice among tokens; read as higher is
    /// better, like the logit difference.
    Value,
    /// ‖logits − the full model's logits‖² over the output columns: 0 for the full model, higher
    /// is worse. ACDC's metric on tracr models (whose outputs are one-hot or a number, so KL
    /// of a softmax says little), and one whose changes cannot cancel across pairs.
    L2,
}

/// What a metric compares logits against ([`Metric::reference`]).
#[derive(Debug, Clone)]
pub struct MetricReference<B: Backend> {
    /// KL's reference probabilities and log-probabilities [pairs, vocab].
    kl: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
    /// L2's reference: the full model's logits [pairs, vocab].
    full: Option<Tensor<B, 2>>,
}

/// A metric name that is not one of [`Metric::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric `{0}` (known: logit-diff, kl, prob-diff, nll, value, l2)")]
pub struct UnknownMetric(pub String);

/// A metric value that is NaN or infinite because the logits it was read from are.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("{metric} is {value} on row {row} (pair {pair} of the batch): the model's logits are not finite numbers")]
pub struct NonFiniteMetric {
    /// The metric read.
    pub metric: Metric,
    /// The row of the logits (replica-major) where it first is not finite.
    pub row: usize,
    /// That row's pair within the batch (`row` modulo the batch's pairs).
    pub pair: usize,
    /// The value found: NaN, inf or -inf.
    pub value: f32,
}

impl Metric {
    /// Every metric, in the order of [`Metric::NAMES`].
    pub const ALL: [Metric; 6] = [Metric::LogitDifference, Metric::Kl, Metric::ProbabilityDifference, Metric::AnswerNll, Metric::Value, Metric::L2];
    /// The names configs and flags accept.
    pub const NAMES: [&'static str; 6] = ["logit-diff", "kl", "prob-diff", "nll", "value", "l2"];

    /// The metric's name in configs, flags and tables.
    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|&m| m == self).expect("ALL lists every metric")]
    }

    /// Whether a larger value means the model does the task better (logit and probability
    /// differences); KL and the negative log-probability are better when smaller.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::LogitDifference | Metric::ProbabilityDifference | Metric::Value)
    }

    /// The metric of every row of last-token logits [rows, vocab], differentiable: rows are
    /// `replicas` copies of the pairs (replica-major) whose (correct, incorrect) tokens are
    /// `answers`; `full` [pairs, vocab] are the full model's logits on the same clean prompts,
    /// which KL compares against (the other metrics do not read them).
    pub fn per_row<B: Backend>(self, logits: Tensor<B, 2>, answers: &[(u32, u32)], replicas: usize, full: &Tensor<B, 2>) -> Tensor<B, 1> {
        self.per_row_against(logits, answers, replicas, &self.reference(full))
    }

    /// What this metric compares against, prepared once for many passes over the same pairs:
    /// for KL, the full model's log-probabilities and probabilities (nothing for the others).
    pub fn reference<B: Backend>(self, full: &Tensor<B, 2>) -> MetricReference<B> {
        let kl = (self == Metric::Kl).then(|| {
            let log_p = log_softmax(full.clone(), 1);
            (log_p.clone().exp(), log_p)
        });
        MetricReference { kl, full: (self == Metric::L2).then(|| full.clone()) }
    }

    /// [`Metric::per_row`] against a prepared reference.
    pub fn per_row_against<B: Backend>(self, logits: Tensor<B, 2>, answers: &[(u32, u32)], replicas: usize, reference: &MetricReference<B>) -> Tensor<B, 1> {
        let rows = answers.len() * replicas;
        let [found, vocab] = logits.dims();
        assert_eq!(found, rows, "one logit row per pair and replica");
        let device = logits.device();
        let picked = |values: Tensor<B, 2>| -> [Tensor<B, 1>; 2] {
            let idx: Vec<i64> = (0..replicas).flat_map(|_| answers.iter().flat_map(|&(c, i)| [c as i64, i as i64])).collect();
            let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(idx, [rows, 2]), &device);
            let pair = values.gather(1, idx);
            [pair.clone().slice([0..rows, 0..1]).reshape([rows]), pair.slice([0..rows, 1..2]).reshape([rows])]
        };
        match self {
            Metric::LogitDifference => {
                let [correct, incorrect] = picked(logits);
                correct - incorrect
            }
            Metric::ProbabilityDifference => {
                let [correct, incorrect] = picked(log_softmax(logits, 1).exp());
                correct - incorrect
            }
            Metric::AnswerNll => {
                let [correct, _] = picked(log_softmax(logits, 1));
                correct.neg()
            }
            Metric::Value => {
                let [correct, _] = picked(logits);
                correct
            }
            Metric::L2 => {
                let pairs = answers.len();
                let full = reference.full.clone().expect("an L2 reference for L2");
                let full = if replicas == 1 { full } else { full.unsqueeze_dim::<3>(0).expand([replicas, pairs, vocab]).reshape([rows, vocab]) };
                (logits - full).square().sum_dim(1).reshape([rows])
            }
            Metric::Kl => {
                let pairs = answers.len();
                let (p, log_p) = reference.kl.clone().expect("a KL reference for KL");
                let repeat = |x: Tensor<B, 2>| if replicas == 1 { x } else { x.unsqueeze_dim::<3>(0).expand([replicas, pairs, vocab]).reshape([rows, vocab]) };
                let divergence = repeat(p) * (repeat(log_p) - log_softmax(logits, 1));
                divergence.sum_dim(1).reshape([rows])
            }
        }
    }

    /// [`Metric::per_row`] read back to the host.
    pub fn values<B: Backend>(self, logits: Tensor<B, 2>, answers: &[(u32, u32)], replicas: usize, full: &Tensor<B, 2>) -> Vec<f32> {
        self.per_row(logits, answers, replicas, full).into_data().to_vec().expect("metric values are f32")
    }

    /// [`Metric::values`], or the first row whose value is NaN or infinite: logits that are not
    /// finite numbers must fail the run, never reach a table.
    pub fn finite_values<B: Backend>(
        self,
        logits: Tensor<B, 2>,
        answers: &[(u32, u32)],
        replicas: usize,
        full: &Tensor<B, 2>,
    ) -> Result<Vec<f32>, NonFiniteMetric> {
        self.finite_values_against(logits, answers, replicas, &self.reference(full))
    }

    /// [`Metric::finite_values`] against a prepared reference.
    pub fn finite_values_against<B: Backend>(
        self,
        logits: Tensor<B, 2>,
        answers: &[(u32, u32)],
        replicas: usize,
        reference: &MetricReference<B>,
    ) -> Result<Vec<f32>, NonFiniteMetric> {
        let values: Vec<f32> = self.per_row_against(logits, answers, replicas, reference).into_data().to_vec().expect("metric values are f32");
        match values.iter().position(|v| !v.is_finite()) {
            Some(row) => Err(NonFiniteMetric { metric: self, row, pair: row % answers.len().max(1), value: values[row] }),
            None => Ok(values),
        }
    }

    /// Whether the metric reads only the answer tokens' logits (so a pass may unembed just those).
    pub fn reads_answers_only(self) -> bool {
        matches!(self, Metric::LogitDifference | Metric::Value)
    }

    /// The loss summed over the rows (one replica): the value where lower is better, its negation
    /// otherwise; differentiable, so gradient methods take −∂loss/∂keep as an edge's score.
    pub fn loss<B: Backend>(self, logits: Tensor<B, 2>, answers: &[(u32, u32)], full: &Tensor<B, 2>) -> Tensor<B, 1> {
        let values = self.per_row(logits, answers, 1, full);
        if self.higher_is_better() { values.neg().sum() } else { values.sum() }
    }

    /// A loss from a value: what an edge score is a change in.
    pub fn loss_of(self, value: f64) -> f64 {
        if self.higher_is_better() { -value } else { value }
    }
}

impl FromStr for Metric {
    type Err = UnknownMetric;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::NAMES.iter().position(|&n| n == s).map(|i| Self::ALL[i]).ok_or_else(|| UnknownMetric(s.into()))
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Tensor, TensorData};
    use transformer::CpuBackend;

    use super::*;

    #[test]
    fn finite_values_name_the_first_non_finite_row_and_its_pair() {
        let device = Default::default();
        // Two replicas of two pairs, vocabulary 3; row 3 (replica 1, pair 1) has a NaN logit.
        let rows = vec![1.0, 2.0, 0.0, 0.5, 0.0, 1.0, 3.0, 1.0, 0.0, f32::NAN, 0.0, 2.0];
        let logits = Tensor::<CpuBackend, 2>::from_data(TensorData::new(rows, [4, 3]), &device);
        let full = logits.clone().slice([0..2, 0..3]);
        let answers = [(0, 1), (0, 2)];
        for metric in Metric::ALL {
            let err = metric.finite_values(logits.clone(), &answers, 2, &full).unwrap_err();
            assert_eq!((err.metric, err.row, err.pair), (metric, 3, 1), "{metric}");
            assert!(err.value.is_nan() && err.to_string().contains("not finite"), "{metric}: {err}");
            let finite = metric.finite_values(logits.clone().slice([0..2, 0..3]), &answers, 1, &full).unwrap();
            assert_eq!(finite, metric.values(logits.clone().slice([0..2, 0..3]), &answers, 1, &full), "{metric}");
        }
    }
}
