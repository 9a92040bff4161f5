//! Bad inputs, one test per kind, each checking that it is dropped under its own reason and counted,
//! or is an error naming the file and line; nothing passes silently.
//!
//! Covered here:
//! - an answer word outside a word-level vocabulary (`unknown-answer-token`), both answers unknown
//!   (not `same-answer`), a prompt word outside it (`unknown-prompt-token`, or kept and counted
//!   with [`PrepareOptions::keep_unknown_prompt_tokens`]); byte-level BPE tokenizers have no
//!   unknown token;
//! - an id used twice in a JSONL file (an error naming the file and both lines);
//! - the same pair twice in a split (`duplicate-pair`, the first kept; or kept with
//!   [`PrepareOptions::keep_duplicate_pairs`]);
//! - a prompt longer than a model's learned positions (`too-long`, instead of an error at the
//!   forward pass);
//! - a JSONL line that is not valid UTF-8 (an error naming the file and the line);
//! - an empty answer (`empty-answer`, through [`prepare`]; `prepare.rs` unit-tests the rule).
//!
//! Covered elsewhere: malformed JSONL lines, missing or mistyped fields, MIB rows without a
//! counterfactual or with another operator (`loading.rs`); unequal prompt lengths, multi-token and
//! identical answers, answers that are prefixes of each other, empty prompts, missing ABC
//! counterfactuals, answer-context mismatches and ids outside the model's vocabulary
//! (`preparing.rs`, on a tokenizer the test controls).

mod common;

use common::TempDir;
use serde_json::Map;
use tasks::{CounterfactualKind, DropReason, Example, PrepareOptions, Prepared, TaskError, prepare, read_jsonl, unknown_token};
use transformer::config::PositionEncoding;
use transformer::{Batch, BatchError, CpuBackend, LoadedModel};

/// The shipped IOI task model (a word-level tokenizer with `<unk>`, learned positions).
fn ioi_model() -> LoadedModel<CpuBackend> {
    transformer::load_model::<CpuBackend>("task:ioi", &Default::default()).expect("the shipped task:ioi model loads")
}

fn example(id: &str, clean: &str, counterfactual: &str, correct: &str, incorrect: &str) -> Example {
    Example {
        id: id.into(),
        clean: clean.into(),
        counterfactual: counterfactual.into(),
        abc_counterfactual: None,
        correct: correct.into(),
        incorrect: incorrect.into(),
        metadata: Map::new(),
    }
}

/// Every word in the IOI model's vocabulary.
const CLEAN: &str = "At the cafe, Jeffrey and Ruth found a guitar. Ruth gave it to";
const FLIP: &str = "At the cafe, Jeffrey and Ruth found a guitar. Jeffrey gave it to";

fn good() -> Example {
    example("good", CLEAN, FLIP, " Jeffrey", " Ruth")
}

fn prepare_ioi(examples: &[Example], options: &PrepareOptions) -> Prepared {
    let LoadedModel { model, tokenizer } = ioi_model();
    prepare(examples, &tokenizer, &model.config, options).unwrap()
}

#[test]
fn unknown_answer_word() {
    let LoadedModel { model, tokenizer } = ioi_model();
    let unk = tokenizer.token_to_id("<unk>").expect("the task tokenizer has <unk>");
    assert_eq!(unknown_token(&tokenizer).unwrap(), Some(unk));
    // "Zebediah" is no word of the IOI vocabulary: it tokenizes to <unk>.
    assert_eq!(tokenizer.encode(" Zebediah").unwrap(), vec![unk]);
    let examples = [good(), example("correct", CLEAN, FLIP, " Zebediah", " Ruth"), example("incorrect", CLEAN, FLIP, " Jeffrey", " Zebediah")];
    let prepared = prepare(&examples, &tokenizer, &model.config, &PrepareOptions::default()).unwrap();
    assert_eq!(prepared.unknown_token, Some(unk));
    assert_eq!(prepared.kept, vec![0]);
    assert_eq!(prepared.dropped.count(DropReason::UnknownAnswerToken), 2, "{}", prepared.dropped);
    assert_eq!(prepared.dropped.total(), 2);
    assert!(prepared.dropped.to_string().contains("unknown-answer-token 2"), "{}", prepared.dropped);
    // Keeping unknown prompt words never keeps an unknown answer.
    let lenient = PrepareOptions { keep_unknown_prompt_tokens: true, ..Default::default() };
    assert_eq!(prepare(&examples, &tokenizer, &model.config, &lenient).unwrap().dropped.count(DropReason::UnknownAnswerToken), 2);
}

#[test]
fn both_answers_unknown() {
    // Both become <unk>: the same token, but the cause is the vocabulary, not the data.
    let prepared = prepare_ioi(&[example("both", CLEAN, FLIP, " Zebediah", " Quincy")], &PrepareOptions::default());
    assert!(prepared.pairs.is_empty());
    assert_eq!(prepared.dropped.count(DropReason::SameAnswer), 0, "{}", prepared.dropped);
    assert_eq!(prepared.dropped.count(DropReason::UnknownAnswerToken), 1, "{}", prepared.dropped);
}

#[test]
fn unknown_prompt_word() {
    let examples = [
        good(),
        example("clean", &CLEAN.replace("cafe", "zoo"), &FLIP.replace("cafe", "zoo"), " Jeffrey", " Ruth"),
        example("counterfactual", CLEAN, &FLIP.replace("guitar", "kazoo"), " Jeffrey", " Ruth"),
    ];
    let prepared = prepare_ioi(&examples, &PrepareOptions::default());
    assert_eq!(prepared.kept, vec![0]);
    assert_eq!(prepared.dropped.count(DropReason::UnknownPromptToken), 2, "{}", prepared.dropped);
    assert_eq!(prepared.unknown_prompt_tokens, 0);

    let lenient = PrepareOptions { keep_unknown_prompt_tokens: true, ..Default::default() };
    let prepared = prepare_ioi(&examples, &lenient);
    assert_eq!(prepared.kept, vec![0, 1, 2]);
    assert_eq!(prepared.dropped.total(), 0, "{}", prepared.dropped);
    assert_eq!(prepared.unknown_prompt_tokens, 2, "kept, but counted");
}

#[test]
fn byte_level_bpe_has_no_unknown_token() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transformer/tests/fixtures/gpt2-tiny/tokenizer.json");
    let tokenizer = transformer::Tokenizer::from_file(&fixture).unwrap();
    assert_eq!(unknown_token(&tokenizer).unwrap(), None);
}

/// Writes `lines` (joined by newlines) to `name` under `tmp`.
fn write(tmp: &TempDir, name: &str, lines: &[&str]) -> std::path::PathBuf {
    let path = tmp.path().join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// A JSONL line with the given id and clean prompt.
fn line(id: &str, clean: &str) -> String {
    format!(r#"{{"id":"{id}","clean":"{clean}","counterfactual":"b","correct":" A","incorrect":" B","metadata":{{}}}}"#)
}

#[test]
fn duplicate_id() {
    let tmp = TempDir::new("bad-duplicate-id");
    let (a, b, again) = (line("x-1", "a"), line("x-2", "b"), line("x-1", "c"));
    let path = write(&tmp, "twice.jsonl", &[&a, &b, "", &again]);
    let err = read_jsonl(&path).unwrap_err();
    assert!(matches!(&err, TaskError::DuplicateId { id, first: 1, line: 4, .. } if id == "x-1"), "{err}");
    let text = err.to_string();
    assert!(text.contains("twice.jsonl") && text.contains("line 4") && text.contains("line 1") && text.contains("`x-1`"), "{text}");
    // Distinct ids load.
    let path = write(&tmp, "once.jsonl", &[&a, &b]);
    assert_eq!(read_jsonl(&path).unwrap().len(), 2);
}

#[test]
fn duplicate_pair() {
    let mut abc = good();
    abc.abc_counterfactual = Some(FLIP.replace("Jeffrey gave", "Emma gave"));
    let mut other_abc = abc.clone();
    other_abc.abc_counterfactual = Some(FLIP.replace("Jeffrey gave", "Laura gave"));
    let unknown = example("u", CLEAN, FLIP, " Zebediah", " Ruth");
    let examples = [
        good(),
        // The same pair under another id.
        Example { id: "again".into(), ..good() },
        // The answers swapped: another pair.
        example("swapped", CLEAN, FLIP, " Ruth", " Jeffrey"),
        // The same default pair as the first, with an ABC prompt.
        abc,
        unknown.clone(),
        // A copy of a dropped pair is a duplicate too.
        Example { id: "u2".into(), ..unknown },
        other_abc,
    ];
    let prepared = prepare_ioi(&examples, &PrepareOptions::default());
    assert_eq!(prepared.kept, vec![0, 2]);
    assert_eq!(prepared.dropped.count(DropReason::DuplicatePair), 4, "{}", prepared.dropped);
    assert_eq!(prepared.dropped.count(DropReason::UnknownAnswerToken), 1, "{}", prepared.dropped);
    assert!(prepared.dropped.to_string().contains("duplicate-pair 4"), "{}", prepared.dropped);

    // With the ABC counterfactual the pairs differ by it: the two ABC examples are distinct.
    let abc_options = PrepareOptions { counterfactual: CounterfactualKind::Abc, ..Default::default() };
    let prepared = prepare_ioi(&examples, &abc_options);
    assert_eq!(prepared.kept, vec![3, 6]);
    assert_eq!(prepared.dropped.count(DropReason::DuplicatePair), 0, "{}", prepared.dropped);

    let keep = PrepareOptions { keep_duplicate_pairs: true, ..Default::default() };
    let prepared = prepare_ioi(&examples, &keep);
    assert_eq!(prepared.kept, vec![0, 1, 2, 3, 6]);
    assert_eq!(prepared.dropped.count(DropReason::DuplicatePair), 0);
}

#[test]
fn too_long_prompt() {
    // The MCQA task model is GPT-2-style: learned positions, BOS prepended.
    let LoadedModel { model, tokenizer } = transformer::load_model::<CpuBackend>("task:mcqa", &Default::default()).unwrap();
    let PositionEncoding::Learned { max_positions } = model.config.positions else { panic!("task:mcqa has learned positions") };
    let clean = "The chair is black. What color is the chair?\nA. yellow\nB. orange\nC. pink\nD. black\nAnswer:";
    let counterfactual = "The chair is black. What color is the chair?\nB. yellow\nD. orange\nC. pink\nA. black\nAnswer:";
    let base = 1 + tokenizer.encode(clean).unwrap().len();
    assert!(base < max_positions);
    // "The " is one token: prompts of exactly `max_positions` tokens (BOS included), and one more.
    let padded = |extra: usize, text: &str| format!("{}{text}", "The ".repeat(extra));
    let fits = max_positions - base;
    let examples = [
        example("fits", &padded(fits, clean), &padded(fits, counterfactual), " D", " A"),
        example("long", &padded(fits + 1, clean), &padded(fits + 1, counterfactual), " D", " A"),
    ];
    let prepared = prepare(&examples, &tokenizer, &model.config, &PrepareOptions::default()).unwrap();
    assert_eq!(prepared.kept, vec![0]);
    assert_eq!(prepared.pairs[0].clean.len(), max_positions);
    assert_eq!(prepared.dropped.count(DropReason::TooLong), 1, "{}", prepared.dropped);
    assert!(prepared.dropped.to_string().contains("too-long 1"), "{}", prepared.dropped);
    // The limit is the forward pass's: the kept prompt runs, one token more would not.
    let device = Default::default();
    assert!(Batch::<CpuBackend>::new(&prepared.pairs[0..1].iter().map(|p| p.clean.clone()).collect::<Vec<_>>(), &model.config, &device).is_ok());
    let longer = [[prepared.pairs[0].clean.clone(), vec![prepared.pairs[0].clean[1]]].concat()];
    assert!(matches!(Batch::<CpuBackend>::new(&longer, &model.config, &device), Err(BatchError::TooLong { .. })));
}

#[test]
fn non_utf8_line() {
    let tmp = TempDir::new("bad-utf8");
    let path = tmp.path().join("latin1.jsonl");
    let (first, third) = (line("x-1", "a"), line("x-3", "c"));
    // Line 2 holds "Jos\xe9", Latin-1 for "José".
    let second = line("x-2", "Jos@");
    let (before, after) = second.split_once('@').unwrap();
    let bytes = [first.as_bytes(), b"\n", before.as_bytes(), b"\xe9", after.as_bytes(), b"\n", third.as_bytes(), b"\n"].concat();
    std::fs::write(&path, &bytes).unwrap();
    let err = read_jsonl(&path).unwrap_err();
    assert!(matches!(err, TaskError::NotUtf8 { at: tasks::Record::Line(2), .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("latin1.jsonl") && text.contains("line 2") && text.contains("UTF-8"), "{text}");

    // Reading bytes line by line still takes CRLF line ends and a last line without one.
    let path = tmp.path().join("crlf.jsonl");
    std::fs::write(&path, format!("{first}\r\n\r\n{third}")).unwrap();
    let examples = read_jsonl(&path).unwrap();
    assert_eq!(examples.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["x-1", "x-3"]);
    assert_eq!(examples[1].metadata, Map::new());
}

#[test]
fn empty_answer() {
    let examples = [good(), example("empty", CLEAN, FLIP, "", " Ruth"), example("blank", CLEAN, FLIP, " Jeffrey", " ")];
    let prepared = prepare_ioi(&examples, &PrepareOptions::default());
    assert_eq!(prepared.kept, vec![0]);
    assert_eq!(prepared.dropped.count(DropReason::EmptyAnswer), 2, "{}", prepared.dropped);
}
