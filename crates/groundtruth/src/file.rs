//! `true_edges.json`: the three sets as sorted edge names, with each structural edge's shared
//! residual labels.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use graph::{EdgeMatrix, Graph, GraphShape};
use serde::{Deserialize, Serialize};

use crate::{GroundTruthError, TrueEdges, compute_dir};

/// The file's name inside a model directory.
pub const FILE_NAME: &str = "true_edges.json";

/// The file as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrueEdgesFile {
    program: String,
    n_layers: usize,
    n_heads: usize,
    structural: Vec<String>,
    patching: Vec<String>,
    plumbing: Vec<String>,
    /// Structural edge name → the residual labels its writer and reader share.
    shared: BTreeMap<String, Vec<String>>,
}

impl TrueEdges {
    /// The JSON text of `true_edges.json` (pretty, newline-terminated).
    pub fn to_json_string(&self) -> Result<String, GroundTruthError> {
        let shape = self.graph.shape();
        let mut shared = BTreeMap::new();
        for (&(fwd, bwd), labels) in &self.shared {
            shared.insert(self.graph.edge_name(fwd, bwd)?, labels.clone());
        }
        let file = TrueEdgesFile {
            program: self.program.clone(),
            n_layers: shape.n_layers,
            n_heads: shape.n_heads,
            structural: self.names(&self.structural),
            patching: self.names(&self.patching),
            plumbing: self.names(&self.plumbing),
            shared,
        };
        let mut text = serde_json::to_string_pretty(&file).map_err(|e| GroundTruthError::Mismatch(format!("serialising true edges: {e}")))?;
        text.push('\n');
        Ok(text)
    }

    /// Parses `true_edges.json` text; `path` names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, GroundTruthError> {
        let file: TrueEdgesFile = serde_json::from_str(text).map_err(|source| GroundTruthError::Json { path: path.into(), source })?;
        let invalid = |message: String| GroundTruthError::Invalid { path: path.into(), message };
        let graph = Graph::new(GraphShape { n_layers: file.n_layers, n_heads: file.n_heads }).map_err(|e| invalid(format!("n_layers / n_heads: {e}")))?;
        let set = |field: &str, names: &[String]| -> Result<EdgeMatrix<bool>, GroundTruthError> {
            let mut set = EdgeMatrix::filled(graph, false);
            for name in names {
                let edge = graph.parse_edge_name(name).map_err(|e| invalid(format!("{field}: {e}")))?;
                if set[edge] {
                    return Err(invalid(format!("{field}: {name:?} is listed twice")));
                }
                set[edge] = true;
            }
            Ok(set)
        };
        let structural = set("structural", &file.structural)?;
        let patching = set("patching", &file.patching)?;
        let plumbing = set("plumbing", &file.plumbing)?;
        for (field, names) in [("patching", &file.patching), ("plumbing", &file.plumbing)] {
            if let Some(name) = names.iter().find(|n| !file.structural.contains(n)) {
                return Err(invalid(format!("{field}: {name:?} is not a structural edge")));
            }
        }
        let mut shared = BTreeMap::new();
        for (name, labels) in &file.shared {
            let edge = graph.parse_edge_name(name).map_err(|e| invalid(format!("shared: {e}")))?;
            if !structural[edge] {
                return Err(invalid(format!("shared: {name:?} is not a structural edge")));
            }
            if labels.is_empty() {
                return Err(invalid(format!("shared: {name:?} shares no residual label")));
            }
            shared.insert(edge, labels.clone());
        }
        // A trained (planted) model's residual stream has no named dimensions: no `shared` at all.
        let listed: BTreeSet<&String> = file.shared.keys().collect();
        if let Some(name) = file.structural.iter().find(|n| !file.shared.is_empty() && !listed.contains(n)) {
            return Err(invalid(format!("shared: structural edge {name:?} has no entry")));
        }
        Ok(Self { program: file.program, graph, structural, patching, plumbing, shared })
    }

    /// Reads `dir/true_edges.json`.
    pub fn read(dir: &Path) -> Result<Self, GroundTruthError> {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|source| GroundTruthError::Io { path: path.clone(), source })?;
        Self::from_json_str(&text, &path)
    }

    /// Writes `dir/true_edges.json` atomically (a temporary file beside it, then a rename);
    /// returns the path written.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, GroundTruthError> {
        let path = dir.join(FILE_NAME);
        let temp = dir.join(format!(".{FILE_NAME}.tmp"));
        let text = self.to_json_string()?;
        std::fs::write(&temp, text).map_err(|source| GroundTruthError::Io { path: temp.clone(), source })?;
        std::fs::rename(&temp, &path).map_err(|source| {
            let _ = std::fs::remove_file(&temp);
            GroundTruthError::Io { path: path.clone(), source }
        })?;
        Ok(path)
    }
}

/// The compiled-model directories under `models_dir` (`tracr-*` with a `config.json`), sorted.
pub fn tracr_dirs(models_dir: &Path) -> Result<Vec<PathBuf>, GroundTruthError> {
    let io = |source| GroundTruthError::Io { path: models_dir.into(), source };
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(models_dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("tracr-")) && path.join("config.json").is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Recomputes every compiled and every planted model's true edges under `models_dir` and writes
/// each one's `true_edges.json`; returns the files written.
pub fn write_all(models_dir: &Path) -> Result<Vec<PathBuf>, GroundTruthError> {
    let mut written: Vec<PathBuf> = tracr_dirs(models_dir)?.iter().map(|dir| compute_dir(dir)?.write(dir)).collect::<Result<_, _>>()?;
    for dir in crate::planted_dirs(models_dir)? {
        written.push(planted_dir(&dir)?.write(&dir)?);
    }
    Ok(written)
}

/// The true edges of the planted model in `dir`, from its config's shape and its `planted.json`.
pub fn planted_dir(dir: &Path) -> Result<TrueEdges, GroundTruthError> {
    let config = transformer::load::read_hf_config(&dir.join("config.json"))?;
    let graph = Graph::new(GraphShape { n_layers: config.n_layers, n_heads: config.n_heads })?;
    let name = dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    Ok(TrueEdges::planted(&format!("planted:{name}"), graph, &crate::planted_components(dir, graph)?))
}
