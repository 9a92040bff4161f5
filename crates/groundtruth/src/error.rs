//! Why true edges could not be computed, read or written.

use std::path::PathBuf;

use thiserror::Error;

/// A failure to compute, read or write true edges; file errors name the file.
#[derive(Debug, Error)]
pub enum GroundTruthError {
    /// A file could not be read, written or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `true_edges.json` is not valid JSON of the expected shape.
    #[error("{path}: malformed true-edges file: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        source: serde_json::Error,
    },
    /// A `true_edges.json` parses but says something impossible (an unknown edge, a patching
    /// edge that is not structural, …).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field and value.
        message: String,
    },
    /// The model, its config and the graph do not fit together (or the model is not a tracr one).
    #[error("{0}")]
    Mismatch(String),
    /// The model could not be loaded.
    #[error(transparent)]
    Load(#[from] transformer::LoadError),
    /// The task could not be loaded.
    #[error(transparent)]
    Task(#[from] tasks::TaskError),
    /// A dataset input does not fit the model.
    #[error("dataset input: {0}")]
    Batch(#[from] transformer::BatchError),
    /// The graph could not be built or an edge named.
    #[error(transparent)]
    Graph(#[from] graph::GraphError),
}
