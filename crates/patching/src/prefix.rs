//! Suffix-only passes: under counterfactual ablation, clean and counterfactual prompts share a
//! prefix (IOI's pairs differ at the second mention of the subject, MCQA's at the first option,
//! arithmetic's at the first operand). Before the first differing token every activation is the
//! same in the clean run, the counterfactual run and every patched run (δ is zero there, and
//! attention is causal), so no metric, logit or edge score depends on recomputing it: every pass
//! of a batch computes each pair's positions from its first difference on, attending over the
//! clean run's keys and values of its prefix, computed once per batch
//! ([`transformer::PrefixCache`]). A bidirectional model (tracr's) reads later tokens at every
//! position, so its passes are always full.
//!
//! Per pair: row i starts at its own first difference (capped at its last token, where the logits
//! are read), and the rows of a pass are left-aligned, so a pass is as long as the batch's longest
//! suffix (`cargo xtask perf prefix` measures this against [`Positions::BatchSuffix`], every row
//! padded to the batch's earliest first difference, and against grouping pairs by it). Mean, mean-positional and zero
//! ablations change the prefix too (δ is not zero there), so they keep the full pass.

use burn::tensor::backend::{AutodiffBackend, Backend};
use transformer::{Batch, BatchError, Transformer};

use crate::ablation::Ablation;

/// Which positions the passes over a batch of pairs compute: whether they skip the prefix its
/// clean and counterfactual prompts share (exact under counterfactual ablation; other ablations
/// always run full passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Positions {
    /// Each pair from its first differing token on, over the clean run's cached prefix (the default).
    #[default]
    Suffix,
    /// Every pair of a batch from the batch's earliest first difference on: padding to a shared
    /// start instead of aligning each pair's own (for measuring the two layouts).
    BatchSuffix,
    /// Every position: what TransformerLens and the reference implementations compute.
    Full,
}

impl Positions {
    /// The name in tables and on the command line: `suffix` or `full`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Suffix => "suffix",
            Self::BatchSuffix => "batch-suffix",
            Self::Full => "full",
        }
    }

    /// Each pair's first computed position under counterfactual ablation (0 throughout for
    /// [`Positions::Full`]): what [`PairBatches::new`] runs, for whoever counts the work.
    pub fn starts(self, clean: &[Vec<u32>], counterfactual: &[Vec<u32>]) -> Vec<usize> {
        match self {
            Self::Suffix => first_differences(clean, counterfactual),
            Self::BatchSuffix => vec![shared_prefix(clean, counterfactual); clean.len()],
            Self::Full => vec![0; clean.len()],
        }
    }
}

/// Each pair's first computed position: the first position at which its clean and
/// counterfactual prompts differ, at most its last position (so every row keeps the token its
/// logits are read at).
pub fn first_differences(clean: &[Vec<u32>], counterfactual: &[Vec<u32>]) -> Vec<usize> {
    clean
        .iter()
        .zip(counterfactual)
        .map(|(c, x)| {
            let first_difference = c.iter().zip(x).position(|(a, b)| a != b).unwrap_or(c.len().min(x.len()));
            first_difference.min(c.len().saturating_sub(1)).min(x.len().saturating_sub(1))
        })
        .collect()
}

/// The number of leading positions every pair shares: the earliest of [`first_differences`]; 0
/// for no pairs.
pub fn shared_prefix(clean: &[Vec<u32>], counterfactual: &[Vec<u32>]) -> usize {
    first_differences(clean, counterfactual).into_iter().min().unwrap_or(0)
}

/// A batch of pairs as every pass over it runs: its clean and counterfactual prompts, carrying
/// the clean run's shared prefix when the passes may skip it.
#[derive(Debug, Clone)]
pub struct PairBatches<B: Backend> {
    /// The clean prompts.
    pub clean: Batch<B>,
    /// The counterfactual prompts (under suffix passes with the same, clean, prefix: it is theirs too).
    pub counterfactual: Batch<B>,
}

impl<B: Backend> PairBatches<B> {
    /// Batches `clean` and `counterfactual` (row for row the same lengths), each row read at
    /// `reads`; under counterfactual ablation with [`Positions::Suffix`] on a causal model, each
    /// pair's passes start at its first difference ([`first_differences`], at most its read
    /// position), over its prefix computed once on the clean prompt.
    pub fn new(
        model: &Transformer<B>,
        clean: &[Vec<u32>],
        counterfactual: &[Vec<u32>],
        reads: &[usize],
        ablation: &Ablation<B>,
        positions: Positions,
    ) -> Result<Self, BatchError> {
        let starts = match ablation {
            Ablation::Counterfactual if model.config.causal => positions.starts(clean, counterfactual).into_iter().zip(reads).map(|(s, &r)| s.min(r)).collect(),
            _ => vec![0; clean.len()],
        };
        Self::with_starts(model, clean, counterfactual, reads, &starts)
    }

    /// [`PairBatches::new`] with each pair's first computed position given (each at most its first
    /// difference for the results to be exact; all 0 runs full passes).
    fn with_starts(model: &Transformer<B>, clean: &[Vec<u32>], counterfactual: &[Vec<u32>], reads: &[usize], starts: &[usize]) -> Result<Self, BatchError> {
        let device = model.token_embedding.device();
        let clean_batch = Batch::new(clean, &model.config, &device)?.reading_at(reads)?;
        let counterfactual_batch = Batch::new(counterfactual, &model.config, &device)?.reading_at(reads)?;
        if starts.iter().all(|&s| s == 0) {
            return Ok(Self { clean: clean_batch, counterfactual: counterfactual_batch });
        }
        let prefix = model.prefix_cache(&clean_batch, starts);
        let attach = |batch: Batch<B>| batch.with_prefix(prefix.clone()).expect("each row's prefix ends by its read position, computed for these rows");
        Ok(Self { clean: attach(clean_batch), counterfactual: attach(counterfactual_batch) })
    }

    /// Each pair's first computed position (None: full passes).
    pub fn starts(&self) -> Option<&[usize]> {
        self.clean.starts()
    }

    /// Both batches for passes that take gradients, from batches made on the inner backend.
    pub fn into_autodiff<AD: AutodiffBackend<InnerBackend = B>>(self) -> PairBatches<AD> {
        PairBatches { clean: Batch::from_inner(self.clean), counterfactual: Batch::from_inner(self.counterfactual) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_at_the_first_difference_and_keep_every_last_token() {
        assert_eq!(first_differences(&[vec![1, 2, 3, 4], vec![1, 2, 3, 4], vec![7, 7]], &[vec![1, 2, 9, 4], vec![1, 2, 3, 9], vec![7, 7]]), vec![2, 3, 1]);
        assert_eq!(shared_prefix(&[vec![1, 2, 3, 4], vec![1, 2, 3, 4]], &[vec![1, 2, 9, 4], vec![1, 2, 3, 9]]), 2);
        // Identical prompts (answers differ only): the last token is still computed.
        assert_eq!(shared_prefix(&[vec![1, 2, 3]], &[vec![1, 2, 3]]), 2);
        // A first-token difference leaves nothing to skip.
        assert_eq!(shared_prefix(&[vec![5, 2], vec![1, 2, 3]], &[vec![6, 2], vec![1, 2, 4]]), 0);
        // A short row caps the prefix at its last position.
        assert_eq!(shared_prefix(&[vec![1, 2], vec![1, 2, 3, 4, 5]], &[vec![1, 2], vec![1, 2, 3, 4, 6]]), 1);
        assert_eq!(shared_prefix(&[], &[]), 0);
    }
}
