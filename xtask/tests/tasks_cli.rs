//! `xtask tasks generate | check` end to end, on a temporary directory and the tiny GPT-2 fixture
//! (a 96-token vocabulary in which " Mary" and " John" are single tokens and " A" is not).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).env_remove("RUST_BACKTRACE").output().expect("xtask runs")
}

fn tiny_gpt2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/transformer/tests/fixtures/gpt2-tiny")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn generate_writes_every_split_and_check_reports_kept_and_dropped() {
    let dir = std::env::temp_dir().join(format!("xtask-tasks-{}", std::process::id()));
    let dir_arg = dir.to_str().unwrap();
    let listing = stdout(&xtask(&["tasks", "generate", "--seed", "3", "--dir", dir_arg]));
    assert_eq!(listing.lines().count(), 12, "{listing}");
    let lines = std::fs::read_to_string(dir.join("ioi/validation.jsonl")).unwrap().lines().count();
    assert_eq!(lines, tasks::default_sizes(tasks::TaskKind::Ioi).validation);

    // Two IOI pairs the tiny vocabulary can score.
    let pair = |io: &str, s: &str| {
        let clean = format!("When {io} and {s} went to the store, {s} gave a drink to");
        let flip = format!("When {io} and {s} went to the store, {io} gave a drink to");
        serde_json::json!({"id": io, "clean": clean, "counterfactual": flip, "correct": format!(" {io}"), "incorrect": format!(" {s}")}).to_string()
    };
    std::fs::write(dir.join("ioi/validation.jsonl"), format!("{}\n{}\n", pair("Mary", "John"), pair("John", "Mary"))).unwrap();

    let model = tiny_gpt2();
    let check = |task: &str| {
        stdout(&xtask(&["tasks", "check", "--model", model.to_str().unwrap(), "--dir", dir_arg, "--task", task, "--split", "validation", "--examples", "4"]))
    };
    let ioi = check("ioi");
    assert!(ioi.contains("BOS \"<|endoftext|>\" (id 0)"), "{ioi}");
    assert!(ioi.contains("| ioi | validation | 2 | none | "), "{ioi}");
    // " A" is two tokens here: every MCQA pair is dropped, and the table says why.
    let mcqa = check("mcqa");
    assert!(mcqa.contains("| mcqa | validation | 0 | multi-token-answer 4 |") && mcqa.contains("no pairs kept"), "{mcqa}");
    std::fs::remove_dir_all(&dir).unwrap();

    let out = xtask(&["tasks", "check", "--model", model.to_str().unwrap(), "--task", "arithmetic"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("arithmetic-addition"), "{err}");
}
