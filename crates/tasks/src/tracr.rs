//! The datasets of tracr-compiled programs (`models/tracr-<name>/`, written by `xtask/tracr/`):
//! clean / corrupt inputs with the program's output at every position, read at the positions the
//! task names (`task.json`), built as the peers built them (AutoCircuit: every sequence of the
//! program's length, or a seeded sample, each paired with a random other one).
//!
//! A compiled model answers at every position, and its attention is bidirectional, so an input
//! is not cut at the position read: each (example, read position) becomes one [`PreparedPair`]
//! over the whole input, read there ([`PreparedPair::read`]). A categorical output is scored by
//! the logit difference between the clean and the corrupt output's columns at that position
//! (zero where the two agree, as in the peers' datasets); a numerical one by the output value
//! itself (its one column, [`TracrTask::metric`] `value`).
//!
//! Splits: even-numbered examples are the discovery (train) half, odd-numbered the evaluation
//! (validation) half; there is no test split.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use transformer::tracr::{TracrConfig, TracrOutput};

use crate::error::{Record, TaskError};
use crate::example::Split;
use crate::prepare::PreparedPair;

/// A position of the inputs the task does not read, and why (said in reports).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExcludedPosition {
    /// The position (BOS is 0).
    pub position: usize,
    /// Why it is left out.
    pub why: String,
}

/// `task.json`: which positions are read and with which metric.
#[derive(Debug, Clone, Deserialize)]
struct TaskFile {
    program: String,
    read_positions: Vec<usize>,
    #[serde(default)]
    excluded_positions: Vec<ExcludedPosition>,
    metric: String,
    built_as: String,
}

/// One clean / corrupt pair of inputs with the program's outputs (None at BOS).
#[derive(Debug, Clone, PartialEq)]
pub struct TracrExample {
    /// Clean input ids, BOS first.
    pub clean: Vec<u32>,
    /// Corrupt input ids, as long as `clean`.
    pub corrupt: Vec<u32>,
    /// The clean output at each position.
    pub clean_output: Vec<Option<OutputValue>>,
    /// The corrupt output at each position.
    pub corrupt_output: Vec<Option<OutputValue>>,
}

/// A program's output at one position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutputValue {
    /// A categorical output: its column among the model's outputs.
    Label(u32),
    /// A numerical output.
    Number(f64),
}

/// A tracr model's task: its examples, read positions and metric.
#[derive(Debug, Clone)]
pub struct TracrTask {
    /// The RASP program's name.
    pub program: String,
    /// Positions read (BOS is 0), in order.
    pub read_positions: Vec<usize>,
    /// Positions not read, with the reason.
    pub excluded_positions: Vec<ExcludedPosition>,
    /// The metric the output calls for: `logit-diff` (categorical) or `value` (numerical).
    pub metric: String,
    /// How the pairs were built, as the task file says.
    pub built_as: String,
    /// Every pair of the dataset, in file order.
    pub examples: Vec<TracrExample>,
}

impl TracrTask {
    /// Reads a compiled model directory's `task.json` and `dataset.jsonl` against its
    /// `config.json` (token ids, output labels); every error names the file, line and field.
    pub fn load(dir: &Path) -> Result<Self, TaskError> {
        let config = TracrConfig::read(&dir.join("config.json"))?;
        let task_path = dir.join("task.json");
        let text = std::fs::read_to_string(&task_path).map_err(|source| TaskError::Io { path: task_path.clone(), source })?;
        let task: TaskFile =
            serde_json::from_str(&text).map_err(|e| TaskError::Malformed { path: task_path.clone(), at: Record::Line(e.line()), message: e.to_string() })?;
        let bad_task = |field: &str, message: String| TaskError::BadField { path: task_path.clone(), at: Record::Line(1), field: field.into(), message };
        let expected_metric = match config.output {
            TracrOutput::Categorical => "logit-diff",
            TracrOutput::Numerical => "value",
        };
        if task.metric != expected_metric {
            return Err(bad_task("metric", format!("`{}`: a {:?} output is read with `{expected_metric}`", task.metric, config.output)));
        }
        let len = config.max_seq_len + 1;
        if task.read_positions.is_empty() {
            return Err(bad_task("read_positions", "no position is read".into()));
        }
        if let Some(&p) = task.read_positions.iter().find(|&&p| p == 0 || p >= len) {
            return Err(bad_task("read_positions", format!("position {p} is BOS or past the inputs' {len} positions")));
        }
        let examples = read_examples(&dir.join("dataset.jsonl"), &config)?;
        let data_path = dir.join("dataset.jsonl");
        if let Some((i, e)) = examples.iter().enumerate().find(|(_, e)| task.read_positions.iter().any(|&p| p >= e.clean.len())) {
            return Err(TaskError::BadField {
                path: data_path,
                at: Record::Line(i + 1),
                field: "clean".into(),
                message: format!("{} tokens: too short for the read positions {:?}", e.clean.len(), task.read_positions),
            });
        }
        Ok(Self {
            program: task.program,
            read_positions: task.read_positions,
            excluded_positions: task.excluded_positions,
            metric: task.metric,
            built_as: task.built_as,
            examples,
        })
    }

    /// The pairs of one split: its half's first `limit` examples, each once per read position.
    pub fn pairs(&self, split: Split, limit: usize) -> Result<Vec<PreparedPair>, TaskError> {
        let parity = match split {
            Split::Train => 0,
            Split::Validation => 1,
            Split::Test => return Err(TaskError::NoTracrTestSplit { program: self.program.clone() }),
        };
        Ok(self
            .examples
            .iter()
            .skip(parity)
            .step_by(2)
            .take(limit)
            .flat_map(|e| {
                self.read_positions.iter().map(move |&p| {
                    let column = |o: &Option<OutputValue>| match o {
                        Some(OutputValue::Label(c)) => *c,
                        _ => 0,
                    };
                    PreparedPair {
                        clean: e.clean.clone(),
                        counterfactual: e.corrupt.clone(),
                        correct: column(&e.clean_output[p]),
                        incorrect: column(&e.corrupt_output[p]),
                        read: Some(p),
                    }
                })
            })
            .collect())
    }
}

/// One line of `dataset.jsonl`.
#[derive(Deserialize)]
struct Line {
    clean: Vec<String>,
    corrupt: Vec<String>,
    clean_output: Vec<serde_json::Value>,
    corrupt_output: Vec<serde_json::Value>,
}

fn read_examples(path: &PathBuf, config: &TracrConfig) -> Result<Vec<TracrExample>, TaskError> {
    let text = std::fs::read_to_string(path).map_err(|source| TaskError::Io { path: path.clone(), source })?;
    let mut examples = Vec::new();
    for (i, raw) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = Record::Line(i + 1);
        let bad = |field: &str, message: String| TaskError::BadField { path: path.clone(), at, field: field.into(), message };
        let line: Line = serde_json::from_str(raw).map_err(|e| TaskError::Malformed { path: path.clone(), at, message: e.to_string() })?;
        let ids = |field: &str, tokens: &[String]| -> Result<Vec<u32>, TaskError> {
            let ids = tokens
                .iter()
                .map(|t| config.vocab.get(t).copied().ok_or_else(|| bad(field, format!("token `{t}` is not in the model's vocabulary"))))
                .collect::<Result<Vec<_>, _>>()?;
            if ids.first() != Some(&config.bos_token_id) {
                return Err(bad(field, "the input does not start with BOS".into()));
            }
            if ids.len() > config.max_seq_len + 1 {
                return Err(bad(field, format!("{} tokens, more than BOS and the program's {}", ids.len(), config.max_seq_len)));
            }
            Ok(ids)
        };
        let outputs = |field: &str, values: &[serde_json::Value], len: usize| -> Result<Vec<Option<OutputValue>>, TaskError> {
            if values.len() != len {
                return Err(bad(field, format!("{} outputs for {len} positions", values.len())));
            }
            values
                .iter()
                .enumerate()
                .map(|(p, v)| match (p, v, config.output) {
                    (0, serde_json::Value::Null, _) => Ok(None),
                    (0, _, _) => Err(bad(field, "position 0 (BOS) has no output: expected null".into())),
                    (_, serde_json::Value::String(label), TracrOutput::Categorical) => config
                        .output_labels
                        .iter()
                        .position(|l| l == label)
                        .map(|c| Some(OutputValue::Label(c as u32)))
                        .ok_or_else(|| bad(field, format!("position {p}: `{label}` is not one of the outputs {:?}", config.output_labels))),
                    (_, v, TracrOutput::Numerical) if v.is_number() => Ok(Some(OutputValue::Number(v.as_f64().unwrap_or(f64::NAN)))),
                    (_, v, kind) => Err(bad(field, format!("position {p}: {v} is not a {kind:?} output"))),
                })
                .collect()
        };
        let clean = ids("clean", &line.clean)?;
        let corrupt = ids("corrupt", &line.corrupt)?;
        if corrupt.len() != clean.len() {
            return Err(bad("corrupt", format!("{} tokens, the clean input has {}", corrupt.len(), clean.len())));
        }
        if corrupt == clean {
            return Err(bad("corrupt", "the same input as the clean one".into()));
        }
        let clean_output = outputs("clean_output", &line.clean_output, clean.len())?;
        let corrupt_output = outputs("corrupt_output", &line.corrupt_output, clean.len())?;
        examples.push(TracrExample { clean, corrupt, clean_output, corrupt_output });
    }
    if examples.is_empty() {
        return Err(TaskError::Malformed { path: path.clone(), at: Record::Line(1), message: "no examples".into() });
    }
    Ok(examples)
}
