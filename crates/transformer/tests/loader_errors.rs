//! Every way a checkpoint can be broken gives the right `LoadError`, naming the file, tensor or
//! field at fault, never a panic. Each test copies a fixture into a fresh temporary directory and
//! damages it there.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{Value, json};
use transformer::{Batch, LoadError, LoadedModel, LocalModel, ModelSpec, Readout};

/// A copy of a fixture in its own temporary directory, removed when dropped.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// An empty directory unique to this process and call.
    fn empty() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("circuitbench-loader-errors-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    /// A copy of every file of fixture `name`.
    fn of(name: &str) -> Self {
        let s = Self::empty();
        for entry in fs::read_dir(fixture(name)).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), s.dir.join(entry.file_name())).unwrap();
        }
        s
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn load(&self) -> Result<LoadedModel<B>, LoadError> {
        LocalModel::Dir(self.dir.clone()).load::<B>(&Default::default())
    }

    /// The error loading this directory gives (it must fail).
    fn load_err(&self) -> LoadError {
        load_err(&self.dir)
    }

    /// Rewrites config.json after `edit`.
    fn edit_config(&self, edit: impl FnOnce(&mut Value)) {
        let path = self.path("config.json");
        let mut config: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut config);
        fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    }

    /// Keeps the first `len` bytes of `file`.
    fn truncate(&self, file: &str, len: usize) {
        let path = self.path(file);
        let bytes = fs::read(&path).unwrap();
        assert!(len < bytes.len());
        fs::write(&path, &bytes[..len]).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn load_err(dir: &Path) -> LoadError {
    match LocalModel::Dir(dir.into()).load::<B>(&Default::default()) {
        Ok(_) => panic!("{} loaded but should not have", dir.display()),
        Err(e) => e,
    }
}

/// Asserts that `err`'s message mentions every one of `parts`.
fn assert_mentions(err: &LoadError, parts: &[&str]) {
    let message = err.to_string();
    for part in parts {
        assert!(message.contains(part), "error {message:?} does not mention {part:?}");
    }
}

/// One tensor of a safetensors file, owned so it can be edited.
struct StoredTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Reads the safetensors file at `path`, lets `edit` change its tensors, and writes it back.
fn rewrite_safetensors(path: &Path, edit: impl FnOnce(&mut BTreeMap<String, StoredTensor>)) {
    let bytes = fs::read(path).unwrap();
    let mut tensors: BTreeMap<String, StoredTensor> = SafeTensors::deserialize(&bytes)
        .unwrap()
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, StoredTensor { dtype: view.dtype(), shape: view.shape().to_vec(), data: view.data().to_vec() }))
        .collect();
    edit(&mut tensors);
    let views = tensors.iter().map(|(name, t)| (name.as_str(), TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap()));
    fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// The f32 values of a little-endian F32 tensor.
fn f32_values(t: &StoredTensor) -> Vec<f32> {
    assert_eq!(t.dtype, Dtype::F32);
    t.data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Logits at every position of the fixture's `text`, flattened, for comparing with `text_logits`.
fn text_logits(model: &LoadedModel<B>, expected: &Value) -> Vec<f32> {
    let seq = ids(&expected["text_ids"]);
    let batch = Batch::new(std::slice::from_ref(&seq), &model.model.config, &Default::default()).unwrap();
    values(model.model.forward(&batch, &Readout::All))
}

// ---------------------------------------------------------------- missing files

#[test]
fn missing_directory_names_config_json() {
    let err = load_err(&std::env::temp_dir().join(format!("circuitbench-no-such-dir-{}", std::process::id())));
    assert!(matches!(&err, LoadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound), "{err:?}");
    assert_mentions(&err, &["circuitbench-no-such-dir", "config.json"]);
}

#[test]
fn missing_config_json_is_an_io_error_naming_it() {
    let s = Scratch::of("llama-tiny");
    fs::remove_file(s.path("config.json")).unwrap();
    let err = s.load_err();
    assert!(matches!(err, LoadError::Io { .. }), "{err:?}");
    assert_mentions(&err, &["config.json"]);
}

#[test]
fn missing_tokenizer_json_is_an_io_error_naming_it() {
    let s = Scratch::of("llama-tiny");
    fs::remove_file(s.path("tokenizer.json")).unwrap();
    let err = s.load_err();
    assert!(matches!(err, LoadError::Io { .. }), "{err:?}");
    assert_mentions(&err, &["tokenizer.json"]);
}

#[test]
fn missing_weights_are_an_io_error_naming_the_file() {
    let s = Scratch::of("gpt2-tiny");
    fs::remove_file(s.path("model.safetensors")).unwrap();
    let err = s.load_err();
    assert!(matches!(err, LoadError::Io { .. }), "{err:?}");
    assert_mentions(&err, &["model.safetensors"]);
}

// ---------------------------------------------------------------- config.json

#[test]
fn config_that_is_not_json_is_a_json_error() {
    let s = Scratch::of("llama-tiny");
    fs::write(s.path("config.json"), "{ \"model_type\": \"llama\", ").unwrap();
    let err = s.load_err();
    assert!(matches!(err, LoadError::Json { .. }), "{err:?}");
    assert_mentions(&err, &["config.json", "invalid JSON"]);
}

#[test]
fn config_without_model_type_names_the_field() {
    let s = Scratch::of("llama-tiny");
    s.edit_config(|c| {
        c.as_object_mut().unwrap().remove("model_type");
    });
    let err = s.load_err();
    assert!(matches!(&err, LoadError::ConfigField { field, .. } if field == "model_type"), "{err:?}");
    assert_mentions(&err, &["config.json", "model_type"]);
}

#[test]
fn unknown_model_type_is_an_unknown_architecture() {
    let s = Scratch::of("llama-tiny");
    s.edit_config(|c| c["model_type"] = json!("mamba"));
    let err = s.load_err();
    assert!(matches!(&err, LoadError::UnknownArchitecture { name, .. } if name == "mamba"), "{err:?}");
    assert_mentions(&err, &["config.json", "mamba"]);
}

#[test]
fn wrong_typed_or_invalid_field_is_named() {
    let cases = [
        ("llama-tiny", "hidden_size", json!("big")),
        ("llama-tiny", "num_hidden_layers", json!(-1)),
        ("qwen2-tiny", "tie_word_embeddings", json!("yes")),
        ("llama-tiny", "rope_scaling", json!({"rope_type": "llama3", "factor": "eight"})),
        ("gpt2-tiny", "n_embd", json!(32.5)),
        ("gpt2-tiny", "n_layer", json!(null)),
    ];
    for (fixture_name, field, value) in cases {
        let s = Scratch::of(fixture_name);
        s.edit_config(|c| c[field] = value.clone());
        let err = s.load_err();
        assert!(matches!(&err, LoadError::ConfigField { field: f, .. } if f == field), "{fixture_name}: {field} = {value}: {err:?}");
        assert_mentions(&err, &["config.json", field]);
    }
}

#[test]
fn missing_required_field_is_named() {
    for (fixture_name, field) in [("llama-tiny", "vocab_size"), ("gpt2-tiny", "n_head")] {
        let s = Scratch::of(fixture_name);
        s.edit_config(|c| {
            c.as_object_mut().unwrap().remove(field);
        });
        let err = s.load_err();
        assert!(matches!(&err, LoadError::ConfigField { field: f, .. } if f == field), "{fixture_name}: {err:?}");
        assert_mentions(&err, &["config.json", field, "missing"]);
    }
}

#[test]
fn unsupported_activation_is_a_config_field_error() {
    for (fixture_name, field, value) in [("llama-tiny", "hidden_act", "gelu"), ("gpt2-tiny", "activation_function", "relu")] {
        let s = Scratch::of(fixture_name);
        s.edit_config(|c| c[field] = json!(value));
        let err = s.load_err();
        assert!(matches!(&err, LoadError::ConfigField { field: f, .. } if f == field), "{fixture_name}: {err:?}");
        assert_mentions(&err, &["config.json", field, value]);
    }
}

#[test]
fn heads_not_a_multiple_of_kv_heads_is_an_invalid_config() {
    let s = Scratch::of("llama-tiny");
    s.edit_config(|c| c["num_key_value_heads"] = json!(3));
    let err = s.load_err();
    assert!(matches!(err, LoadError::InvalidConfig { .. }), "{err:?}");
    assert_mentions(&err, &["config.json", "n_kv_heads (3)"]);
}

#[test]
fn gpt2_pad_token_outside_the_vocabulary_is_an_invalid_config() {
    let s = Scratch::of("gpt2-tiny");
    s.edit_config(|c| c["eos_token_id"] = json!(50256));
    let err = s.load_err();
    assert!(matches!(err, LoadError::InvalidConfig { .. }), "{err:?}");
    assert_mentions(&err, &["config.json", "pad_token_id 50256"]);
}

// ---------------------------------------------------------------- safetensors

#[test]
fn safetensors_cut_in_the_data_names_the_file() {
    let s = Scratch::of("llama-tiny");
    let len = fs::metadata(s.path("model.safetensors")).unwrap().len() as usize;
    s.truncate("model.safetensors", len - 1000);
    let err = s.load_err();
    assert!(matches!(err, LoadError::Safetensors { .. }), "{err:?}");
    assert_mentions(&err, &["model.safetensors", "truncated"]);
}

#[test]
fn safetensors_cut_in_the_header_names_the_file() {
    for len in [4, 100] {
        let s = Scratch::of("gpt2-tiny");
        s.truncate("model.safetensors", len);
        let err = s.load_err();
        assert!(matches!(err, LoadError::Safetensors { .. }), "cut at {len}: {err:?}");
        assert_mentions(&err, &["model.safetensors"]);
    }
}

#[test]
fn tensor_of_the_wrong_shape_names_it_and_both_shapes() {
    let s = Scratch::of("llama-tiny");
    let name = "model.layers.1.mlp.up_proj.weight";
    rewrite_safetensors(&s.path("model.safetensors"), |t| {
        let up = t.get_mut(name).unwrap();
        assert_eq!(up.shape, [64, 32]);
        up.shape = vec![32, 64];
    });
    let err = s.load_err();
    assert!(
        matches!(&err, LoadError::WrongShape { name: n, expected, found, .. }
            if n == name && expected == &[64, 32] && found == &[32, 64]),
        "{err:?}"
    );
    assert_mentions(&err, &["model.safetensors", name, "[32, 64]", "[64, 32]"]);
}

#[test]
fn missing_tensor_is_named() {
    let cases = [
        ("llama-tiny", "model.layers.1.self_attn.k_proj.weight"),
        ("qwen2-tiny", "model.layers.0.self_attn.q_proj.bias"),
        ("qwen2-tiny", "model.norm.weight"),
        ("gpt2-tiny", "transformer.h.1.mlp.c_fc.bias"),
        ("gpt2-tiny", "transformer.wte.weight"),
        ("gpt2-tiny", "transformer.wpe.weight"),
    ];
    for (fixture_name, name) in cases {
        let s = Scratch::of(fixture_name);
        rewrite_safetensors(&s.path("model.safetensors"), |t| {
            t.remove(name).unwrap();
        });
        let err = s.load_err();
        assert!(matches!(&err, LoadError::MissingTensor { name: n, .. } if n == name), "{fixture_name}: {err:?}");
        assert_mentions(&err, &["model.safetensors", name]);
    }
}

#[test]
fn untied_llama_without_lm_head_names_it() {
    let s = Scratch::of("llama-tiny");
    rewrite_safetensors(&s.path("model.safetensors"), |t| {
        t.remove("lm_head.weight").unwrap();
    });
    let err = s.load_err();
    assert!(matches!(&err, LoadError::MissingTensor { name, .. } if name == "lm_head.weight"), "{err:?}");
    assert_mentions(&err, &["model.safetensors", "lm_head.weight"]);
}

#[test]
fn unsupported_dtype_names_the_tensor_and_type() {
    let cases = [("llama-tiny", "model.layers.0.self_attn.v_proj.weight", Dtype::I64, "I64"), ("gpt2-tiny", "transformer.ln_f.bias", Dtype::F64, "F64")];
    for (fixture_name, name, dtype, dtype_name) in cases {
        let s = Scratch::of(fixture_name);
        rewrite_safetensors(&s.path("model.safetensors"), |t| {
            let tensor = t.get_mut(name).unwrap();
            let n = tensor.data.len() / 4;
            tensor.dtype = dtype;
            tensor.data = vec![0; n * 8];
        });
        let err = s.load_err();
        assert!(matches!(&err, LoadError::UnsupportedTensorType { name: n, dtype, .. } if n == name && dtype == dtype_name), "{fixture_name}: {err:?}");
        assert_mentions(&err, &["model.safetensors", name, dtype_name]);
    }
}

#[test]
fn f16_and_bf16_checkpoints_give_the_f32_logits() {
    type Convert = fn(f32) -> [u8; 2];
    // Rounding every weight (relative error 2^-11 for f16, 2^-8 for bf16) moves these logits of
    // magnitude up to ~4 by about 0.008 and 0.05; a decoding bug would move them by far more.
    let formats: [(Dtype, Convert, f32); 2] =
        [(Dtype::F16, |x| half::f16::from_f32(x).to_le_bytes(), 0.02), (Dtype::BF16, |x| half::bf16::from_f32(x).to_le_bytes(), 0.1)];
    for fixture_name in ["gpt2-tiny", "llama-tiny", "qwen2-tiny"] {
        let exp = expected(fixture_name);
        let want = flat(&exp["text_logits"]);
        for (dtype, convert, tol) in formats {
            let s = Scratch::of(fixture_name);
            rewrite_safetensors(&s.path("model.safetensors"), |tensors| {
                for t in tensors.values_mut() {
                    t.data = f32_values(t).into_iter().flat_map(convert).collect();
                    t.dtype = dtype;
                }
            });
            let model = s.load().unwrap_or_else(|e| panic!("{fixture_name} as {dtype:?}: {e}"));
            let diff = max_abs_diff(&text_logits(&model, &exp), &want);
            assert!(diff < tol, "{fixture_name} as {dtype:?}: logits differ from float64 by {diff}");
        }
    }
}

// ---------------------------------------------------------------- sharded checkpoints

const INDEX: &str = "model.safetensors.index.json";

/// Rewrites the sharded fixture's index after `edit` changes its weight map.
fn edit_weight_map(s: &Scratch, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = s.path(INDEX);
    let mut index: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(index["weight_map"].as_object_mut().unwrap());
    fs::write(&path, serde_json::to_string_pretty(&index).unwrap()).unwrap();
}

#[test]
fn index_naming_an_absent_shard_is_an_io_error_naming_it() {
    let s = Scratch::of("llama-tiny-sharded");
    fs::remove_file(s.path("model-00002-of-00003.safetensors")).unwrap();
    let err = s.load_err();
    assert!(matches!(err, LoadError::Io { .. }), "{err:?}");
    assert_mentions(&err, &["model-00002-of-00003.safetensors"]);
}

#[test]
fn index_listing_a_file_that_does_not_exist_is_an_io_error_naming_it() {
    let s = Scratch::of("llama-tiny-sharded");
    edit_weight_map(&s, |map| {
        map.insert("model.norm.weight".into(), json!("model-00004-of-00003.safetensors"));
    });
    let err = s.load_err();
    assert!(matches!(err, LoadError::Io { .. }), "{err:?}");
    assert_mentions(&err, &["model-00004-of-00003.safetensors"]);
}

#[test]
fn index_placing_a_tensor_in_the_wrong_shard_is_a_missing_tensor() {
    let s = Scratch::of("llama-tiny-sharded");
    edit_weight_map(&s, |map| {
        assert_eq!(map["model.norm.weight"], json!("model-00003-of-00003.safetensors"));
        map.insert("model.norm.weight".into(), json!("model-00001-of-00003.safetensors"));
    });
    let err = s.load_err();
    assert!(matches!(&err, LoadError::MissingTensor { name, .. } if name == "model.norm.weight"), "{err:?}");
    assert_mentions(&err, &["model-00001-of-00003.safetensors", "model.norm.weight"]);
}

#[test]
fn index_without_a_weight_map_names_the_field() {
    let s = Scratch::of("llama-tiny-sharded");
    fs::write(s.path(INDEX), r#"{"metadata": {}}"#).unwrap();
    let err = s.load_err();
    assert!(matches!(&err, LoadError::ConfigField { field, .. } if field == "weight_map"), "{err:?}");
    assert_mentions(&err, &[INDEX, "weight_map"]);
}

// ---------------------------------------------------------------- tokenizer

#[test]
fn garbage_tokenizer_json_is_a_tokenizer_error_naming_the_path() {
    let s = Scratch::of("qwen2-tiny");
    fs::write(s.path("tokenizer.json"), "\u{0}\u{1} this is not a tokenizer").unwrap();
    let err = s.load_err();
    assert!(matches!(err, LoadError::Tokenizer { .. }), "{err:?}");
    assert_mentions(&err, &[s.path("tokenizer.json").to_str().unwrap()]);
}

// ---------------------------------------------------------------- GGUF

fn gguf_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gguf/tests/fixtures/tiny.gguf")
}

fn load_gguf_err(path: &Path) -> LoadError {
    match LocalModel::Gguf(path.into()).load::<B>(&Default::default()) {
        Ok(_) => panic!("{} loaded but should not have", path.display()),
        Err(e) => e,
    }
}

#[test]
fn gguf_without_model_metadata_names_the_missing_key() {
    // tiny.gguf says general.architecture = llama but has none of the llama.* hyperparameters.
    let err = load_gguf_err(&gguf_fixture());
    assert!(matches!(&err, LoadError::Gguf(gguf::GgufError::MissingKey { key, .. }) if key == "llama.attention.head_count"), "{err:?}");
    assert_mentions(&err, &["tiny.gguf", "llama.attention.head_count"]);
}

#[test]
fn gguf_without_an_architecture_names_general_architecture() {
    let s = Scratch::empty();
    let path = s.path("empty.gguf");
    // Magic, version 3, no tensors, no metadata.
    let bytes: Vec<u8> = [&b"GGUF"[..], &3u32.to_le_bytes(), &0u64.to_le_bytes(), &0u64.to_le_bytes()].concat();
    fs::write(&path, bytes).unwrap();
    let err = load_gguf_err(&path);
    assert!(matches!(&err, LoadError::Gguf(gguf::GgufError::MissingKey { key, .. }) if key == "general.architecture"), "{err:?}");
    assert_mentions(&err, &["empty.gguf", "general.architecture"]);
}

#[test]
fn truncated_gguf_is_a_gguf_error() {
    let s = Scratch::empty();
    let path = s.path("cut.gguf");
    fs::write(&path, &fs::read(gguf_fixture()).unwrap()[..200]).unwrap();
    let err = load_gguf_err(&path);
    assert!(matches!(err, LoadError::Gguf(gguf::GgufError::Truncated { .. })), "{err:?}");
    assert_mentions(&err, &["cut.gguf", "truncated"]);
}

// ---------------------------------------------------------------- model arguments

#[test]
fn unknown_model_name_lists_the_known_ones() {
    let err = ModelSpec::parse("no-such-model").unwrap_err();
    assert!(matches!(&err, LoadError::UnknownModel { spec, .. } if spec == "no-such-model"), "{err:?}");
    assert_mentions(&err, &["no-such-model", "smollm2-135m", "gpt2", "qwen2.5-0.5b", "llama-3.1-8b"]);
}

#[test]
fn model_spec_recognises_files_directories_and_hub_ids() {
    let gguf = gguf_fixture();
    assert_eq!(ModelSpec::parse(gguf.to_str().unwrap()).unwrap(), ModelSpec::Gguf(gguf.clone()));
    let dir = fixture("llama-tiny");
    assert_eq!(ModelSpec::parse(dir.to_str().unwrap()).unwrap(), ModelSpec::Dir(dir.clone()));
    let config = dir.join("config.json");
    assert_eq!(ModelSpec::parse(config.to_str().unwrap()).unwrap(), ModelSpec::Dir(dir));
    assert_eq!(ModelSpec::parse("test-org/no-such-repo").unwrap(), ModelSpec::Hub("test-org/no-such-repo".into()));
}
