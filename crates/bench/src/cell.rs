//! Running one cell: discovery (attribution on train pairs), circuits at every budget and
//! selection, evaluation on validation pairs, CPR / CMD — timed, with passes and peak memory.

use std::time::Instant;

use attribution::{EdgeScores, Method, PassCount, RunOptions, run_method};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use evaluator::circuit::edge_budget;
use evaluator::{EvalOptions, Selection, cmd, cpr, evaluate_circuits, faithfulness, top_n};
use graph::Graph;
use patching::{Ablation, AblationKind};
use serde::{Deserialize, Serialize};
use tasks::{PrepareOptions, PreparedPair, Split};
use transformer::{LoadedModel, Tokenizer, Transformer};

use crate::BenchError;
use crate::config::{Cell, Config};
use crate::memory;

/// Circuits drawn as node-link diagrams keep this many top edges (by signed score).
pub const DIAGRAM_EDGES: usize = 40;

/// One point of a faithfulness curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// `signed` or `absolute`.
    pub selection: String,
    pub fraction: f64,
    pub nominal_edges: usize,
    pub pruned_edges: usize,
    pub m_circuit: f64,
    pub faithfulness: f64,
}

/// Everything a finished cell measured; stored as JSON per cell so runs resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub model: String,
    pub task: String,
    pub method: String,
    pub ablation: String,
    /// Hash of the cell's definition and the config's shared settings: a stored result is reused
    /// only when it matches.
    pub definition: String,
    pub discovery_examples: usize,
    pub discovery_dropped: usize,
    pub evaluation_examples: usize,
    pub evaluation_dropped: usize,
    pub m_full: f64,
    pub m_empty: f64,
    pub curve: Vec<CurvePoint>,
    pub cpr: f64,
    pub cmd: f64,
    pub mean_f_signed: f64,
    pub mean_f_absolute: f64,
    pub discovery_seconds: f64,
    pub evaluation_seconds: f64,
    pub forward_passes: usize,
    pub backward_passes: usize,
    /// Peak resident memory of the process during the cell (Linux; None elsewhere).
    pub peak_memory_mib: Option<f64>,
    /// Peak GPU memory in use during the cell (runs on a GPU with `nvidia-smi` only).
    #[serde(default)]
    pub peak_gpu_memory_mib: Option<f64>,
    /// The top edges by signed score, (name, score), for the circuit diagram.
    pub top_edges: Vec<(String, f32)>,
}

/// Batches done out of the cell's total (discovery and evaluation batches together).
#[derive(Debug, Clone, Copy)]
pub struct BatchProgress {
    pub done: usize,
    pub total: usize,
}

/// A model loaded for the sweep, with its graph.
pub struct SweepModel<B: AutodiffBackend> {
    pub model: Transformer<B>,
    pub tokenizer: Tokenizer,
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

/// Pairs from the start of a split, prepared for the model, with the number dropped.
fn pairs_of(
    config: &Config,
    cell: &Cell,
    split: Split,
    n: usize,
    model: &SweepModel<impl AutodiffBackend>,
    dir: &std::path::Path,
) -> Result<(Vec<PreparedPair>, usize), BenchError> {
    let mut examples = config.datasets.load(cell.task, split, dir)?;
    examples.truncate(n);
    let prepared = tasks::prepare(&examples, &model.tokenizer, &model.model.config, &PrepareOptions::default())?;
    if prepared.pairs.is_empty() {
        return Err(BenchError::Cell { cell: cell.key(), message: format!("every {split} example was dropped ({:?})", prepared.dropped) });
    }
    Ok((prepared.pairs, prepared.dropped.total()))
}

/// Runs `cell` of `config` on `model`; `progress` hears after every batch.
pub fn run_cell<B: AutodiffBackend>(
    config: &Config,
    cell: &Cell,
    model: &SweepModel<B>,
    tasks_dir: &std::path::Path,
    definition: String,
    gpu: bool,
    progress: &mut dyn FnMut(BatchProgress),
) -> Result<CellResult, BenchError> {
    let fail = |message: String| BenchError::Cell { cell: cell.key(), message };
    memory::reset_peak();
    let gpu_sampler = if gpu {
        // Pooled memory of earlier cells would count as this cell's.
        B::memory_cleanup(&model.model.token_embedding.device());
        memory::GpuMemorySampler::start()
    } else {
        None
    };
    let (discovery, discovery_dropped) = pairs_of(config, cell, Split::Train, cell.discovery_examples, model, tasks_dir)?;
    let (evaluation, evaluation_dropped) = pairs_of(config, cell, Split::Validation, cell.evaluation_examples, model, tasks_dir)?;
    let batch = config.batch_size;
    let method = Method::parse(&cell.method, config.ig_steps, config.seed).map_err(|e| fail(e.to_string()))?;
    // Random scores need no pairs: one "batch".
    let discovery_batches = if matches!(method, Method::Random { .. }) { 1 } else { discovery.len().div_ceil(batch) };
    let total = discovery_batches + evaluation.len().div_ceil(batch);
    let mut done = 0;

    // Discovery, batch by batch: scores are means over pairs, so batch means weighted by size.
    let start = Instant::now();
    let graph = &model.graph;
    let options = RunOptions { batch_size: batch, ..RunOptions::default() };
    let mut values = vec![0.0f64; graph.n_fwd() * graph.n_bwd()];
    let mut passes = PassCount::default();
    let chunks: Vec<&[PreparedPair]> = if discovery_batches == 1 { vec![&discovery[..]] } else { discovery.chunks(batch).collect() };
    for chunk in chunks {
        let scores = run_method(&model.model, graph, chunk, &method, config.ablation, options).map_err(|e| fail(e.to_string()))?;
        let weight = chunk.len() as f64 / discovery.len() as f64;
        for (v, s) in values.iter_mut().zip(&scores.values) {
            *v += weight * *s as f64;
        }
        passes.forward += scores.passes.forward;
        passes.backward += scores.passes.backward;
        done += 1;
        progress(BatchProgress { done, total });
    }
    let scores = EdgeScores { graph: *graph, values: values.iter().map(|&v| v as f32).collect(), passes };
    scores.validate().map_err(|e| fail(e.to_string()))?;
    let discovery_seconds = start.elapsed().as_secs_f64();

    // Circuits at every budget, signed then absolute.
    let start = Instant::now();
    let selections = [(Selection::Signed, "signed"), (Selection::Absolute, "absolute")];
    let circuits: Vec<_> = selections
        .iter()
        .flat_map(|&(s, _)| config.fractions.iter().map(move |&x| (s, x)))
        .map(|(s, x)| top_n(graph, &scores.values, edge_budget(graph, x), s))
        .collect();
    let masks: Vec<&[bool]> = circuits.iter().map(|c| c.edges.as_slice()).collect();
    let inner = model.model.valid();
    let device = inner.token_embedding.device();
    let reference: Vec<Vec<u32>> = match config.ablation {
        AblationKind::Mean | AblationKind::MeanPositional => discovery.iter().map(|p| p.clean.clone()).collect(),
        _ => Vec::new(),
    };
    let ablation = Ablation::fit(config.ablation, &inner, &reference, batch, &device).map_err(|e| fail(e.to_string()))?;
    let (mut full, mut empty, mut circuit_sums) = (0.0, 0.0, vec![0.0; masks.len()]);
    let mut eval_passes = 0;
    for chunk in evaluation.chunks(batch) {
        let r = evaluate_circuits(&inner, graph, chunk, &masks, &ablation, EvalOptions { batch_size: batch, masks_per_pass: 1 })
            .map_err(|e| fail(e.to_string()))?;
        let n = chunk.len() as f64;
        full += r.m_full * n;
        empty += r.m_empty * n;
        for (sum, m) in circuit_sums.iter_mut().zip(&r.m_circuits) {
            *sum += m * n;
        }
        eval_passes += r.passes;
        done += 1;
        progress(BatchProgress { done, total });
    }
    let n = evaluation.len() as f64;
    let (m_full, m_empty) = (full / n, empty / n);
    let mut curve = Vec::with_capacity(circuits.len());
    for (i, circuit) in circuits.iter().enumerate() {
        let (_, name) = selections[i / config.fractions.len()];
        let m_circuit = circuit_sums[i] / n;
        let f = faithfulness(m_circuit, m_full, m_empty).map_err(|e| fail(e.to_string()))?;
        curve.push(CurvePoint {
            selection: name.into(),
            fraction: config.fractions[i % config.fractions.len()],
            nominal_edges: circuit.nominal_edges,
            pruned_edges: circuit.edges_after_pruning,
            m_circuit,
            faithfulness: f,
        });
    }
    let f_of = |name: &str| -> Vec<f64> { curve.iter().filter(|p| p.selection == name).map(|p| p.faithfulness).collect() };
    let (f_signed, f_absolute) = (f_of("signed"), f_of("absolute"));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let evaluation_seconds = start.elapsed().as_secs_f64();

    let mut ranked: Vec<(usize, usize)> = graph.edges().collect();
    let score = |&(f, b): &(usize, usize)| scores.values[f * graph.n_bwd() + b];
    ranked.sort_by(|a, b| score(b).total_cmp(&score(a)).then(a.cmp(b)));
    let top_edges = ranked.iter().take(DIAGRAM_EDGES).map(|e| Ok((graph.edge_name(e.0, e.1)?, score(e)))).collect::<Result<Vec<_>, graph::GraphError>>()?;
    Ok(CellResult {
        model: cell.model.clone(),
        task: cell.task.to_string(),
        method: cell.method.clone(),
        ablation: config.ablation.to_string(),
        definition,
        discovery_examples: discovery.len(),
        discovery_dropped,
        evaluation_examples: evaluation.len(),
        evaluation_dropped,
        m_full,
        m_empty,
        cpr: cpr(&config.fractions, &f_signed),
        cmd: cmd(&config.fractions, &f_absolute),
        mean_f_signed: mean(&f_signed),
        mean_f_absolute: mean(&f_absolute),
        curve,
        discovery_seconds,
        evaluation_seconds,
        forward_passes: scores.passes.forward + eval_passes,
        backward_passes: scores.passes.backward,
        peak_memory_mib: memory::peak_mib(),
        peak_gpu_memory_mib: gpu_sampler.and_then(memory::GpuMemorySampler::peak_mib),
        top_edges,
    })
}
