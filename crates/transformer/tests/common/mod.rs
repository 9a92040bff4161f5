//! Helpers shared by the transformer crate's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use transformer::{Batch, CpuBackend, LoadedModel, LocalModel, Readout};

pub type B = CpuBackend;

/// Path of a committed fixture directory.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Loads a committed Hugging Face fixture on the CPU.
pub fn load_fixture(name: &str) -> LoadedModel<B> {
    LocalModel::Dir(fixture(name)).load::<B>(&Default::default()).expect("fixture loads")
}

/// The expected values written by `make_hf_fixtures.py`.
pub fn expected(name: &str) -> serde_json::Value {
    let path = fixture(name).join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Flattens any tensor to a Vec<f32>.
pub fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Token ids from a JSON array.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Flattened f32 values of a nested JSON array.
pub fn flat(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(flat).collect(),
        serde_json::Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not a number: {other}"),
    }
}

/// Last-token logits of each sequence run alone, and of all of them in one right-padded batch.
pub fn single_and_batched(model: &LoadedModel<B>, seqs: &[Vec<u32>]) -> (Vec<f32>, Vec<f32>) {
    let device = Default::default();
    let config = &model.model.config;
    let single: Vec<f32> =
        seqs.iter().flat_map(|s| values(model.model.forward(&Batch::new(std::slice::from_ref(s), config, &device).unwrap(), &Readout::ReadPosition))).collect();
    let batched = values(model.model.forward(&Batch::new(seqs, config, &device).unwrap(), &Readout::ReadPosition));
    (single, batched)
}
