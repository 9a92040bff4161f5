//! MIB-style tasks: clean / counterfactual prompt pairs with their answers, generated here or loaded
//! from files (our JSONL, MIB's hub parquet), and prepared for one model (tokenized, filtered, every
//! drop counted); and the datasets of tracr-compiled programs, read at the positions they name.

#![warn(missing_docs)]

pub mod drops;
pub mod error;
pub mod example;
pub mod generate;
pub mod hub;
pub mod jsonl;
pub mod prepare;
mod record;
mod rng;
pub mod tracr;

pub use drops::{DropReason, Drops};
pub use error::{Record, TaskError};
pub use example::{CounterfactualKind, Example, Split, TaskKind, UnknownName};
pub use generate::{DEFAULT_SEED, GENERATOR_VERSION, SplitSizes, default_sizes, generate, stream};
pub use jsonl::{load_split, read_jsonl, split_path, write_jsonl};
pub use prepare::{BosPolicy, PairBatch, PrepareOptions, Prepared, PreparedPair, prepare, unknown_token};
