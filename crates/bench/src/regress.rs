//! Comparing a run with a baseline run: every summary metric and curve point of every cell, within
//! an absolute tolerance; cells missing on either side count as moved, so does a NaN on either side,
//! and a comparison of no numbers at all fails. A tolerance that is not a finite number ≥ 0 and a
//! table with two different rows under one key are errors. Each moved number also says whether it
//! left the baseline's 95% bootstrap interval (its `<column>_low` / `<column>_high`, where the
//! baseline has them): information beside the verdict, which the tolerance alone decides.

use std::collections::BTreeMap;
use std::path::Path;

use evaluator::Interval;
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
    /// Why it counts as moved: beyond the tolerance, missing, NaN, or nothing compared.
    pub reason: String,
    /// The baseline's 95% bootstrap interval of the number, where its table gives one.
    pub interval: Option<Interval>,
}

impl Moved {
    /// Whether the run's number lies outside the baseline's interval (None where either is
    /// missing): a move the resampling of the evaluation pairs does not explain.
    pub fn left_interval(&self) -> Option<bool> {
        Some(!self.interval?.contains(self.run?))
    }
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

/// The interval of `metric` in `row`: its `<metric>_low` and `<metric>_high` columns, where both
/// hold numbers.
fn interval(row: &Row, metric: &str) -> Option<Interval> {
    let (low, high) = (number(row, &format!("{metric}_low"))?, number(row, &format!("{metric}_high"))?);
    (low <= high).then_some(Interval { low, high })
}

/// Rows of a table keyed by the given columns.
/// Rows of a table keyed by the given columns; a key repeated with other numbers is an error
/// naming the file and the key (a repeat with the same numbers is the same row).
fn keyed(path: &Path, rows: Vec<Row>, keys: &[&str], metrics: &[&str]) -> Result<BTreeMap<String, Row>, BenchError> {
    let mut out: BTreeMap<String, Row> = BTreeMap::new();
    for r in rows {
        let key = keys.iter().map(|k| text(&r, k)).collect::<Vec<_>>().join("|");
        if let Some(first) = out.get(&key) {
            // NaN is not equal to itself, so numbers are compared by their bits.
            let same = |m: &&str| number(first, m).map(f64::to_bits) == number(&r, m).map(f64::to_bits);
            if let Some(metric) = metrics.iter().find(|m| !same(m)) {
                return Err(BenchError::DuplicateRow { path: path.into(), key, metric: metric.to_string() });
            }
            continue;
        }
        out.insert(key, r);
    }
    Ok(out)
}

/// Whether one metric of a key counts as moved, and why. `before` / `after` are None where the
/// row is missing; a row's number is None where the cell is empty — the tables write a NaN as an
/// empty cell — so an empty or NaN number counts as NaN.
fn moved_reason(before: Option<Option<f64>>, after: Option<Option<f64>>, tolerance: f64) -> Option<&'static str> {
    let nan = |v: Option<f64>| v.is_none_or(f64::is_nan);
    match (before, after) {
        (Some(_), None) => Some("missing in the run"),
        (None, Some(_)) => Some("missing in the baseline"),
        (None, None) => None,
        (Some(x), Some(y)) if nan(x) || nan(y) => Some("NaN"),
        (Some(x), Some(y)) => (x.zip(y).is_some_and(|(x, y)| (x - y).abs() > tolerance)).then_some("beyond the tolerance"),
    }
}

fn compare_tables(baseline: &Path, run: &Path, keys: &[&str], metrics: &[&str], tolerance: f64, out: &mut Comparison) -> Result<(), BenchError> {
    let base = keyed(baseline, tables::read_csv(baseline)?, keys, metrics)?;
    let new = keyed(run, tables::read_csv(run)?, keys, metrics)?;
    for (key, b) in &base {
        for &metric in metrics {
            let before = number(b, metric);
            let after = new.get(key).map(|r| number(r, metric));
            out.compared += 1;
            if let Some(reason) = moved_reason(Some(before), after, tolerance) {
                let interval = interval(b, metric);
                out.moved.push(Moved { what: key.clone(), metric: metric.into(), baseline: before, run: after.flatten(), reason: reason.into(), interval });
            }
        }
    }
    for (key, r) in new.iter().filter(|(k, _)| !base.contains_key(*k)) {
        for &metric in metrics {
            let reason = moved_reason(None, Some(number(r, metric)), tolerance).unwrap_or_default();
            out.moved.push(Moved { what: key.clone(), metric: metric.into(), baseline: None, run: number(r, metric), reason: reason.into(), interval: None });
        }
    }
    Ok(())
}

/// Compares `run` with `baseline` (two run directories): summary metrics and faithfulness at every
/// curve point must agree within `tolerance` (a finite number ≥ 0). A NaN on either side counts as
/// moved; when no number at all was compared, the comparison fails with one entry saying so.
pub fn compare(baseline: &Path, run: &Path, tolerance: f64) -> Result<Comparison, BenchError> {
    if !(tolerance.is_finite() && tolerance >= 0.0) {
        return Err(BenchError::Tolerance { tolerance });
    }
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
    if out.compared == 0 {
        out.moved.push(Moved {
            what: format!("{} vs {}", baseline.display(), run.display()),
            metric: "*".into(),
            baseline: None,
            run: None,
            reason: "no numbers compared (empty tables)".into(),
            interval: None,
        });
    }
    Ok(out)
}

impl Comparison {
    /// Whether the run agrees with the baseline: something was compared and nothing moved.
    pub fn passed(&self) -> bool {
        self.compared > 0 && self.moved.is_empty()
    }

    /// Moved numbers that also left the baseline's 95% interval.
    pub fn outside_interval(&self) -> usize {
        self.moved.iter().filter(|m| m.left_interval() == Some(true)).count()
    }
}

/// The comparison as a readable table.
pub fn render(comparison: &Comparison, tolerance: f64) -> String {
    let show = |v: Option<f64>| v.map_or("missing".to_string(), |x| format!("{x:.4}"));
    let mut lines = vec![format!(
        "{} numbers compared, {} moved by more than {tolerance}, missing, NaN or failed ({} of them outside the baseline's 95% interval)",
        comparison.compared,
        comparison.moved.len(),
        comparison.outside_interval()
    )];
    if !comparison.moved.is_empty() {
        lines.push(format!(
            "{:<60} {:<16} {:>10} {:>10} {:>10} {:>21} {:>8}  reason",
            "cell", "metric", "baseline", "run", "change", "baseline 95%", "interval"
        ));
        for m in &comparison.moved {
            let change = match (m.baseline, m.run) {
                (Some(a), Some(b)) => format!("{:+.4}", b - a),
                _ => "–".into(),
            };
            let range = m.interval.map_or("–".to_string(), |i| format!("[{:.4}, {:.4}]", i.low, i.high));
            let left = match m.left_interval() {
                Some(true) => "outside",
                Some(false) => "inside",
                None => "–",
            };
            lines.push(format!(
                "{:<60} {:<16} {:>10} {:>10} {:>10} {:>21} {:>8}  {}",
                m.what,
                m.metric,
                show(m.baseline),
                show(m.run),
                change,
                range,
                left,
                m.reason
            ));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A run directory of one cell: CPR (with its interval, where given) and one curve point.
    fn run_dir(dir: &Path, cpr: (f64, Option<(f64, f64)>), f: (f64, Option<(f64, f64)>)) {
        std::fs::create_dir_all(dir).unwrap();
        let row = |value: serde_json::Value| value.as_object().unwrap().clone();
        let ends = |i: Option<(f64, f64)>| (i.map(|i| i.0), i.map(|i| i.1));
        let ((cl, ch), (fl, fh)) = (ends(cpr.1), ends(f.1));
        let summary = row(json!({ "model": "m", "task": "ioi", "method": "eap", "cpr": cpr.0, "cpr_low": cl, "cpr_high": ch,
            "cmd": 0.2, "mean_f_signed": 0.5, "mean_f_absolute": 0.5 }));
        let columns = ["model", "task", "method", "cpr", "cpr_low", "cpr_high", "cmd", "mean_f_signed", "mean_f_absolute"];
        tables::write_csv(&dir.join("summary.csv"), &columns, &[summary]).unwrap();
        let point = row(json!({ "model": "m", "task": "ioi", "method": "eap", "selection": "signed", "fraction": 0.1,
            "faithfulness": f.0, "faithfulness_low": fl, "faithfulness_high": fh }));
        let columns = ["model", "task", "method", "selection", "fraction", "faithfulness", "faithfulness_low", "faithfulness_high"];
        tables::write_csv(&dir.join("curves.csv"), &columns, &[point]).unwrap();
    }

    fn scratch(label: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("circuitbench-regress-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_moved_number_says_whether_it_left_the_baselines_interval() {
        let root = scratch("interval");
        run_dir(&root.join("base"), (0.5, Some((0.45, 0.55))), (0.7, Some((0.6, 0.8))));
        // CPR moves by 0.03 (beyond the tolerance, inside its interval); f by 0.2 (outside).
        run_dir(&root.join("run"), (0.53, Some((0.48, 0.58))), (0.9, Some((0.8, 1.0))));
        let comparison = compare(&root.join("base"), &root.join("run"), 0.01).unwrap();
        let by_metric = |metric: &str| comparison.moved.iter().find(|m| m.metric == metric).unwrap();
        assert_eq!(comparison.moved.len(), 2, "{comparison:?}");
        assert_eq!(by_metric("cpr").interval, Some(Interval { low: 0.45, high: 0.55 }), "the baseline's interval, not the run's");
        assert_eq!(by_metric("cpr").left_interval(), Some(false));
        assert_eq!(by_metric("faithfulness").left_interval(), Some(true));
        assert_eq!(comparison.outside_interval(), 1);
        assert!(!comparison.passed(), "the tolerance alone decides: a move inside the interval still fails");
        let text = render(&comparison, 0.01);
        assert!(text.contains("1 of them outside the baseline's 95% interval"), "{text}");
        assert!(text.contains("[0.4500, 0.5500]") && text.contains("inside") && text.contains("outside"), "{text}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_baseline_without_intervals_says_nothing_about_them() {
        let root = scratch("no-interval");
        run_dir(&root.join("base"), (0.5, None), (0.7, None));
        run_dir(&root.join("run"), (0.6, Some((0.5, 0.7))), (0.7, None));
        let comparison = compare(&root.join("base"), &root.join("run"), 0.01).unwrap();
        assert_eq!(comparison.moved.len(), 1);
        assert_eq!((comparison.moved[0].interval, comparison.moved[0].left_interval()), (None, None));
        assert_eq!(comparison.outside_interval(), 0);
        let _ = std::fs::remove_dir_all(&root);
    }
}
