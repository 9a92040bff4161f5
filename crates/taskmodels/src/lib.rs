//! Task models: small GPT-2- and Llama-style transformers that circuitbench trains on its own tasks
//! (IOI, two-digit addition and subtraction, MCQA) with burn, so every task has a model that does
//! it, runs in seconds on a CPU and ships in the repository (`models/<task>`, loaded as
//! `task:<task>`).

#![warn(missing_docs)]

pub mod card;
pub mod planted;
pub mod recipe;
pub mod train;
pub mod vocab;

use std::path::PathBuf;

pub use planted::Planted;
pub use recipe::{DEFAULT_SEED, Recipe, Style, planted_recipe, recipe};
pub use train::{Progress, Report, Scores, TrainOptions, evaluate, train};

/// Why a task model cannot be trained or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Task data could not be loaded, generated or prepared.
    #[error(transparent)]
    Tasks(#[from] tasks::TaskError),
    /// The tokenizer could not be read or the model initialised or saved.
    #[error(transparent)]
    Load(#[from] transformer::LoadError),
    /// A prompt does not fit the model.
    #[error(transparent)]
    Batch(#[from] transformer::BatchError),
    /// The word-level tokenizer could not be built or saved, or lacks a special token.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Nothing is left to train or evaluate on; the message says where.
    #[error("no examples: {0}")]
    NoExamples(String),
    /// The loss stopped being finite, so training cannot go on.
    #[error("training diverged at step {step}: loss {loss}")]
    Diverged {
        /// The step (0-based) whose loss was not finite.
        step: usize,
        /// That loss.
        loss: f64,
    },
    /// The output directory could not be created.
    #[error("{}: {source}", path.display())]
    Io {
        /// The output directory.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
}
