//! Examples turned into token ids for one model, ready for forward passes, with every example that
//! cannot be scored dropped and counted by reason.
//!
//! The rules, per example, in this order (the first that fails names the drop reason):
//! 1. The counterfactual asked for exists ([`CounterfactualKind::Abc`] needs an ABC prompt).
//!    The pair is not a duplicate: an example whose clean prompt, counterfactual prompt (the one
//!    asked for) and both answers equal an earlier example's is dropped as
//!    [`DropReason::DuplicatePair`], so that no pair weighs twice: the first occurrence is the one
//!    prepared, and later copies count as duplicates even when it was dropped for another reason.
//!    [`PrepareOptions::keep_duplicate_pairs`] keeps them. Duplicates are found here rather than at
//!    loading so that every source (JSONL, MIB's hub, the generators) is covered.
//! 2. Prompts are tokenized without special tokens; the model's BOS token is prepended to both
//!    when [`BosPolicy::Model`] and the model defines one (MIB's behaviour, mib-spec §3).
//! 3. No answer contains the tokenizer's unknown token (see [`unknown_token`]: word-level
//!    tokenizers write every word outside their vocabulary as `<unk>`), and, unless
//!    [`PrepareOptions::keep_unknown_prompt_tokens`], neither prompt does. Byte-level BPE
//!    tokenizers have no unknown token, so this never drops anything for them.
//! 4. Answers (MIB's rules, mib-spec §7):
//!    - both answers single tokens (IOI names, MCQA letters, arithmetic labels on tokenizers with
//!      multi-digit number tokens): those tokens are scored;
//!    - numeric answers on a digit-splitting tokenizer (SmolLM2, Qwen2): the first-differing-token
//!      rule. Both answers are tokenized; k is the first position where their tokens differ; the
//!      k shared tokens before it are appended to *both* prompts (teacher forcing: each prompt's own
//!      answer starts with them too) and the tokens at position k are scored. "68" vs "35" scores
//!      "6" vs "3" on the bare prompts; "68" vs "63" appends "6" and scores "8" vs "3". If one
//!      answer's tokens are a prefix of the other's, no position differs and the pair is dropped;
//!    - anything else with a multi-token answer is dropped (MIB keeps equal-length multi-token
//!      names and scores their first token; circuitbench requires single tokens so that the
//!      scored token is the whole answer), and identical answer tokens are dropped (m ≡ 0);
//!    - an answer with no tokens at all is dropped.
//! 5. Clean and counterfactual ids (after BOS and any appended prefix) have equal lengths, so
//!    positions align for patching.
//! 6. The prompts fit the model: no longer than its learned positions
//!    ([`PositionEncoding::Learned`]'s `max_positions`, GPT-2's `n_positions`), or the pair is
//!    dropped as [`DropReason::TooLong`] instead of failing the forward pass. Rotary models have
//!    no such limit.
//! 7. Every id is inside the model's vocabulary.
//!
//! Finally each answer is checked in context: if `prompt + answer` tokenizes differently from
//! `prompt` followed by `answer` (e.g. GPT-2 merges MIB's "A: " trailing space into " 68"), the
//! standalone tokenization is still what is scored, as in MIB; such pairs are counted in
//! [`Prepared::context_mismatches`], or dropped when [`PrepareOptions::drop_context_mismatch`].

use std::collections::HashSet;

use transformer::config::PositionEncoding;
use transformer::{ModelConfig, Tokenizer};

use crate::drops::{DropReason, Drops};
use crate::error::TaskError;
use crate::example::{CounterfactualKind, Example};

/// One clean / counterfactual pair as a model sees it: equal-length token ids and the two answer
/// tokens compared by the metric m = logit(correct) − logit(incorrect) at the read position (the
/// last token, unless the pair names another: a bidirectional compiled model is read anywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPair {
    /// Clean prompt ids (BOS included when the model's setting asks for it).
    pub clean: Vec<u32>,
    /// Counterfactual prompt ids, the same length as `clean`.
    pub counterfactual: Vec<u32>,
    /// The clean answer's scored token.
    pub correct: u32,
    /// The counterfactual answer's scored token.
    pub incorrect: u32,
    /// The position the answer is read at; None: the last token (every language task).
    pub read: Option<usize>,
}

impl PreparedPair {
    /// The position the answer is read at: [`PreparedPair::read`], or the last token.
    pub fn read_position(&self) -> usize {
        self.read.unwrap_or(self.clean.len().saturating_sub(1))
    }
}

/// A batch of pairs split into the four lists every forward loop needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairBatch {
    /// Clean prompt ids, one row per pair.
    pub clean: Vec<Vec<u32>>,
    /// Counterfactual prompt ids, row for row the same lengths as `clean`.
    pub counterfactual: Vec<Vec<u32>>,
    /// (correct, incorrect) per pair.
    pub answers: Vec<(u32, u32)>,
    /// Each pair's read position ([`PreparedPair::read_position`]).
    pub reads: Vec<usize>,
}

impl PairBatch {
    /// Splits `pairs` into clean prompts, counterfactual prompts, answer tokens and read positions.
    pub fn of(pairs: &[PreparedPair]) -> Self {
        Self {
            clean: pairs.iter().map(|p| p.clean.clone()).collect(),
            counterfactual: pairs.iter().map(|p| p.counterfactual.clone()).collect(),
            answers: pairs.iter().map(|p| (p.correct, p.incorrect)).collect(),
            reads: pairs.iter().map(PreparedPair::read_position).collect(),
        }
    }
}

/// Whether prompts start with the model's BOS token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BosPolicy {
    /// Prepend the model's BOS token where its config defines one (MIB's default).
    #[default]
    Model,
    /// Never prepend a BOS token.
    Never,
}

impl BosPolicy {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            BosPolicy::Model => "model",
            BosPolicy::Never => "none",
        }
    }
}

/// How examples are prepared for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrepareOptions {
    /// BOS handling, applied to clean and counterfactual prompts alike.
    pub bos: BosPolicy,
    /// Which counterfactual prompt to pair with the clean one.
    pub counterfactual: CounterfactualKind,
    /// Drop pairs whose answers tokenize differently after their prompt than alone.
    pub drop_context_mismatch: bool,
    /// Keep pairs whose prompts contain the tokenizer's unknown token (counted in
    /// [`Prepared::unknown_prompt_tokens`]) instead of dropping them as
    /// [`DropReason::UnknownPromptToken`], the default. Answers with one are always dropped.
    pub keep_unknown_prompt_tokens: bool,
    /// Keep every copy of a repeated pair (same clean and counterfactual prompts and answers)
    /// instead of dropping all but the first as [`DropReason::DuplicatePair`], the default.
    pub keep_duplicate_pairs: bool,
}

/// The pairs a model can be scored on, and an account of everything left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Prepared {
    /// The kept pairs, in example order.
    pub pairs: Vec<PreparedPair>,
    /// For each kept pair, the index of its example in the input.
    pub kept: Vec<usize>,
    /// Examples dropped, by reason.
    pub dropped: Drops,
    /// The BOS token prepended to every prompt, if any: the setting to record with results.
    pub bos: Option<u32>,
    /// Whether the tokenizer writes each digit as its own token, so numeric answers used the
    /// first-differing-token rule.
    pub digit_splitting: bool,
    /// How many pairs had the shared answer prefix appended to their prompts.
    pub prefixed: usize,
    /// Kept pairs whose answer tokenizes differently after its prompt than alone.
    pub context_mismatches: usize,
    /// The tokenizer's unknown token, if it has one (see [`unknown_token`]).
    pub unknown_token: Option<u32>,
    /// Kept pairs with the unknown token in a prompt (only with
    /// [`PrepareOptions::keep_unknown_prompt_tokens`]; otherwise such pairs are dropped).
    pub unknown_prompt_tokens: usize,
}

/// Private-use characters, in no tokenizer's vocabulary as words: each is encoded alone to find
/// the token that stands for unknown text.
const UNKNOWN_PROBES: [&str; 3] = ["\u{E000}", "\u{E001}", "\u{F8FF}"];

/// The token a tokenizer writes for text outside its vocabulary (a word-level tokenizer's `<unk>`),
/// or `None` when it has none. Found without relying on the token's name: it is the one token that
/// distinct private-use characters, each encoded alone, all become. Byte-level BPE tokenizers
/// (GPT-2, SmolLM2, Llama-3, Qwen2) and byte-fallback ones encode them as their distinct bytes, so
/// they have none.
pub fn unknown_token(tokenizer: &Tokenizer) -> Result<Option<u32>, TaskError> {
    let mut found = None;
    for probe in UNKNOWN_PROBES {
        match (tokenizer.encode(probe)?.as_slice(), found) {
            ([id], None) => found = Some(*id),
            ([id], Some(previous)) if *id == previous => {}
            _ => return Ok(None),
        }
    }
    Ok(found)
}

/// Tokenizes, filters and pairs examples for one model. Fails only if the tokenizer itself fails;
/// every example that cannot be scored is dropped and counted in [`Prepared::dropped`].
pub fn prepare(examples: &[Example], tokenizer: &Tokenizer, config: &ModelConfig, options: &PrepareOptions) -> Result<Prepared, TaskError> {
    let bos = match options.bos {
        BosPolicy::Model => config.bos_token_id,
        BosPolicy::Never => None,
    };
    let digit_splitting = tokenizer.encode("0123456789")?.len() == 10;
    let unknown = unknown_token(tokenizer)?;
    let mut out = Prepared { bos, digit_splitting, unknown_token: unknown, ..Prepared::default() };
    let context = Context { tokenizer, config, options, bos, digit_splitting, unknown };
    let mut seen = HashSet::new();
    for (index, example) in examples.iter().enumerate() {
        let Some(counterfactual) = counterfactual_of(example, options.counterfactual) else {
            out.dropped.add(DropReason::NoCounterfactual);
            continue;
        };
        let key = (example.clean.as_str(), counterfactual, example.correct.as_str(), example.incorrect.as_str());
        if !seen.insert(key) && !options.keep_duplicate_pairs {
            out.dropped.add(DropReason::DuplicatePair);
            continue;
        }
        match prepare_one(example, counterfactual, &context)? {
            Ok(kept) => {
                out.pairs.push(kept.pair);
                out.kept.push(index);
                out.prefixed += usize::from(kept.prefixed);
                out.context_mismatches += usize::from(kept.mismatch);
                out.unknown_prompt_tokens += usize::from(kept.unknown_prompt);
            }
            Err(reason) => out.dropped.add(reason),
        }
    }
    Ok(out)
}

/// What every example is prepared with.
struct Context<'a> {
    tokenizer: &'a Tokenizer,
    config: &'a ModelConfig,
    options: &'a PrepareOptions,
    bos: Option<u32>,
    digit_splitting: bool,
    unknown: Option<u32>,
}

/// A kept example: its pair and what is worth counting about it.
struct Kept {
    pair: PreparedPair,
    /// The shared answer prefix was appended to both prompts.
    prefixed: bool,
    /// An answer tokenizes differently in context.
    mismatch: bool,
    /// A prompt contains the unknown token (kept by the options).
    unknown_prompt: bool,
}

/// One example: kept, or the reason it is dropped.
type Outcome = Result<Kept, DropReason>;

/// The counterfactual prompt `kind` asks for, if the example has it.
fn counterfactual_of(example: &Example, kind: CounterfactualKind) -> Option<&str> {
    match kind {
        CounterfactualKind::Default => Some(example.counterfactual.as_str()),
        CounterfactualKind::Abc => example.abc_counterfactual.as_deref(),
    }
}

/// Rules 2 to 7 of the module docs on one example, paired with `counterfactual`.
fn prepare_one(example: &Example, counterfactual: &str, cx: &Context<'_>) -> Result<Outcome, TaskError> {
    let (tokenizer, options, bos) = (cx.tokenizer, cx.options, cx.bos);
    let clean_text = tokenizer.encode(&example.clean)?;
    let cf_text = tokenizer.encode(counterfactual)?;
    if bos.is_none() && (clean_text.is_empty() || cf_text.is_empty()) {
        return Ok(Err(DropReason::EmptyPrompt));
    }
    let correct_ids = tokenizer.encode(&example.correct)?;
    let incorrect_ids = tokenizer.encode(&example.incorrect)?;
    let has_unknown = |ids: &[u32]| cx.unknown.is_some_and(|unknown| ids.contains(&unknown));
    if has_unknown(&correct_ids) || has_unknown(&incorrect_ids) {
        return Ok(Err(DropReason::UnknownAnswerToken));
    }
    let unknown_prompt = has_unknown(&clean_text) || has_unknown(&cf_text);
    if unknown_prompt && !options.keep_unknown_prompt_tokens {
        return Ok(Err(DropReason::UnknownPromptToken));
    }
    let numeric = is_number(&example.correct) && is_number(&example.incorrect);
    let scored = score_tokens(&correct_ids, &incorrect_ids, numeric && cx.digit_splitting);
    let (prefix, correct, incorrect) = match scored {
        Ok(scored) => scored,
        Err(reason) => return Ok(Err(reason)),
    };
    let build = |text: &[u32]| -> Vec<u32> { bos.into_iter().chain(text.iter().copied()).chain(prefix.iter().copied()).collect() };
    let pair = PreparedPair { clean: build(&clean_text), counterfactual: build(&cf_text), correct, incorrect, read: None };
    if pair.clean.len() != pair.counterfactual.len() {
        return Ok(Err(DropReason::UnequalLength));
    }
    if let PositionEncoding::Learned { max_positions } = cx.config.positions
        && pair.clean.len() > max_positions
    {
        return Ok(Err(DropReason::TooLong));
    }
    let vocab = cx.config.vocab_size;
    let in_vocab = |id: &u32| (*id as usize) < vocab;
    let all_in_vocab = pair.clean.iter().all(in_vocab) && pair.counterfactual.iter().all(in_vocab) && in_vocab(&correct) && in_vocab(&incorrect);
    if !all_in_vocab {
        return Ok(Err(DropReason::OutOfVocabulary));
    }
    let mismatch = !tokenizes_alike(tokenizer, &example.clean, &clean_text, &example.correct, &correct_ids)?
        || !tokenizes_alike(tokenizer, counterfactual, &cf_text, &example.incorrect, &incorrect_ids)?;
    if mismatch && options.drop_context_mismatch {
        return Ok(Err(DropReason::AnswerContextMismatch));
    }
    Ok(Ok(Kept { pair, prefixed: !prefix.is_empty(), mismatch, unknown_prompt }))
}

/// Digits only, after an optional leading space: an arithmetic label.
fn is_number(answer: &str) -> bool {
    let digits = answer.strip_prefix(' ').unwrap_or(answer);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The shared prefix to append and the two scored tokens, by the rules in the module docs.
fn score_tokens(correct: &[u32], incorrect: &[u32], first_difference: bool) -> Result<(Vec<u32>, u32, u32), DropReason> {
    if correct.is_empty() || incorrect.is_empty() {
        return Err(DropReason::EmptyAnswer);
    }
    if let ([c], [i]) = (correct, incorrect) {
        return if c == i { Err(DropReason::SameAnswer) } else { Ok((Vec::new(), *c, *i)) };
    }
    if !first_difference {
        return Err(DropReason::MultiTokenAnswer);
    }
    match correct.iter().zip(incorrect).position(|(c, i)| c != i) {
        Some(k) => Ok((correct[..k].to_vec(), correct[k], incorrect[k])),
        None if correct == incorrect => Err(DropReason::SameAnswer),
        None => Err(DropReason::AnswerIsPrefix),
    }
}

/// Whether `prompt + answer` tokenizes as the prompt's tokens followed by the answer's.
fn tokenizes_alike(tokenizer: &Tokenizer, prompt: &str, prompt_ids: &[u32], answer: &str, answer_ids: &[u32]) -> Result<bool, TaskError> {
    let joined = tokenizer.encode(&format!("{prompt}{answer}"))?;
    Ok(joined.len() == prompt_ids.len() + answer_ids.len() && joined[..prompt_ids.len()] == *prompt_ids && joined[prompt_ids.len()..] == *answer_ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_tokens_are_scored_directly() {
        assert_eq!(score_tokens(&[5], &[7], false), Ok((vec![], 5, 7)));
        assert_eq!(score_tokens(&[5], &[5], true), Err(DropReason::SameAnswer));
        assert_eq!(score_tokens(&[5, 6], &[7], false), Err(DropReason::MultiTokenAnswer));
        assert_eq!(score_tokens(&[5, 6], &[7, 8], false), Err(DropReason::MultiTokenAnswer));
        assert_eq!(score_tokens(&[], &[7], true), Err(DropReason::EmptyAnswer));
    }

    #[test]
    fn first_differing_token_rule() {
        // "68" vs "35": differ at once.
        assert_eq!(score_tokens(&[6, 8], &[3, 5], true), Ok((vec![], 6, 3)));
        // "68" vs "63": shared "6" appended, "8" vs "3" scored.
        assert_eq!(score_tokens(&[6, 8], &[6, 3], true), Ok((vec![6], 8, 3)));
        // "123" vs "128": two shared tokens.
        assert_eq!(score_tokens(&[1, 2, 3], &[1, 2, 8], true), Ok((vec![1, 2], 3, 8)));
        // "9" vs "68": different lengths, first tokens differ.
        assert_eq!(score_tokens(&[9], &[6, 8], true), Ok((vec![], 9, 6)));
        // "6" vs "68": a prefix, nothing differs.
        assert_eq!(score_tokens(&[6], &[6, 8], true), Err(DropReason::AnswerIsPrefix));
        assert_eq!(score_tokens(&[6, 8], &[6, 8], true), Err(DropReason::SameAnswer));
    }

    #[test]
    fn numbers_are_recognised() {
        assert!(is_number("68") && is_number(" 7"));
        assert!(!is_number(" Mary") && !is_number("") && !is_number(" ") && !is_number("6a"));
    }
}
