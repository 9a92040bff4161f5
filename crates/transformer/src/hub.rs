//! Hugging Face hub checkpoints through `hf-hub`'s cache: honours HF_HOME / HF_HUB_CACHE and
//! HF_HUB_OFFLINE, so an offline machine with a warm cache works and a cold one fails clearly.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo};

use crate::error::LoadError;

/// Where the hub cache lives and whether the network may be used.
#[derive(Debug, Clone, PartialEq)]
pub struct HubOptions {
    /// The `hub` directory holding `models--org--name` folders.
    pub cache: PathBuf,
    /// Never touch the network (HF_HUB_OFFLINE).
    pub offline: bool,
    /// Alternative endpoint (HF_ENDPOINT).
    pub endpoint: Option<String>,
}

impl HubOptions {
    /// Options from the process environment, as `huggingface_hub` reads them.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Options from any variable lookup (testable without touching the process environment).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let cache = var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| match var("HF_HOME") {
            Some(home) => PathBuf::from(home).join("hub"),
            None => var("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join(".cache/huggingface/hub"),
        });
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        Self { cache, offline, endpoint: var("HF_ENDPOINT") }
    }
}

/// Files a checkpoint directory must have besides its weights.
const REQUIRED: [&str; 2] = ["config.json", "tokenizer.json"];
const INDEX: &str = "model.safetensors.index.json";

/// Makes sure the checkpoint of `repo` (config, tokenizer, single or sharded safetensors) is in the
/// local cache, downloading what is missing unless offline, and returns its snapshot directory.
pub fn snapshot_dir(repo: &str, options: &HubOptions) -> Result<PathBuf, LoadError> {
    let hub_err = |message: String| LoadError::Hub { repo: repo.into(), message };
    let cache = Cache::new(options.cache.clone()).repo(Repo::model(repo.into()));
    let api = if options.offline {
        None
    } else {
        let mut builder = ApiBuilder::from_cache(Cache::new(options.cache.clone())).with_progress(false);
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        Some(builder.build().map_err(|e| hub_err(e.to_string()))?.model(repo.into()))
    };
    let get = |file: &str| -> Result<Option<PathBuf>, LoadError> {
        if let Some(path) = cache.get(file) {
            return Ok(Some(path));
        }
        match &api {
            None => Ok(None),
            Some(api) => match api.get(file) {
                Ok(path) => Ok(Some(path)),
                Err(hf_hub::api::sync::ApiError::RequestError(e)) if is_not_found(&e.to_string()) => Ok(None),
                Err(e) => Err(hub_err(format!("downloading {file}: {e}"))),
            },
        }
    };
    let absent = |file: &str| {
        hub_err(if options.offline {
            format!("{file} is not in the local cache {} and HF_HUB_OFFLINE is set", options.cache.display())
        } else {
            format!("{file} not found")
        })
    };

    let mut dir: Option<PathBuf> = None;
    for file in REQUIRED {
        let path = get(file)?.ok_or_else(|| absent(file))?;
        dir.get_or_insert_with(|| path.parent().unwrap_or(Path::new(".")).to_path_buf());
    }
    match get(INDEX)? {
        Some(index) => {
            for shard in shard_files(&index)? {
                get(&shard)?.ok_or_else(|| absent(&shard))?;
            }
        }
        None => {
            get("model.safetensors")?.ok_or_else(|| absent("model.safetensors"))?;
        }
    }
    Ok(dir.expect("REQUIRED is not empty"))
}

fn is_not_found(message: &str) -> bool {
    message.contains("404")
}

/// The distinct shard file names listed in a safetensors index.
fn shard_files(index: &Path) -> Result<Vec<String>, LoadError> {
    let text = std::fs::read_to_string(index).map_err(|e| LoadError::io(index, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|source| LoadError::Json { path: index.into(), source })?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| LoadError::ConfigField {
        path: index.into(),
        field: "weight_map".into(),
        message: "missing or not an object".into(),
    })?;
    let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
    files.sort();
    files.dedup();
    Ok(files)
}
