//! The model-independent unit of every task: a clean / counterfactual prompt pair and its answers.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Map, Value};

/// The behaviours circuitbench localizes, as MIB's circuit track defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskKind {
    /// Indirect object identification: "After Mary and John went to the store, John gave a drink to" → " Mary".
    Ioi,
    /// Two-digit addition: "Q: How much is 23 plus 45? A: " → "68".
    ArithmeticAddition,
    /// Two-digit subtraction with a non-negative result.
    ArithmeticSubtraction,
    /// Copy-colors multiple choice: answer with the letter of the colour stated in the prompt.
    Mcqa,
}

impl TaskKind {
    /// Every task, in the order commands list them.
    pub const ALL: [TaskKind; 4] = [TaskKind::Ioi, TaskKind::ArithmeticAddition, TaskKind::ArithmeticSubtraction, TaskKind::Mcqa];

    /// The name used on the command line, in file paths and in result tables.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Ioi => "ioi",
            TaskKind::ArithmeticAddition => "arithmetic-addition",
            TaskKind::ArithmeticSubtraction => "arithmetic-subtraction",
            TaskKind::Mcqa => "mcqa",
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of [`TaskKind::ALL`] or [`Split::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}` (expected one of: {expected})")]
pub struct UnknownName {
    /// "task" or "split".
    pub what: &'static str,
    /// What was given.
    pub given: String,
    /// The accepted names, comma-separated.
    pub expected: String,
}

impl FromStr for TaskKind {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskKind::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| UnknownName {
            what: "task",
            given: s.into(),
            expected: TaskKind::ALL.map(TaskKind::name).join(", "),
        })
    }
}

/// MIB's three splits: discovery runs on train, evaluation on validation by default, test is held out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Split {
    /// Circuit discovery (attribution scores).
    Train,
    /// Default evaluation split.
    Validation,
    /// Held-out evaluation.
    Test,
}

impl Split {
    /// Every split, in the order files are generated.
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    /// The name used in file paths and on the command line (also MIB's hub split name).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Split::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| UnknownName {
            what: "split",
            given: s.into(),
            expected: Split::ALL.map(Split::name).join(", "),
        })
    }
}

/// One clean / counterfactual pair. The metric compares `correct` with `incorrect` at the end of
/// either prompt; `incorrect` is the counterfactual prompt's own answer, so patching the whole
/// counterfactual run into the clean one flips the sign of the metric.
///
/// Answers are the exact text that continues the prompt (IOI names carry their leading space,
/// " Mary"), so preparation tokenizes them without adding anything.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// Stable identifier, `<task>-<split>-<index>` for generated data or `mib-<split>-<row>` for hub rows.
    pub id: String,
    /// The prompt whose behaviour is studied.
    pub clean: String,
    /// The default counterfactual prompt (IOI: s2_io_flip; arithmetic: a random problem; MCQA: other letters).
    pub counterfactual: String,
    /// IOI only: the ABC counterfactual (three names unrelated to the clean prompt's), same answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abc_counterfactual: Option<String>,
    /// The clean prompt's answer.
    pub correct: String,
    /// The counterfactual prompt's answer.
    pub incorrect: String,
    /// Task-specific provenance (template, names, operands, options); not used by the metric.
    pub metadata: Map<String, Value>,
}

/// Which counterfactual prompt a run pairs with the clean one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterfactualKind {
    /// [`Example::counterfactual`], MIB's default for every task.
    #[default]
    Default,
    /// [`Example::abc_counterfactual`] (IOI); examples without one are dropped and counted.
    Abc,
}

impl CounterfactualKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            CounterfactualKind::Default => "default",
            CounterfactualKind::Abc => "abc",
        }
    }
}

impl FromStr for CounterfactualKind {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(CounterfactualKind::Default),
            "abc" => Ok(CounterfactualKind::Abc),
            _ => Err(UnknownName { what: "counterfactual", given: s.into(), expected: "default, abc".into() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for task in TaskKind::ALL {
            assert_eq!(task.name().parse::<TaskKind>(), Ok(task));
        }
        for split in Split::ALL {
            assert_eq!(split.name().parse::<Split>(), Ok(split));
        }
        let err = "arithmetic".parse::<TaskKind>().unwrap_err().to_string();
        assert!(err.contains("arithmetic-addition") && err.contains("mcqa"), "{err}");
        assert!("dev".parse::<Split>().is_err());
    }
}
