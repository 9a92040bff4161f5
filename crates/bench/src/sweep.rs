//! Running a whole config: cells in order, each stored as `cells/<cell>.json` when it finishes (so
//! a rerun skips it and a killed run loses no finished cell), reports regenerated after each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use serde_json::json;
use sha2::{Digest, Sha256};
use tasks::Split;
use transformer::{LocalModel, ModelSpec};

use crate::cell::{BatchProgress, CellResult, SweepModel, run_cell};
use crate::config::{Cell, Config};
use crate::{BenchError, plot, report};

/// What a sweep reports as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    /// Cell `index` of `total` starts, or is skipped because a stored result matches it.
    Cell {
        /// The cell's place in the config's run order (0-based).
        index: usize,
        /// Cells in the config.
        total: usize,
        /// The cell's `model|task|method`.
        key: String,
        /// Whether its stored result is reused instead of running it.
        skipped: bool,
        /// Cells from this one on (this one included) that have no usable stored result: those
        /// the run still computes.
        to_compute: usize,
    },
    /// A batch of the running cell is done.
    Batch(BatchProgress),
    /// The running cell finished, with its CPR and CMD.
    Finished {
        /// The cell's `model|task|method`.
        key: String,
        /// Its circuit performance ratio (area under f; higher is better).
        cpr: f64,
        /// Its circuit-model difference (area under |1 − f|; lower is better).
        cmd: f64,
        /// CPR's 95% bootstrap interval over the evaluation pairs (None where not resampled).
        cpr_interval: Option<evaluator::Interval>,
        /// CMD's 95% bootstrap interval.
        cmd_interval: Option<evaluator::Interval>,
        /// Discovery plus evaluation time, in seconds.
        seconds: f64,
        /// The splits that held fewer examples than the config asked for.
        short: Vec<crate::cell::ShortSplit>,
    },
    /// The running cell had a stored file that could not be used (truncated, corrupt, another
    /// cell's or another definition's): it is computed again and the file replaced. Sent right
    /// after the cell's `Event::Cell`.
    Recomputing {
        /// The cell's `model|task|method`.
        key: String,
        /// Why the stored file was not used, naming it.
        reason: String,
    },
}

/// Where a sweep reads and writes, and what it runs on.
#[derive(Debug, Clone)]
pub struct SweepPaths {
    /// The config file (hashed into the manifest).
    pub config: PathBuf,
    /// `results/`: the run writes `results/<config name>/`.
    pub results: PathBuf,
    /// The datasets directory.
    pub tasks: PathBuf,
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    Ok(transformer::checkpoint::write_atomic(path, bytes)?)
}

/// A file-name-safe form of a label (cell keys, model names).
pub(crate) fn slug(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// A stable hash of everything that decides a cell's numbers, the model's files included, built
/// from each field by name (never from a `Debug` rendering, which may change with the code).
fn definition(config: &Config, cell: &Cell, model_files: &BTreeMap<String, String>) -> String {
    let text = json!({
        "model": cell.model, "model_files": model_files, "task": cell.task.name(), "method": cell.method,
        "metric": cell.metric.name(), "evaluation_metric": cell.evaluation_metric.name(),
        "discovery_examples": cell.discovery_examples, "evaluation_examples": cell.evaluation_examples,
        "seed": config.seed, "datasets": config.datasets.describe(), "ablation": config.ablation.to_string(),
        "ig_steps": config.ig_steps, "batch_size": config.batch_size, "fractions": config.fractions,
        "interval_resamples": config.interval_resamples,
    })
    .to_string();
    sha256_hex(text.as_bytes())[..16].to_string()
}

/// The file name a cell's result is stored under, in `cells/`: the key's slug (readable) and the
/// first 12 hex digits of the SHA-256 of the exact key, so keys that slug alike (`task:ioi` and a
/// directory `task_ioi`) get files of their own.
pub fn cell_file_name(key: &str) -> String {
    format!("{}.{}.json", slug(key), &sha256_hex(key.as_bytes())[..12])
}

/// The file a cell's result is stored in.
fn cell_path(dir: &Path, cell: &Cell) -> PathBuf {
    dir.join("cells").join(cell_file_name(&cell.key()))
}

/// The file name cells had before names carried a hash of the key (read when the new one is absent).
fn legacy_cell_path(dir: &Path, cell: &Cell) -> PathBuf {
    dir.join("cells").join(format!("{}.json", slug(&cell.key())))
}

/// `name(key)` for every key, or an error naming two keys whose names would be one file (compared
/// without case, for case-insensitive file systems).
fn unique_file_names(keys: &[String], name: impl Fn(&str) -> String) -> Result<Vec<String>, BenchError> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    let mut names = Vec::with_capacity(keys.len());
    for key in keys {
        let file = name(key);
        if let Some(first) = seen.insert(file.to_lowercase(), key) {
            return Err(BenchError::CellFileCollision { first: first.into(), second: key.clone(), file });
        }
        names.push(file);
    }
    Ok(names)
}

/// What the cells directory holds for a cell.
enum Stored {
    /// Nothing: the cell runs.
    Missing,
    /// A result of the cell's definition: it is reused.
    Reusable(Box<CellResult>),
    /// A file that cannot be used, and why: the cell runs again and the sweep says so.
    Unusable(String),
}

/// A stored result that still matches the cell's definition. A file that cannot be read or parsed
/// (a run killed mid-write on a file system without atomic renames, a disk error, an edit) or
/// that holds another definition is recomputed, never an error.
fn stored(dir: &Path, cell: &Cell, definition: &str) -> Stored {
    let mut path = cell_path(dir, cell);
    let legacy = !path.is_file();
    if legacy {
        path = legacy_cell_path(dir, cell);
        if !path.is_file() {
            return Stored::Missing;
        }
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => return Stored::Unusable(format!("{}: {e}", path.display())),
    };
    let mut result: CellResult = match serde_json::from_str(&text) {
        Ok(result) => result,
        Err(e) => return Stored::Unusable(format!("{} is not a cell result: {e}", path.display())),
    };
    if (result.model.as_str(), result.task.as_str(), result.method.as_str()) != (cell.model.as_str(), cell.task.name(), cell.method.as_str()) {
        // A legacy name may hold another key that slugs alike: not this cell's file.
        if legacy {
            return Stored::Missing;
        }
        return Stored::Unusable(format!("{} holds cell {}|{}|{}", path.display(), result.model, result.task, result.method));
    }
    if result.definition != definition {
        return Stored::Unusable(format!("{} was computed under another definition (config, model files or datasets changed)", path.display()));
    }
    // Cell files older than the requested counts asked for what the definition (which hashes
    // the cell's counts) still says.
    if result.discovery_requested == 0 {
        result.discovery_requested = cell.discovery_examples;
    }
    if result.evaluation_requested == 0 {
        result.evaluation_requested = cell.evaluation_examples;
    }
    Stored::Reusable(Box::new(result))
}

/// SHA-256 of each file a model argument reads, by file name (weights, config, tokenizer): a
/// directory's safetensors and JSON files, a GGUF file itself (known or given by path), a random
/// shape's tokenizer. The manifest records them and every cell's definition hashes them.
pub fn model_hashes(spec: &str) -> Result<BTreeMap<String, String>, BenchError> {
    let files: Vec<PathBuf> = match ModelSpec::parse(spec)?.materialise()? {
        LocalModel::Gguf(path) => vec![path],
        LocalModel::Dir(dir) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|source| BenchError::Io { path: dir.clone(), source })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                // JSON Lines too: a compiled model's dataset lies beside it.
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors" || e == "json" || e == "jsonl"))
                .collect();
            files.sort();
            files
        }
        // The weights are a function of the shape and the code; the tokenizer is the one file read.
        LocalModel::Random(_) => vec![transformer::random::RandomShape::tokenizer_path()],
    };
    files.iter().map(|p| Ok((p.file_name().unwrap_or_default().to_string_lossy().into_owned(), transformer::fetch::file_sha256(p)?))).collect()
}

/// The git revision of the working directory, with `-dirty` when it has uncommitted changes.
fn git_revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git").args(args).output().ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(rev) if git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty()) => format!("{rev}-dirty"),
        Some(rev) => rev,
        None => "unknown".into(),
    }
}

/// The splits a sweep reads: discovery pairs from train, evaluation pairs from validation.
const SPLITS_READ: [Split; 2] = [Split::Train, Split::Validation];

/// `manifest.json`: what the run's numbers depend on.
fn manifest(config: &Config, paths: &SweepPaths, backend: &str, models: &BTreeMap<String, BTreeMap<String, String>>) -> Result<serde_json::Value, BenchError> {
    let config_text = std::fs::read(&paths.config).map_err(|source| BenchError::Io { path: paths.config.clone(), source })?;
    let mut datasets = BTreeMap::new();
    // A tracr cell's dataset lies beside its model, among the model files hashed above.
    let text_tasks = config.cells.iter().filter_map(|c| match c.task {
        crate::config::CellTask::Text(task) => Some(task),
        crate::config::CellTask::Tracr => None,
    });
    for task in text_tasks.collect::<std::collections::BTreeSet<_>>() {
        let mut splits = BTreeMap::new();
        // The splits the run reads, as loaded, so committed files and hub datasets are hashed
        // alike (and a malformed one stops the run here, naming the file and line).
        for split in SPLITS_READ {
            let examples = config.datasets.load(task, split, &paths.tasks)?;
            let text = serde_json::to_string(&examples).expect("examples serialise");
            splits.insert(split.name().to_string(), sha256_hex(text.as_bytes()));
        }
        // Any other committed split file by its bytes: it is never parsed, so it cannot fail the run.
        if config.datasets == crate::config::Datasets::Committed {
            for split in Split::ALL.into_iter().filter(|s| !SPLITS_READ.contains(s)) {
                let path = tasks::split_path(&paths.tasks, task, split);
                if path.is_file() {
                    splits.insert(format!("{}_file", split.name()), transformer::fetch::file_sha256(&path)?);
                }
            }
        }
        datasets.insert(task.name().to_string(), splits);
    }
    Ok(json!({
        "name": config.name,
        "config": { "file": paths.config.file_name().map(|n| n.to_string_lossy().into_owned()), "sha256": sha256_hex(&config_text) },
        "seed": config.seed,
        "datasets_source": config.datasets.describe(),
        "backend": backend,
        "git_revision": git_revision(),
        "models": models,
        "datasets": datasets,
        "datasets_hashed": "train and validation (the splits the run reads): SHA-256 of the examples as loaded; `<split>_file`: SHA-256 of a committed split file the run does not read, by its bytes",
    }))
}

/// Rewrites every report of the run from the cells finished so far, in config order.
fn write_reports(dir: &Path, finished: &[Option<CellResult>], manifest: &serde_json::Value) -> Result<(), BenchError> {
    let cells: Vec<CellResult> = finished.iter().flatten().cloned().collect();
    report::write_tables(dir, &cells)?;
    plot::write_plots(&dir.join("plots"), &cells)?;
    write_atomic(&dir.join("manifest.json"), serde_json::to_string_pretty(manifest).expect("JSON values serialise").as_bytes())
}

/// Runs every cell of `config` not already stored, writing reports after each; returns the run's
/// directory. `backend` names the tensor backend in the manifest; on `cuda`, cells also record
/// their peak GPU memory.
pub fn run_sweep<B: AutodiffBackend>(
    config: &Config,
    paths: &SweepPaths,
    backend: &str,
    device: &B::Device,
    events: &mut dyn FnMut(Event),
) -> Result<PathBuf, BenchError> {
    let dir = paths.results.join(&config.name);
    unique_file_names(&config.cells.iter().map(Cell::key).collect::<Vec<_>>(), cell_file_name)?;
    let cells_dir = dir.join("cells");
    std::fs::create_dir_all(&cells_dir).map_err(|source| BenchError::Io { path: cells_dir.clone(), source })?;
    let _lock = crate::lock::RunLock::acquire(&dir)?;
    let mut models = BTreeMap::new();
    for cell in &config.cells {
        if !models.contains_key(&cell.model) {
            models.insert(cell.model.clone(), model_hashes(&cell.model)?);
        }
    }
    let manifest = manifest(config, paths, backend, &models)?;
    let definitions: Vec<String> = config.cells.iter().map(|c| definition(config, c, &models[&c.model])).collect();
    let mut finished: Vec<Option<CellResult>> = Vec::with_capacity(config.cells.len());
    let mut unusable: Vec<Option<String>> = Vec::with_capacity(config.cells.len());
    for (cell, definition) in config.cells.iter().zip(&definitions) {
        let (result, reason) = match stored(&dir, cell, definition) {
            Stored::Missing => (None, None),
            Stored::Reusable(result) => (Some(*result), None),
            Stored::Unusable(reason) => (None, Some(reason)),
        };
        finished.push(result);
        unusable.push(reason);
    }
    let mut loaded: Option<(String, SweepModel<B>)> = None;
    let total = config.cells.len();
    for (index, cell) in config.cells.iter().enumerate() {
        let to_compute = finished[index..].iter().filter(|f| f.is_none()).count();
        events(Event::Cell { index, total, key: cell.key(), skipped: finished[index].is_some(), to_compute });
        if finished[index].is_some() {
            continue;
        }
        if let Some(reason) = unusable[index].take() {
            events(Event::Recomputing { key: cell.key(), reason });
        }
        if loaded.as_ref().is_none_or(|(name, _)| *name != cell.model) {
            drop(loaded.take()); // free the previous model first
            loaded = Some((cell.model.clone(), SweepModel::new(transformer::load_model::<B>(&cell.model, device)?)?));
        }
        let (_, model) = loaded.as_ref().expect("loaded above");
        let result = run_cell(config, cell, model, &paths.tasks, definitions[index].clone(), backend == "cuda", &mut |p| events(Event::Batch(p)))?;
        let json = serde_json::to_string_pretty(&result).expect("cell results serialise");
        write_atomic(&cell_path(&dir, cell), json.as_bytes())?;
        events(Event::Finished {
            key: cell.key(),
            cpr: result.curves.cpr,
            cmd: result.curves.cmd,
            cpr_interval: result.curves.cpr_interval,
            cmd_interval: result.curves.cmd_interval,
            seconds: result.discovery_seconds + result.evaluation_seconds,
            short: result.short_splits(),
        });
        finished[index] = Some(result);
        write_reports(&dir, &finished, &manifest)?;
    }
    write_reports(&dir, &finished, &manifest)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colliding_file_names_are_an_error_naming_both_keys() {
        let keys = ["task:ioi|ioi|eap".to_string(), "task_ioi|ioi|eap".to_string()];
        // Slugs alone collide: the check names both keys and the file.
        let err = unique_file_names(&keys, |k| format!("{}.json", slug(k))).unwrap_err().to_string();
        assert!(err.contains("task:ioi|ioi|eap") && err.contains("task_ioi|ioi|eap") && err.contains("task_ioi_ioi_eap.json"), "{err}");
        // So do names differing only in case.
        let err = unique_file_names(&["A|ioi|eap".to_string(), "a|ioi|eap".to_string()], |k| format!("{}.json", slug(k))).unwrap_err().to_string();
        assert!(err.contains("A|ioi|eap") && err.contains("a|ioi|eap"), "{err}");
        // Names with the key's hash do not.
        let names = unique_file_names(&keys, cell_file_name).unwrap();
        assert_ne!(names[0], names[1]);
    }
}
