//! `ensemble-<mean|min|max>:<method>+<method>[+...]`: parallel score ensembles (LMU's MIB
//! shared-task entry, arXiv 2510.06811). Every member method scores the discovery pairs; each
//! member's scores are normalised by their largest magnitude over the real edges (signs kept, so
//! every member's scores lie in [−1, 1] and its strongest edge is ±1; a member scoring every edge 0
//! stays 0); the ensemble's score of an edge is the mean, the minimum or the maximum of the
//! members' normalised scores. The paper leaves the normalisation unstated: this one makes members
//! of different units (a gradient's loss change, IFR's importance shares) comparable without
//! changing any member's own ranking.

use burn::tensor::backend::AutodiffBackend;
use graph::EdgeMatrix;

use crate::method::{Discovery, Method, MethodError, Progress, run_method};
use crate::scores::{EdgeScores, PassCount};

/// How an ensemble combines its members' normalised scores, edge by edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// The mean: edges every member rates highly, rated highest.
    Mean,
    /// The minimum: an edge is as good as its worst rating.
    Min,
    /// The maximum: an edge is as good as its best rating.
    Max,
}

impl Combine {
    /// The combiners by name, as `ensemble-<name>:` writes them.
    pub const ALL: [Combine; 3] = [Combine::Mean, Combine::Min, Combine::Max];

    /// `mean`, `min` or `max`.
    pub fn name(self) -> &'static str {
        match self {
            Combine::Mean => "mean",
            Combine::Min => "min",
            Combine::Max => "max",
        }
    }

    fn apply(self, values: impl Iterator<Item = f32>) -> f32 {
        match self {
            Combine::Mean => {
                let (sum, n) = values.fold((0.0f64, 0usize), |(s, n), v| (s + v as f64, n + 1));
                (sum / n.max(1) as f64) as f32
            }
            Combine::Min => values.fold(f32::INFINITY, f32::min),
            Combine::Max => values.fold(f32::NEG_INFINITY, f32::max),
        }
    }
}

/// `scores` divided by their largest |score| over the real edges, signs kept; all zeros stay zeros.
pub fn normalise(scores: &EdgeMatrix<f32>) -> EdgeMatrix<f32> {
    let largest = scores.edge_values().fold(0.0f32, |m, (_, v)| m.max(v.abs()));
    let scale = if largest > 0.0 { 1.0 / largest } else { 1.0 };
    let graph = scores.graph();
    let mut out = EdgeMatrix::filled(graph, 0.0);
    for (edge, &v) in scores.edge_values() {
        out[edge] = v * scale;
    }
    out
}

/// Every real edge's `how` of the members' [`normalise`]d scores (cells that are not edges hold 0).
/// The members must be of one graph.
pub fn combine(members: &[EdgeMatrix<f32>], how: Combine) -> Result<EdgeMatrix<f32>, MethodError> {
    let Some(first) = members.first() else {
        return Err(MethodError::EmptyEnsemble);
    };
    let graph = first.graph();
    if let Some(index) = members.iter().position(|m| m.graph() != graph) {
        return Err(MethodError::EnsembleGraphs { member: index });
    }
    let normalised: Vec<EdgeMatrix<f32>> = members.iter().map(normalise).collect();
    let mut out = EdgeMatrix::filled(graph, 0.0);
    for edge in graph.edges() {
        out[edge] = how.apply(normalised.iter().map(|m| m[edge]));
    }
    Ok(out)
}

/// Runs every member on the discovery pairs and combines their scores; the passes are the
/// members' together. `progress` counts every member's batches, the members not yet run estimated
/// at the size of the one running.
pub fn ensemble_scores<B: AutodiffBackend>(
    discovery: &Discovery<B>,
    members: &[Method],
    how: Combine,
    progress: &mut dyn FnMut(Progress),
) -> Result<EdgeScores, MethodError> {
    let mut scores = Vec::with_capacity(members.len());
    let mut passes = PassCount::default();
    let mut finished = 0;
    for (index, member) in members.iter().enumerate() {
        let left = members.len() - index;
        let mut last = 0;
        let output = run_method(member, discovery, &mut |p| {
            last = p.total;
            progress(Progress { done: finished + p.done, total: finished + p.total * left });
        })?;
        finished += last;
        passes += output.passes();
        scores.push(output.scores().cloned().ok_or(MethodError::MemberWithoutScores { member: index })?);
    }
    Ok(EdgeScores { values: combine(&scores, how)?, passes, preferred: None })
}
