//! Bootstrap intervals over evaluation pairs: how far CPR, CMD and each faithfulness would move if
//! the evaluation had drawn other pairs from the same task.
//!
//! Each resample draws the pairs with replacement (as many as there are), recomputes every mean the
//! statistics are made of from the drawn pairs — m(N), m(∅) and each m(C), so faithfulness stays a
//! ratio of means — and then the statistics; an interval is the 2.5th and 97.5th percentiles of the
//! resamples (linear interpolation between order statistics). The draws come from ChaCha8 seeded
//! by the config's seed (`rand_chacha`, as the shared-task selections' resamples do), so a seed
//! gives the same intervals on every machine.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Resamples drawn unless a config or command line says otherwise: enough that the 2.5th and
/// 97.5th percentiles rest on 25 resamples each, and cheap (sums of per-pair values, no forward pass).
pub const DEFAULT_RESAMPLES: usize = 1000;

/// The most resamples a config may ask for, so a mistyped count is an error, not an hour of sums.
pub const MAX_RESAMPLES: usize = 100_000;

/// The intervals' coverage: 95%, the 2.5th to the 97.5th percentile.
pub const CONFIDENCE: f64 = 0.95;

/// How the intervals are drawn: part of an evaluation's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bootstrap {
    /// Resamples of the evaluation pairs; 0 computes no intervals.
    pub resamples: usize,
    /// Seed of the draws: the same seed, pairs and values give the same intervals.
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self { resamples: DEFAULT_RESAMPLES, seed: 0 }
    }
}

/// A 95% bootstrap interval of one number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The 2.5th percentile of the resamples.
    pub low: f64,
    /// The 97.5th percentile of the resamples.
    pub high: f64,
}

/// `[low, high]`, each end with the formatter's precision (`{:.3}`): how tables and the command
/// line show an interval beside its number.
impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match f.precision() {
            Some(p) => write!(f, "[{:.p$}, {:.p$}]", self.low, self.high),
            None => write!(f, "[{}, {}]", self.low, self.high),
        }
    }
}

impl Interval {
    /// Whether `x` lies in the interval (ends included): how a regression says a number stayed
    /// within what resampling the pairs explains.
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// How a set of intervals was drawn, stored beside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resampling {
    /// Resamples drawn.
    pub resamples: usize,
    /// The seed of the draws.
    pub seed: u64,
    /// Resamples whose statistics were undefined (m(N) ≈ m(∅) on the drawn pairs), left out.
    pub undefined: usize,
}

/// The statistics of every resample, and how many resamples had none.
#[derive(Debug, Clone, PartialEq)]
pub struct Resamples {
    /// Per statistic, its value in each resample where it was defined (in draw order).
    pub values: Vec<Vec<f64>>,
    /// Resamples drawn.
    pub resamples: usize,
    /// Resamples for which the statistic function gave none.
    pub undefined: usize,
    /// The seed of the draws.
    pub seed: u64,
}

impl Resamples {
    /// The 95% percentile interval of statistic `i`. None when nothing was resampled, or when more
    /// than 2.5% of the resamples were undefined: an undefined resample is a ratio of unbounded
    /// size and unknown sign, so with more of them than one tail holds, either end could be
    /// infinite. Below that, undefined resamples are left out (and counted in `undefined`).
    pub fn interval(&self, i: usize) -> Option<Interval> {
        let tail = (1.0 - CONFIDENCE) / 2.0;
        if self.resamples == 0 || self.undefined as f64 > tail * self.resamples as f64 {
            return None;
        }
        let mut v = self.values.get(i)?.clone();
        if v.is_empty() || v.iter().any(|x| !x.is_finite()) {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Interval { low: percentile(&v, tail), high: percentile(&v, 1.0 - tail) })
    }

    /// What the draws were, for the record beside the intervals.
    pub fn record(&self) -> Resampling {
        Resampling { resamples: self.resamples, seed: self.seed, undefined: self.undefined }
    }
}

/// The `p`-quantile of sorted, non-empty `v`, interpolating linearly between order statistics.
fn percentile(v: &[f64], p: f64) -> f64 {
    let h = p * (v.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// Draws `bootstrap.resamples` resamples of the pairs behind `series` (one value per pair each, all
/// of one length, the pairs in the same order) and gives `statistic` the means of every series over
/// each resample's pairs, in the order of `series`; it returns the statistics of that resample, or
/// None where they are undefined. Every resample must give as many statistics as the first.
///
/// # Panics
/// When the series are empty or of different lengths, or the statistic's count changes: the
/// caller's bug, not its input's (`evaluate_circuits` gives one value per pair to every series).
pub fn resample(series: &[&[f64]], bootstrap: Bootstrap, mut statistic: impl FnMut(&[f64]) -> Option<Vec<f64>>) -> Resamples {
    let n = series.first().map_or(0, |s| s.len());
    assert!(n > 0 && series.iter().all(|s| s.len() == n), "bootstrap series must be non-empty and one value per pair each");
    let mut rng = ChaCha8Rng::seed_from_u64(bootstrap.seed);
    let mut drawn = vec![0usize; n];
    let mut means = vec![0.0f64; series.len()];
    let mut values: Vec<Vec<f64>> = Vec::new();
    let mut undefined = 0;
    for _ in 0..bootstrap.resamples {
        for d in drawn.iter_mut() {
            *d = rng.random_range(0..n);
        }
        for (mean, s) in means.iter_mut().zip(series) {
            *mean = drawn.iter().map(|&i| s[i]).sum::<f64>() / n as f64;
        }
        match statistic(&means) {
            Some(stats) => {
                if values.is_empty() {
                    values = vec![Vec::with_capacity(bootstrap.resamples); stats.len()];
                }
                assert_eq!(stats.len(), values.len(), "every resample gives the same statistics");
                for (v, x) in values.iter_mut().zip(stats) {
                    v.push(x);
                }
            }
            None => undefined += 1,
        }
    }
    Resamples { values, resamples: bootstrap.resamples, undefined, seed: bootstrap.seed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_order_statistics() {
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.025), 2.5);
        assert_eq!(percentile(&v, 0.975), 97.5);
        assert_eq!(percentile(&[3.0], 0.025), 3.0);
    }
}
