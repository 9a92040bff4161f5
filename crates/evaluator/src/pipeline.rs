//! The one evaluation pipeline, shared by `bench` and `xtask eval`: what a method found (scores, or
//! one circuit per budget) → circuits at every budget → their metric on the evaluation pairs →
//! faithfulness curves → CPR, CMD and mean faithfulness, with bootstrap intervals over the pairs
//! (`crate::bootstrap`) for every point, CPR and CMD.

use std::time::Duration;

use burn::tensor::backend::Backend;
use graph::{EdgeMatrix, Graph};
use patching::Ablation;
use serde::{Deserialize, Serialize};
use tasks::PreparedPair;
use transformer::Transformer;

use crate::bootstrap::{Bootstrap, Interval, Resampling, resample};
use crate::circuit::{BuiltCircuit, Selection, given, top_n, top_n_preferred};
use crate::evaluate::{EvalError, EvalOptions, evaluate_circuits};
use crate::metrics::{cmd, cpr, faithfulness};

/// What a method found, as the evaluator takes it.
#[derive(Debug, Clone, Copy)]
pub enum Candidates<'a> {
    /// A score per edge: circuits are the top-n edges at each budget, by signed score (CPR) and by
    /// magnitude (CMD).
    Scores(&'a EdgeMatrix<f32>),
    /// A score per edge and the edges the method prefers (a bootstrap's: those whose interval
    /// excludes 0): at each budget the preferred edges come first, then the rest, each by signed
    /// score (CPR) or by magnitude (CMD).
    PreferredScores {
        /// Each edge's score.
        scores: &'a EdgeMatrix<f32>,
        /// True = the edge is taken before every edge that is not.
        preferred: &'a EdgeMatrix<bool>,
    },
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
    /// Its 95% bootstrap interval over the evaluation pairs (None: not resampled, as in cell files
    /// older than intervals, or too many resamples undefined — see `bootstrap::Resamples::interval`).
    #[serde(default)]
    pub faithfulness_interval: Option<Interval>,
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
    /// CPR's 95% bootstrap interval over the evaluation pairs (None as for a point's).
    #[serde(default)]
    pub cpr_interval: Option<Interval>,
    /// CMD's 95% bootstrap interval over the evaluation pairs (None as for a point's).
    #[serde(default)]
    pub cmd_interval: Option<Interval>,
    /// How the intervals were drawn (None where nothing was resampled).
    #[serde(default)]
    pub resampling: Option<Resampling>,
}

/// The settings an evaluation is run under.
#[derive(Debug, Clone, Copy)]
pub struct EvalPlan<'a> {
    /// The budgets, as fractions of all edges (increasing).
    pub fractions: &'a [f64],
    /// Batch sizes and the metric faithfulness is computed from (MIB's: the logit difference).
    pub options: EvalOptions,
    /// Resamples and seed of the intervals of CPR, CMD and every point (`Bootstrap::default()`:
    /// 1,000 resamples, seed 0; 0 resamples: no intervals).
    pub bootstrap: Bootstrap,
}

/// The circuits `candidates` stand for at each budget of `fractions`, with their curve kinds.
pub fn circuits_at_budgets(graph: &Graph, candidates: Candidates<'_>, fractions: &[f64]) -> Result<Vec<(CurveKind, f64, BuiltCircuit)>, EvalError> {
    let ranked = |select: &dyn Fn(usize, Selection) -> BuiltCircuit| -> Vec<(CurveKind, f64, BuiltCircuit)> {
        [(CurveKind::Signed, Selection::Signed), (CurveKind::Absolute, Selection::Absolute)]
            .into_iter()
            .flat_map(|(kind, selection)| fractions.iter().map(move |&x| (kind, x, select(graph.edge_budget(x), selection))))
            .collect()
    };
    Ok(match candidates {
        Candidates::Scores(scores) => ranked(&|n, selection| top_n(graph, scores, n, selection)),
        Candidates::PreferredScores { scores, preferred } => {
            if let Some(bad) = [scores.graph(), preferred.graph()].into_iter().find(|g| g != graph) {
                return Err(EvalError::GraphMismatch { found: bad.shape(), expected: graph.shape() });
            }
            ranked(&|n, selection| top_n_preferred(graph, scores, preferred, n, selection))
        }
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

/// A curve's summaries from the faithfulness of each of its circuits.
struct Summary {
    cpr: f64,
    cmd: f64,
    mean_f_signed: f64,
    mean_f_absolute: f64,
}

/// The summaries of faithfulness values `f`, one per circuit of `kinds`: CPR from the signed (or
/// given) curve, CMD from the absolute (or given) one.
fn summarise(kinds: &[CurveKind], fractions: &[f64], f: &[f64]) -> Summary {
    let of = |wanted: CurveKind| -> Vec<f64> { kinds.iter().zip(f).filter(|(k, _)| **k == wanted || **k == CurveKind::Given).map(|(_, &f)| f).collect() };
    let (f_signed, f_absolute) = (of(CurveKind::Signed), of(CurveKind::Absolute));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Summary { cpr: cpr(fractions, &f_signed), cmd: cmd(fractions, &f_absolute), mean_f_signed: mean(&f_signed), mean_f_absolute: mean(&f_absolute) }
}

/// Evaluates what a method found on `pairs` under `ablation` (the one fitted for discovery):
/// circuits at every budget of the plan, their faithfulness, CPR and CMD, each with its 95%
/// interval from the plan's resamples of the pairs. `progress` hears after every batch (done, total).
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
    let kinds: Vec<CurveKind> = circuits.iter().map(|(kind, _, _)| *kind).collect();
    let f_point: Vec<f64> = result.m_circuits.iter().map(|&m| faithfulness(m, result.m_full, result.m_empty)).collect::<Result<_, _>>()?;
    let point = summarise(&kinds, plan.fractions, &f_point);
    // The same numbers from each resample of the pairs: every point's f, then CPR and CMD.
    let (cpr_at, cmd_at) = (kinds.len(), kinds.len() + 1);
    let resamples = (plan.bootstrap.resamples > 0).then(|| {
        let series: Vec<&[f64]> =
            [result.full_per_pair.as_slice(), &result.empty_per_pair].into_iter().chain(result.circuits_per_pair.iter().map(Vec::as_slice)).collect();
        resample(&series, plan.bootstrap, |means| {
            let (m_full, m_empty) = (means[0], means[1]);
            let f: Vec<f64> = means[2..].iter().map(|&m| faithfulness(m, m_full, m_empty).ok()).collect::<Option<_>>()?;
            let s = summarise(&kinds, plan.fractions, &f);
            Some(f.into_iter().chain([s.cpr, s.cmd]).collect())
        })
    });
    let interval = |i: usize| resamples.as_ref().and_then(|r| r.interval(i));
    let curve = circuits
        .iter()
        .zip(result.m_circuits.iter().zip(&f_point))
        .enumerate()
        .map(|(i, ((kind, fraction, circuit), (&m_circuit, &faithfulness)))| CurvePoint {
            kind: *kind,
            fraction: *fraction,
            nominal_edges: circuit.nominal_edges,
            pruned_edges: circuit.edges_after_pruning,
            m_circuit,
            faithfulness,
            faithfulness_interval: interval(i),
        })
        .collect();
    let curves = Curves {
        m_full: result.m_full,
        m_empty: result.m_empty,
        cpr: point.cpr,
        cmd: point.cmd,
        mean_f_signed: point.mean_f_signed,
        mean_f_absolute: point.mean_f_absolute,
        cpr_interval: interval(cpr_at),
        cmd_interval: interval(cmd_at),
        resampling: resamples.as_ref().map(|r| r.record()),
        curve,
    };
    Ok(Evaluation { curves, passes: result.passes, plain_forward: result.plain_forward, patched_forward: result.patched_forward })
}
