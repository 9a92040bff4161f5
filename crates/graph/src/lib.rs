//! The MIB circuit graph of a transformer (spec §1): its nodes, edges, names and the EAP-IG index
//! layout of dense `[n_fwd, n_bwd]` matrices, plus circuits in EAP-IG's JSON format.
#![warn(missing_docs)]

mod circuit;
mod graph;
mod matrix;
mod names;

pub use circuit::{Circuit, CircuitError};
pub use graph::{Dest, Graph, GraphError, GraphShape, LayerIndices, Node, Qkv, Source};
pub use matrix::EdgeMatrix;
