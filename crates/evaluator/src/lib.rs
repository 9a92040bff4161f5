//! The evaluator: turns per-edge scores into circuits at MIB's ten budgets, measures how much of the
//! model's behaviour each circuit keeps under ablation, and summarises the curve (CPR, CMD).

pub mod circuit;
pub mod evaluate;
pub mod metrics;

pub use circuit::{BuiltCircuit, MIB_FRACTIONS, Selection, greedy, prune, top_n};
pub use evaluate::{EvalError, EvalOptions, EvalResult, evaluate_circuits};
pub use metrics::{FaithfulnessUndefined, cmd, cpr, faithfulness};
