//! The one evaluation pipeline, shared by `bench` and `xtask eval`: what a method found (scores, or
//! one circuit per budget) → circuits at every budget → their metric on the evaluation pairs →
//! faithfulness curves → CPR, CMD and mean faithfulness.

use std::time::Duration;

use burn::tensor::backend::Backend;
use graph::{EdgeMatrix, Graph};
use patching::Ablation;
use serde::{Deserialize, Serialize};
use tasks::PreparedPair;
use transformer::Transformer;

use crate::circuit::{BuiltCircuit, Selection, edge_budget, given, top_n};
use crate::evaluate::{EvalError, EvalOptions, evaluate_circuits};
use crate::metrics::{cmd, cpr, faithfulness};

/// What a method found, as the evaluator takes it.
#[derive(Debug, Clone, Copy)]
pub enum Candidates<'a> {
    /// A score per edge: circuits are the top-n edges at each budget, by signed score (CPR) and by
    /// magnitude (CMD).
    Scores(&'a EdgeMatrix<f32>),
    /// One circuit per budget, chosen by the method: evaluated as given (after pruning), and both
    /// CPR and CMD are read from that one curve.
    Circuits(&'a [EdgeMatrix<bool>]),
}

/// How a curve's circuits were chosen: a column of curves.csv.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CurveKind {
    /// Top-n by signed score.
    Signed,
    /// Top-n by |score|.
    Absolute,
    /// The method's own circuits.
    Given,
}

impl CurveKind {
    /// The name in tables: `signed`, `absolute` or `given`.
    pub fn name(self) -> &'static str {
        match self {
            CurveKind::Signed => "signed",
            CurveKind::Absolute => "absolute",
            CurveKind::Given => "given",
        }
    }
}

/// One evaluated circuit of a curve (stored in bench's cell files; `kind` as `selection`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Which curve it belongs to.
    #[serde(rename = "selection")]
    pub kind: CurveKind,
    /// The budget as a fraction of all edges.
    pub fraction: f64,
    /// Edges selected (or given) before pruning.
    pub nominal_edges: usize,
    /// Edges left after pruning.
    pub pruned_edges: usize,
    /// The metric's mean over the pairs with only this circuit kept.
    pub m_circuit: f64,
    /// (m(C) − m(∅)) / (m(N) − m(∅)).
    pub faithfulness: f64,
}

/// Everything one evaluation measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The curves and their summaries.
    pub curves: Curves,
    /// Forward passes run.
    pub passes: usize,
    /// Time in unpatched forward passes.
    pub plain_forward: Duration,
    /// Time in patched forward passes.
    pub patched_forward: Duration,
}

/// The faithfulness curves of what a method found, and their summaries: the numbers a benchmark
/// reports (bench stores them in each cell file as they are).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    /// The metric's mean on the full model, m(N).
    pub m_full: f64,
    /// The metric's mean with every edge ablated, m(∅).
    pub m_empty: f64,
    /// The curves' points in order: signed then absolute budgets, or the given circuits.
    pub curve: Vec<CurvePoint>,
    /// Area under f over the budgets (signed curve, or the given one).
    pub cpr: f64,
    /// Area under |1 − f| (absolute curve, or the given one).
    pub cmd: f64,
    /// Mean f of the signed (or given) curve.
    pub mean_f_signed: f64,
    /// Mean f of the absolute (or given) curve.
    pub mean_f_absolute: f64,
}

/// The settings an evaluation is run under.
#[derive(Debug, Clone, Copy)]
pub struct EvalPlan<'a> {
    /// The budgets, as fractions of all edges (increasing).
    pub fractions: &'a [f64],
    /// Batch sizes and the metric faithfulness is computed from (MIB's: the logit difference).
    pub options: EvalOptions,
}

/// The circuits `candidates` stand for at each budget of `fractions`, with their curve kinds.
pub fn circuits_at_budgets(graph: &Graph, candidates: Candidates<'_>, fractions: &[f64]) -> Result<Vec<(CurveKind, f64, BuiltCircuit)>, EvalError> {
    Ok(match candidates {
        Candidates::Scores(scores) => [(CurveKind::Signed, Selection::Signed), (CurveKind::Absolute, Selection::Absolute)]
            .into_iter()
            .flat_map(|(kind, selection)| fractions.iter().map(move |&x| (kind, x, top_n(graph, scores, edge_budget(graph, x), selection))))
            .collect(),
        Candidates::Circuits(circuits) => {
            if circuits.len() != fractions.len() {
                return Err(EvalError::CircuitCount { found: circuits.len(), expected: fractions.len() });
            }
            if let Some(bad) = circuits.iter().find(|c| c.graph() != *graph) {
                return Err(EvalError::GraphMismatch { found: bad.graph().shape(), expected: graph.shape() });
            }
            fractions.iter().zip(circuits).map(|(&x, c)| (CurveKind::Given, x, given(graph, c))).collect()
        }
    })
}

/// Evaluates what a method found on `pairs` under `ablation` (the one fitted for discovery):
/// circuits at every budget of the plan, their faithfulness, CPR and CMD. `progress` hears after
/// every batch (done, total).
pub fn evaluate_candidates<B: Backend>(
    model: &Transformer<B>,
    graph: &Graph,
    pairs: &[PreparedPair],
    candidates: Candidates<'_>,
    ablation: &Ablation<B>,
    plan: EvalPlan<'_>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Evaluation, EvalError> {
    let circuits = circuits_at_budgets(graph, candidates, plan.fractions)?;
    let masks: Vec<&EdgeMatrix<bool>> = circuits.iter().map(|(_, _, c)| &c.edges).collect();
    let result = evaluate_circuits(model, graph, pairs, &masks, ablation, plan.options, progress)?;
    let mut curve = Vec::with_capacity(circuits.len());
    for ((kind, fraction, circuit), &m_circuit) in circuits.iter().zip(&result.m_circuits) {
        curve.push(CurvePoint {
            kind: *kind,
            fraction: *fraction,
            nominal_edges: circuit.nominal_edges,
            pruned_edges: circuit.edges_after_pruning,
            m_circuit,
            faithfulness: faithfulness(m_circuit, result.m_full, result.m_empty)?,
        });
    }
    let f_of = |kind: CurveKind| -> Vec<f64> { curve.iter().filter(|p| p.kind == kind).map(|p| p.faithfulness).collect() };
    let (f_signed, f_absolute) = match candidates {
        Candidates::Scores(_) => (f_of(CurveKind::Signed), f_of(CurveKind::Absolute)),
        Candidates::Circuits(_) => (f_of(CurveKind::Given), f_of(CurveKind::Given)),
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let curves = Curves {
        m_full: result.m_full,
        m_empty: result.m_empty,
        cpr: cpr(plan.fractions, &f_signed),
        cmd: cmd(plan.fractions, &f_absolute),
        mean_f_signed: mean(&f_signed),
        mean_f_absolute: mean(&f_absolute),
        curve,
    };
    Ok(Evaluation { curves, passes: result.passes, plain_forward: result.plain_forward, patched_forward: result.patched_forward })
}
