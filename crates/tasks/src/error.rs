//! Every way reading or preparing a task can fail, each naming the file, line or row and field.

use std::fmt;
use std::path::PathBuf;

/// Where in a file a record sits: a JSONL line or a parquet row (both 1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// A line of a JSONL file.
    Line(usize),
    /// A row of a table (parquet).
    Row(usize),
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Line(n) => write!(f, "line {n}"),
            Record::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// A failure to read, write, fetch or tokenize task data.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A file could not be read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A JSONL line is not a JSON object.
    #[error("{}: {at}: malformed record: {message}", path.display())]
    Malformed { path: PathBuf, at: Record, message: String },
    /// A required field is absent (or null).
    #[error("{}: {at}: missing field `{field}`", path.display())]
    MissingField { path: PathBuf, at: Record, field: String },
    /// A field holds the wrong kind of value, or an index outside its list.
    #[error("{}: {at}: field `{field}`: {message}", path.display())]
    BadField { path: PathBuf, at: Record, field: String, message: String },
    /// A parquet file could not be read.
    #[error(transparent)]
    Table(#[from] tables::TableError),
    /// A hub dataset could not be found, listed or downloaded.
    #[error("hub dataset `{repo}`: {message}")]
    Hub { repo: String, message: String },
    /// A generator cannot make as many distinct examples as its sizes ask for.
    #[error("task {task}: only {found} distinct examples could be generated, {wanted} were asked for")]
    TooFewDistinct { task: crate::example::TaskKind, wanted: usize, found: usize },
    /// The tokenizer failed on a prompt or answer.
    #[error(transparent)]
    Tokenizer(#[from] transformer::LoadError),
}

impl TaskError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TaskError::Io { path: path.into(), source }
    }
}
