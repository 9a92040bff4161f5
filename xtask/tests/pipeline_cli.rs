//! `xtask attribute` then `xtask eval` give the bench's numbers for the same cell: one discovery
//! path (all discovery pairs, the ablation fitted once on them) and one evaluation pipeline.

use std::path::{Path, PathBuf};
use std::process::Command;

use bench::{Config, SweepModel, run_cell};
use burn::backend::Autodiff;

fn xtask(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).env_remove("RUST_BACKTRACE").output().expect("xtask runs");
    assert!(out.status.success(), "xtask {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("circuitbench-pipeline-{}-{name}", std::process::id()))
}

#[test]
fn attribute_and_eval_reproduce_a_bench_cell_under_mean_ablation() {
    let config = Config::parse(
        "name = \"cli\"\nablation = \"mean\"\nbatch_size = 4\nfractions = [0.01, 0.1, 0.5, 1.0]\n\n[[group]]\nmodel = \"task:ioi\"\ntasks = [\"ioi\"]\nmethods = [\"eap\"]\ndiscovery_examples = 12\nevaluation_examples = 8\n",
        "cli.toml",
    )
    .unwrap();
    let model = SweepModel::new(transformer::load_model::<Autodiff<transformer::CpuBackend>>("task:ioi", &Default::default()).unwrap()).unwrap();
    let tasks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tasks");
    let cell = run_cell(&config, &config.cells[0], &model, &tasks, "cli".into(), false, &mut |_| {}).unwrap();

    let scores = scratch("eap.json");
    let common = ["--model", "task:ioi", "--task", "ioi", "--ablation", "mean", "--batch", "4"];
    xtask(&[&["attribute", "--method", "eap", "--examples", "12", "--out", scores.to_str().unwrap()], &common[..]].concat());
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&scores).unwrap()).unwrap();
    for (edge, score) in &cell.top_edges {
        let written = file["edges"][edge]["score"].as_f64().unwrap();
        assert!((written - *score as f64).abs() <= 1e-6 * (*score as f64).abs().max(1e-3), "{edge}: bench {score}, attribute {written}");
    }

    let printed = xtask(
        &[&["eval", "--circuit", scores.to_str().unwrap(), "--examples", "8", "--reference-examples", "12", "--fractions", "0.01,0.1,0.5,1"], &common[..]]
            .concat(),
    );
    let summary = printed.lines().find(|l| l.starts_with("CPR ")).unwrap_or_else(|| panic!("no CPR line in:\n{printed}"));
    let words: Vec<&str> = summary.split_whitespace().collect();
    // `CPR 0.7434 [0.701, 0.782]`: the number and its interval's ends.
    let after = |key: &str| -> [f64; 3] {
        let i = words.iter().position(|w| *w == key).unwrap_or_else(|| panic!("no {key} in {summary}"));
        [1, 2, 3].map(|k| words[i + k].trim_matches(|c| c == '[' || c == ']' || c == ',').parse().unwrap_or_else(|e| panic!("{summary}: {e}")))
    };
    let (cpr, cmd) = (after("CPR"), after("CMD"));
    assert!(
        (cpr[0] - cell.curves.cpr).abs() < 1e-4 && (cmd[0] - cell.curves.cmd).abs() < 1e-4,
        "eval: {summary}; bench: CPR {} CMD {}",
        cell.curves.cpr,
        cell.curves.cmd
    );
    // Both draw the config's default resamples with seed 0 over the same pairs: the same intervals
    // (printed to three decimals).
    for (printed, bench) in [(cpr, cell.curves.cpr_interval.unwrap()), (cmd, cell.curves.cmd_interval.unwrap())] {
        assert!((printed[1] - bench.low).abs() < 1.5e-3 && (printed[2] - bench.high).abs() < 1.5e-3, "eval: {summary}; bench: {bench:?}");
    }
    let _ = std::fs::remove_file(scores);
}

/// A method that gives circuits (ACDC) writes one circuit file per MIB budget, into a directory
/// `attribute` creates, and its per-edge scores beside them, which `eval` ranks by.
#[test]
fn attribute_writes_acdc_circuits_and_their_scores() {
    let dir = scratch("acdc");
    let out = dir.join("acdc.json");
    let printed = xtask(&[
        "attribute",
        "--model",
        "task:arithmetic-addition",
        "--task",
        "arithmetic-addition",
        "--method",
        "acdc",
        "--examples",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(printed.contains("(scores)"), "{printed}");
    let read = |path: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
    };
    let in_graph = |v: &serde_json::Value| v["edges"].as_object().unwrap().values().filter(|e| e["in_graph"].as_bool() == Some(true)).count();
    let full = read(&dir.join("acdc.1.json"));
    let total = full["edges"].as_object().unwrap().len();
    assert_eq!(in_graph(&full), total, "the 100% budget is the whole graph");
    assert!(in_graph(&read(&dir.join("acdc.0.1.json"))) < total);
    let scores = read(&out);
    assert!(scores["edges"].as_object().unwrap().values().any(|e| e["score"].as_f64().is_some_and(|s| s != 0.0)), "effect sizes are written");
    let evaluated =
        xtask(&["eval", "--model", "task:arithmetic-addition", "--task", "arithmetic-addition", "--circuit", out.to_str().unwrap(), "--examples", "8"]);
    assert!(evaluated.lines().any(|l| l.starts_with("CPR ")), "{evaluated}");
    std::fs::remove_dir_all(&dir).unwrap();
}
