//! Dense per-edge scores in EAP-IG's [n_fwd × n_bwd] layout, with the cost of computing them.

use graph::{Circuit, EdgeMatrix, Graph};

/// Forward and backward passes a method spent (a patched pass with many masks counts once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassCount {
    /// Forward passes, patched or plain.
    pub forward: usize,
    /// Backward passes.
    pub backward: usize,
}

impl std::ops::AddAssign for PassCount {
    fn add_assign(&mut self, other: Self) {
        self.forward += other.forward;
        self.backward += other.backward;
    }
}

/// Signed scores of every real edge; cells that are not edges hold 0.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeScores {
    /// One score per cell of the graph's layout.
    pub values: EdgeMatrix<f32>,
    /// What computing them cost.
    pub passes: PassCount,
    /// The edges the method is confident about (a bootstrap's: interval excluding 0), which the
    /// evaluator takes before all others at every budget; None ranks by score alone.
    pub preferred: Option<EdgeMatrix<bool>>,
}

/// Scores that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScoresError {
    /// A score that is NaN or infinite: no ranking can use it.
    #[error("edge {edge} has score {value}, not a finite number")]
    NotFinite {
        /// The edge's name.
        edge: String,
        /// The score found.
        value: f32,
    },
    /// A circuit file leaves an edge unscored.
    #[error("edge {edge} has no score")]
    Missing {
        /// The edge's name.
        edge: String,
    },
    /// The circuit could not be built or read.
    #[error(transparent)]
    Circuit(#[from] graph::CircuitError),
}

/// The name of edge `(f, b)`, or its indices where it has none.
fn edge_label(graph: &Graph, (f, b): (usize, usize)) -> String {
    graph.edge_name(f, b).unwrap_or_else(|_| format!("({f}, {b})"))
}

impl EdgeScores {
    /// The graph the scores are laid out on.
    pub fn graph(&self) -> Graph {
        self.values.graph()
    }

    /// Checks every real edge's score is finite, naming the first that is not.
    pub fn validate(&self) -> Result<(), ScoresError> {
        match self.values.edge_values().find(|(_, v)| !v.is_finite()) {
            Some((edge, &value)) => Err(ScoresError::NotFinite { edge: edge_label(&self.graph(), edge), value }),
            None => Ok(()),
        }
    }

    /// The scores as an EAP-IG circuit file (every edge scored, none marked in the graph).
    pub fn to_circuit(&self, d_model: usize) -> Result<Circuit, ScoresError> {
        self.validate()?;
        let mut circuit = Circuit::new(self.graph(), d_model);
        for ((f, b), &score) in self.values.edge_values() {
            circuit.set_score(f, b, Some(score))?;
        }
        Ok(circuit)
    }

    /// Scores read from an EAP-IG circuit file; every real edge must have one.
    pub fn from_circuit(circuit: &Circuit) -> Result<Self, ScoresError> {
        let graph = circuit.graph();
        let mut values = EdgeMatrix::filled(graph, 0.0);
        for (f, b) in graph.edges() {
            values[(f, b)] = circuit.score(f, b).ok_or_else(|| ScoresError::Missing { edge: edge_label(&graph, (f, b)) })?;
        }
        let scores = Self { values, passes: PassCount::default(), preferred: None };
        scores.validate()?;
        Ok(scores)
    }
}
