//! Circuit-localization sweeps: a config names models × tasks × methods; each cell discovers a
//! circuit on train pairs, evaluates it at every budget on validation pairs and is stored as its own
//! JSON file (so a run resumes where it stopped); reports (CSV tables, pivots, manifest, SVG plots)
//! are regenerated from the stored cells after each one, atomically.

pub mod cell;
pub mod config;
pub mod memory;
pub mod plot;
pub mod regress;
pub mod report;
pub mod sweep;

pub use cell::{BatchProgress, CellResult, CurvePoint, SweepModel, run_cell};
pub use config::{Cell, Config, ConfigError, Datasets};
pub use sweep::{Event, SweepPaths, run_sweep};

/// Why a sweep cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cell {cell}: {message}")]
    Cell { cell: String, message: String },
    #[error(transparent)]
    Tasks(#[from] tasks::TaskError),
    #[error(transparent)]
    Load(#[from] transformer::LoadError),
    #[error(transparent)]
    Graph(#[from] graph::GraphError),
    #[error(transparent)]
    Table(#[from] tables::TableError),
    #[error("{}: {source}", path.display())]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Json { path: std::path::PathBuf, message: String },
}
