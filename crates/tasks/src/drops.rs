//! Why examples leave a dataset, counted so that nothing is dropped silently.

use std::collections::BTreeMap;
use std::fmt;

/// One reason an example was left out, at loading (hub rows) or at preparation for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The counterfactual asked for is absent (a null MIB counterfactual, or no ABC prompt).
    NoCounterfactual,
    /// A MIB arithmetic row whose operator is not the task's (MIB's own filter).
    WrongOperator,
    /// A prompt tokenizes to no tokens and no BOS is prepended.
    EmptyPrompt,
    /// Clean and counterfactual prompts have different token counts, so positions do not align.
    UnequalLength,
    /// An answer tokenizes to no tokens at all.
    EmptyAnswer,
    /// An answer that MIB requires to be one token (IOI name, MCQA letter, arithmetic label on a
    /// tokenizer that does not split digits) is several.
    MultiTokenAnswer,
    /// Correct and incorrect answers tokenize identically: the metric would be zero by construction.
    SameAnswer,
    /// Digit-split answers where one is a prefix of the other, so no token differs.
    AnswerIsPrefix,
    /// A prompt (with BOS and any appended answer prefix) has more tokens than the model has
    /// learned positions, so it cannot be run.
    TooLong,
    /// A token id is outside the model's vocabulary (tokenizer and model disagree).
    OutOfVocabulary,
    /// An answer tokenizes differently after its prompt than alone (only dropped when asked).
    AnswerContextMismatch,
    /// An answer contains the tokenizer's unknown token (a word outside a word-level vocabulary),
    /// so the scored token would stand for any unknown word.
    UnknownAnswerToken,
    /// A prompt contains the tokenizer's unknown token (dropped unless
    /// [`PrepareOptions::keep_unknown_prompt_tokens`](crate::PrepareOptions::keep_unknown_prompt_tokens)).
    UnknownPromptToken,
    /// The same pair (clean and counterfactual prompts, both answers) as an earlier example of the
    /// split; the first is kept (unless
    /// [`PrepareOptions::keep_duplicate_pairs`](crate::PrepareOptions::keep_duplicate_pairs)).
    DuplicatePair,
}

impl DropReason {
    /// A short name for reports and tables.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoCounterfactual => "no-counterfactual",
            DropReason::WrongOperator => "wrong-operator",
            DropReason::EmptyPrompt => "empty-prompt",
            DropReason::UnequalLength => "unequal-length",
            DropReason::EmptyAnswer => "empty-answer",
            DropReason::MultiTokenAnswer => "multi-token-answer",
            DropReason::SameAnswer => "same-answer",
            DropReason::AnswerIsPrefix => "answer-is-prefix",
            DropReason::TooLong => "too-long",
            DropReason::OutOfVocabulary => "out-of-vocabulary",
            DropReason::AnswerContextMismatch => "answer-context-mismatch",
            DropReason::UnknownAnswerToken => "unknown-answer-token",
            DropReason::UnknownPromptToken => "unknown-prompt-token",
            DropReason::DuplicatePair => "duplicate-pair",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Counts of dropped examples by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drops(BTreeMap<DropReason, usize>);

impl Drops {
    /// Counts one more example dropped for `reason`.
    pub fn add(&mut self, reason: DropReason) {
        *self.0.entry(reason).or_default() += 1;
    }

    /// How many examples were dropped for `reason`.
    pub fn count(&self, reason: DropReason) -> usize {
        self.0.get(&reason).copied().unwrap_or(0)
    }

    /// How many examples were dropped in all.
    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    /// The non-zero counts, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, usize)> + '_ {
        self.0.iter().map(|(r, n)| (*r, *n))
    }
}

impl fmt::Display for Drops {
    /// `none`, or `reason n, reason n` in a stable order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let parts: Vec<String> = self.iter().map(|(r, n)| format!("{r} {n}")).collect();
        f.write_str(&parts.join(", "))
    }
}
