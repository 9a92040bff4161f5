//! Bootstrap intervals through a sweep: the config's resample count is validated and honoured,
//! curves.csv and summary.csv carry the intervals' ends beside their numbers, the faithfulness plot
//! draws them as bands, `Finished` events carry CPR's and CMD's, and a changed count is another
//! cell definition.

use std::path::{Path, PathBuf};

use bench::{Config, Event, SweepPaths};
use burn::backend::Autodiff;
use transformer::CpuBackend;

type B = Autodiff<CpuBackend>;

const CONFIG: &str = r#"
name = "intervals"
batch_size = 8
fractions = [0.01, 0.1, 0.5, 1.0]
interval_resamples = 200

[[group]]
model = "task:arithmetic-addition"
tasks = ["arithmetic-addition"]
methods = ["eap"]
discovery_examples = 8
evaluation_examples = 24
"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("circuitbench-intervals-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_resample_count_is_validated() {
    let config = |line: &str| Config::parse(&CONFIG.replace("interval_resamples = 200", line), "c.toml");
    assert_eq!(config("").unwrap().interval_resamples, evaluator::DEFAULT_RESAMPLES, "the default");
    assert_eq!(config("interval_resamples = 200").unwrap().interval_resamples, 200);
    for bad in ["interval_resamples = 0", "interval_resamples = 100001"] {
        let err = config(bad).unwrap_err().to_string();
        assert!(err.contains("c.toml") && err.contains("`interval_resamples`") && err.contains("1..=100000"), "{bad}: {err}");
    }
    let err = config("interval_resamples = -3").unwrap_err().to_string();
    assert!(err.contains("c.toml") && err.contains("interval_resamples"), "{err}");
}

/// A number of a CSV row by column name (None for an empty cell).
fn column(header: &[&str], row: &[&str], name: &str) -> Option<f64> {
    let i = header.iter().position(|c| *c == name).unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    row[i].parse().ok()
}

#[test]
fn sweeps_report_intervals_in_the_tables_the_plots_and_the_events() {
    let root = scratch("sweep");
    let config_path = root.join("intervals.toml");
    std::fs::write(&config_path, CONFIG).unwrap();
    let config = Config::load(&config_path).unwrap();
    let paths = SweepPaths { config: config_path.clone(), results: root.join("results"), tasks: workspace().join("tasks") };
    let mut finished = Vec::new();
    let dir = bench::run_sweep::<B>(&config, &paths, "cpu", &Default::default(), &mut |e| {
        if let Event::Finished { cpr, cpr_interval, cmd_interval, .. } = e {
            finished.push((cpr, cpr_interval, cmd_interval));
        }
    })
    .unwrap();
    let [(cpr, Some(cpr_interval), Some(_))] = finished[..] else { panic!("one finished cell with both intervals: {finished:?}") };

    let summary = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let lines: Vec<&str> = summary.lines().collect();
    let (header, row): (Vec<&str>, Vec<&str>) = (lines[0].split(',').collect(), lines[1].split(',').collect());
    assert_eq!(column(&header, &row, "interval_resamples"), Some(200.0), "the config's count");
    assert_eq!(column(&header, &row, "interval_undefined"), Some(0.0));
    let (low, high) = (column(&header, &row, "cpr_low").unwrap(), column(&header, &row, "cpr_high").unwrap());
    assert!((low - cpr_interval.low).abs() < 1e-6 && (high - cpr_interval.high).abs() < 1e-6);
    assert!(low <= high && (low..=high).contains(&column(&header, &row, "cpr").unwrap()), "CPR {cpr} in [{low}, {high}]");
    let (low, high) = (column(&header, &row, "cmd_low").unwrap(), column(&header, &row, "cmd_high").unwrap());
    assert!(low <= high, "[{low}, {high}]");

    let curves = std::fs::read_to_string(dir.join("curves.csv")).unwrap();
    let lines: Vec<&str> = curves.lines().collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(lines.len(), 1 + 8, "signed and absolute at four budgets");
    for line in &lines[1..] {
        let row: Vec<&str> = line.split(',').collect();
        let (low, f, high) = (column(&header, &row, "faithfulness_low"), column(&header, &row, "faithfulness"), column(&header, &row, "faithfulness_high"));
        let (low, f, high) = (low.unwrap(), f.unwrap(), high.unwrap());
        assert!(low <= high, "{line}");
        if column(&header, &row, "fraction") == Some(1.0) {
            assert!((low - 1.0).abs() < 1e-3 && (high - 1.0).abs() < 1e-3 && (f - 1.0).abs() < 1e-3, "the full circuit: {line}");
        }
    }

    let plots: Vec<PathBuf> = std::fs::read_dir(dir.join("plots")).unwrap().map(|e| e.unwrap().path()).collect();
    let faithfulness = plots.iter().find(|p| p.file_name().unwrap().to_string_lossy().starts_with("faithfulness-")).unwrap();
    assert_eq!(std::fs::read_to_string(faithfulness).unwrap().matches(r#"<polygon class="band""#).count(), 2, "a band per curve");

    // Another resample count is another definition: the cell is computed again, not reused.
    std::fs::write(&config_path, CONFIG.replace("interval_resamples = 200", "interval_resamples = 100")).unwrap();
    let config = Config::load(&config_path).unwrap();
    let mut events = Vec::new();
    bench::run_sweep::<B>(&config, &paths, "cpu", &Default::default(), &mut |e| events.push(e)).unwrap();
    assert!(events.iter().any(|e| matches!(e, Event::Recomputing { .. })), "{events:?}");
    std::fs::remove_dir_all(&root).unwrap();
}
