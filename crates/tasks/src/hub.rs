//! MIB's own datasets on the Hugging Face hub, read as parquet through the `tables` crate.
//!
//! Files: every public hub dataset has an auto-converted parquet copy on the revision
//! `refs/convert/parquet`, laid out as `<config>/<split>/0000.parquet` (`0001.parquet`, ... for
//! larger splits). circuitbench reads that layout whatever format the dataset was uploaded in; the
//! config is `default` except for copy-colors (`4_answer_choices`), and the splits are `train`,
//! `validation` and `test`. Online, the shard list comes from the hub's file listing; offline
//! (`HF_HUB_OFFLINE`), from the local cache, and a split that is not there is a clear error.
//!
//! Rows (MIB's schema, mib-spec §7) become [`Example`]s the way MIB's circuit-track loader reads
//! them, including its answer strings: IOI answers are " " + name; MCQA answers are the bare
//! option labels (`choices.label[answerKey]`, as MIB tokenizes them); arithmetic answers are the
//! labels as text. MIB's row filters that do not depend on a tokenizer (a null counterfactual, an
//! arithmetic row of the other operator) drop the row and count it.

use std::path::PathBuf;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use transformer::hub::HubOptions;

use crate::drops::{DropReason, Drops};
use crate::error::{Record, TaskError};
use crate::example::{Example, Split, TaskKind};
use crate::record::Fields;

/// The hub revision holding the parquet conversion of every dataset.
pub const PARQUET_REVISION: &str = "refs/convert/parquet";

/// Where a task's MIB dataset lives on the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubSource {
    /// The dataset repository.
    pub repo: &'static str,
    /// The dataset config (a folder of the parquet conversion).
    pub config: &'static str,
}

/// MIB's dataset for a task.
pub fn mib_source(task: TaskKind) -> HubSource {
    match task {
        TaskKind::Ioi => HubSource { repo: "mib-bench/ioi", config: "default" },
        TaskKind::ArithmeticAddition => HubSource { repo: "mib-bench/arithmetic_addition", config: "default" },
        TaskKind::ArithmeticSubtraction => HubSource { repo: "mib-bench/arithmetic_subtraction", config: "default" },
        TaskKind::Mcqa => HubSource { repo: "mib-bench/copycolors_mcqa", config: "4_answer_choices" },
    }
}

/// Examples read from MIB rows, with the rows MIB's own filters leave out.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The examples, in row order.
    pub examples: Vec<Example>,
    /// Rows left out, by reason.
    pub dropped: Drops,
}

/// Fetches (unless cached) and reads one split of a task's MIB hub dataset.
pub fn load_mib(task: TaskKind, split: Split, options: &HubOptions) -> Result<Loaded, TaskError> {
    let source = mib_source(task);
    let files = parquet_files(source, split, options)?;
    load_mib_parquet(task, split, &files)
}

/// Reads MIB-schema parquet files (e.g. downloaded by hand) as one split of a task.
pub fn load_mib_parquet(task: TaskKind, split: Split, files: &[PathBuf]) -> Result<Loaded, TaskError> {
    let mut loaded = Loaded::default();
    for file in files {
        let rows = tables::read_parquet(file)?;
        for (i, row) in rows.iter().enumerate() {
            let fields = Fields::new(row, file, Record::Row(i + 1));
            let id = format!("mib-{split}-{:05}", loaded.examples.len() + loaded.dropped.total());
            match example_from_row(task, &fields, id)? {
                Ok(example) => loaded.examples.push(example),
                Err(reason) => loaded.dropped.add(reason),
            }
        }
    }
    Ok(loaded)
}

/// One MIB row as an example, `Ok(Err(reason))` for a row MIB's filters leave out.
fn example_from_row(task: TaskKind, row: &Fields<'_>, id: String) -> Result<Result<Example, DropReason>, TaskError> {
    let example = match task {
        TaskKind::Ioi => {
            if row.get("s2_io_flip_counterfactual.prompt").is_none() {
                return Ok(Err(DropReason::NoCounterfactual));
            }
            let mut metadata = row.object("metadata")?;
            if let Some(template) = row.get("template") {
                metadata.insert("template".into(), template.clone());
            }
            Example {
                id,
                clean: row.str("prompt")?.into(),
                counterfactual: row.str("s2_io_flip_counterfactual.prompt")?.into(),
                abc_counterfactual: row.opt_str("abc_counterfactual.prompt")?.map(String::from),
                correct: format!(" {}", row.str("metadata.indirect_object")?),
                incorrect: format!(" {}", row.str("metadata.subject")?),
                metadata,
            }
        }
        TaskKind::Mcqa => {
            if row.get("symbol_counterfactual.prompt").is_none() {
                return Ok(Err(DropReason::NoCounterfactual));
            }
            let key = row.index("answerKey")?;
            let cf_key = row.index("symbol_counterfactual.answerKey")?;
            let mut metadata = serde_json::Map::new();
            for field in ["question", "choices", "answerKey", "idx"] {
                if let Some(value) = row.get(field) {
                    metadata.insert(field.into(), value.clone());
                }
            }
            Example {
                id,
                clean: row.str("prompt")?.into(),
                counterfactual: row.str("symbol_counterfactual.prompt")?.into(),
                abc_counterfactual: None,
                correct: row.list_text("choices.label", key)?,
                incorrect: row.list_text("symbol_counterfactual.choices.label", cf_key)?,
                metadata,
            }
        }
        TaskKind::ArithmeticAddition | TaskKind::ArithmeticSubtraction => {
            let want = if task == TaskKind::ArithmeticAddition { "+" } else { "-" };
            if let Some(op) = row.get("operator")
                && op.as_str() != Some(want)
            {
                return Ok(Err(DropReason::WrongOperator));
            }
            if row.get("random_counterfactual.prompt").is_none() {
                return Ok(Err(DropReason::NoCounterfactual));
            }
            let mut metadata = serde_json::Map::new();
            for field in ["operator", "operand1", "operand2", "label", "template", "idx"] {
                if let Some(value) = row.get(field) {
                    metadata.insert(field.into(), value.clone());
                }
            }
            Example {
                id,
                clean: row.str("prompt")?.into(),
                counterfactual: row.str("random_counterfactual.prompt")?.into(),
                abc_counterfactual: None,
                correct: row.text("label")?,
                incorrect: row.text("random_counterfactual.label")?,
                metadata,
            }
        }
    };
    Ok(Ok(example))
}

/// The local paths of a split's parquet shards, downloading what is missing unless offline.
fn parquet_files(source: HubSource, split: Split, options: &HubOptions) -> Result<Vec<PathBuf>, TaskError> {
    let hub_err = |message: String| TaskError::Hub { repo: source.repo.into(), message };
    let repo = Repo::with_revision(source.repo.into(), RepoType::Dataset, PARQUET_REVISION.into());
    let prefix = format!("{}/{}/", source.config, split.name());
    if options.offline {
        let cache = Cache::new(options.cache.clone()).repo(repo);
        let files: Vec<PathBuf> = (0..).map_while(|shard| cache.get(&format!("{prefix}{shard:04}.parquet"))).collect();
        if files.is_empty() {
            return Err(hub_err(format!(
                "{prefix}0000.parquet (revision {PARQUET_REVISION}) is not in the local cache {} and HF_HUB_OFFLINE is set",
                options.cache.display()
            )));
        }
        return Ok(files);
    }
    let mut builder = ApiBuilder::from_cache(Cache::new(options.cache.clone())).with_progress(false);
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let api = builder.build().map_err(|e| hub_err(e.to_string()))?.repo(repo);
    let info = api.info().map_err(|e| hub_err(format!("listing revision {PARQUET_REVISION}: {e}")))?;
    let mut names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).filter(|f| f.starts_with(&prefix) && f.ends_with(".parquet")).collect();
    names.sort();
    if names.is_empty() {
        return Err(hub_err(format!("no parquet files under {prefix} on revision {PARQUET_REVISION}")));
    }
    names.iter().map(|name| api.get(name).map_err(|e| hub_err(format!("downloading {name}: {e}")))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_and_absent_is_a_clear_error() {
        let options = HubOptions { cache: std::env::temp_dir().join(format!("tasks-empty-hub-{}", std::process::id())), offline: true, endpoint: None };
        let err = load_mib(TaskKind::Ioi, Split::Validation, &options).unwrap_err().to_string();
        assert!(err.contains("mib-bench/ioi"), "{err}");
        assert!(err.contains("default/validation/0000.parquet"), "{err}");
        assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    }
}
