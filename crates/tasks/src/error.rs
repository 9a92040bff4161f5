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
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// A JSONL line is not a JSON object.
    #[error("{}: {at}: malformed record: {message}", path.display())]
    Malformed {
        /// The file concerned.
        path: PathBuf,
        /// The line or row.
        at: Record,
        /// What is wrong.
        message: String,
    },
    /// A line of a text file is not valid UTF-8.
    #[error("{}: {at}: not valid UTF-8: {source}", path.display())]
    NotUtf8 {
        /// The file concerned.
        path: PathBuf,
        /// The line.
        at: Record,
        /// Where in the line the invalid bytes start.
        source: std::str::Utf8Error,
    },
    /// Two records of one file carry the same id.
    #[error("{}: line {line}: id `{id}` is already used at line {first}", path.display())]
    DuplicateId {
        /// The file concerned.
        path: PathBuf,
        /// The repeated id.
        id: String,
        /// The line that used it first (1-based).
        first: usize,
        /// The line that repeats it (1-based).
        line: usize,
    },
    /// A required field is absent (or null).
    #[error("{}: {at}: missing field `{field}`", path.display())]
    MissingField {
        /// The file concerned.
        path: PathBuf,
        /// The line or row.
        at: Record,
        /// The field's name.
        field: String,
    },
    /// A field holds the wrong kind of value, or an index outside its list.
    #[error("{}: {at}: field `{field}`: {message}", path.display())]
    BadField {
        /// The file concerned.
        path: PathBuf,
        /// The line or row.
        at: Record,
        /// The field's name.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A parquet file could not be read.
    #[error(transparent)]
    Table(#[from] tables::TableError),
    /// A hub dataset could not be found, listed or downloaded.
    #[error("hub dataset `{repo}`: {message}")]
    Hub {
        /// The dataset's repository id.
        repo: String,
        /// What the hub client or the file listing reported.
        message: String,
    },
    /// A generator cannot make as many distinct examples as its sizes ask for.
    #[error("task {task}: only {found} distinct examples could be generated, {wanted} were asked for")]
    TooFewDistinct {
        /// The task being generated.
        task: crate::example::TaskKind,
        /// Examples asked for.
        wanted: usize,
        /// Distinct examples the generator produced before giving up.
        found: usize,
    },
    /// The tokenizer failed on a prompt or answer.
    #[error(transparent)]
    Tokenizer(#[from] transformer::LoadError),
    /// A tracr dataset has discovery and evaluation halves only.
    #[error("tracr program {program}: its dataset has a train and a validation half, no test split")]
    NoTracrTestSplit {
        /// The program.
        program: String,
    },
}

impl TaskError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TaskError::Io { path: path.into(), source }
    }
}
