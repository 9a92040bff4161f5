//! The run's reports, regenerated from the stored cells: `curves.csv`, `summary.csv`, the MIB-style
//! pivots `cpr.csv` and `cmd.csv` (methods × model/task), `ground-truth.csv` when cells were
//! scored against a true circuit and `training.csv` when methods learned masks, each written
//! atomically with polars.
//! Rows follow the config's cell order, so the same config gives the same files.

use std::path::Path;

use evaluator::Interval;
use serde_json::{Value, json};
use tables::Row;

use crate::BenchError;
use crate::cell::{CellResult, GroundTruthScores};

/// Columns of `curves.csv`.
pub const CURVE_COLUMNS: [&str; 18] = [
    "model",
    "task",
    "method",
    "selection",
    "ablation",
    "fraction",
    "nominal_edges",
    "pruned_edges",
    "faithfulness",
    "faithfulness_low",
    "faithfulness_high",
    "m_circuit",
    "m_full",
    "m_empty",
    "tau",
    "precision",
    "recall",
    "f1",
];

/// Columns of `summary.csv`.
pub const SUMMARY_COLUMNS: [&str; 35] = [
    "model",
    "task",
    "method",
    "output",
    "metric",
    "evaluation_metric",
    "cpr",
    "cpr_low",
    "cpr_high",
    "cmd",
    "cmd_low",
    "cmd_high",
    "mean_f_signed",
    "mean_f_absolute",
    "interval_resamples",
    "interval_undefined",
    "discovery_seconds",
    "evaluation_seconds",
    "forward_passes",
    "backward_passes",
    "peak_memory_mib",
    "peak_gpu_memory_mib",
    "mask_steps",
    "steps_per_second",
    "discovery_examples",
    "discovery_dropped",
    "evaluation_examples",
    "evaluation_dropped",
    "discovery_requested",
    "evaluation_requested",
    "truth",
    "truth_edges",
    "auroc_structural",
    "auroc_patching",
    "best_f1",
];

/// Summary columns that measure the machine rather than the method: they differ between runs.
pub const TIMING_COLUMNS: [&str; 4] = ["discovery_seconds", "evaluation_seconds", "peak_memory_mib", "peak_gpu_memory_mib"];

fn row(value: Value) -> Row {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("rows are built from objects"),
    }
}

/// Rounds to 6 decimals for the tables, so they do not show float noise beyond f32 precision
/// (a tiny negative number rounds to 0, not to −0).
fn r6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6 + 0.0
}

/// An interval's ends for the tables, rounded like the numbers they bracket; none (empty cells)
/// where there is no interval.
fn ends(interval: Option<Interval>) -> (Option<f64>, Option<f64>) {
    (interval.map(|i| r6(i.low)), interval.map(|i| r6(i.high)))
}

/// The rows of `curves.csv`.
pub fn curve_rows(cells: &[CellResult]) -> Vec<Row> {
    cells
        .iter()
        .flat_map(|c| {
            c.curves.curve.iter().enumerate().map(move |(i, p)| {
                let (low, high) = ends(p.faithfulness_interval);
                let tau = c.taus.get(i).copied().flatten();
                let truth = c.ground_truth.as_ref().and_then(|g| g.points.get(i));
                row(json!({
                    "model": c.model, "task": c.task, "method": c.method, "selection": p.kind.name(), "ablation": c.ablation,
                    "fraction": p.fraction, "nominal_edges": p.nominal_edges, "pruned_edges": p.pruned_edges,
                    "faithfulness": r6(p.faithfulness), "faithfulness_low": low, "faithfulness_high": high, "m_circuit": r6(p.m_circuit), "m_full": r6(c.curves.m_full), "m_empty": r6(c.curves.m_empty), "tau": tau,
                    "precision": truth.map(|t| r6(t.precision)), "recall": truth.map(|t| r6(t.recall)), "f1": truth.map(|t| r6(t.f1)),
                }))
            })
        })
        .collect()
}

/// Columns of `training.csv`: every step of every mask-learning cell.
pub const TRAINING_COLUMNS: [&str; 10] = ["model", "task", "method", "epoch", "step", "data_loss", "loss", "sparsity", "nonzero", "target"];

/// The rows of `training.csv`.
pub fn training_rows(cells: &[CellResult]) -> Vec<Row> {
    cells
        .iter()
        .flat_map(|c| {
            c.training.iter().map(move |s| {
                row(json!({
                    "model": c.model, "task": c.task, "method": c.method, "epoch": s.epoch, "step": s.step,
                    "data_loss": s.data_loss, "loss": s.loss, "sparsity": r6(s.sparsity), "nonzero": s.nonzero, "target": s.target.map(r6),
                }))
            })
        })
        .collect()
}

/// The rows of `summary.csv`.
pub fn summary_rows(cells: &[CellResult]) -> Vec<Row> {
    cells
        .iter()
        .map(|c| {
            let ((cpr_low, cpr_high), (cmd_low, cmd_high)) = (ends(c.curves.cpr_interval), ends(c.curves.cmd_interval));
            let resampling = c.curves.resampling;
            let truth = c.ground_truth.as_ref();
            row(json!({
                "model": c.model, "task": c.task, "method": c.method,
                "output": c.output, "metric": c.metric, "evaluation_metric": c.evaluation_metric,
                "cpr": r6(c.curves.cpr), "cpr_low": cpr_low, "cpr_high": cpr_high, "cmd": r6(c.curves.cmd), "cmd_low": cmd_low, "cmd_high": cmd_high,
                "mean_f_signed": r6(c.curves.mean_f_signed), "mean_f_absolute": r6(c.curves.mean_f_absolute),
                "interval_resamples": resampling.map(|r| r.resamples), "interval_undefined": resampling.map(|r| r.undefined),
                "discovery_seconds": (c.discovery_seconds * 10.0).round() / 10.0, "evaluation_seconds": (c.evaluation_seconds * 10.0).round() / 10.0,
                "forward_passes": c.forward_passes, "backward_passes": c.backward_passes,
                "peak_memory_mib": c.peak_memory_mib.map(|m| m.round()),
                "peak_gpu_memory_mib": c.peak_gpu_memory_mib.map(|m| m.round()),
                "mask_steps": (!c.training.is_empty()).then_some(c.training.len()), "steps_per_second": c.steps_per_second().map(|s| (s * 100.0).round() / 100.0),
                "discovery_examples": c.discovery_examples, "discovery_dropped": c.discovery_dropped,
                "evaluation_examples": c.evaluation_examples, "evaluation_dropped": c.evaluation_dropped,
                "discovery_requested": c.discovery_requested, "evaluation_requested": c.evaluation_requested,
                "truth": truth.map(|g| g.truth.clone()), "truth_edges": truth.map(|g| g.truth_edges),
                "auroc_structural": truth.and_then(|g| g.auroc_structural).map(r6), "auroc_patching": truth.and_then(|g| g.auroc_patching).map(r6),
                "best_f1": truth.map(best_f1).map(r6),
            }))
        })
        .collect()
}

/// The best F1 of any circuit of a cell's curves.
fn best_f1(truth: &GroundTruthScores) -> f64 {
    truth.points.iter().map(|p| p.f1).fold(0.0, f64::max)
}

/// A named measure of a cell: a pivot's columns are `<model>/<task>`, followed by ` <name>` when
/// the name is not empty; None leaves the cell empty.
type Measure = (&'static str, fn(&CellResult) -> Option<f64>);

/// A pivot of `measures`: a row per method, a column per `model/task` and measure (in
/// first-seen order), over the cells given.
pub fn pivot(cells: &[&CellResult], measures: &[Measure]) -> (Vec<String>, Vec<Row>) {
    let column = |c: &CellResult, name: &str| if name.is_empty() { format!("{}/{}", c.model, c.task) } else { format!("{}/{} {name}", c.model, c.task) };
    let mut columns = vec!["method".to_string()];
    let mut methods: Vec<&str> = Vec::new();
    for c in cells {
        for &(name, _) in measures {
            let column = column(c, name);
            if !columns.contains(&column) {
                columns.push(column);
            }
        }
        if !methods.contains(&c.method.as_str()) {
            methods.push(&c.method);
        }
    }
    let rows = methods
        .iter()
        .map(|&m| {
            let mut r = Row::new();
            r.insert("method".into(), m.into());
            for c in cells.iter().filter(|c| c.method == m) {
                for &(name, measure) in measures {
                    r.insert(column(c, name), json!(measure(c).map(r6)));
                }
            }
            r
        })
        .collect();
    (columns, rows)
}

/// `ground-truth.csv`'s measures: the AUROC against the truth the cell's ablation calls for
/// (summary.csv's `truth`) and the best F1 of its circuits.
const GROUND_TRUTH_MEASURES: [Measure; 2] =
    [("auroc", |c| c.ground_truth.as_ref().and_then(GroundTruthScores::auroc)), ("best_f1", |c| c.ground_truth.as_ref().map(best_f1))];

/// Writes every CSV report of `cells` into `dir`.
pub fn write_tables(dir: &Path, cells: &[CellResult]) -> Result<(), BenchError> {
    tables::write_csv(&dir.join("curves.csv"), &CURVE_COLUMNS, &curve_rows(cells))?;
    tables::write_csv(&dir.join("summary.csv"), &SUMMARY_COLUMNS, &summary_rows(cells))?;
    let write_pivot = |name: &str, cells: &[&CellResult], measures: &[Measure]| -> Result<(), BenchError> {
        let (columns, rows) = pivot(cells, measures);
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        Ok(tables::write_csv(&dir.join(name), &columns, &rows)?)
    };
    let all: Vec<&CellResult> = cells.iter().collect();
    write_pivot("cpr.csv", &all, &[("", |c| Some(c.curves.cpr))])?;
    write_pivot("cmd.csv", &all, &[("", |c| Some(c.curves.cmd))])?;
    // The mask-learning methods' runs, step by step, when there are any.
    if cells.iter().any(|c| !c.training.is_empty()) {
        tables::write_csv(&dir.join("training.csv"), &TRAINING_COLUMNS, &training_rows(cells))?;
    }
    // The cells scored against a true circuit (tracr and planted models), when there are any.
    let scored: Vec<&CellResult> = cells.iter().filter(|c| c.ground_truth.is_some()).collect();
    if !scored.is_empty() {
        write_pivot("ground-truth.csv", &scored, &GROUND_TRUTH_MEASURES)?;
    }
    Ok(())
}
