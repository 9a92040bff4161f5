//! Circuit-localization sweeps: a config names models × tasks × methods; each cell discovers a
//! circuit on train pairs, evaluates it at every budget on validation pairs and is stored as its own
//! JSON file (so a run resumes where it stopped); reports (CSV tables, pivots, manifest, SVG plots)
//! are regenerated from the stored cells after each one, atomically.
#![warn(missing_docs)]

pub mod cell;
pub mod config;
pub mod memory;
pub mod plot;
pub mod regress;
pub mod report;
pub mod sweep;

pub use cell::{BatchProgress, CellError, CellResult, SweepModel, run_cell};
pub use config::{Cell, Config, ConfigError, Datasets};
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
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A stored cell or report is not the JSON it should be.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: serde_json::Error,
    },
}
