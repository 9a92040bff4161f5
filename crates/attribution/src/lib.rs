//! Edge attribution: each method is a small module producing a signed score per edge of the MIB
//! graph (positive = the edge helps the task) and the number of passes it spent.

pub mod exact;
pub mod gradient;
pub mod ifr;
pub mod method;
pub mod random;
pub mod scores;

pub use method::{METHOD_NAMES, Method, MethodError, RunOptions, run_method};
pub use scores::{EdgeScores, PassCount, ScoresError};
