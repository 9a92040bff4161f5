//! tracr datasets: every (example, read position) is one pair read there, halves alternate, and a
//! bad line is an error naming the file, the line and the field.

use std::path::{Path, PathBuf};

use tasks::tracr::{OutputValue, TracrTask};
use tasks::{Split, TaskError};

fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(name)
}

#[test]
fn each_example_is_read_at_every_read_position_of_its_half() {
    let task = TracrTask::load(&model_dir("tracr-reverse")).unwrap();
    assert_eq!(task.read_positions, [1, 2, 4, 5], "AutoCircuit's positions: the middle one maps to itself");
    assert_eq!(task.excluded_positions.iter().map(|e| e.position).collect::<Vec<_>>(), [3]);
    assert_eq!(task.examples.len(), 243, "every sequence of three symbols and length 5");
    let train = task.pairs(Split::Train, 3).unwrap();
    assert_eq!(train.len(), 12);
    for (i, pair) in train.iter().enumerate() {
        let example = &task.examples[2 * (i / 4)];
        let p = task.read_positions[i % 4];
        assert_eq!((pair.read, &pair.clean, &pair.counterfactual), (Some(p), &example.clean, &example.corrupt));
        assert_eq!(Some(OutputValue::Label(pair.correct)), example.clean_output[p]);
        assert_eq!(Some(OutputValue::Label(pair.incorrect)), example.corrupt_output[p]);
    }
    // Reversal: the output at position p is the input at 6 − p (ids of 1, 2, 3 are 0, 1, 2; labels too).
    assert!(train.iter().all(|pair| pair.correct == pair.clean[6 - pair.read.unwrap()]));
    let validation = task.pairs(Split::Validation, usize::MAX).unwrap();
    assert_eq!(validation.len(), 121 * 4);
    assert_eq!(validation[0].clean, task.examples[1].clean, "the odd examples");
    assert!(matches!(task.pairs(Split::Test, 1), Err(TaskError::NoTracrTestSplit { .. })));
}

#[test]
fn a_numerical_output_is_read_as_its_one_column() {
    let task = TracrTask::load(&model_dir("tracr-xproportion")).unwrap();
    assert_eq!(task.metric, "value");
    let pairs = task.pairs(Split::Train, 2).unwrap();
    assert!(pairs.iter().all(|p| p.correct == 0 && p.incorrect == 0));
    assert!(matches!(task.examples[0].clean_output[1], Some(OutputValue::Number(_))));
}

#[test]
fn bad_lines_name_the_file_line_and_field() {
    let tmp = std::env::temp_dir().join(format!("circuitbench-tracr-task-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let source = model_dir("tracr-reverse");
    for file in ["config.json", "task.json", "model.safetensors"] {
        std::fs::copy(source.join(file), tmp.join(file)).unwrap();
    }
    let good = r#"{"clean":["BOS","1","2","3","1","2"],"corrupt":["BOS","3","2","1","1","2"],"clean_output":[null,"2","1","3","2","1"],"corrupt_output":[null,"2","1","1","2","3"]}"#;
    let cases = [
        (good.replace(r#""3","1","2"],"corrupt""#, r#""7","1","2"],"corrupt""#), "clean", "token `7` is not in the model's vocabulary"),
        (good.replace(r#"["BOS","3","2""#, r#"["BOS","3""#), "corrupt", "5 tokens, the clean input has 6"),
        (good.replace(r#"[null,"2","1","3""#, r#"[null,"2","9","3""#), "clean_output", "position 2: `9` is not one of the outputs"),
        (good.replace(r#""clean_output":[null"#, r#""clean_output":["1""#), "clean_output", "position 0 (BOS) has no output"),
        (good.replace(r#""corrupt":["BOS","3","2","1","1","2"]"#, r#""corrupt":["BOS","1","2","3","1","2"]"#), "corrupt", "the same input as the clean one"),
    ];
    for (line, field, says) in cases {
        std::fs::write(tmp.join("dataset.jsonl"), format!("{good}\n{line}\n")).unwrap();
        let err = TracrTask::load(&tmp).unwrap_err();
        assert!(matches!(&err, TaskError::BadField { field: f, .. } if f == field), "{field}: {err}");
        let text = err.to_string();
        assert!(text.contains("dataset.jsonl: line 2") && text.contains(says), "{field}: {text}");
    }
    std::fs::write(tmp.join("dataset.jsonl"), format!("{good}\n")).unwrap();
    assert_eq!(TracrTask::load(&tmp).unwrap().examples.len(), 1);
    std::fs::remove_dir_all(&tmp).unwrap();
}
