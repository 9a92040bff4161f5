//! Comparing a run with a baseline run: every summary metric and curve point of every cell, within
//! an absolute tolerance; cells missing on either side count as moved.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tables::Row;

use crate::BenchError;

/// One number that differs from the baseline by more than the tolerance (or is missing).
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    /// `model|task|method`, with the selection and fraction for curve points.
    pub what: String,
    /// The column compared (a summary metric, or `faithfulness` for curve points).
    pub metric: String,
    /// The baseline's value; None where the baseline lacks the row or the number.
    pub baseline: Option<f64>,
    /// The run's value; None where the run lacks the row or the number.
    pub run: Option<f64>,
}

/// The outcome of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Numbers compared.
    pub compared: usize,
    /// The numbers beyond the tolerance, baseline rows first, then rows only the run has.
    pub moved: Vec<Moved>,
}

/// Summary metrics compared (timings and memory are machine-dependent and are not).
const METRICS: [&str; 4] = ["cpr", "cmd", "mean_f_signed", "mean_f_absolute"];

fn text(row: &Row, key: &str) -> String {
    match row.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

fn number(row: &Row, key: &str) -> Option<f64> {
    row.get(key).and_then(Value::as_f64)
}

/// Rows of a table keyed by the given columns.
fn keyed(rows: Vec<Row>, keys: &[&str]) -> BTreeMap<String, Row> {
    rows.into_iter().map(|r| (keys.iter().map(|k| text(&r, k)).collect::<Vec<_>>().join("|"), r)).collect()
}

fn compare_tables(baseline: &Path, run: &Path, keys: &[&str], metrics: &[&str], tolerance: f64, out: &mut Comparison) -> Result<(), BenchError> {
    let (base, new) = (keyed(tables::read_csv(baseline)?, keys), keyed(tables::read_csv(run)?, keys));
    for (key, b) in &base {
        for &metric in metrics {
            let before = number(b, metric);
            let after = new.get(key).and_then(|r| number(r, metric));
            out.compared += 1;
            let moved = match (before, after) {
                (Some(x), Some(y)) => (x - y).is_nan() || (x - y).abs() > tolerance,
                (None, None) => false,
                _ => true,
            };
            if moved {
                out.moved.push(Moved { what: key.clone(), metric: metric.into(), baseline: before, run: after });
            }
        }
    }
    for (key, r) in new.iter().filter(|(k, _)| !base.contains_key(*k)) {
        for &metric in metrics {
            out.moved.push(Moved { what: key.clone(), metric: metric.into(), baseline: None, run: number(r, metric) });
        }
    }
    Ok(())
}

/// Compares `run` with `baseline` (two run directories): summary metrics and faithfulness at every
/// curve point must agree within `tolerance`.
pub fn compare(baseline: &Path, run: &Path, tolerance: f64) -> Result<Comparison, BenchError> {
    let mut out = Comparison { compared: 0, moved: Vec::new() };
    compare_tables(&baseline.join("summary.csv"), &run.join("summary.csv"), &["model", "task", "method"], &METRICS, tolerance, &mut out)?;
    compare_tables(
        &baseline.join("curves.csv"),
        &run.join("curves.csv"),
        &["model", "task", "method", "selection", "fraction"],
        &["faithfulness"],
        tolerance,
        &mut out,
    )?;
    Ok(out)
}

/// The comparison as a readable table.
pub fn render(comparison: &Comparison, tolerance: f64) -> String {
    let show = |v: Option<f64>| v.map_or("missing".to_string(), |x| format!("{x:.4}"));
    let mut lines = vec![format!("{} numbers compared, {} moved by more than {tolerance}", comparison.compared, comparison.moved.len())];
    if !comparison.moved.is_empty() {
        lines.push(format!("{:<60} {:<16} {:>10} {:>10} {:>10}", "cell", "metric", "baseline", "run", "change"));
        for m in &comparison.moved {
            let change = match (m.baseline, m.run) {
                (Some(a), Some(b)) => format!("{:+.4}", b - a),
                _ => "–".into(),
            };
            lines.push(format!("{:<60} {:<16} {:>10} {:>10} {:>10}", m.what, m.metric, show(m.baseline), show(m.run), change));
        }
    }
    lines.join("\n")
}
