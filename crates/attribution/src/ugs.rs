//! `ugs`: MIB's UGS row (Li & Janson's uniform gradient sampling, alestolfo/optimalablation's
//! `edge_pruning_unif_mib.py`; methods-spec §3) on the mask optimiser ([`crate::learned`]): one
//! logit θ per MIB edge (θ = 1 at the start, p = σ(1) = 0.73), twelve uniform-window samples per
//! pair and step (one mask per row), KL from the full model at the read position, the penalty
//! λ Σ σ(θ) with λ = 1e-3 plus the node term, AdamW (β = 0.9, 0.995, no weight decay) at lr 0.05,
//! divided by 5 under counterfactual ablation (0.01), gradients clipped to norm 5, position 0
//! never patched. The scores are σ(θ), from which MIB's top-n picks the budgets.
//!
//! Where this differs from the reference: it cycles through the discovery pairs for
//! [`STEPS`] steps (the reference takes one pass over thousands of training prompts, ~1,900
//! steps on IOI), and it has no dangling-edge filter. Under counterfactual ablation that filter
//! changes gradients only: an edge whose source has every input ablated carries the
//! counterfactual value whatever its mask, and one into a node that reaches no output moves
//! nothing, so the patched value of every sample is the same with or without it.

use burn::tensor::backend::AutodiffBackend;
use patching::Ablation;

use crate::learned::{DataLoss, Granularity, Init, LrSchedule, MaskSettings, Penalty, Polarity, Sampler, Units, edge_scores, learn_masks};
use crate::method::{Discovery, MethodError, Progress};
use crate::scores::EdgeScores;

/// Optimiser steps.
pub const STEPS: usize = 300;
/// λ, the weight of the expected edge count (the value MIB's reported rows used).
pub const LAMBDA: f64 = 1e-3;
/// Samples per pair and step.
pub const SAMPLES: usize = 12;

/// UGS's settings for `discovery`'s ablation.
pub fn settings<B: AutodiffBackend>(discovery: &Discovery<B>, steps: usize, seed: u64) -> MaskSettings {
    let counterfactual = matches!(discovery.ablation, Ablation::Counterfactual);
    MaskSettings {
        units: Units::Edges,
        sampler: Sampler::UniformWindow,
        polarity: Polarity::Keep,
        granularity: Granularity::PerExample { samples: SAMPLES },
        data_loss: DataLoss::Metric,
        penalty: Penalty::ExpectedEdges { lambda: LAMBDA },
        init: Init::Constant(1.0),
        steps,
        lr: if counterfactual { 0.05 / 5.0 } else { 0.05 },
        lr_schedule: LrSchedule::Constant,
        betas: (0.9, 0.995),
        weight_decay: 0.0,
        clip_norm: Some(5.0),
        exempt_bos: true,
        binarised_epochs: false,
        snapshots: Vec::new(),
        seed,
    }
}

/// σ(θ) per edge after UGS's run.
pub fn ugs_scores<B: AutodiffBackend>(discovery: &Discovery<B>, seed: u64, progress: &mut dyn FnMut(Progress)) -> Result<EdgeScores, MethodError> {
    let learned = learn_masks(discovery, &settings(discovery, STEPS, seed), progress)?;
    let values = edge_scores(discovery.graph, &learned.theta, Sampler::UniformWindow);
    Ok(EdgeScores { values, passes: learned.passes, preferred: None })
}
