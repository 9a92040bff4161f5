//! Models made here: `save_hf_dir` is the exact inverse of the loaders (a saved model loads back
//! with identical logits, from files transformers itself wrote), and `Transformer::init` is seeded.

mod common;

use std::path::PathBuf;

use common::*;
use transformer::checkpoint::{hf_config, save_hf_dir};
use transformer::{Batch, LocalModel, Readout, Transformer};

fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("circuitbench-checkpoint-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn logits(model: &Transformer<B>) -> Vec<f32> {
    let seqs = vec![vec![1, 5, 9, 2, 7], vec![3, 4, 0]];
    let batch = Batch::new(&seqs, &model.config, &Default::default()).unwrap();
    values(model.forward(&batch, &Readout::All))
}

#[test]
fn saved_fixtures_load_back_identically() {
    for name in ["gpt2-tiny", "llama-tiny", "qwen2-tiny"] {
        let original = load_fixture(name);
        let dir = scratch(name);
        save_hf_dir(&original.model, &dir).unwrap();
        std::fs::copy(fixture(name).join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
        let reloaded = LocalModel::Dir(dir.clone()).load::<B>(&Default::default()).unwrap();
        assert_eq!(reloaded.model.config, original.model.config, "{name}: config round trip");
        assert_eq!(logits(&reloaded.model), logits(&original.model), "{name}: logits round trip");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn init_is_seeded_and_loads_back() {
    let config = load_fixture("llama-tiny").model.config;
    let device = Default::default();
    let a = Transformer::<B>::init(config.clone(), 3, &device).unwrap();
    let b = Transformer::<B>::init(config.clone(), 3, &device).unwrap();
    let c = Transformer::<B>::init(config.clone(), 4, &device).unwrap();
    assert_eq!(logits(&a), logits(&b));
    assert_ne!(logits(&a), logits(&c));
    // Weights are small (std 0.02) and norms start at one.
    let embedding = values(a.token_embedding.val());
    let std = (embedding.iter().map(|x| x * x).sum::<f32>() / embedding.len() as f32).sqrt();
    assert!((std - 0.02).abs() < 0.004, "embedding std {std}");

    let gpt2 = load_fixture("gpt2-tiny").model.config;
    let model = Transformer::<B>::init(gpt2, 1, &device).unwrap();
    let dir = scratch("init-gpt2");
    save_hf_dir(&model, &dir).unwrap();
    std::fs::copy(fixture("gpt2-tiny").join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let reloaded = LocalModel::Dir(dir.clone()).load::<B>(&device).unwrap();
    assert_eq!(logits(&reloaded.model), logits(&model));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn configs_that_have_no_hugging_face_form_are_refused() {
    let mut config = load_fixture("llama-tiny").model.config;
    config.positions = transformer::config::PositionEncoding::Rope { theta: 10_000.0, layout: transformer::config::RopeLayout::Interleaved, scaling: None };
    let err = hf_config(&config).unwrap_err().to_string();
    assert!(err.contains("half-split"), "{err}");
}
