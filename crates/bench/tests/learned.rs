//! A mask-learning method as a sweep cell: its step log reaches the cell, `training.csv` and
//! summary.csv's `mask_steps` / `steps_per_second`, and a method without one writes none.

use std::path::{Path, PathBuf};

use bench::{Config, SweepPaths};
use burn::backend::Autodiff;
use transformer::CpuBackend;

type B = Autodiff<CpuBackend>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const SWEEP: &str = r#"
name = "learned"
batch_size = 8
fractions = [0.05, 0.2, 1.0]

[[group]]
model = "task:arithmetic-addition"
tasks = ["arithmetic-addition"]
methods = ["eap", "pgb-ct-preserve"]
discovery_examples = 16
evaluation_examples = 16
"#;

#[test]
fn a_learned_mask_cell_writes_its_steps() {
    let root = std::env::temp_dir().join(format!("circuitbench-bench-learned-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let config_path = root.join("learned.toml");
    std::fs::write(&config_path, SWEEP).unwrap();
    let config = Config::load(&config_path).unwrap();
    let paths = SweepPaths { config: config_path, results: root.join("results"), tasks: workspace().join("tasks") };
    let dir = bench::run_sweep::<B>(&config, &paths, "cpu", &Default::default(), &mut |_| {}).unwrap();

    // PGB-CT: 30 epochs of two batches of 8.
    let steps = attribution::pgbct::EPOCHS * 2;
    let training = std::fs::read_to_string(dir.join("training.csv")).unwrap();
    let mut lines = training.lines();
    assert_eq!(lines.next().unwrap(), bench::report::TRAINING_COLUMNS.join(","));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), steps, "one row per step of the learned-mask cell, none for eap");
    assert!(rows.iter().all(|r| r[2] == "pgb-ct-preserve"));
    assert_eq!((rows[0][3], rows[0][4]), ("0", "1"), "epoch 0, step 1 first");
    assert_eq!((rows[steps - 1][3], rows[steps - 1][4]), ("29", steps.to_string().as_str()));

    let summary = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let header: Vec<&str> = summary.lines().next().unwrap().split(',').collect();
    let column = |row: &str, name: &str| row.split(',').nth(header.iter().position(|&h| h == name).unwrap()).unwrap().to_string();
    let [eap, pgb] = [1, 2].map(|i| summary.lines().nth(i).unwrap().to_string());
    assert_eq!((column(&eap, "mask_steps"), column(&eap, "steps_per_second")), (String::new(), String::new()));
    assert_eq!(column(&pgb, "mask_steps"), steps.to_string());
    assert!(column(&pgb, "steps_per_second").parse::<f64>().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(&root);
}
