//! Word-level tokenizers for task models, built with the `tokenizers` crate: every word,
//! punctuation run and number 0–198 is one token, so MIB's single-token answer rules hold by
//! construction (names, option letters and every sum or difference of two-digit numbers).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use tasks::Example;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{AddedToken, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

use crate::TrainError;

/// Padding, never attended to.
pub const PAD: &str = "<pad>";
/// Prepended to every prompt.
pub const BOS: &str = "<bos>";
/// Stands for words outside the vocabulary.
pub const UNK: &str = "<unk>";

/// The largest number that is one token: the largest sum of two two-digit numbers.
pub const MAX_NUMBER: u32 = 198;

/// The words of `text` as the tokenizer's own pre-tokenizer splits them (`\w+|[^\w\s]+`).
fn words(text: &str) -> Result<Vec<String>, TrainError> {
    let mut split = PreTokenizedString::from(text);
    Whitespace {}.pre_tokenize(&mut split).map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    Ok(split.get_splits(OffsetReferential::Original, OffsetType::Byte).into_iter().map(|(w, _, _)| w.to_string()).collect())
}

/// Builds the tokenizer for a task from example texts and writes it as `tokenizer.json`: ids 0, 1, 2
/// are `<pad>`, `<bos>`, `<unk>`, then the numbers 0..=198, then every other word of `examples` in
/// sorted order (so the same examples always give the same ids).
pub fn build_tokenizer(examples: &[Example], path: &Path) -> Result<(), TrainError> {
    let numbers: Vec<String> = (0..=MAX_NUMBER).map(|n| n.to_string()).collect();
    let mut others = BTreeSet::new();
    for e in examples {
        for text in [&e.clean, &e.counterfactual, &e.correct, &e.incorrect] {
            others.extend(words(text)?.into_iter().filter(|w| !numbers.contains(w)));
        }
    }
    let vocab: HashMap<String, u32> =
        [PAD, BOS, UNK].into_iter().map(str::to_string).chain(numbers).chain(others).enumerate().map(|(i, w)| (w, i as u32)).collect();
    let model = WordLevel::builder().vocab(vocab.into_iter().collect()).unk_token(UNK.into()).build().map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(Whitespace {}));
    tokenizer.add_special_tokens([PAD, BOS, UNK].map(|t| AddedToken::from(t, true))).map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    tokenizer.save(path, true).map_err(|e| TrainError::Tokenizer(format!("{}: {e}", path.display())))
}
