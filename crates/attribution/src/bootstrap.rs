//! `bootstrap:<method>`: bootstrapped edge selection (Technion's MIB shared-task entry, arXiv
//! 2510.25786). B resamples of the discovery pairs, drawn with replacement at the same size; the
//! method's scores on each; per edge the mean and standard deviation (ddof 1) over the resamples.
//! An edge is preferred when its 95% normal interval, mean ± z·std/√B (z = 1.96), excludes 0 on
//! the side of its sign; its score is the bootstrap mean. The evaluator takes the preferred edges
//! first at every budget, then fills it with the rest by score.
//!
//! The methods that can be resampled score a mean over pairs (exact patching and the gradient
//! family), so a resample's scores are the count-weighted mean of the method's scores on each pair
//! alone: the method runs once per discovery pair, and every resample is formed from those runs
//! (the same passes as one run over all pairs, whatever B). Every resample shares the cell's
//! ablation, fitted once on all discovery pairs.

use burn::tensor::backend::AutodiffBackend;
use graph::EdgeMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::method::{Discovery, Method, MethodError, Progress, run_method};
use crate::scores::{EdgeScores, PassCount};

/// B, the resamples of a `bootstrap:` method (the paper's default).
pub const RESAMPLES: usize = 10;

/// z of a two-sided 95% normal interval.
pub const Z_95: f64 = 1.96;

/// How often each pair is drawn in each resample: `counts[b][i]` for resample b and pair i, `n`
/// draws with replacement per resample, the same for the same seed.
pub fn resample_counts(n: usize, resamples: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..resamples)
        .map(|_| {
            let mut counts = vec![0u32; n];
            for _ in 0..n {
                counts[rng.random_range(0..n)] += 1;
            }
            counts
        })
        .collect()
}

/// The method's scores on each resample of `counts` (see [`resample_counts`]), each the
/// count-weighted mean of its scores on every pair alone, and the passes the per-pair runs spent.
/// `member` must score a mean over pairs ([`Method::is_pair_mean`]).
pub fn resample_scores<B: AutodiffBackend>(
    discovery: &Discovery<B>,
    member: &Method,
    counts: &[Vec<u32>],
    progress: &mut dyn FnMut(Progress),
) -> Result<(Vec<EdgeMatrix<f64>>, PassCount), MethodError> {
    let pairs = discovery.pairs;
    if pairs.is_empty() {
        return Err(MethodError::NoPairs);
    }
    if !member.is_pair_mean() {
        return Err(MethodError::NotResamplable);
    }
    if let Some(b) = counts.iter().position(|c| c.len() != pairs.len()) {
        return Err(MethodError::ResampleSize { resample: b, found: counts[b].len(), pairs: pairs.len() });
    }
    let mut sums: Vec<EdgeMatrix<f64>> = counts.iter().map(|_| EdgeMatrix::filled(*discovery.graph, 0.0)).collect();
    let mut passes = PassCount::default();
    let n = pairs.len();
    for i in 0..n {
        let alone = Discovery { pairs: &pairs[i..=i], ..*discovery };
        let output = run_method(member, &alone, &mut |p| progress(Progress { done: i * p.total + p.done, total: n * p.total }))?;
        passes += output.passes();
        let scores = output.scores().ok_or(MethodError::NotResamplable)?;
        for (sum, c) in sums.iter_mut().zip(counts) {
            let k = c[i] as f64;
            if k > 0.0 {
                for (s, &v) in sum.as_mut_slice().iter_mut().zip(scores.as_slice()) {
                    *s += k * v as f64;
                }
            }
        }
    }
    for sum in &mut sums {
        sum.as_mut_slice().iter_mut().for_each(|s| *s /= n as f64);
    }
    Ok((sums, passes))
}

/// Per edge, the mean and the standard deviation (ddof 1) of the resamples' scores.
pub fn mean_and_std(resamples: &[EdgeMatrix<f64>]) -> Result<(EdgeMatrix<f64>, EdgeMatrix<f64>), MethodError> {
    let Some(first) = resamples.first().filter(|_| resamples.len() >= 2) else {
        return Err(MethodError::TooFewResamples(resamples.len()));
    };
    let b = resamples.len() as f64;
    let mut mean = EdgeMatrix::filled(first.graph(), 0.0f64);
    for r in resamples {
        mean.as_mut_slice().iter_mut().zip(r.as_slice()).for_each(|(m, &v)| *m += v / b);
    }
    let mut std = EdgeMatrix::filled(first.graph(), 0.0f64);
    for r in resamples {
        std.as_mut_slice().iter_mut().zip(r.as_slice().iter().zip(mean.as_slice())).for_each(|(s, (&v, &m))| *s += (v - m) * (v - m));
    }
    std.as_mut_slice().iter_mut().for_each(|s| *s = (*s / (b - 1.0)).sqrt());
    Ok((mean, std))
}

/// The preferred edges: those whose interval mean ± z·std/√B, over `resamples` resamples,
/// excludes 0 on the side of the mean's sign (|mean| > z·std/√B; an edge with mean 0 never is).
pub fn preferred_edges(mean: &EdgeMatrix<f64>, std: &EdgeMatrix<f64>, resamples: usize) -> EdgeMatrix<bool> {
    let half_width = Z_95 / (resamples as f64).sqrt();
    let graph = mean.graph();
    let mut preferred = EdgeMatrix::filled(graph, false);
    for edge in graph.edges() {
        preferred[edge] = mean[edge].abs() > half_width * std[edge];
    }
    preferred
}

/// `member`'s bootstrapped scores on the discovery pairs: the mean over `resamples` resamples
/// drawn from `seed`, with the preferred edges; `progress` hears after every per-pair batch.
pub fn bootstrap_scores<B: AutodiffBackend>(
    discovery: &Discovery<B>,
    member: &Method,
    resamples: usize,
    seed: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<EdgeScores, MethodError> {
    let counts = resample_counts(discovery.pairs.len(), resamples, seed);
    let (scores, passes) = resample_scores(discovery, member, &counts, progress)?;
    let (mean, std) = mean_and_std(&scores)?;
    Ok(EdgeScores { values: mean.map(|&m| m as f32), passes, preferred: Some(preferred_edges(&mean, &std, resamples)) })
}
