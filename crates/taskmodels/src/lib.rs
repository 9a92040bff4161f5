//! Task models: small GPT-2- and Llama-style transformers that circuitbench trains on its own tasks
//! (IOI, two-digit addition and subtraction, MCQA) with burn, so every task has a model that does
//! it, runs in seconds on a CPU and ships in the repository (`models/<task>`, loaded as
//! `task:<task>`).

pub mod card;
pub mod recipe;
pub mod train;
pub mod vocab;

use std::path::PathBuf;

pub use recipe::{DEFAULT_SEED, Recipe, Style, recipe};
pub use train::{Progress, Report, Scores, TrainOptions, evaluate, train};

/// Why a task model cannot be trained or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Tasks(#[from] tasks::TaskError),
    #[error(transparent)]
    Load(#[from] transformer::LoadError),
    #[error(transparent)]
    Batch(#[from] transformer::BatchError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("no examples: {0}")]
    NoExamples(String),
    #[error("training diverged at step {step}: loss {loss}")]
    Diverged { step: usize, loss: f64 },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}
