//! Sweep configs (`configs/*.toml`): which models run which tasks with which methods, on how many
//! examples. Parsed strictly (an unknown key is an error) and validated, each error naming the key.

use std::path::Path;

use patching::{AblationKind, Metric};
use serde::Deserialize;
use tasks::TaskKind;

/// The most examples a cell may ask of a split (discovery or evaluation), so that a mistyped
/// count is an error naming its key rather than an allocation that cannot succeed.
pub const MAX_EXAMPLES: usize = 1_000_000;
/// The largest `batch_size` a config may give.
pub const MAX_BATCH_SIZE: usize = 65_536;
/// The largest `ig_steps` a config may give.
pub const MAX_IG_STEPS: usize = 10_000;

/// A validated sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Results go to `results/<name>/`.
    pub name: String,
    /// Seed of the random baseline (and of anything else seeded).
    pub seed: u64,
    /// What ablated edges carry, in discovery and evaluation alike.
    pub ablation: AblationKind,
    /// Interpolation steps m of the EAP-IG methods.
    pub ig_steps: usize,
    /// Pairs per batch, in discovery and evaluation.
    pub batch_size: usize,
    /// Budgets as fractions of the graph's edges (MIB's ten by default).
    pub fractions: Vec<f64>,
    /// The metric faithfulness is measured with (MIB's logit difference unless the config says).
    pub evaluation_metric: Metric,
    /// Resamples of the evaluation pairs behind the 95% intervals of CPR, CMD and every curve
    /// point (seeded by `seed`; `evaluator::DEFAULT_RESAMPLES` unless the config says).
    pub interval_resamples: usize,
    /// Where every cell's examples come from.
    pub datasets: Datasets,
    /// The cells, in run order.
    pub cells: Vec<Cell>,
}

/// Where the task examples come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datasets {
    /// circuitbench's committed splits under `tasks/`.
    Committed,
    /// MIB's own datasets from the Hugging Face hub (`mib-bench/*`, parquet conversion).
    Mib,
    /// The task generators' splits (the committed files' seed), grown to at least `train` and
    /// `validation` examples: for sweeps that need more pairs than the committed files hold
    /// (MIB's 1,000 evaluation pairs). The splits stay disjoint; the committed train split is a
    /// prefix of the generated one.
    Generated {
        /// Train examples to generate at least (the largest cell's discovery pairs).
        train: usize,
        /// Validation examples to generate at least (the largest cell's evaluation pairs).
        validation: usize,
    },
}

impl Datasets {
    /// The source's name, as configs write it.
    pub fn name(self) -> &'static str {
        match self {
            Datasets::Committed => "committed",
            Datasets::Mib => "mib",
            Datasets::Generated { .. } => "generated",
        }
    }

    /// Everything that decides which examples a cell reads, for the cell's hash and the manifest.
    pub fn describe(self) -> serde_json::Value {
        match self {
            Datasets::Generated { train, validation } => serde_json::json!({ "source": self.name(), "train": train, "validation": validation }),
            _ => serde_json::json!({ "source": self.name() }),
        }
    }

    /// The examples of one split.
    pub fn load(self, task: TaskKind, split: tasks::Split, tasks_dir: &Path) -> Result<Vec<tasks::Example>, tasks::TaskError> {
        match self {
            Datasets::Committed => tasks::load_split(tasks_dir, task, split),
            Datasets::Mib => Ok(tasks::hub::load_mib(task, split, &transformer::hub::HubOptions::from_env())?.examples),
            Datasets::Generated { train, validation } => {
                let committed = tasks::default_sizes(task);
                let sizes = tasks::SplitSizes { train: train.max(committed.train), validation: validation.max(committed.validation), test: committed.test };
                Ok(tasks::generate(task, tasks::DEFAULT_SEED, sizes)?.remove(&split).unwrap_or_default())
            }
        }
    }
}

/// What a cell's pairs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CellTask {
    /// One of the text tasks, from the config's datasets.
    Text(TaskKind),
    /// A tracr-compiled model's own dataset (`task.json` and `dataset.jsonl` beside its weights):
    /// its true circuit is known, so the cell is also scored against it.
    Tracr,
}

impl CellTask {
    /// The task's name in configs and tables (`tracr` for a compiled model's dataset).
    pub fn name(self) -> &'static str {
        match self {
            CellTask::Text(task) => task.name(),
            CellTask::Tracr => "tracr",
        }
    }
}

impl std::fmt::Display for CellTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One model × task × method unit of work.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The model argument as the config gives it (resolved by `transformer::load_model`).
    pub model: String,
    /// The task whose pairs the cell discovers and evaluates on.
    pub task: CellTask,
    /// The method's benchmark name (one of `attribution::METHOD_NAMES`, or a bootstrap or ensemble
    /// of them: `attribution::COMPOSITE_FORMS`).
    pub method: String,
    /// Discovery pairs, from the start of the train split (a tracr cell: examples, each read at
    /// every read position of its task).
    pub discovery_examples: usize,
    /// Evaluation pairs, from the start of the validation split (a tracr cell: examples).
    pub evaluation_examples: usize,
    /// The metric the method optimises (its default, the config's `metric`, or a group override;
    /// a tracr cell's is its task's).
    pub metric: Metric,
    /// The metric faithfulness is measured with (the config's `evaluation_metric`; a tracr
    /// cell's is its task's, the one its output calls for).
    pub evaluation_metric: Metric,
}

impl Cell {
    /// The cell's identity in file names and reports: `model|task|method`.
    pub fn key(&self) -> String {
        format!("{}|{}|{}", self.model, self.task, self.method)
    }
}

/// A config that cannot be used, naming the file and the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The config file.
        path: String,
        /// What reading it failed with.
        source: std::io::Error,
    },
    /// The text is not TOML of the config's shape (an unknown key included).
    #[error("{path}: {source}")]
    Syntax {
        /// The config file, or whatever origin the text was parsed under.
        path: String,
        /// The TOML parser's error.
        source: toml::de::Error,
    },
    /// A well-formed key has a value the sweep cannot use.
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        /// The config file, or whatever origin the text was parsed under.
        path: String,
        /// The key at fault, as a path (`group[0].methods[2]`).
        key: String,
        /// What is wrong with its value.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: String,
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_ablation")]
    ablation: String,
    #[serde(default = "default_ig_steps")]
    ig_steps: usize,
    #[serde(default = "default_batch")]
    batch_size: usize,
    #[serde(default)]
    fractions: Option<Vec<f64>>,
    #[serde(default = "default_datasets")]
    datasets: String,
    /// Every method's metric, unless a group overrides it (default: each method's own).
    #[serde(default)]
    metric: Option<String>,
    #[serde(default = "default_evaluation_metric")]
    evaluation_metric: String,
    #[serde(default = "default_interval_resamples")]
    interval_resamples: usize,
    #[serde(rename = "group")]
    groups: Vec<RawGroup>,
}

/// A group of cells: every listed task × method on one model.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    model: String,
    tasks: Vec<String>,
    methods: Vec<String>,
    discovery_examples: usize,
    evaluation_examples: usize,
    /// Fewer discovery examples for costly methods (method name → examples).
    #[serde(default)]
    discovery_overrides: std::collections::BTreeMap<String, usize>,
    /// Another metric for some methods (method name → metric name).
    #[serde(default)]
    metric_overrides: std::collections::BTreeMap<String, String>,
}

fn default_ablation() -> String {
    "counterfactual".into()
}
fn default_evaluation_metric() -> String {
    Metric::LogitDifference.name().into()
}
fn default_interval_resamples() -> usize {
    evaluator::DEFAULT_RESAMPLES
}
fn default_datasets() -> String {
    "committed".into()
}
fn default_ig_steps() -> usize {
    5
}
fn default_batch() -> usize {
    16
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|source| ConfigError::Syntax { path: origin.into(), source })?;
        let invalid = |key: String, message: String| ConfigError::Invalid { path: origin.into(), key, message };
        if raw.name.is_empty() || !raw.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(invalid("name".into(), format!("{:?} must be non-empty letters, digits, `-` or `_` (it names the results directory)", raw.name)));
        }
        let ablation: AblationKind = raw.ablation.parse().map_err(|e| invalid("ablation".into(), format!("{e}")))?;
        let bounded = |key: String, n: usize, max: usize| {
            if n == 0 || n > max { Err(invalid(key, format!("{n} is not in 1..={max}"))) } else { Ok(()) }
        };
        bounded("ig_steps".into(), raw.ig_steps, MAX_IG_STEPS)?;
        bounded("batch_size".into(), raw.batch_size, MAX_BATCH_SIZE)?;
        bounded("interval_resamples".into(), raw.interval_resamples, evaluator::MAX_RESAMPLES)?;
        let parse_metric = |key: String, name: &str| name.parse::<Metric>().map_err(|e| invalid(key, e.to_string()));
        let metric = raw.metric.as_deref().map(|name| parse_metric("metric".into(), name)).transpose()?;
        let evaluation_metric = parse_metric("evaluation_metric".into(), &raw.evaluation_metric)?;
        let fractions = raw.fractions.unwrap_or_else(|| evaluator::MIB_FRACTIONS.to_vec());
        // CPR and CMD are trapezoid areas over the budgets: one budget has no area.
        if fractions.len() < 2 {
            return Err(invalid("fractions".into(), format!("{} budget(s) given: CPR and CMD need at least two fractions", fractions.len())));
        }
        if let Some((i, f)) = fractions.iter().enumerate().find(|(_, f)| !(**f > 0.0 && **f <= 1.0)) {
            return Err(invalid(format!("fractions[{i}]"), format!("{f} is not in (0, 1]")));
        }
        if let Some(i) = fractions.windows(2).position(|w| w[0] >= w[1]) {
            let (a, b) = (fractions[i], fractions[i + 1]);
            let what = if a == b { "is repeated" } else { "is smaller than the one before" };
            return Err(invalid(format!("fractions[{}]", i + 1), format!("{b} {what} ({a}): fractions must strictly increase")));
        }
        if raw.groups.is_empty() {
            return Err(invalid("group".into(), "a config needs at least one [[group]]".into()));
        }
        let mut cells = Vec::new();
        for (g, group) in raw.groups.iter().enumerate() {
            let key = |field: &str| format!("group[{g}].{field}");
            if group.model.is_empty() {
                return Err(invalid(key("model"), "must name a model".into()));
            }
            for (field, n) in [("discovery_examples", group.discovery_examples), ("evaluation_examples", group.evaluation_examples)] {
                bounded(key(field), n, MAX_EXAMPLES)?;
            }
            let mut metrics = std::collections::BTreeMap::new();
            for (i, method) in group.methods.iter().enumerate() {
                let parsed =
                    attribution::Method::parse(method, raw.ig_steps, raw.seed).map_err(|e| invalid(format!("{}[{i}]", key("methods")), e.to_string()))?;
                metrics.insert(method.clone(), metric.unwrap_or_else(|| parsed.default_metric()));
                // A compiled model's graph is tens of edges: patching each is the cheapest reference.
                let compiled_only = group.tasks.iter().all(|t| t == CellTask::Tracr.name());
                if !compiled_only && parsed.plain_methods().iter().any(|m| matches!(m, attribution::Method::Exact { edges: None })) {
                    return Err(invalid(
                        format!("{}[{i}]", key("methods")),
                        "exact patching of every edge is not a sweep method (it is the reference of `perf methods`) except on tracr models".into(),
                    ));
                }
            }
            for (method, &n) in &group.discovery_overrides {
                if !group.methods.contains(method) {
                    return Err(invalid(format!("{}.{method}", key("discovery_overrides")), "is not one of the group's methods".into()));
                }
                bounded(format!("{}.{method}", key("discovery_overrides")), n, MAX_EXAMPLES)?;
            }
            for (method, name) in &group.metric_overrides {
                let field = format!("{}.{method}", key("metric_overrides"));
                let Some(slot) = metrics.get_mut(method) else {
                    return Err(invalid(field, "is not one of the group's methods".into()));
                };
                *slot = parse_metric(field, name)?;
            }
            if group.tasks.is_empty() || group.methods.is_empty() {
                return Err(invalid(key(if group.tasks.is_empty() { "tasks" } else { "methods" }), "must list at least one".into()));
            }
            for (t, name) in group.tasks.iter().enumerate() {
                let field = format!("{}[{t}]", key("tasks"));
                let (task, tracr_metric) = if name == CellTask::Tracr.name() {
                    if metric.is_some() {
                        return Err(invalid(field, "a tracr task is scored by the metric its task.json names; drop `metric` (a method may still optimise another, by `metric_overrides`)".into()));
                    }
                    (CellTask::Tracr, Some(tracr_metric(&group.model).map_err(|message| invalid(key("model"), message))?))
                } else {
                    (CellTask::Text(name.parse::<TaskKind>().map_err(|e| invalid(field, format!("{e}")))?), None)
                };
                for method in &group.methods {
                    cells.push(Cell {
                        model: group.model.clone(),
                        task,
                        method: method.clone(),
                        discovery_examples: group.discovery_overrides.get(method).copied().unwrap_or(group.discovery_examples),
                        evaluation_examples: group.evaluation_examples,
                        metric: match tracr_metric {
                            Some(task_metric) if !group.metric_overrides.contains_key(method) => task_metric,
                            _ => metrics[method],
                        },
                        evaluation_metric: tracr_metric.unwrap_or(evaluation_metric),
                    });
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = cells.iter().find(|c| !seen.insert(c.key())) {
            return Err(invalid("group".into(), format!("cell {} is listed twice", dup.key())));
        }
        let text_cells = || cells.iter().filter(|c| matches!(c.task, CellTask::Text(_)));
        let datasets = match raw.datasets.as_str() {
            "committed" => Datasets::Committed,
            "mib" => Datasets::Mib,
            // As many pairs as the largest cell reads.
            "generated" => Datasets::Generated {
                train: text_cells().map(|c| c.discovery_examples).max().unwrap_or(0),
                validation: text_cells().map(|c| c.evaluation_examples).max().unwrap_or(0),
            },
            other => {
                return Err(invalid(
                    "datasets".into(),
                    format!("`{other}` is not `committed` (tasks/), `mib` (MIB's hub datasets) or `generated` (the task generators)"),
                ));
            }
        };
        Ok(Config {
            name: raw.name,
            seed: raw.seed,
            ablation,
            ig_steps: raw.ig_steps,
            batch_size: raw.batch_size,
            fractions,
            evaluation_metric,
            interval_resamples: raw.interval_resamples,
            datasets,
            cells,
        })
    }
}

/// The metric a tracr model's task names (`task.json` in its directory): the one its output
/// calls for.
fn tracr_metric(model: &str) -> Result<Metric, String> {
    let dir = match transformer::ModelSpec::parse(model).and_then(|spec| spec.materialise()) {
        Ok(transformer::LocalModel::Dir(dir)) if dir.join("task.json").is_file() => dir,
        Ok(_) => return Err(format!("`{model}` is not a tracr model directory with a task.json (a `tracr` task reads the dataset beside a compiled model)")),
        Err(e) => return Err(e.to_string()),
    };
    let task = tasks::tracr::TracrTask::load(&dir).map_err(|e| e.to_string())?;
    task.metric.parse::<Metric>().map_err(|e| format!("{}: {e}", dir.join("task.json").display()))
}
