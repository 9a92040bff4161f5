//! The GPU timing tracks' pieces, checked on the CPU: their configs parse with generated pairs at
//! MIB's sizes, generated splits grow past the committed files and stay disjoint, and a
//! random-weight model of GPT-2's shape runs a sweep cell end to end.

use std::path::{Path, PathBuf};

use bench::{Config, Datasets, SweepPaths};
use burn::backend::Autodiff;
use tasks::{Split, TaskKind};
use transformer::CpuBackend;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn gpu_track_configs_ask_for_mib_sizes_on_random_models() {
    let gpt2 = Config::load(&workspace().join("configs/gpu-gpt2.toml")).unwrap();
    assert_eq!(gpt2.datasets, Datasets::Generated { train: 1000, validation: 1000 });
    assert_eq!(gpt2.cells.len(), 7, "every sweep method");
    assert!(gpt2.cells.iter().all(|c| c.model == "random:gpt2" && c.task == bench::CellTask::Text(TaskKind::Ioi)));
    let llama = Config::load(&workspace().join("configs/gpu-llama-8b.toml")).unwrap();
    assert!(llama.batch_size >= 8 && llama.cells.iter().all(|c| c.model == "random:llama-3.1-8b"));
}

#[test]
fn generated_splits_grow_past_the_committed_ones_and_stay_disjoint() {
    let dir = workspace().join("tasks");
    let generated = Datasets::Generated { train: 2500, validation: 1000 };
    let train = generated.load(TaskKind::Ioi, Split::Train, &dir).unwrap();
    let validation = generated.load(TaskKind::Ioi, Split::Validation, &dir).unwrap();
    assert_eq!((train.len(), validation.len()), (2500, 1000));
    let seen: std::collections::HashSet<&str> = train.iter().map(|e| e.clean.as_str()).collect();
    assert!(validation.iter().all(|e| !seen.contains(e.clean.as_str())), "a validation prompt is also a discovery prompt");
    let committed = Datasets::Committed.load(TaskKind::Ioi, Split::Train, &dir).unwrap();
    assert!(committed.iter().zip(&train).all(|(c, g)| c.clean == g.clean && c.correct == g.correct), "committed train is a prefix");
}

#[test]
fn a_random_gpt2_shaped_model_runs_a_sweep_cell() {
    let root = std::env::temp_dir().join(format!("circuitbench-gpu-track-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let config_path = root.join("tiny-gpu.toml");
    let text = "name = \"tiny-gpu\"\nbatch_size = 2\ndatasets = \"generated\"\nfractions = [0.1, 1.0]\n\n[[group]]\nmodel = \"random:gpt2\"\ntasks = [\"ioi\"]\nmethods = [\"eap\"]\ndiscovery_examples = 2\nevaluation_examples = 2\n";
    std::fs::write(&config_path, text).unwrap();
    let config = Config::load(&config_path).unwrap();
    let paths = SweepPaths { config: config_path, results: root.join("results"), tasks: workspace().join("tasks") };
    let dir = bench::run_sweep::<Autodiff<CpuBackend>>(&config, &paths, "cpu", &Default::default(), &mut |_| {}).unwrap();
    let rows = tables::read_csv(&dir.join("summary.csv")).unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["model"], "random:gpt2");
    assert_eq!(row["evaluation_examples"], 2);
    assert!(row["cpr"].as_f64().is_some_and(f64::is_finite), "{row:?}");
    assert!(row["peak_gpu_memory_mib"].is_null(), "a CPU run samples no GPU: {row:?}");
    std::fs::remove_dir_all(&root).unwrap();
}
