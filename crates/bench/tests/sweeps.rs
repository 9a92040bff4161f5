//! Sweeps end to end on a shipped task model: reports written with the documented columns, a
//! rerun reuses every stored cell and rewrites byte-identical tables, a lost cell is recomputed
//! identically, regress catches a moved number, and bad configs name the key at fault.

use std::path::{Path, PathBuf};

use bench::{Config, Event, SweepPaths};
use burn::backend::Autodiff;
use transformer::CpuBackend;

type B = Autodiff<CpuBackend>;

const CONFIG: &str = r#"
name = "test"
ig_steps = 2
batch_size = 8
fractions = [0.01, 0.1, 0.5, 1.0]

[[group]]
model = "task:arithmetic-addition"
tasks = ["arithmetic-addition"]
methods = ["random", "eap", "eap-ig-activations"]
discovery_examples = 8
evaluation_examples = 16
[group.discovery_overrides]
eap-ig-activations = 4
"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("circuitbench-bench-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the config; returns the run directory and the keys of the cells that were computed.
fn sweep(root: &Path) -> (PathBuf, Vec<String>) {
    let config_path = root.join("test.toml");
    std::fs::write(&config_path, CONFIG).unwrap();
    let config = Config::load(&config_path).unwrap();
    let paths = SweepPaths { config: config_path, results: root.join("results"), tasks: workspace().join("tasks") };
    let mut computed = Vec::new();
    let dir = bench::run_sweep::<B>(&config, &paths, "cpu", &Default::default(), &mut |e| {
        if let Event::Cell { key, skipped: false, .. } = e {
            computed.push(key);
        }
    })
    .unwrap();
    (dir, computed)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn sweeps_write_reports_resume_and_reproduce() {
    let root = scratch("sweep");
    let (dir, computed) = sweep(&root);
    assert_eq!(computed.len(), 3);
    let curves = read(&dir.join("curves.csv"));
    assert_eq!(curves.lines().next().unwrap(), bench::report::CURVE_COLUMNS.join(","));
    assert_eq!(curves.lines().count(), 1 + 3 * 2 * 4, "3 methods × 2 selections × 4 budgets");
    let summary = read(&dir.join("summary.csv"));
    assert_eq!(summary.lines().next().unwrap(), bench::report::SUMMARY_COLUMNS.join(","));
    assert!(summary.contains(",4,0,16,0"), "eap-ig-activations discovered on its 4 overridden examples:\n{summary}");
    assert!(read(&dir.join("cpr.csv")).starts_with("method,task:arithmetic-addition/arithmetic-addition"));
    let manifest: serde_json::Value = serde_json::from_str(&read(&dir.join("manifest.json"))).unwrap();
    assert_eq!(manifest["datasets"]["arithmetic-addition"]["train"].as_str().unwrap().len(), 64);
    assert!(manifest["models"]["task:arithmetic-addition"]["model.safetensors"].is_string());
    assert!(read(&dir.join("plots/faithfulness-task_arithmetic-addition-arithmetic-addition.svg")).starts_with("<svg"));
    assert!(dir.join("plots/circuit-task_arithmetic-addition-arithmetic-addition-eap.svg").is_file());

    // A rerun computes nothing and rewrites the same tables.
    let tables = ["curves.csv", "summary.csv", "cpr.csv", "cmd.csv"].map(|f| read(&dir.join(f)));
    let (_, again) = sweep(&root);
    assert!(again.is_empty(), "recomputed {again:?}");
    assert_eq!(["curves.csv", "summary.csv", "cpr.csv", "cmd.csv"].map(|f| read(&dir.join(f))), tables);

    // A cell lost (a run killed before it finished) is recomputed with the same numbers.
    let eap = std::fs::read_dir(dir.join("cells"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy() == bench::sweep::cell_file_name("task:arithmetic-addition|arithmetic-addition|eap"))
        .unwrap();
    std::fs::remove_file(&eap).unwrap();
    let (_, recomputed) = sweep(&root);
    assert_eq!(recomputed, ["task:arithmetic-addition|arithmetic-addition|eap"]);
    assert_eq!(read(&dir.join("curves.csv")), tables[0]);
    assert_eq!(read(&dir.join("cpr.csv")), tables[2]);

    // Regress: a run agrees with itself and flags a moved CPR.
    let same = bench::regress::compare(&dir, &dir, 1e-9).unwrap();
    assert!(same.moved.is_empty() && same.compared > 0);
    let baseline = root.join("baseline");
    std::fs::create_dir_all(&baseline).unwrap();
    std::fs::copy(dir.join("curves.csv"), baseline.join("curves.csv")).unwrap();
    let mut rows = tables::read_csv(&dir.join("summary.csv")).unwrap();
    let cpr = rows[1]["cpr"].as_f64().unwrap();
    rows[1].insert("cpr".into(), serde_json::json!(cpr + 0.5));
    tables::write_csv(&baseline.join("summary.csv"), &bench::report::SUMMARY_COLUMNS, &rows).unwrap();
    let moved = bench::regress::compare(&baseline, &dir, 0.01).unwrap();
    assert_eq!(moved.moved.len(), 1, "{}", bench::regress::render(&moved, 0.01));
    assert_eq!(moved.moved[0].metric, "cpr");
    assert!(bench::regress::render(&moved, 0.01).contains("-0.5000"));
    std::fs::remove_dir_all(&root).unwrap();
}

/// The batch and cell events of a sweep of `config` under `root`.
fn events(root: &Path, config: &str) -> Vec<Event> {
    let config_path = root.join("events.toml");
    std::fs::write(&config_path, config).unwrap();
    let config = Config::load(&config_path).unwrap();
    let paths = SweepPaths { config: config_path, results: root.join("results"), tasks: workspace().join("tasks") };
    let mut events = Vec::new();
    bench::run_sweep::<B>(&config, &paths, "cpu", &Default::default(), &mut |e| events.push(e)).unwrap();
    events
}

#[test]
fn sweeps_report_every_batch_with_its_phase_and_the_cells_left_to_compute() {
    let root = scratch("events");
    let config = "name = \"events\"\nbatch_size = 4\nfractions = [0.1, 1.0]\n\n[[group]]\nmodel = \"task:arithmetic-addition\"\n\
                  tasks = [\"arithmetic-addition\"]\nmethods = [\"random\", \"eap\"]\ndiscovery_examples = 8\nevaluation_examples = 8\n";
    let summary = |events: &[Event]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Cell { key, skipped, to_compute, .. } => {
                    Some(format!("cell {} skipped {skipped} to_compute {to_compute}", key.rsplit('|').next().unwrap()))
                }
                Event::Batch(p) => Some(format!("{} {}/{}", p.phase.name(), p.done, p.total)),
                _ => None,
            })
            .collect()
    };
    let first = events(&root, config);
    // random scores in one step; eap takes a batch per 4 pairs; evaluation likewise, after.
    let expected = [
        "cell random skipped false to_compute 2",
        "discovery 1/3",
        "evaluation 2/3",
        "evaluation 3/3",
        "cell eap skipped false to_compute 1",
        "discovery 1/4",
        "discovery 2/4",
        "evaluation 3/4",
        "evaluation 4/4",
    ];
    assert_eq!(summary(&first), expected);
    // With the first cell's file lost, it is the only one left to compute.
    let random = bench::sweep::cell_file_name("task:arithmetic-addition|arithmetic-addition|random");
    std::fs::remove_file(root.join("results/events/cells").join(random)).unwrap();
    let again = summary(&events(&root, config));
    assert_eq!(again[0], "cell random skipped false to_compute 1");
    assert_eq!(again[1..4], expected[1..4]);
    assert_eq!(again[4..], ["cell eap skipped true to_compute 0"]);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_configs_name_the_key() {
    let err = |text: &str| Config::parse(text, "c.toml").unwrap_err().to_string();
    let group = "[[group]]\nmodel = \"m\"\ntasks = [\"ioi\"]\nmethods = [\"eap\"]\ndiscovery_examples = 1\nevaluation_examples = 1\n";
    assert!(err(&format!("name = \"x\"\ncolour = 3\n{group}")).contains("colour"));
    assert!(err(&format!("name = \"x\"\n{}", group.replace("\"eap\"", "\"eap\", \"magic\""))).contains("group[0].methods[1]"));
    assert!(err(&format!("name = \"x\"\n{}", group.replace("\"ioi\"", "\"poetry\""))).contains("group[0].tasks[0]"));
    assert!(err(&format!("name = \"x\"\nfractions = [0.5, 2.0]\n{group}")).contains("fractions[1]"));
    assert!(err(&format!("name = \"x\"\nablation = \"sideways\"\n{group}")).contains("`ablation`"));
    assert!(err(&format!("name = \"x\"\ndatasets = \"hub\"\n{group}")).contains("`datasets`"));
    assert!(err(&format!("name = \"x\"\n{}", group.replace("discovery_examples = 1", "discovery_examples = 0"))).contains("group[0].discovery_examples"));
    assert!(err(&format!("name = \"x\"\n{group}{group}")).contains("listed twice"));
    assert!(err(&format!("name = \"../x\"\n{group}")).contains("`name`"));
    assert!(err("name = \"x\"\n").contains("group"));
    assert!(err(&format!("name = \"x\"\nmetric = \"logit_diff\"\n{group}")).contains("`metric`: unknown metric `logit_diff`"));
    assert!(err(&format!("name = \"x\"\nevaluation_metric = \"accuracy\"\n{group}")).contains("`evaluation_metric`"));
    assert!(err(&format!("name = \"x\"\n{group}[group.metric_overrides]\ngim = \"kl\"\n")).contains("group[0].metric_overrides.gim"));
    assert!(err(&format!("name = \"x\"\n{group}[group.metric_overrides]\neap = \"kl2\"\n")).contains("group[0].metric_overrides.eap"));
    let ok = Config::parse(&format!("name = \"x\"\n{group}"), "c.toml").unwrap();
    assert_eq!(ok.fractions, evaluator::MIB_FRACTIONS.to_vec());
    assert_eq!((ok.cells[0].metric, ok.evaluation_metric), (patching::Metric::LogitDifference, patching::Metric::LogitDifference), "MIB's metric by default");
}
