//! Training really trains: a tiny variant of each model style, run briefly on its task, lowers
//! its loss and raises its accuracy, writes a checkpoint that loads as a model, and is
//! deterministic for a seed.

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use taskmodels::{Progress, Recipe, Style, TrainOptions};
use tasks::{Split, TaskKind};
use transformer::{CpuBackend, LocalModel};

type B = CpuBackend;

fn tasks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tasks")
}

fn options(task: TaskKind, recipe: Recipe, label: &str) -> TrainOptions {
    let out_dir = std::env::temp_dir().join(format!("circuitbench-train-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    TrainOptions { task, recipe, seed: 11, tasks_dir: tasks_dir(), out_dir }
}

fn run(options: &TrainOptions) -> (taskmodels::Report, Vec<f64>) {
    let mut losses = Vec::new();
    let report = taskmodels::train::<Autodiff<B>>(options, &Default::default(), &mut |p| {
        if let Progress::Step { loss, .. } = p {
            losses.push(loss);
        }
    })
    .unwrap();
    (report, losses)
}

#[test]
fn a_short_run_lowers_loss_and_raises_accuracy() {
    // IOI: the loss falls fast as the model learns to answer with a name from the prompt.
    let task = TaskKind::Ioi;
    for (style, label) in [(Style::Gpt2, "gpt2"), (Style::Llama, "llama")] {
        let recipe = Recipe { style, steps: 200, learning_rate: 1e-2, ..taskmodels::recipe(task).tiny() };
        let options = options(task, recipe, label);
        let (report, losses) = run(&options);
        assert_eq!(losses.len(), 200);
        assert!(report.last_loss < report.first_loss - 1.0, "{label}: loss {} → {}", report.first_loss, report.last_loss);
        assert!(report.last_accuracy > report.first_accuracy, "{label}: accuracy {} → {}", report.first_accuracy, report.last_accuracy);

        // The written directory is a model like any other, scored the same after reloading.
        let loaded = LocalModel::Dir(options.out_dir.clone()).load::<B>(&Default::default()).unwrap();
        let validation = tasks::load_split(&tasks_dir(), task, Split::Validation).unwrap();
        let rescored = taskmodels::evaluate(&loaded.model, &loaded.tokenizer, &validation).unwrap();
        assert_eq!(rescored, report.validation);
        assert!(options.out_dir.join("README.md").is_file());
        std::fs::remove_dir_all(&options.out_dir).unwrap();
    }
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let recipe = Recipe { steps: 5, ..taskmodels::recipe(TaskKind::Mcqa).tiny() };
    let (first, second) = (options(TaskKind::Mcqa, recipe.clone(), "det-a"), options(TaskKind::Mcqa, recipe, "det-b"));
    let (a, losses_a) = run(&first);
    let (b, losses_b) = run(&second);
    assert_eq!(losses_a, losses_b);
    assert_eq!(a.validation, b.validation);
    let weights = |o: &TrainOptions| std::fs::read(o.out_dir.join("model.safetensors")).unwrap();
    assert_eq!(weights(&first), weights(&second), "same seed, same weights byte for byte");
    for o in [first, second] {
        std::fs::remove_dir_all(&o.out_dir).unwrap();
    }
}

#[test]
fn every_answer_of_every_task_is_one_token() {
    for task in TaskKind::ALL {
        let options = options(task, Recipe { steps: 1, ..taskmodels::recipe(task).tiny() }, &format!("vocab-{task}"));
        run(&options);
        let tokenizer = transformer::Tokenizer::from_file(&options.out_dir.join("tokenizer.json")).unwrap();
        for n in 0..=198 {
            assert_eq!(tokenizer.encode(&n.to_string()).unwrap().len(), 1, "{task}: {n}");
        }
        for split in Split::ALL {
            for e in tasks::load_split(&tasks_dir(), task, split).unwrap() {
                for answer in [&e.correct, &e.incorrect] {
                    assert_eq!(tokenizer.encode(answer).unwrap().len(), 1, "{task} {split} {}: {answer:?}", e.id);
                }
            }
        }
        std::fs::remove_dir_all(&options.out_dir).unwrap();
    }
}
