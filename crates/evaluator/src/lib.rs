//! The evaluator: turns what a method found (per-edge scores, or its own circuits) into circuits
//! at MIB's ten budgets, measures how much of the model's behaviour each circuit keeps under
//! ablation, and summarises the curve (CPR, CMD) — one pipeline for the bench and `xtask eval`.
#![warn(missing_docs)]

pub mod bootstrap;
pub mod circuit;
pub mod evaluate;
pub mod metrics;
pub mod pipeline;

pub use bootstrap::{Bootstrap, DEFAULT_RESAMPLES, Interval, MAX_RESAMPLES, Resampling};
pub use circuit::{BuiltCircuit, MIB_FRACTIONS, Selection, given, greedy, prune, top_n, top_n_preferred};
pub use evaluate::{EvalError, EvalOptions, EvalResult, evaluate_circuits};
pub use metrics::{FaithfulnessUndefined, cmd, cpr, faithfulness};
pub use pipeline::{Candidates, CurveKind, CurvePoint, Curves, EvalPlan, Evaluation, circuits_at_budgets, evaluate_candidates};
