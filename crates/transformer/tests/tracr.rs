//! tracr-compiled models: every committed export's forward pass equals tracr's own outputs on its
//! stored samples, attention is bidirectional (so no prefix may be skipped), rows are read where
//! asked, and a config the architecture cannot be is refused by field.

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use transformer::load::task_models_dir;
use transformer::tracr::{TracrConfig, TracrOutput};
use transformer::{Batch, BatchError, CpuBackend, LoadError, LoadedModel, ModelSpec, PrefixError, Readout};

type B = CpuBackend;

/// Every committed tracr model directory.
fn tracr_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(task_models_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("tracr-")))
        .collect();
    dirs.sort();
    dirs
}

fn load(name: &str) -> LoadedModel<B> {
    ModelSpec::parse(&format!("task:{name}")).unwrap().materialise().unwrap().load(&Default::default()).unwrap()
}

fn values(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

#[derive(serde::Deserialize)]
struct Samples {
    ids: Vec<Vec<u32>>,
    outputs: Vec<Vec<Vec<f32>>>,
    /// Labels (categorical) or numbers (numerical); null at BOS.
    decoded: Vec<Vec<serde_json::Value>>,
}

#[test]
fn every_export_reproduces_tracrs_outputs_on_its_samples() {
    let dirs = tracr_dirs();
    assert!(dirs.len() >= 6, "six or more compiled programs are committed, found {dirs:?}");
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = load(&name);
        let config = TracrConfig::read(&dir.join("config.json")).unwrap();
        let samples: Samples = serde_json::from_str(&std::fs::read_to_string(dir.join("samples.json")).unwrap()).unwrap();
        assert!(samples.ids.len() >= 16, "{name}: a sample of inputs");
        let batch = Batch::new(&samples.ids, &model.model.config, &Default::default()).unwrap();
        let logits = values(model.model.forward(&batch, &Readout::All));
        let n_out = config.output_labels.len();
        let len = batch.max_len();
        let mut worst = 0f32;
        for (row, (outputs, decoded)) in samples.outputs.iter().zip(&samples.decoded).enumerate() {
            for (pos, want) in outputs.iter().enumerate() {
                let got = &logits[(row * len + pos) * n_out..(row * len + pos + 1) * n_out];
                for (g, w) in got.iter().zip(want) {
                    worst = worst.max((g - w).abs());
                }
                if let (Some(label), TracrOutput::Categorical) = (decoded[pos].as_str(), config.output) {
                    let argmax = (0..n_out).max_by(|&a, &b| got[a].total_cmp(&got[b])).unwrap();
                    assert_eq!(&config.output_labels[argmax], label, "{name}: input {row} position {pos} decodes as tracr's");
                }
            }
        }
        assert!(worst <= 1e-4, "{name}: outputs differ from tracr's by {worst}");
    }
}

#[test]
fn attention_is_bidirectional_and_rows_are_read_where_asked() {
    let model = load("tracr-reverse");
    let vocab = |t: &str| TracrConfig::read(&task_models_dir().join("tracr-reverse/config.json")).unwrap().vocab[t];
    let seq = |tokens: &[&str]| tokens.iter().map(|t| vocab(t)).collect::<Vec<u32>>();
    let (a, b) = (seq(&["BOS", "1", "2", "3", "1", "2"]), seq(&["BOS", "1", "2", "3", "1", "3"]));
    let batch = Batch::new(&[a.clone(), b], &model.model.config, &Default::default()).unwrap();
    let all = values(model.model.forward(&batch, &Readout::All));
    let n_out = model.model.config.n_outputs;
    // Position 1 reads the last token (the reversal): changing only that token changes it.
    let first = |row: usize| &all[(row * 6 + 1) * n_out..(row * 6 + 2) * n_out];
    assert!(first(0).iter().zip(first(1)).any(|(x, y)| (x - y).abs() > 0.5), "{:?} vs {:?}", first(0), first(1));
    // Read at position 1, a row's logits are the full pass's there.
    let at_one = values(model.model.forward(&batch.clone().reading_at(&[1, 1]).unwrap(), &Readout::ReadPosition));
    assert_eq!(&at_one[..n_out], first(0));
    assert_eq!(&at_one[n_out..], first(1));
    // No prefix can be fixed when every position reads the suffix.
    let err = batch.clone().with_prefix(tiny_causal_prefix()).unwrap_err();
    assert_eq!(err, PrefixError::Bidirectional);
    // A read position outside the row is refused.
    let err = batch.reading_at(&[1, 6]).unwrap_err();
    assert_eq!(err, BatchError::ReadOutside { index: 1, read: 6, len: 6 });
    assert!(err.to_string().contains("row 1 is read at position 6, outside its 6 tokens"), "{err}");
    let err = Batch::<B>::new(&[seq(&["BOS", "1"])], &model.model.config, &Default::default()).unwrap().reading_at(&[1, 1]).unwrap_err();
    assert_eq!(err, BatchError::ReadRows { reads: 2, rows: 1 });
    let _ = a;
}

/// A prefix cache of two rows from a causal fixture (any will do: the bidirectional batch refuses
/// it before looking at it).
fn tiny_causal_prefix() -> transformer::PrefixCache<B> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny");
    let model = transformer::LocalModel::Dir(dir).load::<B>(&Default::default()).unwrap().model;
    let batch = Batch::new(&[vec![3, 4, 5], vec![3, 4, 6]], &model.config, &Default::default()).unwrap();
    model.prefix_cache(&batch, &[2, 2])
}

#[test]
fn configs_a_compiled_model_cannot_have_are_refused_by_field() {
    let source = task_models_dir().join("tracr-xproportion/config.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&source).unwrap()).unwrap();
    let tmp = std::env::temp_dir().join(format!("circuitbench-tracr-config-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let cases: [(&str, serde_json::Value, &str); 5] = [
        ("activation_function", serde_json::json!("gelu"), "ReLU"),
        ("layer_norm", serde_json::json!(true), "no normalisation"),
        ("attn_scale", serde_json::json!(1.0), "1/√head_dim"),
        ("bos_token_id", serde_json::json!(99), "outside the vocabulary"),
        ("output_labels", serde_json::json!(["a", "b"]), "one column"),
    ];
    for (field, value, says) in cases {
        let mut bad = json.clone();
        bad[field] = value;
        let path = tmp.join("config.json");
        std::fs::write(&path, serde_json::to_string(&bad).unwrap()).unwrap();
        let err = TracrConfig::read(&path).unwrap_err();
        assert!(matches!(&err, LoadError::ConfigField { field: f, .. } if f == field), "{field}: {err}");
        assert!(err.to_string().contains(says) && err.to_string().contains("config.json"), "{field}: {err}");
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}
