//! The true circuit of a trained model whose circuit was planted (`cargo xtask train --planted`,
//! `taskmodels::planted`): its `planted.json` names the heads and MLPs that were trained to carry
//! the task while every other component read another prompt's output. The true edges are those
//! among the input, the planted components and the logits (structural = patching; no plumbing).
//! That nothing else matters is checked by exact patching of each node (the evaluator's
//! `evaluate_circuits`, in this crate's tests), against [`OUTSIDE_EFFECT_BOUND`].

use std::path::{Path, PathBuf};

use graph::{EdgeMatrix, Graph};
use serde::Deserialize;

use crate::TrueEdges;
use crate::compute::close_paths;
use crate::error::GroundTruthError;

/// The file beside a planted model naming its planted components.
pub const PLANTED_FILE: &str = "planted.json";

/// A planted component outside which exact patching must find no effect above this fraction of
/// the model's full effect (m(N) − m(∅)): the stated bound of the planted models' check.
pub const OUTSIDE_EFFECT_BOUND: f64 = 0.05;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlantedFile {
    components: Vec<String>,
}

/// The forward indices of the components `dir`'s `planted.json` names (`a{l}.h{h}`, `m{l}`).
pub fn planted_components(dir: &Path, graph: Graph) -> Result<Vec<usize>, GroundTruthError> {
    let path = dir.join(PLANTED_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| GroundTruthError::Io { path: path.clone(), source })?;
    let file: PlantedFile = serde_json::from_str(&text).map_err(|source| GroundTruthError::Json { path: path.clone(), source })?;
    let mut nodes = file
        .components
        .iter()
        .map(|name| {
            graph.parse_edge_name(&format!("{name}->logits")).map(|(fwd, _)| fwd).map_err(|e| GroundTruthError::Invalid {
                path: path.clone(),
                message: format!("components: `{name}` is not a head or MLP of the model's graph ({e})"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    nodes.sort_unstable();
    nodes.dedup();
    Ok(nodes)
}

impl TrueEdges {
    /// The true edges of a model planted with `components` (forward indices): every edge between
    /// the input or a planted component and a planted component or the logits, on an
    /// input-to-logits path.
    pub fn planted(program: &str, graph: Graph, components: &[usize]) -> Self {
        let source_on = |fwd: usize| fwd == 0 || components.contains(&fwd);
        let candidates = EdgeMatrix::from_fn(graph, |fwd, bwd| {
            graph.is_edge(fwd, bwd) && source_on(fwd) && graph.dest_node(bwd).is_some_and(|node| node == graph.n_fwd() || components.contains(&node))
        });
        let structural = close_paths(graph, &candidates);
        // A trained model's residual dimensions have no names to share.
        Self {
            program: program.into(),
            graph,
            patching: structural.clone(),
            structural,
            plumbing: EdgeMatrix::filled(graph, false),
            shared: Default::default(),
        }
    }
}

/// The directories under `models_dir` holding a planted model (a `planted.json`), sorted.
pub fn planted_dirs(models_dir: &Path) -> Result<Vec<PathBuf>, GroundTruthError> {
    let io = |source| GroundTruthError::Io { path: models_dir.into(), source };
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(models_dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.join(PLANTED_FILE).is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}
