//! Preparation filters on a small word-level tokenizer whose vocabulary the test controls:
//! " Mary" is one token, " McKay" two (" Mc", "Kay"), digits one each (or whole numbers).

mod common;

use std::path::Path;

use common::TempDir;
use serde_json::{Map, json};
use tasks::{BosPolicy, CounterfactualKind, DropReason, Example, PrepareOptions, prepare};
use transformer::{ModelConfig, Tokenizer};

const WORDS: [&str; 22] = [
    " Mary", " John", " Anna", " Mc", "Kay", "When", " and", " went", " out", ",", " gave", " it", " to", "Q", ":", " ", " A", " B", "?", " is", "Mary", "John",
];

/// A word-level tokenizer: BOS `<s>` = 0, `<unk>` = 1, then [`WORDS`], then digits or numbers.
fn tokenizer(tmp: &TempDir, split_digits: bool) -> (Tokenizer, ModelConfig) {
    let mut vocab = Map::new();
    vocab.insert("<s>".into(), 0.into());
    vocab.insert("<unk>".into(), 1.into());
    let numbers: Vec<String> = if split_digits { (0..10).map(|d| d.to_string()).collect() } else { (0..200).map(|n| n.to_string()).collect() };
    for word in WORDS.iter().map(|w| w.to_string()).chain(numbers) {
        let id = vocab.len();
        vocab.insert(word, id.into());
    }
    let digits = if split_digits { "[0-9]" } else { "[0-9]+" };
    let json = json!({
        "version": "1.0", "truncation": null, "padding": null, "normalizer": null, "post_processor": null, "decoder": null,
        "added_tokens": [{"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": format!(" ?[A-Z][a-z]*| ?[a-z]+|{digits}|[^A-Za-z0-9 ]| ")}, "behavior": "Isolated", "invert": false},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    });
    let path = tmp.path().join(format!("tokenizer-{split_digits}.json"));
    std::fs::write(&path, json.to_string()).unwrap();
    let tokenizer = Tokenizer::from_file(&path).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../transformer/tests/fixtures/gpt2-tiny/config.json");
    let mut config = transformer::load::read_hf_config(&fixture).unwrap();
    config.vocab_size = tokenizer.vocab_size();
    config.bos_token_id = Some(0);
    (tokenizer, config)
}

fn example(clean: &str, counterfactual: &str, correct: &str, incorrect: &str) -> Example {
    Example {
        id: String::new(),
        clean: clean.into(),
        counterfactual: counterfactual.into(),
        abc_counterfactual: None,
        correct: correct.into(),
        incorrect: incorrect.into(),
        metadata: Map::new(),
    }
}

const CLEAN: &str = "When Mary and John went out, John gave it to";
const FLIP: &str = "When Mary and John went out, Mary gave it to";

#[test]
fn names_filters_and_bos() {
    let tmp = TempDir::new("prepare-names");
    let (tok, config) = tokenizer(&tmp, true);
    let id = |w: &str| tok.token_to_id(w).unwrap();
    // Another default counterfactual than the first example's, so that it is not the same pair.
    let mut abc = example(CLEAN, "When Mary and John went out, Anna gave it to", " Mary", " John");
    abc.abc_counterfactual = Some("When Anna and Mary went out, John gave it to".into());
    let examples = [
        example(CLEAN, FLIP, " Mary", " John"),
        // One name is two tokens in the counterfactual: lengths differ.
        example(CLEAN, "When Mary and John went out, McKay gave it to", " Mary", " John"),
        // A two-token answer.
        example(CLEAN, FLIP, " McKay", " John"),
        // The same answer twice.
        example(CLEAN, FLIP, " Mary", " Mary"),
        abc,
    ];
    let prepared = prepare(&examples, &tok, &config, &PrepareOptions::default()).unwrap();
    assert_eq!(prepared.bos, Some(0));
    assert_eq!(prepared.kept, vec![0, 4]);
    let pair = &prepared.pairs[0];
    assert_eq!(pair.clean[0], 0, "BOS first");
    assert_eq!(pair.clean.len(), 1 + tok.encode(CLEAN).unwrap().len());
    assert_eq!(pair.clean.len(), pair.counterfactual.len());
    assert_eq!((pair.correct, pair.incorrect), (id(" Mary"), id(" John")));
    assert_eq!(prepared.dropped.count(DropReason::UnequalLength), 1);
    assert_eq!(prepared.dropped.count(DropReason::MultiTokenAnswer), 1);
    assert_eq!(prepared.dropped.count(DropReason::SameAnswer), 1);
    assert_eq!(prepared.dropped.total(), 3);
    assert_eq!(prepared.context_mismatches, 0);

    // No BOS; the ABC counterfactual, which only the last example has.
    let options = PrepareOptions { bos: BosPolicy::Never, counterfactual: CounterfactualKind::Abc, ..Default::default() };
    let prepared = prepare(&examples, &tok, &config, &options).unwrap();
    assert_eq!(prepared.bos, None);
    assert_eq!(prepared.kept, vec![4]);
    assert_eq!(prepared.pairs[0].clean, tok.encode(CLEAN).unwrap());
    assert_eq!(prepared.pairs[0].counterfactual, tok.encode("When Anna and Mary went out, John gave it to").unwrap());
    assert_eq!(prepared.dropped.count(DropReason::NoCounterfactual), 4);

    // An empty prompt can only run with a BOS token.
    let empty = [example("", "", " Mary", " John")];
    let never = PrepareOptions { bos: BosPolicy::Never, ..Default::default() };
    assert_eq!(prepare(&empty, &tok, &config, &never).unwrap().dropped.count(DropReason::EmptyPrompt), 1);
    assert_eq!(prepare(&empty, &tok, &config, &PrepareOptions::default()).unwrap().pairs[0].clean, vec![0]);
}

#[test]
fn digit_splitting_uses_the_first_differing_token() {
    let tmp = TempDir::new("prepare-digits");
    let (tok, config) = tokenizer(&tmp, true);
    let id = |w: &str| tok.token_to_id(w).unwrap();
    let q = |a: &str| format!("Q: {a}?");
    let examples = [
        example(&q("Mary"), &q("John"), "68", "63"),
        example(&q("Mary"), &q("John"), "68", "35"),
        example(&q("Mary"), &q("John"), "6", "68"),
        example(&q("Mary"), &q("John"), "9", "68"),
        example(&q("Mary"), &q("John"), "123", "128"),
    ];
    let prepared = prepare(&examples, &tok, &config, &PrepareOptions::default()).unwrap();
    assert!(prepared.digit_splitting);
    assert_eq!(prepared.kept, vec![0, 1, 3, 4]);
    assert_eq!(prepared.dropped.count(DropReason::AnswerIsPrefix), 1);
    assert_eq!(prepared.prefixed, 2);
    let base = [vec![0], tok.encode(&q("Mary")).unwrap()].concat();
    // "68" vs "63": "6" appended to both prompts, "8" vs "3" scored.
    let p = &prepared.pairs[0];
    assert_eq!(p.clean, [base.clone(), vec![id("6")]].concat());
    assert_eq!(p.counterfactual.last(), Some(&id("6")));
    assert_eq!((p.correct, p.incorrect), (id("8"), id("3")));
    // "68" vs "35": nothing appended.
    assert_eq!(prepared.pairs[1].clean, base);
    assert_eq!((prepared.pairs[1].correct, prepared.pairs[1].incorrect), (id("6"), id("3")));
    // "9" vs "68": first tokens differ.
    assert_eq!((prepared.pairs[2].correct, prepared.pairs[2].incorrect), (id("9"), id("6")));
    // "123" vs "128": "1", "2" appended.
    assert_eq!(prepared.pairs[3].clean, [base, vec![id("1"), id("2")]].concat());
    assert_eq!((prepared.pairs[3].correct, prepared.pairs[3].incorrect), (id("3"), id("8")));
}

#[test]
fn whole_number_tokens_are_scored_directly() {
    let tmp = TempDir::new("prepare-numbers");
    let (tok, config) = tokenizer(&tmp, false);
    let examples = [example("Q: Mary?", "Q: John?", "68", "63"), example("Q: Mary?", "Q: John?", "168", "63")];
    let prepared = prepare(&examples, &tok, &config, &PrepareOptions::default()).unwrap();
    assert!(!prepared.digit_splitting);
    assert_eq!(prepared.kept, vec![0, 1]);
    assert_eq!(prepared.prefixed, 0);
    assert_eq!((prepared.pairs[0].correct, prepared.pairs[0].incorrect), (tok.token_to_id("68").unwrap(), tok.token_to_id("63").unwrap()));
}

#[test]
fn answers_that_tokenize_differently_in_context_are_counted_or_dropped() {
    let tmp = TempDir::new("prepare-context");
    let (tok, config) = tokenizer(&tmp, true);
    // "Q: " then "Mary": alone the prompt ends in " " and the answer is "Mary", together " Mary".
    let examples = [example("Q: ", "Q: ", "Mary", "John"), example(CLEAN, FLIP, " Mary", " John")];
    let prepared = prepare(&examples, &tok, &config, &PrepareOptions::default()).unwrap();
    assert_eq!((prepared.pairs.len(), prepared.context_mismatches), (2, 1));
    let strict = PrepareOptions { drop_context_mismatch: true, ..Default::default() };
    let prepared = prepare(&examples, &tok, &config, &strict).unwrap();
    assert_eq!(prepared.kept, vec![1]);
    assert_eq!(prepared.dropped.count(DropReason::AnswerContextMismatch), 1);
}

#[test]
fn ids_outside_the_models_vocabulary_are_dropped() {
    let tmp = TempDir::new("prepare-vocab");
    let (tok, mut config) = tokenizer(&tmp, true);
    config.vocab_size = 5;
    let prepared = prepare(&[example(CLEAN, FLIP, " Mary", " John")], &tok, &config, &PrepareOptions::default()).unwrap();
    assert_eq!(prepared.dropped.count(DropReason::OutOfVocabulary), 1);
}
