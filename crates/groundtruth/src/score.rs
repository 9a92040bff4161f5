//! Scores of a method against a true edge set: AUROC of its edge scores, precision and recall of
//! its circuit.

use graph::{EdgeMatrix, Graph};

/// How well a ranking by |score| separates the true edges from the others, over every real edge
/// of `graph`: the probability that a random true edge outranks a random other one, ties counting
/// one half (the Mann–Whitney U statistic over average ranks; MIB's InterpBench protocol).
///
/// A NaN score counts as 0. Returns NaN when `truth` holds no edge or every edge.
///
/// # Panics
/// When `scores` or `truth` is a matrix of another graph.
pub fn auroc(scores: &EdgeMatrix<f32>, truth: &EdgeMatrix<bool>, graph: Graph) -> f64 {
    assert!(scores.graph() == graph && truth.graph() == graph, "scores, truth and graph must share one graph");
    let mut ranked: Vec<(f32, bool)> = graph.edges().map(|e| (if scores[e].is_nan() { 0.0 } else { scores[e].abs() }, truth[e])).collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = ranked.iter().filter(|(_, t)| *t).count();
    let negatives = ranked.len() - positives;
    if positives == 0 || negatives == 0 {
        return f64::NAN;
    }
    // Ranks 1..=n; a run of equal scores shares the mean of its ranks.
    let mut rank_sum = 0f64;
    let mut start = 0;
    while start < ranked.len() {
        let end = start + ranked[start..].iter().take_while(|(s, _)| *s == ranked[start].0).count();
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        rank_sum += mean_rank * ranked[start..end].iter().filter(|(_, t)| *t).count() as f64;
        start = end;
    }
    let (p, n) = (positives as f64, negatives as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

/// A circuit compared with a true edge set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecisionRecall {
    /// True positives over the circuit's edges; 0 for an empty circuit.
    pub precision: f64,
    /// True positives over the true edges; 0 when the truth is empty.
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0 when both are 0.
    pub f1: f64,
    /// Edges in both the circuit and the truth.
    pub true_positives: usize,
    /// Edges in the circuit.
    pub found: usize,
    /// Edges in the truth.
    pub truth: usize,
}

/// Precision, recall and F1 of `circuit` against `truth`, over the real edges of `graph`.
///
/// # Panics
/// When `circuit` or `truth` is a matrix of another graph.
pub fn precision_recall(circuit: &EdgeMatrix<bool>, truth: &EdgeMatrix<bool>, graph: Graph) -> PrecisionRecall {
    assert!(circuit.graph() == graph && truth.graph() == graph, "circuit, truth and graph must share one graph");
    let (mut true_positives, mut found, mut in_truth) = (0, 0, 0);
    for e in graph.edges() {
        found += usize::from(circuit[e]);
        in_truth += usize::from(truth[e]);
        true_positives += usize::from(circuit[e] && truth[e]);
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (precision, recall) = (ratio(true_positives, found), ratio(true_positives, in_truth));
    let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
    PrecisionRecall { precision, recall, f1, true_positives, found, truth: in_truth }
}
