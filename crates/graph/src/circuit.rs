//! Circuits (edge scores plus edge and node membership) in EAP-IG's `Graph.to_json` format:
//! `{"cfg": {...}, "nodes": {"input": {"in_graph": true}, ...},
//!   "edges": {"input->a0.h0<q>": {"score": 0.1, "in_graph": false}, ...}}`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io;

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::graph::{Graph, GraphError};
use crate::matrix::EdgeMatrix;
use crate::names::EdgeName;

/// Why a circuit could not be read, written or changed; each message names the offending item.
#[derive(Debug, Error)]
pub enum CircuitError {
    /// The text is not JSON of the expected shape, or writing it failed.
    #[error("circuit JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The file describes a model whose attention and MLP run in parallel; the spec graph is sequential.
    #[error("circuit cfg has parallel_attn_mlp = true, but circuitbench graphs are sequential")]
    ParallelAttnMlp,
    /// The file was made for a model of another shape.
    #[error(
        "circuit cfg is for {file_layers} layers and {file_heads} heads, \
         but the model has {model_layers} layers and {model_heads} heads"
    )]
    ShapeMismatch {
        /// `n_layers` in the file.
        file_layers: usize,
        /// `n_heads` in the file.
        file_heads: usize,
        /// Layers of the model.
        model_layers: usize,
        /// Heads of the model.
        model_heads: usize,
    },
    /// A node key that is not a node of the model.
    #[error("unknown node in circuit: {0}")]
    UnknownNode(GraphError),
    /// An edge key that is not a real edge of the model.
    #[error("unknown edge in circuit: {0}")]
    UnknownEdge(GraphError),
    /// The file leaves out nodes or edges of the model.
    #[error("circuit lacks {count} {kind}, e.g. {first:?}")]
    Missing {
        /// "nodes" or "edges".
        kind: &'static str,
        /// How many are missing.
        count: usize,
        /// The first missing one in graph order.
        first: String,
    },
    /// A score that is NaN, infinite, out of `f32` range or not a number.
    #[error("edge {edge:?} has score {value}, not a finite f32")]
    BadScore {
        /// The edge's name.
        edge: String,
        /// The score as found.
        value: String,
    },
    /// An index that does not address a real edge or node of the graph.
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// Edge scores and the membership of edges and nodes for one model: what a circuit file stores.
///
/// Scores are finite or absent (`None`, written as JSON `null`); only real edges carry them.
#[derive(Debug, Clone, PartialEq)]
pub struct Circuit {
    graph: Graph,
    d_model: usize,
    /// `None` off the real edges.
    scores: EdgeMatrix<Option<f32>>,
    /// `true` only on real edges in the circuit.
    edges_in_graph: EdgeMatrix<bool>,
    /// By node index (forward indices, then `logits`).
    nodes_in_graph: Vec<bool>,
}

impl Circuit {
    /// An empty circuit (no scores, nothing in the graph), to be filled by a method or a selection.
    pub fn new(graph: Graph, d_model: usize) -> Self {
        Self {
            graph,
            d_model,
            scores: EdgeMatrix::filled(graph, None),
            edges_in_graph: EdgeMatrix::filled(graph, false),
            nodes_in_graph: vec![false; graph.n_nodes()],
        }
    }

    /// The graph the circuit lives on, for indices and names.
    pub fn graph(&self) -> Graph {
        self.graph
    }

    /// The model width recorded in the file's cfg, carried so written files match EAP-IG's.
    pub fn d_model(&self) -> usize {
        self.d_model
    }

    /// The score of edge `(fwd, bwd)`; `None` when unscored or not a real edge.
    pub fn score(&self, fwd: usize, bwd: usize) -> Option<f32> {
        self.scores.get(fwd, bwd).copied().flatten()
    }

    /// Sets (or clears) the score of a real edge, refusing non-finite scores that JSON cannot carry.
    pub fn set_score(&mut self, fwd: usize, bwd: usize, score: Option<f32>) -> Result<(), CircuitError> {
        let (src, dst) = self.graph.edge_ends(fwd, bwd)?;
        if let Some(value) = score.filter(|s| !s.is_finite()) {
            return Err(CircuitError::BadScore { edge: EdgeName(src, dst).to_string(), value: value.to_string() });
        }
        self.scores[(fwd, bwd)] = score;
        Ok(())
    }

    /// Whether edge `(fwd, bwd)` is in the circuit; `false` for cells that are not real edges.
    pub fn edge_in_graph(&self, fwd: usize, bwd: usize) -> bool {
        self.edges_in_graph.get(fwd, bwd).copied().unwrap_or(false)
    }

    /// Puts a real edge in the circuit or takes it out.
    pub fn set_edge_in_graph(&mut self, fwd: usize, bwd: usize, in_graph: bool) -> Result<(), CircuitError> {
        self.graph.edge_ends(fwd, bwd)?;
        self.edges_in_graph[(fwd, bwd)] = in_graph;
        Ok(())
    }

    /// Whether the node at a node index (see [`Graph::node_index`]) is in the circuit.
    pub fn node_in_graph(&self, node: usize) -> bool {
        self.nodes_in_graph.get(node).copied().unwrap_or(false)
    }

    /// Puts a node in the circuit or takes it out.
    pub fn set_node_in_graph(&mut self, node: usize, in_graph: bool) -> Result<(), CircuitError> {
        let len = self.nodes_in_graph.len();
        let slot = self.nodes_in_graph.get_mut(node).ok_or(GraphError::IndexOutOfRange { kind: "node", index: node, len })?;
        *slot = in_graph;
        Ok(())
    }

    /// Edge membership as a dense mask: the keep-mask of a patched run.
    pub fn edge_mask(&self) -> &EdgeMatrix<bool> {
        &self.edges_in_graph
    }

    /// The circuit as EAP-IG JSON text, nodes and edges in EAP-IG's order.
    pub fn to_json_string(&self) -> Result<String, CircuitError> {
        Ok(serde_json::to_string(&JsonView(self))?)
    }

    /// Streams the circuit as EAP-IG JSON, for large models where the text would be hundreds of MB.
    pub fn write_json(&self, writer: impl io::Write) -> Result<(), CircuitError> {
        Ok(serde_json::to_writer(writer, &JsonView(self))?)
    }

    /// Reads an EAP-IG circuit file for the model of `graph`, checking its cfg, every name and score.
    ///
    /// Python's `json` writes non-finite floats as bare `NaN`/`Infinity`; such scores are reported
    /// with their edge's name rather than as a JSON syntax error. Every node and edge must appear.
    pub fn from_json_str(text: &str, graph: Graph) -> Result<Self, CircuitError> {
        let raw: RawCircuit = serde_json::from_str(&quote_non_finite(text))?;
        let shape = graph.shape();
        if raw.cfg.parallel_attn_mlp {
            return Err(CircuitError::ParallelAttnMlp);
        }
        if (raw.cfg.n_layers, raw.cfg.n_heads) != (shape.n_layers, shape.n_heads) {
            return Err(CircuitError::ShapeMismatch {
                file_layers: raw.cfg.n_layers,
                file_heads: raw.cfg.n_heads,
                model_layers: shape.n_layers,
                model_heads: shape.n_heads,
            });
        }
        let mut circuit = Self::new(graph, raw.cfg.d_model);

        let mut node_seen = vec![false; graph.n_nodes()];
        for (name, node) in &raw.nodes {
            let index = graph.parse_node_name(name).map_err(CircuitError::UnknownNode)?;
            circuit.nodes_in_graph[index] = node.in_graph;
            node_seen[index] = true;
        }
        if let Some(first) = node_seen.iter().position(|seen| !seen) {
            return Err(CircuitError::Missing { kind: "nodes", count: graph.n_nodes() - raw.nodes.len(), first: graph.node_of(first).to_string() });
        }

        let mut edge_seen = EdgeMatrix::filled(graph, false);
        for (name, edge) in &raw.edges {
            let cell = graph.parse_edge_name(name).map_err(CircuitError::UnknownEdge)?;
            circuit.scores[cell] = edge.score.as_ref().map(|score| score.to_f32(name)).transpose()?;
            circuit.edges_in_graph[cell] = edge.in_graph;
            edge_seen[cell] = true;
        }
        // Canonical names are unique per edge, so distinct keys are distinct edges.
        if let Some((fwd, bwd)) = graph.edges().find(|&cell| !edge_seen[cell]) {
            return Err(CircuitError::Missing { kind: "edges", count: graph.n_edges() - raw.edges.len(), first: graph.edge_name(fwd, bwd)? });
        }
        Ok(circuit)
    }
}

#[derive(Serialize, Deserialize)]
struct CfgJson {
    n_layers: usize,
    n_heads: usize,
    #[serde(default)]
    parallel_attn_mlp: bool,
    d_model: usize,
}

/// A node entry; extra keys EAP-IG may write (`score`, `neurons`) are ignored on reading.
#[derive(Serialize, Deserialize)]
struct NodeJson {
    in_graph: bool,
}

#[derive(Serialize)]
struct EdgeOut {
    score: Option<f32>,
    in_graph: bool,
}

#[derive(Deserialize)]
struct RawCircuit {
    cfg: CfgJson,
    nodes: BTreeMap<String, NodeJson>,
    edges: BTreeMap<String, RawEdge>,
}

#[derive(Deserialize)]
struct RawEdge {
    #[serde(default)]
    score: Option<RawScore>,
    in_graph: bool,
}

/// A score as found: a number, or a string (Python's quoted non-finite literals, or junk).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawScore {
    Number(f64),
    Text(String),
}

impl RawScore {
    fn to_f32(&self, edge: &str) -> Result<f32, CircuitError> {
        let bad = |value: String| CircuitError::BadScore { edge: edge.to_owned(), value };
        match *self {
            Self::Number(x) if (x as f32).is_finite() => Ok(x as f32),
            Self::Number(x) => Err(bad(format!("{x:?}"))),
            Self::Text(ref text) => Err(bad(text.clone())),
        }
    }
}

/// Wraps Python's bare `NaN`, `Infinity` and `-Infinity` tokens in quotes so the text parses as JSON
/// and a bad score can be reported by edge. Strings are left alone; valid JSON is returned unchanged.
fn quote_non_finite(text: &str) -> Cow<'_, str> {
    const LITERALS: [&str; 3] = ["NaN", "Infinity", "-Infinity"];
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let (mut copied, mut i) = (0, 0);
    let (mut in_string, mut escaped) = (false, false);
    while i < bytes.len() {
        let byte = bytes[i];
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if let Some(literal) = LITERALS.iter().find(|lit| bytes[i..].starts_with(lit.as_bytes())) {
            // `i` is at an ASCII byte, hence a char boundary, as is `copied`.
            let out = out.get_or_insert_with(|| String::with_capacity(text.len() + 64));
            out.push_str(&text[copied..i]);
            out.push('"');
            out.push_str(literal);
            out.push('"');
            i += literal.len();
            copied = i;
            continue;
        }
        i += 1;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
    }
}

/// Serialises a circuit without building an intermediate JSON tree.
struct JsonView<'a>(&'a Circuit);

impl Serialize for JsonView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let circuit = self.0;
        let graph = circuit.graph;
        let shape = graph.shape();
        let cfg = CfgJson { n_layers: shape.n_layers, n_heads: shape.n_heads, parallel_attn_mlp: false, d_model: circuit.d_model };
        let nodes = Entries(|| {
            (0..graph.n_nodes()).map(|index| {
                let entry = NodeJson { in_graph: circuit.nodes_in_graph[index] };
                (Name(graph.node_of(index)), entry)
            })
        });
        let edges = Entries(|| {
            graph.edges().map(|(fwd, bwd)| {
                let entry = EdgeOut { score: circuit.scores[(fwd, bwd)], in_graph: circuit.edges_in_graph[(fwd, bwd)] };
                (Name(EdgeName(graph.source_of(fwd), graph.dest_of(bwd))), entry)
            })
        });
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("cfg", &cfg)?;
        map.serialize_entry("nodes", &nodes)?;
        map.serialize_entry("edges", &edges)?;
        map.end()
    }
}

/// A JSON object streamed from a fresh iterator of `(key, value)` pairs.
struct Entries<F>(F);

impl<F, I, K, V> Serialize for Entries<F>
where
    F: Fn() -> I,
    I: Iterator<Item = (K, V)>,
    K: Serialize,
    V: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map((self.0)())
    }
}

/// A map key written through `Display`, so names are not allocated one by one.
struct Name<T>(T);

impl<T: fmt::Display> Serialize for Name<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}
