//! Running one cell: discovery (attribution on train pairs), circuits at every budget and
//! selection, evaluation on validation pairs, CPR / CMD — timed, with passes and peak memory.

use std::time::Instant;

use attribution::learned::StepLog;
use attribution::{BudgetCircuits, Discovery, EdgeScores, Method, MethodError, MethodOutput, fit_ablation, run_method};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use evaluator::{Bootstrap, Candidates, Curves, EvalError, EvalOptions, EvalPlan, evaluate_candidates};
use graph::Graph;
use patching::AblationError;
use serde::{Deserialize, Serialize};
use tasks::tracr::TracrTask;
use tasks::{PrepareOptions, PreparedPair, Split, TaskKind};
use transformer::{LoadedModel, Tokenizer, Transformer};

use crate::BenchError;
use crate::config::{Cell, CellTask, Config};
use crate::memory;

/// Circuits drawn as node-link diagrams keep this many top edges (by |score|).
pub const DIAGRAM_EDGES: usize = 40;

/// Everything a finished cell measured; stored as JSON per cell so runs resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// The model argument.
    pub model: String,
    /// The task's name.
    pub task: String,
    /// The method's name.
    pub method: String,
    /// The ablation of discovery and evaluation.
    pub ablation: String,
    /// The metric the method optimised.
    #[serde(default)]
    pub metric: String,
    /// The metric faithfulness was measured with.
    #[serde(default)]
    pub evaluation_metric: String,
    /// What the method produced: `scores` (circuits selected from them) or `circuits` (its own).
    #[serde(default)]
    pub output: String,
    /// Hash of the cell's definition and the config's shared settings: a stored result is reused
    /// only when it matches.
    pub definition: String,
    /// Discovery examples the config asked for; more than `discovery_examples +
    /// discovery_dropped` when the train split is shorter (0 in cell files older than the field).
    #[serde(default)]
    pub discovery_requested: usize,
    /// Evaluation examples the config asked for; more than `evaluation_examples +
    /// evaluation_dropped` when the validation split is shorter (0 in older cell files).
    #[serde(default)]
    pub evaluation_requested: usize,
    /// Discovery pairs used.
    pub discovery_examples: usize,
    /// Discovery examples dropped in preparation.
    pub discovery_dropped: usize,
    /// Evaluation pairs used.
    pub evaluation_examples: usize,
    /// Evaluation examples dropped in preparation.
    pub evaluation_dropped: usize,
    /// The faithfulness curves (under the evaluation metric) and their summaries, CPR and CMD.
    #[serde(flatten)]
    pub curves: Curves,
    /// Wall time of discovery.
    pub discovery_seconds: f64,
    /// Wall time of evaluation.
    pub evaluation_seconds: f64,
    /// Forward passes of discovery and evaluation.
    pub forward_passes: usize,
    /// Backward passes of discovery.
    pub backward_passes: usize,
    /// Peak resident memory of the process during the cell (Linux; None elsewhere).
    pub peak_memory_mib: Option<f64>,
    /// Peak GPU memory in use during the cell (runs on a GPU with `nvidia-smi` only).
    #[serde(default)]
    pub peak_gpu_memory_mib: Option<f64>,
    /// The top edges by |score|, (name, signed score), for the circuit diagram (none when the
    /// method gave circuits without scores).
    pub top_edges: Vec<(String, f32)>,
    /// Per curve point, the threshold of the method that made its circuit (ACDC's τ), when it
    /// has one: `curves.csv`'s `tau`.
    #[serde(default)]
    pub taus: Vec<Option<f64>>,
    /// How the cell's scores and circuits match its model's true circuit (tracr and planted models).
    #[serde(default)]
    pub ground_truth: Option<GroundTruthScores>,
    /// A mask-learning method's steps (`training.csv`); empty for the other methods.
    #[serde(default)]
    pub training: Vec<StepLog>,
}

impl CellResult {
    /// Optimiser steps per second of discovery, for a mask-learning method.
    pub fn steps_per_second(&self) -> Option<f64> {
        (!self.training.is_empty() && self.discovery_seconds > 0.0).then(|| self.training.len() as f64 / self.discovery_seconds)
    }
}

/// A cell's scores and circuits against a compiled model's true edges (`true_edges.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruthScores {
    /// The set precision and recall are measured against: `patching` (the edges whose signal
    /// differs between clean and corrupt inputs) under counterfactual ablation, `structural`
    /// (every edge the weights connect on an input-to-logits path) under zero and mean ablations,
    /// which change every signal that is not constant.
    pub truth: String,
    /// Edges in that set.
    pub truth_edges: usize,
    /// AUROC of the method's |scores| against the structural set, over every edge of the graph
    /// (MIB's InterpBench protocol); None when the method gave circuits without scores.
    pub auroc_structural: Option<f64>,
    /// AUROC of the method's |scores| against the patching set.
    pub auroc_patching: Option<f64>,
    /// Per curve point (in `curves.curve`'s order): its pruned circuit against the truth.
    pub points: Vec<TruthPoint>,
}

impl GroundTruthScores {
    /// The AUROC against the set precision and recall are measured against (`truth`).
    pub fn auroc(&self) -> Option<f64> {
        if self.truth == "patching" { self.auroc_patching } else { self.auroc_structural }
    }
}

/// One circuit against the true edges.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TruthPoint {
    /// True edges found over edges in the circuit (0 for an empty circuit).
    pub precision: f64,
    /// True edges found over true edges.
    pub recall: f64,
    /// Their harmonic mean (0 when both are 0).
    pub f1: f64,
}

/// Scores `output` and the circuits evaluated from `candidates` against the true edges stored in
/// `dir`, beside the cell's model.
fn ground_truth(
    dir: &std::path::Path,
    cell: &Cell,
    config: &Config,
    graph: &Graph,
    output: &MethodOutput,
    candidates: Candidates<'_>,
) -> Result<GroundTruthScores, BenchError> {
    let truth = groundtruth::TrueEdges::read(dir)?;
    if truth.graph != *graph {
        return Err(BenchError::TruthGraph { file: dir.join(groundtruth::FILE_NAME), found: truth.graph.shape(), expected: graph.shape() });
    }
    let (name, set) = match config.ablation {
        patching::AblationKind::Counterfactual => ("patching", &truth.patching),
        _ => ("structural", &truth.structural),
    };
    let fail = |source: CellError| BenchError::Cell { cell: cell.key(), source };
    let circuits = evaluator::circuits_at_budgets(graph, candidates, &config.fractions).map_err(|e| fail(e.into()))?;
    let points = circuits
        .iter()
        .map(|(_, _, circuit)| {
            let pr = groundtruth::precision_recall(&circuit.edges, set, *graph);
            TruthPoint { precision: pr.precision, recall: pr.recall, f1: pr.f1 }
        })
        .collect();
    let auroc = |set: &graph::EdgeMatrix<bool>| output.scores().map(|scores| groundtruth::auroc(scores, set, *graph));
    Ok(GroundTruthScores {
        truth: name.into(),
        truth_edges: graph.edges().filter(|&e| set[e]).count(),
        auroc_structural: auroc(&truth.structural),
        auroc_patching: auroc(&truth.patching),
        points,
    })
}

/// A split that held fewer examples than a cell asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortSplit {
    /// The split read.
    pub split: Split,
    /// Examples the config asked for.
    pub requested: usize,
    /// Examples the split had (pairs used plus those dropped in preparation).
    pub available: usize,
}

impl std::fmt::Display for ShortSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} split has {} of the {} examples asked for", self.split, self.available, self.requested)
    }
}

impl CellResult {
    /// The splits that were shorter than the config asked (empty when every split had enough).
    pub fn short_splits(&self) -> Vec<ShortSplit> {
        [
            (Split::Train, self.discovery_requested, self.discovery_examples + self.discovery_dropped),
            (Split::Validation, self.evaluation_requested, self.evaluation_examples + self.evaluation_dropped),
        ]
        .into_iter()
        .filter(|&(_, requested, available)| available < requested)
        .map(|(split, requested, available)| ShortSplit { split, requested, available })
        .collect()
    }
}

/// Why one cell failed.
#[derive(Debug, thiserror::Error)]
pub enum CellError {
    /// Preparation dropped every example of a split.
    #[error("every {split} example was dropped ({dropped})")]
    AllDropped {
        /// The split.
        split: Split,
        /// Why, per reason.
        dropped: tasks::Drops,
    },
    /// The method failed.
    #[error(transparent)]
    Method(#[from] MethodError),
    /// The ablation could not be fitted.
    #[error(transparent)]
    Ablation(#[from] AblationError),
    /// The evaluation failed.
    #[error(transparent)]
    Evaluation(#[from] EvalError),
}

/// The part of a cell a batch belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The method's batches on the discovery (train) pairs.
    Discovery,
    /// The evaluation's batches on the validation pairs, every circuit patched.
    Evaluation,
}

impl Phase {
    /// `discovery` or `evaluation`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Discovery => "discovery",
            Phase::Evaluation => "evaluation",
        }
    }
}

/// Batches done out of the cell's total (discovery and evaluation batches together).
#[derive(Debug, Clone, Copy)]
pub struct BatchProgress {
    /// The phase of the batch just done.
    pub phase: Phase,
    /// Batches finished.
    pub done: usize,
    /// Batches in all (the discovery part as the method reports it).
    pub total: usize,
}

/// A model loaded for the sweep, with its graph.
pub struct SweepModel<B: AutodiffBackend> {
    /// The model.
    pub model: Transformer<B>,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Its MIB graph.
    pub graph: Graph,
}

impl<B: AutodiffBackend> SweepModel<B> {
    /// Wraps a loaded model (gradients are taken at activations, never at weights).
    pub fn new(loaded: LoadedModel<B>) -> Result<Self, BenchError> {
        let cfg = &loaded.model.config;
        let graph = Graph::new(graph::GraphShape { n_layers: cfg.n_layers, n_heads: cfg.n_heads })?;
        Ok(Self { model: loaded.model.no_grad(), tokenizer: loaded.tokenizer, graph })
    }
}

/// The directory of a compiled model named by a cell (its dataset and true edges lie there).
fn tracr_dir(model: &str) -> Result<std::path::PathBuf, BenchError> {
    match transformer::ModelSpec::parse(model)?.materialise()? {
        transformer::LocalModel::Dir(dir) => Ok(dir),
        _ => Err(BenchError::NotTracr { model: model.into() }),
    }
}

/// Where a cell's true edges are: a tracr cell's model directory (which must hold them), or a
/// text cell's model directory when it holds a `true_edges.json` (a planted-circuit model).
fn truth_dir(cell: &Cell) -> Result<Option<std::path::PathBuf>, BenchError> {
    match cell.task {
        CellTask::Tracr => Ok(Some(tracr_dir(&cell.model)?)),
        CellTask::Text(_) => match transformer::ModelSpec::parse(&cell.model)?.materialise()? {
            transformer::LocalModel::Dir(dir) if dir.join(groundtruth::FILE_NAME).is_file() => Ok(Some(dir)),
            _ => Ok(None),
        },
    }
}

/// Pairs from the start of a split of a text task, prepared for the model, with the number dropped.
fn pairs_of(
    config: &Config,
    cell: &Cell,
    task: TaskKind,
    split: Split,
    n: usize,
    model: &SweepModel<impl AutodiffBackend>,
    dir: &std::path::Path,
) -> Result<(Vec<PreparedPair>, usize), BenchError> {
    let mut examples = config.datasets.load(task, split, dir)?;
    examples.truncate(n);
    let prepared = tasks::prepare(&examples, &model.tokenizer, &model.model.config, &PrepareOptions::default())?;
    if prepared.pairs.is_empty() {
        return Err(BenchError::Cell { cell: cell.key(), source: CellError::AllDropped { split, dropped: prepared.dropped } });
    }
    Ok((prepared.pairs, prepared.dropped.total()))
}

/// Runs `cell` of `config` on `model`; `progress` hears after every batch. The ablation is fitted
/// once on the discovery pairs and serves both the method and the evaluation of what it found.
pub fn run_cell<B: AutodiffBackend>(
    config: &Config,
    cell: &Cell,
    model: &SweepModel<B>,
    tasks_dir: &std::path::Path,
    definition: String,
    gpu: bool,
    progress: &mut dyn FnMut(BatchProgress),
) -> Result<CellResult, BenchError> {
    let fail = |source: CellError| BenchError::Cell { cell: cell.key(), source };
    memory::reset_peak();
    let gpu_sampler = if gpu {
        // Pooled memory of earlier cells would count as this cell's.
        B::memory_cleanup(&model.model.token_embedding.device());
        memory::GpuMemorySampler::start()
    } else {
        None
    };
    let ((discovery, discovery_dropped), (evaluation, evaluation_dropped)) = match cell.task {
        // A compiled model's pairs are its own, in ids already: nothing to tokenize or drop. Its
        // first examples of each half, each read at every read position.
        CellTask::Tracr => {
            let task = TracrTask::load(&tracr_dir(&cell.model)?)?;
            ((task.pairs(Split::Train, cell.discovery_examples)?, 0), (task.pairs(Split::Validation, cell.evaluation_examples)?, 0))
        }
        CellTask::Text(task) => (
            pairs_of(config, cell, task, Split::Train, cell.discovery_examples, model, tasks_dir)?,
            pairs_of(config, cell, task, Split::Validation, cell.evaluation_examples, model, tasks_dir)?,
        ),
    };
    let batch = config.batch_size;
    let method = Method::parse(&cell.method, config.ig_steps, config.seed).map_err(|e| fail(e.into()))?;
    let graph = &model.graph;
    let inner = model.model.valid();

    let start = Instant::now();
    // A learned ablation learns the task loss faithfulness is measured by.
    let ablation = fit_ablation(config.ablation, &model.model, &discovery, batch, cell.evaluation_metric).map_err(|e| fail(e.into()))?;
    let inputs = Discovery {
        model: &model.model,
        graph,
        pairs: &discovery,
        ablation: &ablation,
        metric: cell.metric,
        batch_size: batch,
        edges_per_pass: attribution::exact::EDGES_PER_PASS,
        fractions: &config.fractions,
        positions: patching::Positions::Suffix,
    };
    let evaluation_batches = evaluation.len().div_ceil(batch);
    let mut discovery_batches = 0;
    let output = run_method(&method, &inputs, &mut |p| {
        discovery_batches = p.total;
        progress(BatchProgress { phase: Phase::Discovery, done: p.done, total: p.total + evaluation_batches });
    })
    .map_err(|e| fail(e.into()))?;
    let candidates = match &output {
        // run_method has checked every score is finite.
        MethodOutput::Scores(EdgeScores { values, preferred: Some(preferred), .. }) => Candidates::PreferredScores { scores: values, preferred },
        MethodOutput::Scores(scores) => Candidates::Scores(&scores.values),
        MethodOutput::Circuits(circuits) => Candidates::Circuits(&circuits.circuits),
    };
    let discovery_seconds = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let plan = EvalPlan {
        fractions: &config.fractions,
        options: EvalOptions { batch_size: batch, masks_per_pass: 1, metric: cell.evaluation_metric, ..EvalOptions::default() },
        bootstrap: Bootstrap { resamples: config.interval_resamples, seed: config.seed },
    };
    let evaluated = evaluate_candidates(&inner, graph, &evaluation, candidates, &ablation, plan, &mut |done, total| {
        progress(BatchProgress { phase: Phase::Evaluation, done: discovery_batches + done, total: discovery_batches + total })
    })
    .map_err(|e| fail(e.into()))?;
    let evaluation_seconds = start.elapsed().as_secs_f64();
    // A compiled model, or a trained one whose circuit was planted: its true edges lie beside it.
    let ground_truth = match truth_dir(cell)? {
        Some(dir) => Some(ground_truth(&dir, cell, config, graph, &output, candidates)?),
        None => None,
    };

    let top_edges = match output.scores() {
        Some(scores) => {
            let mut ranked: Vec<(usize, usize)> = graph.edges().collect();
            // By magnitude, so the diagram shows the edges that hurt the task beside those that help.
            ranked.sort_by(|&a, &b| scores[b].abs().total_cmp(&scores[a].abs()).then(a.cmp(&b)));
            ranked.iter().take(DIAGRAM_EDGES).map(|&e| Ok((graph.edge_name(e.0, e.1)?, scores[e]))).collect::<Result<Vec<_>, graph::GraphError>>()?
        }
        None => Vec::new(),
    };
    let passes = output.passes();
    Ok(CellResult {
        model: cell.model.clone(),
        task: cell.task.to_string(),
        method: cell.method.clone(),
        ablation: config.ablation.to_string(),
        metric: cell.metric.name().into(),
        evaluation_metric: cell.evaluation_metric.name().into(),
        output: output.kind().into(),
        definition,
        discovery_requested: cell.discovery_examples,
        evaluation_requested: cell.evaluation_examples,
        discovery_examples: discovery.len(),
        discovery_dropped,
        evaluation_examples: evaluation.len(),
        evaluation_dropped,
        curves: evaluated.curves,
        discovery_seconds,
        evaluation_seconds,
        forward_passes: passes.forward + evaluated.passes,
        backward_passes: passes.backward,
        peak_memory_mib: memory::peak_mib(),
        peak_gpu_memory_mib: gpu_sampler.and_then(memory::GpuMemorySampler::peak_mib),
        top_edges,
        taus: match &output {
            MethodOutput::Circuits(circuits) => circuits.taus.clone(),
            MethodOutput::Scores(_) => Vec::new(),
        },
        ground_truth,
        training: match &output {
            MethodOutput::Circuits(BudgetCircuits { log: Some(log), .. }) => log.steps.clone(),
            _ => Vec::new(),
        },
    })
}
