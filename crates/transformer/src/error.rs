//! Every way loading a model can fail, each naming the file, tensor or field involved.

use std::path::PathBuf;

/// A failure to find, read or make sense of model files.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{}: field `{field}`: {message}", path.display())]
    ConfigField { path: PathBuf, field: String, message: String },
    #[error("{}: unknown architecture `{name}` (supported: gpt2, llama, qwen2)", path.display())]
    UnknownArchitecture { path: PathBuf, name: String },
    #[error("{}: tensor `{name}` is missing", file.display())]
    MissingTensor { file: PathBuf, name: String },
    #[error("{}: tensor `{name}` has shape {found:?}, expected {expected:?}", file.display())]
    WrongShape { file: PathBuf, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("{}: tensor `{name}` has unsupported type {dtype}", file.display())]
    UnsupportedTensorType { file: PathBuf, name: String, dtype: String },
    #[error("{}: corrupt or truncated safetensors file: {message}", file.display())]
    Safetensors { file: PathBuf, message: String },
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error("{}: tokenizer: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    InvalidConfig { path: PathBuf, message: String },
    #[error("hub repository `{repo}`: {message}")]
    Hub { repo: String, message: String },
    #[error("fetching {what}: {message}")]
    Fetch { what: String, message: String },
    #[error("task model `task:{name}` not found: {} has no config.json (train it with `cargo xtask train --task {name}`)", dir.display())]
    MissingTaskModel { name: String, dir: PathBuf },
    #[error(
        "unknown model `{spec}`: not a known name ({known}), `task:<name>`, `random:<shape>`, a directory, a config.json, a .gguf file or a hub repository id"
    )]
    UnknownModel { spec: String, known: String },
}

impl LoadError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LoadError::Io { path: path.into(), source }
    }
}
