//! `random`: uniform scores in [−1, 1), seeded — the floor every method must beat.

use graph::{EdgeMatrix, Graph};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scores::{EdgeScores, PassCount};

/// Uniform random scores for every real edge, identical for identical seeds.
pub fn random_scores(graph: &Graph, seed: u64) -> EdgeScores {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = EdgeMatrix::filled(*graph, 0.0);
    for edge in graph.edges() {
        values[edge] = rng.random_range(-1.0f32..1.0);
    }
    EdgeScores { values, passes: PassCount::default(), preferred: None }
}
