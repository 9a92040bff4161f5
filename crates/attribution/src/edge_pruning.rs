//! `edge-pruning` and `edge-pruning-per-budget`: Edge Pruning (Bhaskar et al. 2024,
//! princeton-nlp/Edge-Pruning; methods-spec §2) on the mask optimiser ([`crate::learned`]):
//! hard-concrete keep masks on every MIB edge (log α ~ N(10, 0.01²), so every edge starts kept),
//! one sample per step shared by the batch, KL from the full model at the read position (the
//! answer span of our tasks is that one position), and a Lagrangian λ₁(s − t) + λ₂(s − t)² pulling
//! the sampled edge sparsity s to a target t that ramps linearly over the first 5/6 of the steps
//! (the reference's 2,500 of 3,000), its λ trained by gradient ascent; AdamW at lr 0.8 for both
//! (weight decay 0.01, torch's default, which the reference does not override), warmup over the
//! first 1/15 of the steps, then linear decay.
//!
//! A circuit at a budget of k edges is the k edges of largest log α: the reference
//! binary-searches a threshold on its deterministic mask (monotone in log α) until the circuit has
//! the sparsity it wants, and MIB's budgets are edge counts, so the threshold that gives exactly k
//! edges is the one taken (ties broken by edge index).
//!
//! Two ways to reach MIB's budgets: `edge-pruning` runs once, its target ramping to 1 − the
//! smallest budget's fraction, and takes each budget's circuit at the step where the target
//! passes 1 − fraction; `edge-pruning-per-budget` runs once per budget, each to its own target
//! (the reference's sweep), and takes the final masks. The first costs one run, the second one
//! per budget.

use burn::tensor::backend::AutodiffBackend;
use graph::{EdgeMatrix, Graph};

use crate::learned::TrainingLog;
use crate::learned::{
    DataLoss, Granularity, HardConcrete, Init, LrSchedule, MaskSettings, Penalty, Polarity, Sampler, SparsityTarget, Units, edge_matrix, edge_scores,
    learn_masks,
};
use crate::method::{BudgetCircuits, Discovery, MethodError, Progress};
use crate::scores::PassCount;

/// Optimiser steps of one run (the reference takes 3,000 on GPT-2; on the task models the sampled
/// sparsity tracks its target from about 1,000 on: at 300 it overshoots, then the saturated
/// hard-concrete masks stop moving short of it).
pub const STEPS: usize = 1000;
/// The learning rate of the log α and of the λ (the reference's IOI sweeps: 0.8 for all four groups).
pub const LEARNING_RATE: f64 = 0.8;

/// The settings of one run of `steps` steps towards target sparsity `end`.
pub fn settings(steps: usize, end: f64, seed: u64) -> MaskSettings {
    MaskSettings {
        units: Units::Edges,
        sampler: Sampler::HardConcrete(HardConcrete::EDGE_PRUNING),
        polarity: Polarity::Keep,
        granularity: Granularity::PerBatch { samples: 1 },
        data_loss: DataLoss::Metric,
        penalty: Penalty::Lagrangian { target: SparsityTarget { start: 0.0, end, warmup: steps * 5 / 6 }, lambda_lr: LEARNING_RATE },
        init: Init::Normal { mean: 10.0, std: 0.01 },
        steps,
        lr: LEARNING_RATE,
        lr_schedule: LrSchedule::WarmupLinearDecay { warmup: (steps / 15).max(1) },
        betas: (0.9, 0.999),
        weight_decay: 0.01,
        clip_norm: None,
        exempt_bos: false,
        binarised_epochs: false,
        snapshots: Vec::new(),
        seed,
    }
}

/// The `k` real edges of largest θ (ties by index), as a keep mask.
pub fn top_edges(graph: &Graph, theta: &EdgeMatrix<f32>, k: usize) -> EdgeMatrix<bool> {
    let mut edges: Vec<(usize, usize)> = graph.edges().collect();
    edges.sort_by(|a, b| theta[*b].total_cmp(&theta[*a]));
    let mut circuit = EdgeMatrix::filled(*graph, false);
    for &edge in edges.iter().take(k) {
        circuit[edge] = true;
    }
    circuit
}

/// Edge Pruning's circuits at `discovery.fractions`: one run with a snapshot per budget, or one
/// run per budget (`per_budget`).
pub fn edge_pruning_circuits<B: AutodiffBackend>(
    discovery: &Discovery<B>,
    per_budget: bool,
    seed: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<BudgetCircuits, MethodError> {
    let graph = discovery.graph;
    let fractions = discovery.fractions;
    let smallest = fractions.iter().copied().filter(|&f| f < 1.0).fold(1.0, f64::min);
    let mut passes = PassCount::default();
    let mut circuits = Vec::with_capacity(fractions.len());
    let mut last: Option<Vec<f32>> = None;
    let mut log = TrainingLog::default();
    if per_budget {
        let runs = fractions.iter().filter(|&&f| f < 1.0).count().max(1);
        for (i, &fraction) in fractions.iter().enumerate() {
            if fraction >= 1.0 {
                circuits.push(graph.real_edge_mask());
                continue;
            }
            let mut report = |p: Progress| progress(Progress { done: i * STEPS + p.done, total: runs * STEPS });
            let learned = learn_masks(discovery, &settings(STEPS, 1.0 - fraction, seed), &mut report)?;
            passes += learned.passes;
            log.steps.extend(learned.log.steps);
            circuits.push(top_edges(graph, &edge_matrix(graph, &learned.theta), graph.edge_budget(fraction)));
            last = Some(learned.theta);
        }
    } else {
        let mut run = settings(STEPS, 1.0 - smallest, seed);
        let Penalty::Lagrangian { target, .. } = run.penalty else { unreachable!("Edge Pruning's penalty is its Lagrangian") };
        // The step at which the ramp reaches each budget's sparsity.
        let step_of = |fraction: f64| -> usize {
            let reached = if target.end > 0.0 { (1.0 - fraction) / target.end } else { 1.0 };
            ((reached * target.warmup as f64).ceil() as usize).clamp(1, STEPS)
        };
        run.snapshots = fractions.iter().filter(|&&f| f < 1.0).map(|&f| step_of(f)).collect();
        let learned = learn_masks(discovery, &run, progress)?;
        passes += learned.passes;
        log = learned.log;
        for &fraction in fractions {
            if fraction >= 1.0 {
                circuits.push(graph.real_edge_mask());
                continue;
            }
            let step = step_of(fraction);
            let (_, values) = learned.snapshots.iter().find(|(s, _)| *s == step).expect("a snapshot at every budget's step");
            circuits.push(top_edges(graph, &edge_matrix(graph, values), graph.edge_budget(fraction)));
        }
        last = Some(learned.theta);
    }
    let scores = last.map(|theta| edge_scores(graph, &theta, Sampler::HardConcrete(HardConcrete::EDGE_PRUNING)));
    Ok(BudgetCircuits { taus: vec![None; circuits.len()], circuits, scores, passes, log: Some(log) })
}
