//! Loading datasets: our JSONL (errors name file, line and field) and MIB's hub parquet schema
//! (files written here with the `tables` crate in the layout of mib-spec §7).

mod common;

use common::TempDir;
use serde_json::{Value, json};
use tasks::hub::load_mib_parquet;
use tasks::{DropReason, Split, TaskError, TaskKind, read_jsonl};

const GOOD: &str = r#"{"id":"x-1","clean":"a","counterfactual":"b","correct":" A","incorrect":" B","metadata":{}}"#;

fn write(tmp: &TempDir, name: &str, lines: &[&str]) -> std::path::PathBuf {
    let path = tmp.path().join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn a_malformed_line_names_the_file_and_line() {
    let tmp = TempDir::new("malformed");
    let path = write(&tmp, "bad.jsonl", &[GOOD, "", r#"{"id": "x-2", "clean": "#]);
    let err = read_jsonl(&path).unwrap_err();
    assert!(matches!(err, TaskError::Malformed { at: tasks::Record::Line(3), .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("bad.jsonl") && text.contains("line 3"), "{text}");

    let path = write(&tmp, "array.jsonl", &["[1, 2]"]);
    let text = read_jsonl(&path).unwrap_err().to_string();
    assert!(text.contains("array.jsonl") && text.contains("line 1") && text.contains("not a JSON object"), "{text}");
}

#[test]
fn a_missing_or_mistyped_field_names_the_field_and_line() {
    let tmp = TempDir::new("missing");
    let second = GOOD.replace("x-1", "x-2");
    let path = write(&tmp, "missing.jsonl", &[GOOD, &second, r#"{"id":"x-3","clean":"a","counterfactual":"b","correct":" A"}"#]);
    let err = read_jsonl(&path).unwrap_err();
    match &err {
        TaskError::MissingField { at, field, .. } => {
            assert_eq!((*at, field.as_str()), (tasks::Record::Line(3), "incorrect"));
        }
        other => panic!("expected a missing field, got {other}"),
    }
    let text = err.to_string();
    assert!(text.contains("missing.jsonl") && text.contains("line 3") && text.contains("`incorrect`"), "{text}");

    let path = write(&tmp, "typed.jsonl", &[r#"{"id":"x","clean":3,"counterfactual":"b","correct":" A","incorrect":" B"}"#]);
    let text = read_jsonl(&path).unwrap_err().to_string();
    assert!(text.contains("line 1") && text.contains("`clean`") && text.contains("expected a string"), "{text}");

    let missing = tmp.path().join("absent.jsonl");
    let text = read_jsonl(&missing).unwrap_err().to_string();
    assert!(text.contains("absent.jsonl"), "{text}");
}

fn parquet(tmp: &TempDir, name: &str, rows: Value) -> std::path::PathBuf {
    let rows: Vec<tables::Row> = rows.as_array().unwrap().iter().map(|r| r.as_object().unwrap().clone()).collect();
    let path = tmp.path().join(name);
    tables::write_parquet(&path, &rows).unwrap();
    path
}

fn ioi_row(io: &str, s: &str) -> Value {
    let clean = format!("After {io} and {s} went to the store, {s} gave a drink to");
    let flip = format!("After {io} and {s} went to the store, {io} gave a drink to");
    json!({
        "template": "After {A} and {B} went to the {PLACE}, {B} gave a {OBJECT} to",
        "metadata": {"indirect_object": io, "subject": s, "object": "drink", "place": "store",
                     "random_a": "Ann", "random_b": "Bob", "random_c": "Cy"},
        "prompt": clean,
        "choices": [io, s],
        "answerKey": 0,
        "s2_io_flip_counterfactual": {"prompt": flip, "choices": [io, s], "answerKey": 1},
        "abc_counterfactual": {"prompt": "After Ann and Bob went to the store, Cy gave a drink to", "choices": ["Ann", "Bob"], "answerKey": 0},
    })
}

#[test]
fn mib_ioi_rows_become_examples() {
    let tmp = TempDir::new("hub-ioi");
    let path = parquet(&tmp, "ioi.parquet", json!([ioi_row("Mary", "John"), ioi_row("Anna", "Paul")]));
    let loaded = load_mib_parquet(TaskKind::Ioi, Split::Validation, &[path]).unwrap();
    assert_eq!(loaded.dropped.total(), 0);
    let e = &loaded.examples[0];
    assert_eq!(e.clean, "After Mary and John went to the store, John gave a drink to");
    assert_eq!(e.counterfactual, "After Mary and John went to the store, Mary gave a drink to");
    assert_eq!(e.abc_counterfactual.as_deref(), Some("After Ann and Bob went to the store, Cy gave a drink to"));
    assert_eq!((e.correct.as_str(), e.incorrect.as_str()), (" Mary", " John"));
    assert_eq!(e.metadata["place"], "store");
    assert_eq!(loaded.examples[1].correct, " Anna");
    assert_eq!(e.id, "mib-validation-00000");
}

#[test]
fn mib_mcqa_rows_use_the_labels_at_the_answer_keys() {
    let tmp = TempDir::new("hub-mcqa");
    let prompt = "The apple is red. What color is the apple?\nA. blue\nB. red\nC. green\nD. pink\nAnswer:";
    let cf = "The apple is red. What color is the apple?\n1. blue\n2. red\n3. green\n4. pink\nAnswer:";
    let path = parquet(
        &tmp,
        "mcqa.parquet",
        json!([{
            "question": "What color is the apple?",
            "choices": {"label": ["A", "B", "C", "D"], "text": ["blue", "red", "green", "pink"]},
            "answerKey": 1,
            "prompt": prompt,
            // MIB's symbol counterfactual labels are integers.
            "symbol_counterfactual": {"prompt": cf, "choices": {"label": [1, 2, 3, 4], "text": ["blue", "red", "green", "pink"]}, "answerKey": 1},
            "idx": 7,
        }]),
    );
    let loaded = load_mib_parquet(TaskKind::Mcqa, Split::Test, &[path]).unwrap();
    let e = &loaded.examples[0];
    assert_eq!((e.correct.as_str(), e.incorrect.as_str()), ("B", "2"));
    assert_eq!((e.clean.as_str(), e.counterfactual.as_str()), (prompt, cf));
}

#[test]
fn mib_mcqa_answer_key_outside_the_labels_is_an_error_naming_row_and_field() {
    let tmp = TempDir::new("hub-mcqa-bad");
    let path = parquet(
        &tmp,
        "mcqa.parquet",
        json!([{
            "choices": {"label": ["A", "B"], "text": ["x", "y"]},
            "answerKey": 5,
            "prompt": "p",
            "symbol_counterfactual": {"prompt": "q", "choices": {"label": ["C", "D"], "text": ["x", "y"]}, "answerKey": 0},
        }]),
    );
    let text = load_mib_parquet(TaskKind::Mcqa, Split::Test, &[path]).unwrap_err().to_string();
    assert!(text.contains("mcqa.parquet") && text.contains("row 1") && text.contains("choices.label"), "{text}");
}

#[test]
fn mib_arithmetic_rows_follow_mibs_filters() {
    let tmp = TempDir::new("hub-arith");
    let row = |a: u32, b: u32, op: &str, cf: Value| {
        let word = if op == "+" { "plus" } else { "minus" };
        let label = if op == "+" { a + b } else { a - b };
        json!({"idx": 1, "template": "Q: How much is {op1} {operator} {op2}? A: ",
               "prompt": format!("Q: How much is {a} {word} {b}? A: "),
               "label": label.to_string(), "operator": op, "num_digit": 2, "operand1": a, "operand2": b,
               "random_counterfactual": cf})
    };
    let cf = json!({"label": 35, "operand1": 12, "operand2": 23, "prompt": "Q: How much is 12 plus 23? A: "});
    let path = parquet(&tmp, "add.parquet", json!([row(23, 45, "+", cf.clone()), row(50, 20, "-", cf.clone()), row(11, 11, "+", Value::Null),]));
    let loaded = load_mib_parquet(TaskKind::ArithmeticAddition, Split::Train, &[path]).unwrap();
    assert_eq!(loaded.examples.len(), 1);
    let e = &loaded.examples[0];
    assert_eq!((e.clean.as_str(), e.correct.as_str(), e.incorrect.as_str()), ("Q: How much is 23 plus 45? A: ", "68", "35"));
    assert_eq!(loaded.dropped.count(DropReason::WrongOperator), 1);
    assert_eq!(loaded.dropped.count(DropReason::NoCounterfactual), 1);
}

#[test]
fn a_mib_row_without_its_prompt_names_the_field() {
    let tmp = TempDir::new("hub-missing");
    let mut row = ioi_row("Mary", "John");
    row.as_object_mut().unwrap().remove("prompt");
    let path = parquet(&tmp, "ioi.parquet", json!([row]));
    let err = load_mib_parquet(TaskKind::Ioi, Split::Train, &[path]).unwrap_err();
    assert!(matches!(&err, TaskError::MissingField { field, at: tasks::Record::Row(1), .. } if field == "prompt"), "{err}");
}
