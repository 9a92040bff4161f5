//! Edge attribution: each method is a small module producing a signed score per edge of the MIB
//! graph (positive = the edge helps the task), or one circuit per budget, and the number of
//! passes it spent.
#![warn(missing_docs)]

pub mod acdc;
pub mod bootstrap;
pub mod edge_pruning;
pub mod ensemble;
pub mod exact;
pub mod gradient;
pub mod ifr;
pub mod learned;
pub mod method;
pub mod optimal;
pub mod pgbct;
pub mod random;
pub mod scores;
pub mod ugs;

pub use method::{BudgetCircuits, COMPOSITE_FORMS, Discovery, METHOD_NAMES, Method, MethodError, MethodOutput, Progress, fit_ablation, run_method};
pub use scores::{EdgeScores, PassCount, ScoresError};
