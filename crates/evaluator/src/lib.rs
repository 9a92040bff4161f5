//! The evaluator: turns per-edge scores into circuits at MIB's ten budgets, measures how much of the
//! model's behaviour each circuit keeps under ablation, and summarises the curve (CPR, CMD).

pub mod circuit;
pub mod evaluate;
pub mod metrics;

pub use circuit::{BuiltCircuit, Selection, greedy, prune, top_n, MIB_FRACTIONS};
pub use evaluate::{evaluate_circuits, EvalError, EvalOptions, EvalResult};
pub use metrics::{cmd, cpr, faithfulness, FaithfulnessUndefined};
