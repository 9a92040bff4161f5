//! What an ablated edge carries instead of the actual activation (mib-spec §2).

use std::str::FromStr;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use transformer::{Batch, BatchError, Transformer};

use crate::activations::record_nodes;

/// The ablation types of MIB, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AblationKind {
    /// The source's output on the counterfactual prompt (MIB's default).
    Counterfactual,
    /// The source's mean output over a reference set, one vector per node.
    Mean,
    /// The source's mean output over a reference set, per node and position.
    MeanPositional,
    /// Zero.
    Zero,
    /// A constant per node learned to minimise the task loss when that node is ablated (Li &
    /// Janson's optimal ablation; trained by `attribution::fit_ablation`).
    Optimal,
    /// A learned constant per node and position.
    OptimalPositional,
}

impl AblationKind {
    /// Every kind, in the order of [`AblationKind::NAMES`].
    pub const ALL: [AblationKind; 6] = [Self::Counterfactual, Self::Mean, Self::MeanPositional, Self::Zero, Self::Optimal, Self::OptimalPositional];
    /// The names flags and configs accept.
    pub const NAMES: [&'static str; 6] = ["counterfactual", "mean", "mean-positional", "zero", "optimal", "optimal-positional"];

    /// Whether the ablated values are learned (so fitting them takes gradients).
    pub fn is_learned(self) -> bool {
        matches!(self, Self::Optimal | Self::OptimalPositional)
    }
}

impl FromStr for AblationKind {
    type Err = AblationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "patching" => Ok(Self::Counterfactual),
            other => Self::NAMES.iter().position(|&n| n == other).map(|i| Self::ALL[i]).ok_or_else(|| AblationError::UnknownKind(other.into())),
        }
    }
}

impl std::fmt::Display for AblationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Self::NAMES[Self::ALL.iter().position(|k| k == self).expect("ALL lists every kind")])
    }
}

/// Why an ablation cannot be built or applied.
#[derive(Debug, thiserror::Error)]
pub enum AblationError {
    /// A name outside those [`AblationKind`] parses.
    #[error("unknown ablation `{0}` (expected counterfactual, mean, mean-positional, zero, optimal or optimal-positional)")]
    UnknownKind(String),
    #[error("{kind} ablation needs a non-empty reference set")]
    /// A mean ablation was asked to fit on no prompts.
    EmptyReference {
        /// The ablation that needed the reference.
        kind: AblationKind,
    },
    /// A prompt is longer than every reference prompt, so its last positions have no mean.
    #[error("position {position} is beyond every prompt of the positional ablation's reference set (longest: {longest} tokens)")]
    PositionBeyondReference {
        /// The first position without a mean (0-based).
        position: usize,
        /// Tokens in the longest reference prompt.
        longest: usize,
    },
    /// A batch of prompts does not fit the model.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// A learned ablation asked of [`Ablation::fit`], which has no gradients to learn it with.
    #[error("{kind} ablation is learned with gradients: fit it with attribution::fit_ablation")]
    Learned {
        /// The ablation.
        kind: AblationKind,
    },

    /// A batch that skips its prefix under an ablation that changes the prefix (δ is not zero
    /// there): only counterfactual ablation leaves the positions before the first difference alone.
    #[error("{kind} ablation changes every position, so its passes cannot skip a prefix (suffix-only passes are for counterfactual ablation)")]
    PrefixUnderAblation {
        /// The ablation.
        kind: AblationKind,
    },
}

/// A fitted ablation: what each source node's output becomes when an edge out of it is ablated.
#[derive(Debug, Clone)]
pub enum Ablation<B: Backend> {
    /// The counterfactual prompt's outputs, recorded afresh for each batch.
    Counterfactual,
    /// [n_fwd, d_model]
    Mean(Tensor<B, 2>),
    /// [n_fwd, positions, d_model]
    MeanPositional(Tensor<B, 3>),
    /// Zeros, needing no run.
    Zero,
    /// Learned constants [n_fwd, d_model] ([`AblationKind::Optimal`]).
    Optimal(Tensor<B, 2>),
    /// Learned constants [n_fwd, positions, d_model] ([`AblationKind::OptimalPositional`]).
    OptimalPositional(Tensor<B, 3>),
}

impl<B: Backend> Ablation<B> {
    /// The kind this ablation was fitted as.
    pub fn kind(&self) -> AblationKind {
        match self {
            Self::Counterfactual => AblationKind::Counterfactual,
            Self::Mean(_) => AblationKind::Mean,
            Self::MeanPositional(_) => AblationKind::MeanPositional,
            Self::Zero => AblationKind::Zero,
            Self::Optimal(_) => AblationKind::Optimal,
            Self::OptimalPositional(_) => AblationKind::OptimalPositional,
        }
    }

    /// The constants a node's output is replaced by, per node (and position): the means, the
    /// learned constants, or None (counterfactual and zero ablation have none to learn from).
    pub fn constants(&self) -> Option<Tensor<B, 3>> {
        match self {
            Self::Mean(c) | Self::Optimal(c) => Some(c.clone().unsqueeze_dim(1)),
            Self::MeanPositional(c) | Self::OptimalPositional(c) => Some(c.clone()),
            Self::Counterfactual | Self::Zero => None,
        }
    }

    /// Forward passes one call of [`Ablation::ablated_nodes`] runs (the counterfactual run, or none).
    pub fn forward_passes(&self) -> usize {
        usize::from(matches!(self, Self::Counterfactual))
    }

    /// Fits means over the `reference` prompts (MIB: the clean prompts of a reference split), real
    /// tokens only, padding excluded; counterfactual and zero need no reference.
    pub fn fit(kind: AblationKind, model: &Transformer<B>, reference: &[Vec<u32>], batch_size: usize, device: &B::Device) -> Result<Self, AblationError> {
        match kind {
            AblationKind::Counterfactual => return Ok(Self::Counterfactual),
            AblationKind::Zero => return Ok(Self::Zero),
            AblationKind::Optimal | AblationKind::OptimalPositional => return Err(AblationError::Learned { kind }),
            _ if reference.is_empty() => return Err(AblationError::EmptyReference { kind }),
            _ => {}
        }
        let longest = reference.iter().map(Vec::len).max().unwrap_or(0);
        let mut sum: Option<Tensor<B, 3>> = None; // [n_fwd, longest, d]
        let mut counts = vec![0usize; longest];
        for chunk in reference.chunks(batch_size.max(1)) {
            let batch = Batch::new(chunk, &model.config, device)?;
            let (_, nodes) = record_nodes(model, &batch); // [n_fwd, b, t, d]
            let [n, b, t, d] = nodes.dims();
            let mut real = Vec::with_capacity(b * t);
            for seq in chunk {
                real.extend((0..t).map(|p| if p < seq.len() { 1.0f32 } else { 0.0 }));
                for c in counts.iter_mut().take(seq.len()) {
                    *c += 1;
                }
            }
            let real: Tensor<B, 4> = Tensor::<B, 2>::from_data(TensorData::new(real, [b, t]), device).reshape([1, b, t, 1]);
            let batch_sum: Tensor<B, 3> = (nodes * real).sum_dim(1).squeeze_dim(1); // [n, t, d]
            let padded = if t < longest { Tensor::cat(vec![batch_sum, Tensor::zeros([n, longest - t, d], device)], 1) } else { batch_sum };
            sum = Some(match sum {
                Some(s) => s + padded,
                None => padded,
            });
        }
        let sum = sum.expect("reference is not empty");
        let [n, _, d] = sum.dims();
        Ok(match kind {
            AblationKind::Mean => {
                let total: usize = counts.iter().sum();
                Self::Mean(sum.sum_dim(1).squeeze_dim::<2>(1) / total as f64)
            }
            _ => {
                let inv: Vec<f32> = counts.iter().map(|&c| 1.0 / c as f32).collect();
                let inv = Tensor::<B, 1>::from_data(TensorData::new(inv, [longest]), device).reshape([1, longest, 1]);
                Self::MeanPositional(sum * inv.expand([n, longest, d]))
            }
        })
    }

    /// Ablated outputs [n_fwd, pairs, pos, d_model] for a batch whose counterfactual prompts are
    /// `counterfactual` (used only by counterfactual ablation).
    pub fn ablated_nodes(&self, model: &Transformer<B>, counterfactual: &Batch<B>) -> Result<Tensor<B, 4>, AblationError> {
        Ok(self.ablated_run(model, counterfactual)?.0)
    }

    /// [`Ablation::ablated_nodes`], with the last-token logits [pairs, vocab] of the model with
    /// every edge ablated when they come for free: under counterfactual ablation that model is the
    /// counterfactual run itself (every destination reads the sum of the counterfactual outputs
    /// upstream), whose logits the recording pass produces anyway — as MIB takes m(∅) from the
    /// corrupted run. Other ablations give None.
    pub fn ablated_run(&self, model: &Transformer<B>, counterfactual: &Batch<B>) -> Result<(Tensor<B, 4>, Option<Tensor<B, 2>>), AblationError> {
        let (pairs, t) = (counterfactual.size(), counterfactual.max_len());
        let d = model.config.d_model;
        let device = model.token_embedding.device();
        let n_fwd = 1 + model.config.n_layers * (model.config.n_heads + 1);
        if counterfactual.starts().is_some() && !matches!(self, Self::Counterfactual) {
            return Err(AblationError::PrefixUnderAblation { kind: self.kind() });
        }
        let nodes = match self {
            Self::Counterfactual => {
                let (logits, nodes) = record_nodes(model, counterfactual);
                return Ok((nodes, Some(logits)));
            }
            Self::Zero => Tensor::zeros([n_fwd, pairs, t, d], &device),
            Self::Mean(mean) | Self::Optimal(mean) => mean.clone().reshape([n_fwd, 1, 1, d]).expand([n_fwd, pairs, t, d]),
            Self::MeanPositional(mean) | Self::OptimalPositional(mean) => {
                let longest = mean.dims()[1];
                if t > longest {
                    let position = counterfactual.lengths.iter().copied().max().unwrap_or(t).min(t) - 1;
                    if position >= longest {
                        return Err(AblationError::PositionBeyondReference { position, longest });
                    }
                }
                mean.clone().slice([0..n_fwd, 0..t, 0..d]).unsqueeze_dim::<4>(1).expand([n_fwd, pairs, t, d])
            }
        };
        Ok((nodes, None))
    }
}
