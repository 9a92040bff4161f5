//! Dense per-edge scores in EAP-IG's [n_fwd × n_bwd] layout, with the cost of computing them.

use graph::{Circuit, Graph};

/// Forward and backward passes a method spent (a patched pass with many masks counts once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassCount {
    pub forward: usize,
    pub backward: usize,
}

/// Signed scores of every real edge; cells that are not edges hold 0.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeScores {
    pub graph: Graph,
    /// Row-major [n_fwd × n_bwd].
    pub values: Vec<f32>,
    pub passes: PassCount,
}

/// Scores that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScoresError {
    #[error("edge {edge} has score {value}, not a finite number")]
    NotFinite { edge: String, value: f32 },
    #[error("edge {edge} has no score")]
    Missing { edge: String },
    #[error(transparent)]
    Circuit(#[from] graph::CircuitError),
}

impl EdgeScores {
    /// Checks every real edge's score is finite, naming the first that is not.
    pub fn validate(&self) -> Result<(), ScoresError> {
        let n_bwd = self.graph.n_bwd();
        for (f, b) in self.graph.edges() {
            let value = self.values[f * n_bwd + b];
            if !value.is_finite() {
                let edge = self.graph.edge_name(f, b).unwrap_or_else(|_| format!("({f}, {b})"));
                return Err(ScoresError::NotFinite { edge, value });
            }
        }
        Ok(())
    }

    /// The scores as an EAP-IG circuit file (every edge scored, none marked in the graph).
    pub fn to_circuit(&self, d_model: usize) -> Result<Circuit, ScoresError> {
        self.validate()?;
        let mut circuit = Circuit::new(self.graph, d_model);
        for (f, b) in self.graph.edges() {
            circuit.set_score(f, b, Some(self.values[f * self.graph.n_bwd() + b]))?;
        }
        Ok(circuit)
    }

    /// Scores read from an EAP-IG circuit file; every real edge must have one.
    pub fn from_circuit(circuit: &Circuit) -> Result<Self, ScoresError> {
        let graph = circuit.graph();
        let mut values = vec![0.0; graph.n_fwd() * graph.n_bwd()];
        for (f, b) in graph.edges() {
            let edge = || graph.edge_name(f, b).unwrap_or_else(|_| format!("({f}, {b})"));
            values[f * graph.n_bwd() + b] = circuit.score(f, b).ok_or_else(|| ScoresError::Missing { edge: edge() })?;
        }
        let scores = Self { graph, values, passes: PassCount::default() };
        scores.validate()?;
        Ok(scores)
    }
}
