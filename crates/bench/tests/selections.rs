//! The shared-task selections as sweep methods: `bootstrap:<method>` and `ensemble-<how>:<a>+<b>`
//! parse in configs (bad ones name the key), run as cells whose bootstrap circuits take the
//! preferred edges first, and appear as rows of the pivots.

use std::path::{Path, PathBuf};

use attribution::{Discovery, Method, MethodOutput, fit_ablation, run_method};
use bench::{Config, SweepModel, SweepPaths, run_cell};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use evaluator::{Bootstrap, Candidates, EvalOptions, EvalPlan, evaluate_candidates};
use patching::Metric;
use tasks::{PrepareOptions, Split, TaskKind};
use transformer::CpuBackend;

type B = Autodiff<CpuBackend>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const GROUP: &str = "[[group]]\nmodel = \"m\"\ntasks = [\"ioi\"]\nmethods = [\"eap\", METHOD]\ndiscovery_examples = 1\nevaluation_examples = 1\n";

fn parse(method: &str) -> Result<Config, String> {
    Config::parse(&format!("name = \"x\"\n{}", GROUP.replace("METHOD", &format!("\"{method}\""))), "c.toml").map_err(|e| e.to_string())
}

#[test]
fn configs_read_bootstrap_and_ensemble_names_and_name_the_key_of_bad_ones() {
    for name in ["bootstrap:eap-ig-inputs", "ensemble-mean:eap-ig-inputs+gim", "ensemble-min:eap+ifr+random", "ensemble-max:eap-ig-activations+clean-corrupted"]
    {
        let config = parse(name).unwrap();
        assert_eq!(config.cells[1].method, name);
        assert_eq!(config.cells[1].key(), format!("m|ioi|{name}"));
    }
    for (name, says) in [
        ("bootstrap:magic", "unknown method `magic`"),
        ("bootstrap:ifr", "cannot be bootstrapped"),
        ("ensemble-mean:", "lists no methods"),
        ("ensemble-mean:gim", "at least two methods"),
        ("ensemble-mean:eap+magic", "unknown method `magic`"),
        ("ensemble-max:eap+ensemble-min:gim+ifr", "itself built from other methods"),
        ("ensemble-sum:eap+gim", "`sum` is not a combiner"),
        // Exact patching of every edge is no sweep method, alone or inside another.
        ("bootstrap:exact", "not a sweep method"),
        ("ensemble-mean:eap+exact", "not a sweep method"),
    ] {
        let err = parse(name).unwrap_err();
        assert!(err.contains("c.toml: `group[0].methods[1]`") && err.contains(says), "{name}: {err}");
    }
    // Overrides name composite methods by their full names.
    let text = format!("name = \"x\"\n{}[group.discovery_overrides]\n\"bootstrap:eap\" = 1\n", GROUP.replace("METHOD", "\"bootstrap:eap\""));
    assert!(Config::parse(&text, "c.toml").is_ok());
}

#[test]
fn the_default_track_runs_the_selections_on_every_task_model() {
    let config = Config::load(&workspace().join("configs/circuit.toml")).unwrap();
    let selections =
        ["bootstrap:eap-ig-inputs", "ensemble-mean:eap+eap-ig-inputs+gim", "ensemble-min:eap+eap-ig-inputs+gim", "ensemble-max:eap+eap-ig-inputs+gim"];
    let task_models: std::collections::BTreeSet<&str> = config.cells.iter().map(|c| c.model.as_str()).filter(|m| m.starts_with("task:")).collect();
    assert_eq!(task_models.len(), 4);
    for model in task_models {
        for method in selections {
            assert!(config.cells.iter().any(|c| c.model == model && c.method == method), "{model} lacks {method}");
        }
    }
}

const SWEEP: &str = r#"
name = "selections"
ig_steps = 2
batch_size = 8
fractions = [0.01, 0.05, 0.2, 1.0]

[[group]]
model = "task:arithmetic-addition"
tasks = ["arithmetic-addition"]
methods = ["eap-ig-inputs", "bootstrap:eap-ig-inputs", "ensemble-mean:eap+eap-ig-inputs+gim"]
discovery_examples = 12
evaluation_examples = 16
"#;

#[test]
fn selections_run_as_cells_and_are_rows_of_the_pivots() {
    let root = std::env::temp_dir().join(format!("circuitbench-bench-selections-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let config_path = root.join("selections.toml");
    std::fs::write(&config_path, SWEEP).unwrap();
    let config = Config::load(&config_path).unwrap();
    let paths = SweepPaths { config: config_path, results: root.join("results"), tasks: workspace().join("tasks") };
    let dir = bench::run_sweep::<B>(&config, &paths, "cpu", &Default::default(), &mut |_| {}).unwrap();
    for table in ["cpr.csv", "cmd.csv"] {
        let text = std::fs::read_to_string(dir.join(table)).unwrap();
        let rows: Vec<&str> = text.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
        assert_eq!(rows, ["eap-ig-inputs", "bootstrap:eap-ig-inputs", "ensemble-mean:eap+eap-ig-inputs+gim"], "{table}:\n{text}");
    }

    // The bootstrap cell's curve is the evaluator's on its scores with the preferred edges first,
    // and not the curve of the same scores by score alone: the preferred mask reached the evaluator.
    let cell = &config.cells[1];
    let model = SweepModel::new(transformer::load_model::<B>(&cell.model, &Default::default()).unwrap()).unwrap();
    let result = run_cell(&config, cell, &model, &paths.tasks, "test".into(), false, &mut |_| {}).unwrap();
    let split = |split: Split, n: usize| {
        let mut examples = tasks::load_split(&paths.tasks, TaskKind::ArithmeticAddition, split).unwrap();
        examples.truncate(n);
        tasks::prepare(&examples, &model.tokenizer, &model.model.config, &PrepareOptions::default()).unwrap().pairs
    };
    let (discovery, evaluation) = (split(Split::Train, 12), split(Split::Validation, 16));
    let inner = model.model.valid();
    let ablation = fit_ablation(config.ablation, &model.model, &discovery, 8, patching::Metric::LogitDifference).unwrap();
    let inputs = Discovery {
        model: &model.model,
        graph: &model.graph,
        pairs: &discovery,
        ablation: &ablation,
        metric: Metric::LogitDifference,
        batch_size: 8,
        edges_per_pass: 16,
        fractions: &config.fractions,
        positions: patching::Positions::Suffix,
    };
    let MethodOutput::Scores(scores) = run_method(&Method::parse(&cell.method, 2, 0).unwrap(), &inputs, &mut |_| {}).unwrap() else { panic!("scores") };
    let preferred = scores.preferred.as_ref().expect("a bootstrap prefers edges");
    let plan = EvalPlan {
        fractions: &config.fractions,
        options: EvalOptions { batch_size: 8, masks_per_pass: 1, metric: Metric::LogitDifference, ..EvalOptions::default() },
        bootstrap: Bootstrap { resamples: config.interval_resamples, seed: config.seed },
    };
    let evaluate = |candidates| evaluate_candidates(&inner, &model.graph, &evaluation, candidates, &ablation, plan, &mut |_, _| {}).unwrap().curves;
    let first = evaluate(Candidates::PreferredScores { scores: &scores.values, preferred });
    let alone = evaluate(Candidates::Scores(&scores.values));
    assert!((first.cpr - result.curves.cpr).abs() < 1e-9 && (first.cmd - result.curves.cmd).abs() < 1e-9, "{first:?} vs {:?}", result.curves);
    assert!(first.curve.iter().zip(&alone.curve).any(|(a, b)| a.pruned_edges != b.pruned_edges || a.m_circuit != b.m_circuit), "preferring changed no circuit");
    std::fs::remove_dir_all(&root).unwrap();
}
