//! Circuit-localization sweeps: a config names models × tasks × methods; each cell discovers a
//! circuit on train pairs, evaluates it at every budget on validation pairs and is stored as its own
//! JSON file (so a run resumes where it stopped); reports (CSV tables, pivots, manifest, SVG plots)
//! are regenerated from the stored cells after each one, atomically.
#![warn(missing_docs)]

pub mod cell;
pub mod config;
pub mod lock;
pub mod memory;
pub mod plot;
pub mod regress;
pub mod report;
pub mod sweep;

pub use cell::{BatchProgress, CellError, CellResult, ShortSplit, SweepModel, run_cell};
pub use config::{Cell, CellTask, Config, ConfigError, Datasets};
pub use sweep::{Event, SweepPaths, run_sweep};

/// Why a sweep cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The config is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// One cell failed.
    #[error("cell {cell}: {source}")]
    Cell {
        /// The cell's key, `model|task|method`.
        cell: String,
        /// What failed.
        #[source]
        source: CellError,
    },
    /// A dataset could not be read.
    #[error(transparent)]
    Tasks(#[from] tasks::TaskError),
    /// A model could not be loaded.
    #[error(transparent)]
    Load(#[from] transformer::LoadError),
    /// A model's graph could not be built.
    #[error(transparent)]
    Graph(#[from] graph::GraphError),
    /// A report table could not be written or read.
    #[error(transparent)]
    Table(#[from] tables::TableError),
    /// A compiled model's true edges could not be read.
    #[error(transparent)]
    GroundTruth(#[from] groundtruth::GroundTruthError),
    /// A compiled model's true edges are of another graph than the model's.
    #[error("{}: true edges of a {found:?} graph, the model's is {expected:?}", file.display())]
    TruthGraph {
        /// The true-edge file.
        file: std::path::PathBuf,
        /// The shape it holds.
        found: graph::GraphShape,
        /// The model's.
        expected: graph::GraphShape,
    },
    /// A `tracr` task names a model that is not a compiled model's directory.
    #[error("model `{model}` is not a tracr model directory: a `tracr` task reads the dataset beside a compiled model")]
    NotTracr {
        /// The model argument.
        model: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A regression tolerance that is not a finite number ≥ 0 (NaN would pass anything, a
    /// negative one fail identical runs).
    #[error("regression tolerance {tolerance} is not a finite number >= 0")]
    Tolerance {
        /// The tolerance given.
        tolerance: f64,
    },
    /// A report table holds two rows under one key with different numbers.
    #[error("{}: two rows for {key} differ in `{metric}`", path.display())]
    DuplicateRow {
        /// The table.
        path: std::path::PathBuf,
        /// The repeated key (`model|task|method`, with selection and fraction for curves).
        key: String,
        /// The first column whose numbers differ.
        metric: String,
    },
    /// Two cells of a config would be stored in one file.
    #[error("cells {first} and {second} would both be stored as cells/{file}")]
    CellFileCollision {
        /// The first cell's key.
        first: String,
        /// The second cell's key.
        second: String,
        /// The file name they share.
        file: String,
    },
    /// Another sweep holds the run directory's lock.
    #[error("{}: the run directory is locked by {holder} (another sweep on it is running; remove the file if that process is gone)", path.display())]
    Locked {
        /// The lock file.
        path: std::path::PathBuf,
        /// What the lock file says: `host pid`.
        holder: String,
    },
}
