//! The ground-truth track: a tracr cell reads its model's own dataset, is scored by its task's
//! metric, and is judged against the model's true edges (AUROC in summary.csv and
//! ground-truth.csv, precision / recall / F1 per circuit in curves.csv, a precision-recall plot);
//! configs that cannot mean anything for a compiled model are refused by key.

use std::path::{Path, PathBuf};

use bench::{CellTask, Config, SweepPaths};
use burn::backend::Autodiff;
use patching::Metric;
use transformer::CpuBackend;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn parse(text: &str) -> Result<Config, bench::ConfigError> {
    Config::parse(text, "test.toml")
}

const GROUP: &str = "[[group]]\nmodel = \"task:tracr-reverse\"\ntasks = [\"tracr\"]\nmethods = [\"random\", \"exact\", \"eap\", \"acdc\"]\ndiscovery_examples = 16\nevaluation_examples = 16\n";

#[test]
fn a_tracr_group_takes_its_tasks_metric_and_may_patch_every_edge() {
    let config = parse(&format!("name = \"t\"\n{GROUP}metric_overrides = {{ acdc = \"l2\" }}\n")).unwrap();
    assert!(config.cells.iter().all(|c| c.task == CellTask::Tracr && c.evaluation_metric == Metric::LogitDifference));
    let metrics: Vec<Metric> = config.cells.iter().map(|c| c.metric).collect();
    assert_eq!(metrics, [Metric::LogitDifference, Metric::LogitDifference, Metric::LogitDifference, Metric::L2]);
    let numerical = parse(&GROUP.replace("tracr-reverse", "tracr-xproportion").replace("[[group]]", "name = \"t\"\n[[group]]")).unwrap();
    assert!(numerical.cells.iter().all(|c| c.metric == Metric::Value && c.evaluation_metric == Metric::Value));

    let err = parse(&format!("name = \"t\"\nmetric = \"kl\"\n{GROUP}")).unwrap_err().to_string();
    assert!(err.contains("group[0].tasks[0]") && err.contains("task.json"), "{err}");
    let err = parse(&format!("name = \"t\"\n{}", GROUP.replace("task:tracr-reverse", "task:ioi"))).unwrap_err().to_string();
    assert!(err.contains("group[0].model") && err.contains("task.json"), "{err}");
    let text_group = "[[group]]\nmodel = \"task:ioi\"\ntasks = [\"ioi\"]\nmethods = [\"exact\"]\ndiscovery_examples = 4\nevaluation_examples = 4\n";
    let err = parse(&format!("name = \"t\"\n{text_group}")).unwrap_err().to_string();
    assert!(err.contains("not a sweep method") && err.contains("except on tracr models"), "{err}");
}

#[test]
fn tracr_cells_are_judged_against_the_true_edges() {
    let root = std::env::temp_dir().join(format!("circuitbench-ground-truth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let config_path = root.join("gt.toml");
    let planted = "[[group]]\nmodel = \"task:ioi-planted\"\ntasks = [\"ioi\"]\nmethods = [\"eap\"]\ndiscovery_examples = 8\nevaluation_examples = 8\n";
    std::fs::write(&config_path, format!("name = \"gt\"\nbatch_size = 32\ninterval_resamples = 50\n{GROUP}metric_overrides = {{ acdc = \"l2\" }}\n{planted}"))
        .unwrap();
    let config = Config::load(&config_path).unwrap();
    let paths = SweepPaths { config: config_path, results: root.join("results"), tasks: workspace().join("tasks") };
    let dir = bench::run_sweep::<Autodiff<CpuBackend>>(&config, &paths, "cpu", &Default::default(), &mut |_| {}).unwrap();

    let summary = tables::read_csv(&dir.join("summary.csv")).unwrap();
    let row = |method: &str| summary.iter().find(|r| r["method"] == method && r["model"] == "task:tracr-reverse").unwrap().clone();
    // 16 examples, each read at positions 1, 2, 4 and 5.
    assert_eq!(row("eap")["discovery_examples"], 64);
    assert_eq!(row("eap")["truth"], "patching");
    assert_eq!(row("eap")["truth_edges"], 2, "AutoCircuit's reverse circuit");
    for method in ["exact", "eap"] {
        assert_eq!(row(method)["auroc_patching"].as_f64(), Some(1.0), "{method} ranks the two true edges first");
        assert_eq!(row(method)["best_f1"].as_f64(), Some(1.0), "{method}: some budget's circuit is the true one");
    }
    let random = row("random")["auroc_patching"].as_f64().unwrap();
    assert!(random < 0.9, "seeded random scores do not find the circuit: {random}");

    // A text task on a trained model with a planted circuit is scored against it too.
    let planted = summary.iter().find(|r| r["model"] == "task:ioi-planted").unwrap();
    assert_eq!(planted["truth"], "patching");
    assert!(planted["auroc_patching"].as_f64().is_some_and(|a| a > 0.5), "{planted:?}");
    // ground-truth.csv: a row per method, two columns per model and task.
    let truth = tables::read_csv(&dir.join("ground-truth.csv")).unwrap();
    assert_eq!(truth.iter().map(|r| r["method"].as_str().unwrap()).collect::<Vec<_>>(), ["random", "exact", "eap", "acdc"]);
    let acdc = truth.iter().find(|r| r["method"] == "acdc").unwrap();
    let reverse = |what: &str| format!("task:tracr-reverse/tracr {what}");
    assert_eq!((acdc[&reverse("auroc")].as_f64(), acdc[&reverse("best_f1")].as_f64()), (Some(1.0), Some(1.0)), "{acdc:?}");
    let eap = truth.iter().find(|r| r["method"] == "eap").unwrap();
    assert_eq!(eap["task:ioi-planted/ioi auroc"].as_f64(), planted["auroc_patching"].as_f64(), "{eap:?}");
    assert!(acdc["task:ioi-planted/ioi auroc"].is_null(), "no acdc cell on the planted model: {acdc:?}");

    let curves = tables::read_csv(&dir.join("curves.csv")).unwrap();
    let full = curves.iter().find(|r| r["method"] == "exact" && r["selection"] == "absolute" && r["fraction"].as_f64() == Some(1.0)).unwrap();
    // The full graph holds both true edges among its 77.
    assert_eq!((full["recall"].as_f64(), full["precision"].as_f64()), (Some(1.0), Some(0.025974)), "{full:?}");
    let svg = std::fs::read_to_string(dir.join("plots").join("truth-task_tracr-reverse.svg")).unwrap();
    assert_eq!(svg.matches(r#"class="method""#).count(), 4, "a line per method");
    std::fs::remove_dir_all(&root).unwrap();
}
