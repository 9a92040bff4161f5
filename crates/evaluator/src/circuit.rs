//! Circuits from scores (mib-spec §5): top-n (optionally with preferred edges first) and greedy
//! selection, then pruning to a fixed point.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use graph::{EdgeMatrix, Graph};

/// MIB's ten edge budgets, as fractions of all edges.
pub const MIB_FRACTIONS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// How scores rank edges: signed (CPR: edges that help the task) or by magnitude (CMD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Best signed score first: the edges that help the task most.
    Signed,
    /// Largest |score| first: the edges that matter most either way.
    Absolute,
}

impl Selection {
    fn key(self, score: f32) -> f32 {
        match self {
            Selection::Signed => score,
            Selection::Absolute => score.abs(),
        }
    }
}

/// A circuit over a graph: which edges and nodes are on, and how many edges were asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltCircuit {
    /// True = the edge is in the circuit (kept clean).
    pub edges: EdgeMatrix<bool>,
    /// Per node index (sources 0..n_fwd, then logits): true = on.
    pub nodes: Vec<bool>,
    /// Edges selected before pruning (the budget n, or fewer if the candidates ran out).
    pub nominal_edges: usize,
    /// Edges left after pruning.
    pub edges_after_pruning: usize,
}

/// Edges ordered best first: the preferred ones (when a mask is given) before all others, each
/// group by key descending, then by (fwd, bwd) index so ties are deterministic.
fn ranked_edges(graph: &Graph, scores: &EdgeMatrix<f32>, preferred: Option<&EdgeMatrix<bool>>, selection: Selection) -> Vec<(usize, usize)> {
    let first = |edge: (usize, usize)| preferred.is_some_and(|p| p[edge]);
    let mut edges: Vec<(usize, usize)> = graph.edges().collect();
    edges.sort_by(|&a, &b| {
        let (ka, kb) = (selection.key(scores[a]), selection.key(scores[b]));
        first(b).cmp(&first(a)).then(kb.total_cmp(&ka)).then(a.cmp(&b))
    });
    edges
}

/// Switches nodes on and off from the on-edges, then removes dangling edges and nodes until nothing
/// changes (both nodes and edges: MIB's pinned code stops when nodes stop changing, which leaves
/// dangling edges; fixed here). Returns the on-nodes.
pub fn prune(graph: &Graph, edges: &mut EdgeMatrix<bool>) -> Vec<bool> {
    let (n_fwd, n_bwd) = (graph.n_fwd(), graph.n_bwd());
    let dest_nodes: Vec<usize> = (0..n_bwd).map(|b| graph.dest_node(b).expect("a slot of the graph")).collect();
    let mut nodes = vec![false; n_fwd + 1];
    loop {
        let mut has_out = vec![false; n_fwd + 1];
        let mut has_in = vec![false; n_fwd + 1];
        for (f, b) in graph.edges() {
            if edges[(f, b)] {
                has_out[f] = true;
                has_in[dest_nodes[b]] = true;
            }
        }
        let new_nodes: Vec<bool> = (0..=n_fwd)
            .map(|i| {
                let fed = i == 0 || has_in[i];
                let read = i == n_fwd || has_out[i];
                i == n_fwd || (fed && read)
            })
            .collect();
        let mut changed = new_nodes != nodes;
        nodes = new_nodes;
        for (f, b) in graph.edges() {
            let cell = &mut edges[(f, b)];
            if *cell && !(nodes[f] && nodes[dest_nodes[b]]) {
                *cell = false;
                changed = true;
            }
        }
        if !changed {
            return nodes;
        }
    }
}

fn finish(graph: &Graph, mut edges: EdgeMatrix<bool>, nominal_edges: usize) -> BuiltCircuit {
    let nodes = prune(graph, &mut edges);
    let edges_after_pruning = edges.count_edges();
    BuiltCircuit { edges, nodes, nominal_edges, edges_after_pruning }
}

/// A circuit chosen by a method (or a file) as it was given, pruned to the same fixed point as
/// selected ones: its nominal size is the edges it had, its pruned size what is left.
pub fn given(graph: &Graph, edges: &EdgeMatrix<bool>) -> BuiltCircuit {
    finish(graph, edges.clone(), edges.count_edges())
}

/// The `n` best edges by score, then pruned.
pub fn top_n(graph: &Graph, scores: &EdgeMatrix<f32>, n: usize, selection: Selection) -> BuiltCircuit {
    take_ranked(graph, ranked_edges(graph, scores, None, selection), n)
}

/// The `n` best edges with the `preferred` ones first (the bootstrap's selection, arXiv 2510.25786:
/// the edges a method is confident about, by score, then the budget filled with the rest by score),
/// then pruned. With no edge preferred it is [`top_n`].
pub fn top_n_preferred(graph: &Graph, scores: &EdgeMatrix<f32>, preferred: &EdgeMatrix<bool>, n: usize, selection: Selection) -> BuiltCircuit {
    take_ranked(graph, ranked_edges(graph, scores, Some(preferred), selection), n)
}

/// The first `n` edges of `ranked` (all of them when there are fewer), then pruned.
fn take_ranked(graph: &Graph, ranked: Vec<(usize, usize)>, n: usize) -> BuiltCircuit {
    let mut edges = EdgeMatrix::filled(*graph, false);
    let nominal = n.min(ranked.len());
    for &edge in &ranked[..nominal] {
        edges[edge] = true;
    }
    finish(graph, edges, nominal)
}

/// Heap entry of the greedy search: best key first, ties by lowest index.
#[derive(PartialEq)]
struct Candidate {
    key: f32,
    fwd: usize,
    bwd: usize,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.total_cmp(&other.key).then((other.fwd, other.bwd).cmp(&(self.fwd, self.bwd)))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Grows a circuit backwards from the logits: repeatedly takes the best edge whose child is on,
/// switching its parent on and making the parent's incoming edges candidates; `n` edges, then pruned.
pub fn greedy(graph: &Graph, scores: &EdgeMatrix<f32>, n: usize, selection: Selection) -> BuiltCircuit {
    let n_bwd = graph.n_bwd();
    let dest_nodes: Vec<usize> = (0..n_bwd).map(|b| graph.dest_node(b).expect("a slot of the graph")).collect();
    // Incoming edges of each node, grouped once.
    let mut incoming: Vec<Vec<(usize, usize)>> = vec![Vec::new(); graph.n_fwd() + 1];
    for (f, b) in graph.edges() {
        incoming[dest_nodes[b]].push((f, b));
    }
    let mut heap = BinaryHeap::new();
    let mut node_on = vec![false; graph.n_fwd() + 1];
    let switch_on = |node: usize, heap: &mut BinaryHeap<Candidate>, node_on: &mut Vec<bool>| {
        if !node_on[node] {
            node_on[node] = true;
            for &(fwd, bwd) in &incoming[node] {
                heap.push(Candidate { key: selection.key(scores[(fwd, bwd)]), fwd, bwd });
            }
        }
    };
    switch_on(graph.n_fwd(), &mut heap, &mut node_on);
    let mut edges = EdgeMatrix::filled(*graph, false);
    let mut taken = 0;
    while taken < n {
        let Some(Candidate { fwd, bwd, .. }) = heap.pop() else { break };
        edges[(fwd, bwd)] = true;
        taken += 1;
        switch_on(fwd, &mut heap, &mut node_on);
    }
    finish(graph, edges, taken)
}
