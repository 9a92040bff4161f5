//! The true circuits of tracr-compiled models at MIB granularity, and scores of methods against
//! them.
//!
//! A tracr model is compiled from a RASP program, so every residual dimension has a name
//! (`tokens:3`, `indices:0`, `one`, …; `config.json`'s `residual_labels`) and every weight that is
//! not part of the program is an exact zero. Which MIB edge (`writer -> reader`) carries
//! information can therefore be read off the weights and the dataset instead of being estimated.
//! [`TrueEdges::compute`] derives three edge sets:
//!
//! * **structural**: the edges through which the program's computation can flow at all. A writer
//!   (`input`, `a{l}.h{h}`, `m{l}`) writes the residual dimensions whose columns of its output map
//!   are nonzero (`input`: the token and position embeddings; a head: its rows of `o_proj`; an MLP:
//!   `c_proj`); a reader (`a{l}.h{h}<q|k|v>`, `m{l}`, `logits`) reads the dimensions whose rows of
//!   its input map are nonzero (the head's columns of q, k or v; `c_fc`; the unembedding). An edge
//!   is a candidate when the two share a dimension, and is kept when it lies on some
//!   `input -> … -> logits` path of candidates ([`close_paths`]). This is the circuit under **zero
//!   ablation**: zeroing an edge outside it changes no output on any input (its reader ignores
//!   every dimension its writer writes, or nothing it feeds reaches the logits), while each edge
//!   in it carries part of what its reader reads on the way to the logits.
//! * **patching** (ablation-specific): the structural edges whose writer's output, restricted to
//!   the shared dimensions, differs between the clean and the corrupt input of some dataset pair
//!   at some position other than BOS (position 0), closed to paths again (every pair of the
//!   dataset, both splits, is used; [`compute_dir`] reads them). This is the circuit
//!   under **resample / counterfactual ablation** on this dataset: an edge that carries the same
//!   value on both inputs of every pair (sequence length, positions, the constant `one`) is
//!   patched to itself, so no patching method can see it, and it is not in this set.
//! * **plumbing**: the structural edges whose shared dimensions are all bookkeeping directions
//!   ([`bookkeeping_labels`]: `one` and `tokens:<BOS>`). tracr adds them to every categorical
//!   attention so that a query with no match attends to BOS; they carry no information about the
//!   input. The tag is informational: plumbing edges stay in the structural set (zeroing them
//!   can change the output: attention to BOS, an MLP's `one` bias input), and none is in the patching set (what they carry is the same
//!   on every input). The tag is by labels only, so it does not reproduce ACDC's hand-made
//!   `reverse` circuit exactly: ACDC leaves out `input->a0.h0<q>` and `<k>` (a select with the
//!   TRUE predicate, whose q and k share token directions too) and keeps `input->a0.h0<v>` and
//!   `input->m0` (BOS and `one` only); the tests spell this out.
//!
//! Thresholds: a weight is nonzero when its magnitude exceeds [`WEIGHT_ZERO`] (`1e-6`; tracr's
//! unused weights are exact zeros and the smallest nonzero magnitude in the committed models is
//! 1.0; a test checks that none is below 1e3 × the threshold); two activations differ when they
//! are more than [`ACTIVATION_TOLERANCE`] apart (`1e-3`; a test checks that every structural
//! edge's largest difference is below `1e-5`, float noise, or above `1e-2`). Biases: q, k, v and `c_fc` biases do not read
//! the residual stream and are ignored; a nonzero `o_proj` or `c_proj` bias (tracr compiles none)
//! is refused, since MIB gives an attention layer's output bias to no single head.
//!
//! The sets are stored as `models/tracr-*/true_edges.json` ([`TrueEdges::write`],
//! [`TrueEdges::read`]): edge names sorted, and per structural edge the residual labels it shares.
//! [`write_all`] recomputes and rewrites every committed model's file; run it with
//! `cargo test --release -p groundtruth -- --ignored write_committed_true_edges`. A test checks
//! that the stored files equal what [`TrueEdges::compute`] gives.
//!
//! Planted circuits: a trained model whose circuit was planted (`planted.json` beside it) has as
//! true edges those among the input, its planted components and the logits
//! ([`TrueEdges::planted`]); a test patches each node to check that nothing else matters.
//!
//! Scoring: [`auroc`] ranks every real edge of the graph by the absolute value of a method's
//! score (MIB's InterpBench protocol; ties share their average rank, the Mann–Whitney U
//! statistic), and [`precision_recall`] compares one circuit with a true set.
#![warn(missing_docs)]

mod compute;
mod error;
mod file;
mod planted;
mod score;

pub use compute::{ACTIVATION_TOLERANCE, WEIGHT_ZERO, bookkeeping_labels, close_paths, compute_dir, reader_dims, writer_differences, writer_dims};
pub use error::GroundTruthError;
pub use file::{FILE_NAME, planted_dir, tracr_dirs, write_all};
pub use planted::{OUTSIDE_EFFECT_BOUND, PLANTED_FILE, planted_components, planted_dirs};
pub use score::{PrecisionRecall, auroc, precision_recall};

use std::collections::BTreeMap;

use graph::{EdgeMatrix, Graph};

/// The three true edge sets of one compiled program (see the crate docs for their meaning).
#[derive(Debug, Clone, PartialEq)]
pub struct TrueEdges {
    /// The RASP program's name.
    pub program: String,
    /// The MIB graph the sets are edges of.
    pub graph: Graph,
    /// Edges through which the computation can flow (the zero-ablation circuit).
    pub structural: EdgeMatrix<bool>,
    /// Structural edges that carry a clean/corrupt difference (the resample-ablation circuit).
    pub patching: EdgeMatrix<bool>,
    /// Structural edges that share only bookkeeping dimensions (`one`, `tokens:BOS`).
    pub plumbing: EdgeMatrix<bool>,
    /// The residual labels each structural edge's writer and reader share, keyed by `(fwd, bwd)`.
    pub shared: BTreeMap<(usize, usize), Vec<String>>,
}

impl TrueEdges {
    /// The names of the edges set in `set`, sorted.
    pub fn names(&self, set: &EdgeMatrix<bool>) -> Vec<String> {
        let mut names: Vec<String> = set.edge_values().filter(|(_, on)| **on).filter_map(|((fwd, bwd), _)| self.graph.edge_name(fwd, bwd).ok()).collect();
        names.sort();
        names
    }
}
