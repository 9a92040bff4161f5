//! The generators and the committed datasets: determinism, sizes, disjoint splits, file format.

mod common;

use std::collections::HashSet;

use common::{TempDir, committed_dir};
use tasks::{DEFAULT_SEED, Example, Split, TaskKind, default_sizes, generate, load_split, read_jsonl, write_jsonl};

#[test]
fn same_seed_same_data_and_another_seed_other_data() {
    for task in TaskKind::ALL {
        let sizes = default_sizes(task);
        let a = generate(task, 11, sizes).unwrap();
        let b = generate(task, 11, sizes).unwrap();
        let c = generate(task, 12, sizes).unwrap();
        assert_eq!(a, b, "{task}");
        for split in Split::ALL {
            let (a, c) = (&a[&split], &c[&split]);
            let same = a.iter().zip(c).filter(|(x, y)| x.clean == y.clean).count();
            assert!(same < a.len() / 10, "{task}/{split}: seeds 11 and 12 share {same} of {} prompts", a.len());
        }
    }
}

#[test]
fn sizes_and_disjoint_splits() {
    for task in TaskKind::ALL {
        let sizes = default_sizes(task);
        let generated = generate(task, DEFAULT_SEED, sizes).unwrap();
        let mut seen = HashSet::new();
        for split in Split::ALL {
            let examples = &generated[&split];
            assert_eq!(examples.len(), sizes.get(split), "{task}/{split}");
            for e in examples {
                assert!(seen.insert(e.clean.clone()), "{task}: clean prompt in two places: {:?}", e.clean);
                assert_ne!(e.clean, e.counterfactual, "{task}/{split} {}", e.id);
                assert_ne!(e.correct, e.incorrect, "{task}/{split} {}", e.id);
                assert!(e.id.starts_with(&format!("{task}-{split}-")), "{}", e.id);
            }
        }
    }
    let ioi = default_sizes(TaskKind::Ioi);
    assert!(ioi.train >= 2000 && ioi.validation >= 500 && ioi.test >= 500);
}

#[test]
fn ioi_has_both_counterfactuals_and_others_only_the_default() {
    for task in TaskKind::ALL {
        let generated = generate(task, DEFAULT_SEED, default_sizes(task)).unwrap();
        let all_abc = generated.values().flatten().all(|e| e.abc_counterfactual.is_some());
        let no_abc = generated.values().flatten().all(|e| e.abc_counterfactual.is_none());
        assert_eq!((all_abc, no_abc), (task == TaskKind::Ioi, task != TaskKind::Ioi), "{task}");
    }
}

#[test]
fn committed_files_are_what_the_generator_writes() {
    let dir = committed_dir();
    for task in TaskKind::ALL {
        let generated = generate(task, DEFAULT_SEED, default_sizes(task)).unwrap();
        for split in Split::ALL {
            let committed = load_split(&dir, task, split).unwrap();
            assert!(committed == generated[&split], "tasks/{task}/{split}.jsonl differs from the generator's output: run `cargo xtask tasks generate`");
        }
    }
}

#[test]
fn jsonl_round_trips() {
    let tmp = TempDir::new("roundtrip");
    let path = tmp.path().join("ioi/validation.jsonl");
    let mut examples = generate(TaskKind::Ioi, 5, default_sizes(TaskKind::Ioi)).unwrap().remove(&Split::Validation).unwrap();
    examples.truncate(20);
    examples.push(Example { id: "no-abc".into(), abc_counterfactual: None, ..examples[0].clone() });
    write_jsonl(&path, &examples).unwrap();
    assert_eq!(read_jsonl(&path).unwrap(), examples);
    assert!(!tmp.path().join("ioi/validation.jsonl.tmp").exists(), "the temporary file is renamed away");
    // Rewriting replaces the file whole.
    write_jsonl(&path, &examples[..3]).unwrap();
    assert_eq!(read_jsonl(&path).unwrap(), examples[..3]);
}
