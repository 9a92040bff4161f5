//! Bad inputs that used to pass silently, one test per kind, each an error naming what is wrong
//! or a failure with its reason:
//!
//! - regress: a NaN or negative tolerance (error), a table repeating a key with other numbers
//!   (error naming the file and key), tables with no numbers (a failure), NaN on one or both sides
//!   (moved);
//! - budgets: fewer than two fractions, repeated or unsorted ones (errors naming `fractions`);
//! - sizes: a count of zero or beyond its documented limit, and one beyond TOML's integers
//!   (errors naming the key); a split shorter than the cell asked for (shown in `CellResult`
//!   and in summary.csv's `*_requested` columns);
//! - names: two model arguments whose slugs agree (`task:ioi`, a directory `task_ioi`) get cell
//!   files and plots of their own (the collision check itself is a unit test in `sweep.rs`);
//! - concurrency: a second lock on a run directory (error naming the lock file and its holder), a
//!   stale lock of a dead process (taken over), writers of one file at once (temporary names
//!   differ by host, pid and write; the name itself is a unit test in `tables`);
//! - stored cells: a truncated or corrupt cell file (recomputed, with `Event::Recomputing`
//!   naming it, and the tables as before);
//! - datasets: a malformed line in a split the run does not read (the test split) does not stop
//!   it; the manifest hashes that file by its bytes;
//! - models: a GGUF file given by path is hashed like a known model's files.

use std::path::{Path, PathBuf};

use bench::{Config, Event, SweepPaths, regress};
use burn::backend::Autodiff;
use transformer::CpuBackend;

type B = Autodiff<CpuBackend>;
use serde_json::json;

fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("circuitbench-bad-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A run directory with a summary row per `(method, cpr)` and one curve point per row.
fn run_dir(dir: &Path, rows: &[(&str, f64)]) {
    std::fs::create_dir_all(dir).unwrap();
    let summary: Vec<tables::Row> = rows
        .iter()
        .map(|&(method, cpr)| {
            let value = if cpr.is_nan() { json!(f64::NAN) } else { json!(cpr) };
            let r = json!({ "model": "m", "task": "ioi", "method": method, "cmd": 0.5, "mean_f_signed": 0.5, "mean_f_absolute": 0.5 });
            let mut r = r.as_object().unwrap().clone();
            r.insert("cpr".into(), value);
            r
        })
        .collect();
    tables::write_csv(&dir.join("summary.csv"), &["model", "task", "method", "cpr", "cmd", "mean_f_signed", "mean_f_absolute"], &summary).unwrap();
    let curves: Vec<tables::Row> = rows
        .iter()
        .map(|&(method, _)| {
            json!({ "model": "m", "task": "ioi", "method": method, "selection": "signed", "fraction": 0.1, "faithfulness": 0.7 }).as_object().unwrap().clone()
        })
        .collect();
    tables::write_csv(&dir.join("curves.csv"), &["model", "task", "method", "selection", "fraction", "faithfulness"], &curves).unwrap();
}

#[test]
fn regress_nan_tolerance_is_an_error() {
    let root = scratch("nan-tolerance");
    run_dir(&root.join("a"), &[("eap", 0.5)]);
    run_dir(&root.join("b"), &[("eap", 0.9)]);
    let err = regress::compare(&root.join("a"), &root.join("b"), f64::NAN).unwrap_err().to_string();
    assert!(err.contains("tolerance NaN"), "{err}");
    let err = regress::compare(&root.join("a"), &root.join("b"), f64::INFINITY).unwrap_err().to_string();
    assert!(err.contains("tolerance inf"), "{err}");
}

#[test]
fn regress_negative_tolerance_is_an_error() {
    let root = scratch("negative-tolerance");
    run_dir(&root.join("a"), &[("eap", 0.5)]);
    let err = regress::compare(&root.join("a"), &root.join("a"), -0.01).unwrap_err().to_string();
    assert!(err.contains("tolerance -0.01"), "{err}");
    assert!(regress::compare(&root.join("a"), &root.join("a"), 0.0).unwrap().passed(), "zero tolerance passes identical runs");
}

#[test]
fn regress_comparing_zero_numbers_fails() {
    let root = scratch("zero-numbers");
    run_dir(&root.join("a"), &[]);
    let comparison = regress::compare(&root.join("a"), &root.join("a"), 0.01).unwrap();
    assert_eq!(comparison.compared, 0);
    assert!(!comparison.passed());
    assert_eq!(comparison.moved.len(), 1, "one failure entry, so `moved` is not empty");
    assert!(comparison.moved[0].reason.contains("no numbers compared"));
    assert!(regress::render(&comparison, 0.01).contains("no numbers compared"));
}

#[test]
fn regress_nan_on_either_side_is_moved() {
    let root = scratch("nan-sides");
    // A NaN as the reports write it (an empty cell) and as the text `NaN`.
    run_dir(&root.join("nan"), &[("eap", f64::NAN)]);
    run_dir(&root.join("text"), &[("eap", 0.5)]);
    let summary = std::fs::read_to_string(root.join("text/summary.csv")).unwrap();
    std::fs::write(root.join("text/summary.csv"), summary.replace(",0.5,0.5,0.5,0.5", ",NaN,0.5,0.5,0.5")).unwrap();
    assert!(std::fs::read_to_string(root.join("text/summary.csv")).unwrap().contains("NaN"));
    run_dir(&root.join("num"), &[("eap", 0.5)]);
    for (base, run) in [("nan", "nan"), ("nan", "num"), ("num", "nan"), ("text", "text"), ("num", "text"), ("text", "nan")] {
        let comparison = regress::compare(&root.join(base), &root.join(run), 0.01).unwrap();
        assert!(!comparison.passed(), "{base} vs {run} passed");
        assert_eq!(comparison.moved.len(), 1, "{}", regress::render(&comparison, 0.01));
        assert_eq!((comparison.moved[0].metric.as_str(), comparison.moved[0].reason.as_str()), ("cpr", "NaN"));
    }
    assert!(regress::compare(&root.join("num"), &root.join("num"), 0.01).unwrap().passed());
}

#[test]
fn regress_conflicting_duplicate_rows_are_an_error() {
    let root = scratch("duplicates");
    run_dir(&root.join("a"), &[("eap", 0.5)]);
    run_dir(&root.join("dup"), &[("eap", 0.5), ("eap", 0.6)]);
    let err = regress::compare(&root.join("a"), &root.join("dup"), 0.01).unwrap_err().to_string();
    assert!(err.contains("dup/summary.csv") && err.contains("m|ioi|eap") && err.contains("`cpr`"), "{err}");
    let err = regress::compare(&root.join("dup"), &root.join("a"), 0.01).unwrap_err().to_string();
    assert!(err.contains("dup/summary.csv"), "{err}");
    // The same row twice is the same row.
    run_dir(&root.join("same"), &[("eap", 0.5), ("eap", 0.5)]);
    assert!(regress::compare(&root.join("a"), &root.join("same"), 0.01).unwrap().passed());
}

const GROUP: &str = "[[group]]\nmodel = \"m\"\ntasks = [\"ioi\"]\nmethods = [\"eap\"]\ndiscovery_examples = 1\nevaluation_examples = 1\n";

fn config_error(head: &str) -> String {
    Config::parse(&format!("name = \"x\"\n{head}\n{GROUP}"), "c.toml").unwrap_err().to_string()
}

#[test]
fn budgets_fewer_than_two_fractions_are_an_error() {
    for fractions in ["[]", "[0.5]", "[1.0]"] {
        let err = config_error(&format!("fractions = {fractions}"));
        assert!(err.contains("c.toml: `fractions`") && err.contains("at least two"), "{fractions}: {err}");
    }
    assert_eq!(Config::parse(&format!("name = \"x\"\nfractions = [0.5, 1.0]\n{GROUP}"), "c.toml").unwrap().fractions, [0.5, 1.0]);
}

#[test]
fn budgets_repeated_or_unsorted_fractions_are_an_error() {
    let err = config_error("fractions = [0.1, 0.5, 0.5, 1.0]");
    assert!(err.contains("`fractions[2]`") && err.contains("repeated"), "{err}");
    let err = config_error("fractions = [0.1, 0.5, 0.2]");
    assert!(err.contains("`fractions[2]`") && err.contains("smaller than the one before"), "{err}");
}

#[test]
fn sizes_beyond_their_limits_are_an_error() {
    let huge = "9223372036854775807"; // i64::MAX, the largest TOML integer
    for (head, key) in [
        (format!("batch_size = {huge}"), "`batch_size`"),
        ("batch_size = 65537".to_string(), "`batch_size`"),
        ("batch_size = 0".to_string(), "`batch_size`"),
        (format!("ig_steps = {huge}"), "`ig_steps`"),
        ("ig_steps = 10001".to_string(), "`ig_steps`"),
    ] {
        let err = config_error(&head);
        assert!(err.contains(key) && err.contains("is not in 1..="), "{head}: {err}");
    }
    for (field, value, key) in [
        ("discovery_examples = 1", huge.to_string(), "`group[0].discovery_examples`"),
        ("evaluation_examples = 1", "1000001".to_string(), "`group[0].evaluation_examples`"),
    ] {
        let text = format!("name = \"x\"\n{}", GROUP.replace(field, &format!("{} = {value}", &field[..field.len() - 4])));
        let err = Config::parse(&text, "c.toml").unwrap_err().to_string();
        assert!(err.contains(key) && err.contains("1..=1000000"), "{field}: {err}");
    }
    let text = format!("name = \"x\"\n{GROUP}[group.discovery_overrides]\neap = {huge}\n");
    let err = Config::parse(&text, "c.toml").unwrap_err().to_string();
    assert!(err.contains("`group[0].discovery_overrides.eap`"), "{err}");
    // u64::MAX is beyond TOML's integers: an error, never a wrapped count.
    let text = format!("name = \"x\"\n{}", GROUP.replace("discovery_examples = 1", "discovery_examples = 18446744073709551615"));
    assert!(Config::parse(&text, "c.toml").is_err());
    let at_limit = format!("name = \"x\"\nbatch_size = 65536\nig_steps = 10000\n{}", GROUP.replace("evaluation_examples = 1", "evaluation_examples = 1000000"));
    let ok = Config::parse(&at_limit, "c.toml").unwrap();
    assert_eq!((ok.batch_size, ok.ig_steps, ok.cells[0].evaluation_examples), (65_536, 10_000, 1_000_000));
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A copy of the committed `tasks/` directory under `root`, for tests that damage it.
fn tasks_copy(root: &Path) -> PathBuf {
    let to = root.join("tasks");
    for entry in std::fs::read_dir(workspace().join("tasks")).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_dir() {
            std::fs::create_dir_all(to.join(entry.file_name())).unwrap();
            for file in std::fs::read_dir(entry.path()).unwrap() {
                let file = file.unwrap();
                std::fs::copy(file.path(), to.join(entry.file_name()).join(file.file_name())).unwrap();
            }
        }
    }
    to
}

const SWEEP: &str = r#"
name = "bad"
batch_size = 8
fractions = [0.1, 1.0]

[[group]]
model = "task:arithmetic-addition"
tasks = ["arithmetic-addition"]
methods = ["random", "eap"]
discovery_examples = 8
evaluation_examples = 8
"#;

/// Runs `config` on the task model with the datasets in `tasks`; returns the run directory and
/// every event.
fn sweep(root: &Path, config: &str, tasks: &Path) -> Result<(PathBuf, Vec<Event>), bench::BenchError> {
    let config_path = root.join("bad.toml");
    std::fs::write(&config_path, config).unwrap();
    let config = Config::load(&config_path).unwrap();
    let paths = SweepPaths { config: config_path, results: root.join("results"), tasks: tasks.into() };
    let mut events = Vec::new();
    let dir = bench::run_sweep::<B>(&config, &paths, "cpu", &Default::default(), &mut |e| events.push(e))?;
    Ok((dir, events))
}

fn cells(dir: &Path) -> Vec<bench::CellResult> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("cells")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()).collect()
}

#[test]
fn sizes_a_short_split_is_reported() {
    let root = scratch("short-split");
    let tasks = tasks_copy(&root);
    let validation = tasks.join("arithmetic-addition/validation.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&validation).unwrap().lines().take(5).map(String::from).collect();
    std::fs::write(&validation, lines.join("\n") + "\n").unwrap();
    let (dir, _) = sweep(&root, SWEEP, &tasks).unwrap();
    for cell in cells(&dir) {
        assert_eq!((cell.discovery_requested, cell.evaluation_requested), (8, 8));
        let short = cell.short_splits();
        assert_eq!(short.len(), 1, "{short:?}");
        assert_eq!((short[0].split, short[0].requested, short[0].available), (tasks::Split::Validation, 8, 5));
        assert_eq!(short[0].to_string(), "the validation split has 5 of the 8 examples asked for");
    }
    let summary = tables::read_csv(&dir.join("summary.csv")).unwrap();
    assert_eq!(summary.len(), 2);
    for row in &summary {
        assert_eq!((row["discovery_requested"].as_u64(), row["evaluation_requested"].as_u64()), (Some(8), Some(8)));
        assert_eq!(row["evaluation_examples"].as_u64().unwrap() + row["evaluation_dropped"].as_u64().unwrap(), 5);
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn names_model_arguments_that_slug_alike_get_their_own_cell_files() {
    let (a, b) = (bench::sweep::cell_file_name("task:ioi|ioi|eap"), bench::sweep::cell_file_name("task_ioi|ioi|eap"));
    assert_ne!(a, b);
    assert!(a.starts_with("task_ioi_ioi_eap.") && a.ends_with(".json"), "{a}");
    assert!(b.starts_with("task_ioi_ioi_eap.") && b.ends_with(".json"), "{b}");
    assert_eq!(a, bench::sweep::cell_file_name("task:ioi|ioi|eap"), "stable across calls");
}

#[test]
fn names_model_arguments_that_slug_alike_get_their_own_plots() {
    let root = scratch("plots");
    let (dir, _) = sweep(&root, SWEEP, &workspace().join("tasks")).unwrap();
    let eap = cells(&dir).into_iter().find(|c| c.method == "eap").unwrap();
    let as_model = |model: &str| bench::CellResult { model: model.into(), ..eap.clone() };
    let plots = root.join("plots");
    bench::plot::write_plots(&plots, &[as_model("task:ioi"), as_model("task_ioi"), as_model("gpt2")]).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&plots).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names.len(), 6, "a faithfulness and a circuit plot per model: {names:?}");
    assert!(names.contains(&"faithfulness-gpt2-arithmetic-addition.svg".to_string()), "a model alone keeps the plain name: {names:?}");
    assert_eq!(names.iter().filter(|n| n.starts_with("faithfulness-task_ioi.")).count(), 2, "{names:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn concurrency_a_second_lock_names_the_holder() {
    let root = scratch("lock");
    let lock = bench::lock::RunLock::acquire(&root).unwrap();
    let err = bench::lock::RunLock::acquire(&root).unwrap_err().to_string();
    let holder = format!("{} {}", bench::lock::host_name(), std::process::id());
    assert!(err.contains(&*lock.path().to_string_lossy()) && err.contains(&holder), "{err}");
    // A sweep on the locked directory stops before touching anything.
    let run = root.join("results/bad");
    std::fs::create_dir_all(&run).unwrap();
    let run_lock = bench::lock::RunLock::acquire(&run).unwrap();
    let err = sweep(&root, SWEEP, &workspace().join("tasks")).unwrap_err().to_string();
    assert!(err.contains(bench::lock::LOCK_FILE) && err.contains(&holder), "{err}");
    drop(run_lock);
    drop(lock);
    assert!(!root.join(bench::lock::LOCK_FILE).exists(), "removed on drop");
    let again = bench::lock::RunLock::acquire(&root).unwrap();
    drop(again);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn concurrency_a_stale_lock_is_taken_over() {
    let root = scratch("stale-lock");
    // A process that has exited: its pid is dead.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let path = root.join(bench::lock::LOCK_FILE);
    std::fs::write(&path, format!("{} {dead}\n", bench::lock::host_name())).unwrap();
    let lock = bench::lock::RunLock::acquire(&root).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{} {}\n", bench::lock::host_name(), std::process::id()));
    drop(lock);
    // A lock of another host is never taken over: its process cannot be checked.
    std::fs::write(&path, format!("elsewhere.example {dead}\n")).unwrap();
    let err = bench::lock::RunLock::acquire(&root).unwrap_err().to_string();
    assert!(err.contains(&format!("elsewhere.example {dead}")), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn concurrency_writers_of_one_file_do_not_share_a_temporary() {
    let root = scratch("writers");
    let (json, csv) = (root.join("x.json"), root.join("x.csv"));
    std::thread::scope(|s| {
        for i in 0..8 {
            let (json, csv) = (&json, &csv);
            s.spawn(move || {
                for j in 0..20 {
                    bench::sweep::write_atomic(json, format!("{{\"i\": {i}, \"j\": {j}}}").as_bytes()).unwrap();
                    let row = json!({ "i": i, "j": j }).as_object().unwrap().clone();
                    tables::write_csv(csv, &["i", "j"], &[row]).unwrap();
                }
            });
        }
    });
    let names: Vec<String> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "no temporary left behind: {names:?}");
    assert!(serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&json).unwrap()).is_ok());
    assert_eq!(tables::read_csv(&csv).unwrap().len(), 1);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn stored_cells_truncated_or_corrupt_are_recomputed() {
    let root = scratch("corrupt-cell");
    let tasks = workspace().join("tasks");
    let (dir, _) = sweep(&root, SWEEP, &tasks).unwrap();
    let tables = ["curves.csv", "cpr.csv", "cmd.csv"].map(|f| std::fs::read_to_string(dir.join(f)).unwrap());
    let key = "task:arithmetic-addition|arithmetic-addition|eap";
    let file = dir.join("cells").join(bench::sweep::cell_file_name(key));
    let text = std::fs::read_to_string(&file).unwrap();
    for damaged in [b"\x00\xffgarbage{".to_vec(), text.as_bytes()[..text.len() / 2].to_vec()] {
        std::fs::write(&file, &damaged).unwrap();
        let (_, events) = sweep(&root, SWEEP, &tasks).unwrap();
        let computed: Vec<&str> =
            events.iter().filter_map(|e| if let Event::Cell { key, skipped: false, .. } = e { Some(key.as_str()) } else { None }).collect();
        assert_eq!(computed, [key]);
        let reasons: Vec<(&str, &str)> =
            events.iter().filter_map(|e| if let Event::Recomputing { key, reason } = e { Some((key.as_str(), reason.as_str())) } else { None }).collect();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert_eq!(reasons[0].0, key);
        assert!(reasons[0].1.contains(&*file.to_string_lossy()), "{}", reasons[0].1);
        assert_eq!(["curves.csv", "cpr.csv", "cmd.csv"].map(|f| std::fs::read_to_string(dir.join(f)).unwrap()), tables);
        assert!(serde_json::from_str::<bench::CellResult>(&std::fs::read_to_string(&file).unwrap()).is_ok(), "the file is replaced");
    }
    // A clean rerun computes nothing and says nothing about recomputing.
    let (_, events) = sweep(&root, SWEEP, &tasks).unwrap();
    assert!(events.iter().all(|e| matches!(e, Event::Cell { skipped: true, .. })), "{events:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn datasets_a_malformed_unused_split_does_not_stop_the_run() {
    let root = scratch("malformed-test-split");
    let tasks = tasks_copy(&root);
    let test = tasks.join("arithmetic-addition/test.jsonl");
    let mut text = std::fs::read_to_string(&test).unwrap();
    text.push_str("{ this is not an example\n");
    std::fs::write(&test, &text).unwrap();
    assert!(tasks::load_split(&tasks, tasks::TaskKind::ArithmeticAddition, tasks::Split::Test).is_err(), "the split is malformed");
    let (dir, _) = sweep(&root, SWEEP, &tasks).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let splits = &manifest["datasets"]["arithmetic-addition"];
    assert_eq!(splits["train"].as_str().unwrap().len(), 64);
    assert_eq!(splits["validation"].as_str().unwrap().len(), 64);
    assert_eq!(splits["test_file"].as_str().unwrap(), transformer::fetch::file_sha256(&test).unwrap(), "hashed by its bytes");
    assert!(splits.get("test").is_none());
    // A malformed line in a split the run reads still stops it, naming the file.
    let validation = tasks.join("arithmetic-addition/validation.jsonl");
    std::fs::write(&validation, "{ broken\n").unwrap();
    let err = sweep(&root, SWEEP, &tasks).unwrap_err().to_string();
    assert!(err.contains("validation.jsonl"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn models_a_gguf_given_by_path_is_hashed() {
    let gguf = workspace().join("crates/gguf/tests/fixtures/tiny.gguf");
    assert_eq!(transformer::ModelSpec::parse(&gguf.to_string_lossy()).unwrap(), transformer::ModelSpec::Gguf(gguf.clone()));
    let hashes = bench::sweep::model_hashes(&gguf.to_string_lossy()).unwrap();
    let expected = transformer::fetch::file_sha256(&gguf).unwrap();
    assert_eq!(hashes.into_iter().collect::<Vec<_>>(), [("tiny.gguf".to_string(), expected.clone())]);
    // A copy with one byte changed hashes differently, so a changed file changes every cell's definition.
    let root = scratch("gguf-hash");
    let copy = root.join("model.gguf");
    let mut bytes = std::fs::read(&gguf).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&copy, &bytes).unwrap();
    let hashes = bench::sweep::model_hashes(&copy.to_string_lossy()).unwrap();
    assert_eq!(hashes.len(), 1);
    assert_ne!(hashes["model.gguf"], expected);
    assert_eq!(hashes["model.gguf"].len(), 64);
    std::fs::remove_dir_all(&root).unwrap();
}
