//! `pgb-ct` and `pgb-ct-preserve`: PGB-CT, multi-component causal tracing by soft interventions
//! with penalties (Yan et al. 2026, ZiruiYan/multi-component-causal-tracing; methods-spec §5), on
//! the mask optimiser ([`crate::learned`]).
//!
//! `pgb-ct` is the paper's objective, impact (necessity): a weight z ∈ [0, 1] per attention head
//! and per MLP (z = 1 intervenes), initialised at 0.5; a head's z mixes the counterfactual into
//! the edges into its q and k inputs, so at z = 1 its attention pattern is the counterfactual
//! run's (the reference mixes the patterns themselves, which agrees at 0 and 1, spec §5.4); an
//! MLP's z mixes the counterfactual into its output on every edge out of it (the reference mixes
//! each of its output dimensions alone; here one weight covers all of them). The data loss is
//! the reference's 1/(1 + e), which for a difference of two logits is
//! exp(LD_intervened − LD_clean) (spec §5.4), generally exp(loss_clean − loss_intervened);
//! the penalties λ₁(t)‖z‖₁ + λ₂(t)Σz(1 − z) with λ₁ = λ₂ = 1e-4 on a linear schedule over the
//! epoch t; Adam at lr 0.1 (the head variant's), z clamped to [0, 1] after every step; at the end
//! of every epoch the mask binarised at 0.5 and its data loss evaluated on every discovery pair
//! (the paper's per-epoch log). [`EPOCHS`] epochs.
//!
//! `pgb-ct-preserve` is the preservation (sufficiency) objective that MIB's CPR measures (spec
//! §5.4 (a)): a keep weight m ∈ [0, 1] per MIB edge with the loss exp(loss_kept − loss_clean),
//! the same penalties (on m, so it keeps as few edges as it can) and schedule.
//!
//! Both give one circuit per budget: the edges of largest score, where an edge's score is its
//! learned keep weight (`pgb-ct-preserve`) or how far the learned intervention moves it from the
//! clean run, 1 − its keep weight (`pgb-ct`: the necessary components' edges first). Under
//! `pgb-ct` the binarised set of intervened heads and MLPs is exactly an edge set (the edges into
//! those heads' q and k slots and out of those MLPs; [`intervened_edges`]); its circuit-side
//! faithfulness is a necessity measure, which CPR, a sufficiency measure, does not reward.

use burn::tensor::backend::AutodiffBackend;
use graph::{EdgeMatrix, Graph};

use crate::edge_pruning::top_edges;
use crate::learned::{
    DataLoss, Granularity, Init, Learned, LrSchedule, MaskSettings, Penalty, PenaltySchedule, Polarity, Sampler, Units, learn_masks, unit_edge_keep,
};
use crate::method::{BudgetCircuits, Discovery, MethodError, Progress};

/// Epochs (the head variant's reference default is 15, the MLP variant's 30).
pub const EPOCHS: usize = 30;
/// Adam's learning rate (the head variant's; the MLP variant's is 0.5).
pub const LEARNING_RATE: f64 = 0.1;
/// λ₁ and λ₂, the reference defaults.
pub const LAMBDA: f64 = 1e-4;

/// Which objective PGB-CT optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Necessity: intervene on as few heads and MLPs as move the metric most (the paper's).
    Impact,
    /// Sufficiency: keep as few edges as preserve the metric (MIB's CPR).
    Preservation,
}

impl Objective {
    /// `necessity` or `sufficiency`, the direction of what it finds.
    pub fn direction(self) -> &'static str {
        match self {
            Objective::Impact => "necessity",
            Objective::Preservation => "sufficiency",
        }
    }
}

/// PGB-CT's settings for `epochs` epochs of `batches` batches.
pub fn settings(objective: Objective, epochs: usize, batches: usize, seed: u64) -> MaskSettings {
    let (units, polarity, data_loss) = match objective {
        Objective::Impact => (Units::Nodes, Polarity::Intervene, DataLoss::Impact),
        Objective::Preservation => (Units::Edges, Polarity::Keep, DataLoss::Preservation),
    };
    MaskSettings {
        units,
        sampler: Sampler::Clamped,
        polarity,
        granularity: Granularity::PerBatch { samples: 1 },
        data_loss,
        penalty: Penalty::L1Binary { l1: LAMBDA, binary: LAMBDA, schedule: PenaltySchedule::Linear },
        init: Init::Constant(0.5),
        steps: epochs * batches,
        lr: LEARNING_RATE,
        lr_schedule: LrSchedule::Constant,
        betas: (0.9, 0.999),
        weight_decay: 0.0,
        clip_norm: None,
        exempt_bos: false,
        binarised_epochs: true,
        snapshots: Vec::new(),
        seed,
    }
}

/// The edges a set of intervened units (heads layer-major, then MLPs, as [`Units::Nodes`] lays
/// them out) patches: into the q and k slots of each head, out of each MLP.
pub fn intervened_edges(graph: &Graph, on: &[bool]) -> EdgeMatrix<bool> {
    let keep: Vec<f32> = on.iter().map(|&on| if on { 0.0 } else { 1.0 }).collect();
    let edge_keep = unit_edge_keep::<transformer::CpuBackend>(graph, Units::Nodes, &keep, &Default::default());
    EdgeMatrix::from_fn(*graph, |u, v| graph.is_edge(u, v) && edge_keep[(u, v)] < 1.0)
}

/// Each edge's score from the learned unit weights (see the module's docs).
fn edge_scores<B: AutodiffBackend>(graph: &Graph, objective: Objective, learned: &Learned, device: &B::Device) -> EdgeMatrix<f32> {
    match objective {
        Objective::Preservation => crate::learned::edge_scores(graph, &learned.theta, Sampler::Clamped),
        Objective::Impact => {
            // How far the learned intervention moves each edge from the clean run: 1 − its keep weight.
            let keep: Vec<f32> = learned.theta.iter().map(|&z| 1.0 - z.clamp(0.0, 1.0)).collect();
            let edge_keep = unit_edge_keep::<B>(graph, Units::Nodes, &keep, device);
            EdgeMatrix::from_fn(*graph, |u, v| if graph.is_edge(u, v) { 1.0 - edge_keep[(u, v)] } else { 0.0 })
        }
    }
}

/// PGB-CT's circuits at `discovery.fractions` (with its run's log), and what it learned.
pub fn pgbct_circuits<B: AutodiffBackend>(
    discovery: &Discovery<B>,
    objective: Objective,
    seed: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<(BudgetCircuits, Learned), MethodError> {
    let graph = discovery.graph;
    let batches = discovery.pairs.len().div_ceil(discovery.batch_size.max(1));
    let learned = learn_masks(discovery, &settings(objective, EPOCHS, batches, seed), progress)?;
    let scores = edge_scores::<B>(graph, objective, &learned, &discovery.model.token_embedding.device());
    let circuits: Vec<EdgeMatrix<bool>> = discovery.fractions.iter().map(|&f| top_edges(graph, &scores, graph.edge_budget(f))).collect();
    Ok((BudgetCircuits { taus: vec![None; circuits.len()], circuits, scores: Some(scores), passes: learned.passes, log: Some(learned.log.clone()) }, learned))
}
