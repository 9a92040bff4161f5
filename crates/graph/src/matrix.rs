//! Dense per-edge matrices in EAP-IG's layout: row = forward (source) index, column = backward
//! (destination slot) index, row-major. Scores, keep-masks and circuits all use it, so no code
//! computes `fwd * n_bwd + bwd` by hand.

use std::ops::{Index, IndexMut};

use crate::graph::{Graph, GraphError};

/// One value per cell of a graph's dense `[n_fwd, n_bwd]` layout; cells that are not real edges
/// hold a value too (the layout is EAP-IG's), which edge-wise readers skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeMatrix<T> {
    graph: Graph,
    values: Vec<T>,
}

impl<T: Clone> EdgeMatrix<T> {
    /// Every cell set to `value`.
    pub fn filled(graph: Graph, value: T) -> Self {
        Self { graph, values: vec![value; graph.n_fwd() * graph.n_bwd()] }
    }

    /// The same matrix with every real edge's cell set to `value` (other cells untouched).
    pub fn with_edges(mut self, value: T) -> Self {
        for (fwd, bwd) in self.graph.edges() {
            self[(fwd, bwd)] = value.clone();
        }
        self
    }
}

impl<T> EdgeMatrix<T> {
    /// Wraps row-major values, refusing a length that is not the graph's `n_fwd × n_bwd`.
    pub fn from_vec(graph: Graph, values: Vec<T>) -> Result<Self, GraphError> {
        let expected = graph.n_fwd() * graph.n_bwd();
        if values.len() != expected {
            return Err(GraphError::MatrixSize { found: values.len(), expected });
        }
        Ok(Self { graph, values })
    }

    /// A matrix whose cell `(fwd, bwd)` is `f(fwd, bwd)`, for every cell.
    pub fn from_fn(graph: Graph, mut f: impl FnMut(usize, usize) -> T) -> Self {
        let n_bwd = graph.n_bwd();
        Self { graph, values: (0..graph.n_fwd() * n_bwd).map(|i| f(i / n_bwd, i % n_bwd)).collect() }
    }

    /// The graph whose layout this is.
    pub fn graph(&self) -> Graph {
        self.graph
    }

    /// The row-major cells, for code that hands the matrix to a tensor.
    pub fn as_slice(&self) -> &[T] {
        &self.values
    }

    /// The row-major cells, mutable (accumulators).
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.values
    }

    /// The row-major cells, consuming the matrix.
    pub fn into_vec(self) -> Vec<T> {
        self.values
    }

    /// Cell `(fwd, bwd)`, or None outside the layout.
    pub fn get(&self, fwd: usize, bwd: usize) -> Option<&T> {
        (fwd < self.graph.n_fwd() && bwd < self.graph.n_bwd()).then(|| &self.values[fwd * self.graph.n_bwd() + bwd])
    }

    /// Row `fwd`: the cells of every destination slot for one source.
    pub fn row(&self, fwd: usize) -> &[T] {
        let n_bwd = self.graph.n_bwd();
        &self.values[fwd * n_bwd..(fwd + 1) * n_bwd]
    }

    /// Every real edge with its value, in [`Graph::edges`] order.
    pub fn edge_values(&self) -> impl Iterator<Item = ((usize, usize), &T)> + '_ {
        self.graph.edges().map(move |e| (e, &self[e]))
    }

    /// A matrix of the same layout with `f` applied to every cell.
    pub fn map<U>(&self, f: impl FnMut(&T) -> U) -> EdgeMatrix<U> {
        EdgeMatrix { graph: self.graph, values: self.values.iter().map(f).collect() }
    }

    fn offset(&self, (fwd, bwd): (usize, usize)) -> usize {
        let (n_fwd, n_bwd) = (self.graph.n_fwd(), self.graph.n_bwd());
        assert!(fwd < n_fwd && bwd < n_bwd, "cell ({fwd}, {bwd}) is outside the [{n_fwd}, {n_bwd}] edge layout");
        fwd * n_bwd + bwd
    }
}

impl EdgeMatrix<bool> {
    /// Real edges whose cell is true: a circuit's size.
    pub fn count_edges(&self) -> usize {
        self.edge_values().filter(|(_, on)| **on).count()
    }
}

impl<T> Index<(usize, usize)> for EdgeMatrix<T> {
    type Output = T;

    fn index(&self, cell: (usize, usize)) -> &T {
        &self.values[self.offset(cell)]
    }
}

impl<T> IndexMut<(usize, usize)> for EdgeMatrix<T> {
    fn index_mut(&mut self, cell: (usize, usize)) -> &mut T {
        let offset = self.offset(cell);
        &mut self.values[offset]
    }
}
