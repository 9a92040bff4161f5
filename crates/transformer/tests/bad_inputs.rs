//! Numbers that would make every logit NaN fail at load time, naming the file and the field or
//! tensor: config values the forward pass divides by or takes a root or power of (norm ε, RoPE
//! base and scaling, sizes), from a Hugging Face config.json or GGUF metadata, and weights that
//! hold NaN or infinity.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use common::*;
use serde_json::{Value, json};
use transformer::layers::Norm;
use transformer::{LoadError, LocalModel};

/// A fresh temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("circuitbench-bad-inputs-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A copy of fixture `name`'s files.
    fn of(name: &str) -> Self {
        let s = Self::new();
        for entry in fs::read_dir(fixture(name)).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), s.0.join(entry.file_name())).unwrap();
        }
        s
    }

    /// Rewrites config.json after `edit`.
    fn edit_config(&self, edit: impl FnOnce(&mut Value)) {
        let path = self.0.join("config.json");
        let mut config: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut config);
        fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    }

    fn load_err(&self) -> LoadError {
        match LocalModel::Dir(self.0.clone()).load::<B>(&Default::default()) {
            Ok(_) => panic!("{} loaded but should not have", self.0.display()),
            Err(e) => e,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Asserts that `err` is a `ConfigField` error about `field` whose message names every one of `parts`.
fn assert_field(err: &LoadError, field: &str, parts: &[&str]) {
    assert!(matches!(err, LoadError::ConfigField { field: f, .. } if f == field), "expected a ConfigField error on `{field}`, got {err:?}");
    let message = err.to_string();
    for part in parts.iter().chain([&field]) {
        assert!(message.contains(part), "error {message:?} does not mention {part:?}");
    }
}

// ---------------------------------------------------------------- config.json

#[test]
fn norm_epsilon_must_be_positive() {
    for (fixture_name, field) in [("llama-tiny", "rms_norm_eps"), ("qwen2-tiny", "rms_norm_eps"), ("gpt2-tiny", "layer_norm_epsilon")] {
        for value in [-1e-5, 0.0] {
            let s = Scratch::of(fixture_name);
            s.edit_config(|c| c[field] = json!(value));
            assert_field(&s.load_err(), field, &["config.json", "must be positive and finite"]);
        }
    }
}

#[test]
fn rope_base_must_be_positive_wherever_the_config_keeps_it() {
    let s = Scratch::of("llama-tiny");
    s.edit_config(|c| c["rope_theta"] = json!(0.0));
    assert_field(&s.load_err(), "rope_theta", &["config.json", "got 0"]);

    let s = Scratch::of("qwen2-tiny");
    s.edit_config(|c| c["rope_theta"] = json!(-10000.0));
    assert_field(&s.load_err(), "rope_theta", &["config.json", "got -10000"]);

    // Newer transformers releases nest the base in rope_parameters.
    let s = Scratch::of("llama-tiny");
    s.edit_config(|c| {
        c.as_object_mut().unwrap().remove("rope_theta");
        c["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 0.0});
    });
    assert_field(&s.load_err(), "rope_parameters.rope_theta", &["config.json"]);
}

#[test]
fn llama3_rope_scaling_factors_are_checked() {
    let good = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
    // The unbroken scaling loads, so each case below fails for its own field alone.
    let s = Scratch::of("llama-tiny");
    s.edit_config(|c| c["rope_scaling"] = good.clone());
    LocalModel::Dir(s.0.clone()).load::<B>(&Default::default()).expect("valid llama3 scaling loads");

    let cases = [
        ("factor", json!(0.0), "rope_scaling.factor"),
        ("factor", json!(-8.0), "rope_scaling.factor"),
        ("low_freq_factor", json!(0.0), "rope_scaling.low_freq_factor"),
        ("high_freq_factor", json!(1.0), "rope_scaling.high_freq_factor"),
        ("high_freq_factor", json!(0.5), "rope_scaling.high_freq_factor"),
        ("original_max_position_embeddings", json!(0), "rope_scaling.original_max_position_embeddings"),
    ];
    for (key, value, field) in cases {
        let s = Scratch::of("llama-tiny");
        let mut scaling = good.clone();
        scaling[key] = value.clone();
        s.edit_config(|c| c["rope_scaling"] = scaling);
        assert_field(&s.load_err(), field, &["config.json"]);
    }
}

#[test]
fn zero_sizes_are_named() {
    let cases = [
        ("llama-tiny", "hidden_size"),
        ("llama-tiny", "intermediate_size"),
        ("llama-tiny", "num_hidden_layers"),
        ("llama-tiny", "num_attention_heads"),
        ("llama-tiny", "num_key_value_heads"),
        ("llama-tiny", "head_dim"),
        ("qwen2-tiny", "vocab_size"),
        ("gpt2-tiny", "n_layer"),
        ("gpt2-tiny", "n_head"),
        ("gpt2-tiny", "n_embd"),
        ("gpt2-tiny", "n_positions"),
        ("gpt2-tiny", "n_inner"),
        ("gpt2-tiny", "vocab_size"),
    ];
    for (fixture_name, field) in cases {
        let s = Scratch::of(fixture_name);
        s.edit_config(|c| c[field] = json!(0));
        assert_field(&s.load_err(), field, &["config.json", "must be positive"]);
    }
}

#[test]
fn width_not_a_multiple_of_the_heads_is_named() {
    let s = Scratch::of("llama-tiny");
    s.edit_config(|c| {
        c.as_object_mut().unwrap().remove("head_dim");
        c["num_attention_heads"] = json!(5);
        c["num_key_value_heads"] = json!(5);
    });
    assert_field(&s.load_err(), "num_attention_heads", &["config.json", "hidden_size 32", "5"]);

    let s = Scratch::of("gpt2-tiny");
    s.edit_config(|c| c["n_head"] = json!(5));
    assert_field(&s.load_err(), "n_head", &["config.json", "n_embd 32"]);
}

// ---------------------------------------------------------------- GGUF metadata

/// One metadata value of a GGUF file written by [`write_gguf`].
enum Meta {
    U32(u32),
    F32(f32),
    Str(&'static str),
    Strings(&'static [&'static str]),
}

/// Writes a GGUF v3 file with `metadata` and no tensors: enough for the config to be read.
fn write_gguf(path: &Path, metadata: &[(&str, Meta)]) {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut out: Vec<u8> = [&b"GGUF"[..], &3u32.to_le_bytes(), &0u64.to_le_bytes(), &(metadata.len() as u64).to_le_bytes()].concat();
    for (key, value) in metadata {
        string(&mut out, key);
        match value {
            Meta::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, s);
            }
            Meta::Strings(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for s in *items {
                    string(&mut out, s);
                }
            }
        }
    }
    fs::write(path, out).unwrap();
}

/// A llama GGUF's metadata with `key` replaced by `value` (or everything valid when `key` matches none).
fn llama_metadata(key: &str, value: Meta) -> Vec<(&'static str, Meta)> {
    let mut metadata = vec![
        ("general.architecture", Meta::Str("llama")),
        ("llama.block_count", Meta::U32(2)),
        ("llama.embedding_length", Meta::U32(32)),
        ("llama.feed_forward_length", Meta::U32(64)),
        ("llama.attention.head_count", Meta::U32(4)),
        ("llama.attention.head_count_kv", Meta::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("llama.rope.freq_base", Meta::F32(10_000.0)),
        ("tokenizer.ggml.tokens", Meta::Strings(&["<s>", "</s>", "a", "b"])),
    ];
    let slot = metadata.iter_mut().find(|(k, _)| *k == key);
    if let Some((_, v)) = slot {
        *v = value;
    }
    metadata
}

fn gguf_config_err(s: &Scratch, metadata: &[(&str, Meta)]) -> LoadError {
    let path = s.0.join("bad.gguf");
    write_gguf(&path, metadata);
    LocalModel::Gguf(path).config().expect_err("the GGUF config should be rejected")
}

#[test]
fn gguf_numbers_are_checked_naming_the_key() {
    let s = Scratch::new();
    let path = s.0.join("good.gguf");
    write_gguf(&path, &llama_metadata("", Meta::U32(0)));
    let config = LocalModel::Gguf(path).config().expect("the unbroken metadata gives a config");
    assert_eq!((config.n_layers, config.d_model, config.n_heads, config.n_kv_heads, config.d_head), (2, 32, 4, 2, 8));

    let cases = [
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(-1e-5), "must be positive and finite"),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(f32::NAN), "got NaN"),
        ("llama.rope.freq_base", Meta::F32(0.0), "got 0"),
        ("llama.rope.freq_base", Meta::F32(f32::INFINITY), "got inf"),
        ("llama.attention.head_count", Meta::U32(0), "must be positive"),
        ("llama.attention.head_count", Meta::U32(5), "embedding_length 32"),
        ("llama.block_count", Meta::U32(0), "must be positive"),
        ("llama.embedding_length", Meta::U32(0), "must be positive"),
    ];
    for (key, value, part) in cases {
        let err = gguf_config_err(&s, &llama_metadata(key, value));
        assert_field(&err, key, &["bad.gguf", part]);
    }
}

// ---------------------------------------------------------------- weights

/// `values` with element `index` replaced by `bad`.
fn poisoned<const D: usize>(t: &Param<Tensor<B, D>>, index: usize, bad: f32) -> Param<Tensor<B, D>> {
    let tensor = t.val();
    let shape = tensor.dims();
    let mut data = values(tensor);
    data[index] = bad;
    Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), &Default::default()))
}

/// Writes fixture `name` back out through `save_hf_dir` after `poison` changes it in memory.
fn saved_with(name: &str, poison: impl FnOnce(&mut transformer::Transformer<B>)) -> Scratch {
    let mut model = load_fixture(name);
    poison(&mut model.model);
    let s = Scratch::new();
    transformer::checkpoint::save_hf_dir(&model.model, &s.0).unwrap();
    fs::copy(fixture(name).join("tokenizer.json"), s.0.join("tokenizer.json")).unwrap();
    s
}

#[test]
fn a_saved_fixture_loads_back_so_the_poisoned_ones_fail_for_their_value() {
    for name in ["gpt2-tiny", "llama-tiny"] {
        let s = saved_with(name, |_| {});
        LocalModel::Dir(s.0.clone()).load::<B>(&Default::default()).unwrap_or_else(|e| panic!("{name} written back: {e}"));
    }
}

#[test]
fn nan_or_infinite_weights_name_the_file_and_tensor() {
    let s = saved_with("gpt2-tiny", |m| {
        let Norm::Layer(ln) = &mut m.final_norm else { panic!("GPT-2 has LayerNorm") };
        ln.bias = poisoned(&ln.bias, 7, f32::NAN);
    });
    let err = s.load_err();
    assert!(matches!(&err, LoadError::NonFiniteTensor { name, index: 7, value, len: 32, .. } if name == "transformer.ln_f.bias" && value.is_nan()), "{err:?}");
    let message = err.to_string();
    for part in ["model.safetensors", "transformer.ln_f.bias", "NaN", "index 7"] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }

    let s = saved_with("llama-tiny", |m| {
        let up = &mut m.blocks[1].mlp;
        let transformer::layers::Mlp::Gated(gated) = up else { panic!("Llama has a gated MLP") };
        gated.up.weight = poisoned(&gated.up.weight, 0, f32::NEG_INFINITY);
    });
    let err = s.load_err();
    assert!(
        matches!(&err, LoadError::NonFiniteTensor { name, value, .. } if name == "model.layers.1.mlp.up_proj.weight" && *value == f32::NEG_INFINITY),
        "{err:?}"
    );
    assert!(err.to_string().contains("-inf"), "{err}");
}

// ---------------------------------------------------------------- configs made in code

#[test]
fn configs_made_in_code_are_checked_too() {
    use transformer::config::{Llama3RopeScaling, PositionEncoding, RopeLayout};
    let base = load_fixture("llama-tiny").model.config;
    transformer::Transformer::<B>::init(base.clone(), 0, &Default::default()).expect("the fixture's config builds");
    let rope = |theta, scaling| PositionEncoding::Rope { theta, layout: RopeLayout::HalfSplit, scaling };
    let inverted = Llama3RopeScaling { factor: 8.0, low_freq_factor: 4.0, high_freq_factor: 1.0, original_max_position_embeddings: 64 };
    let cases = [
        ("norm_eps", transformer::ModelConfig { norm_eps: f64::NAN, ..base.clone() }),
        ("rope theta", transformer::ModelConfig { positions: rope(-1.0, None), ..base.clone() }),
        ("rope scaling high_freq_factor", transformer::ModelConfig { positions: rope(1e4, Some(inverted)), ..base.clone() }),
        ("max_positions", transformer::ModelConfig { positions: PositionEncoding::Learned { max_positions: 0 }, ..base.clone() }),
    ];
    for (part, config) in cases {
        let err = transformer::Transformer::<B>::init(config, 0, &Default::default()).err().unwrap_or_else(|| panic!("{part}: built"));
        assert!(matches!(err, LoadError::InvalidConfig { .. }) && err.to_string().contains(part), "{part}: {err}");
    }
}
