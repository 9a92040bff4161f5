//! The command line's output formats, which outside tools parse.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).env_remove("RUST_BACKTRACE").output().expect("xtask runs")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/transformer/tests/fixtures").join(name)
}

/// The `key value` lines of `xtask graph`.
fn graph_numbers(model: &str) -> Vec<(String, usize)> {
    let out = xtask(&["graph", "--model", model]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(char::is_whitespace)?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn numbers(pairs: &[(&str, usize)]) -> Vec<(String, usize)> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn graph_of_known_models_matches_the_spec() {
    let cases = [("gpt2", 12, 12, 157, 445, 32_491), ("qwen2.5-0.5b", 24, 14, 361, 1_033, 179_749), ("llama-3.1-8b", 32, 32, 1_057, 3_105, 1_592_881)];
    for (model, l, h, fwd, bwd, edges) in cases {
        let want = numbers(&[("layers", l), ("heads", h), ("sources", fwd), ("destinations", bwd), ("edges", edges)]);
        assert_eq!(graph_numbers(model), want, "{model}");
    }
}

#[test]
fn graph_reads_a_directory_or_its_config_json() {
    let dir = fixture("llama-tiny");
    // 2 layers, 4 heads: u_l = 1, 6; |E| = Σ[3·4·u_l + u_l + 4] + 1 + 2·5 = 17 + 82 + 11.
    let want = numbers(&[("layers", 2), ("heads", 4), ("sources", 11), ("destinations", 27), ("edges", 110)]);
    assert_eq!(graph_numbers(dir.to_str().unwrap()), want);
    assert_eq!(graph_numbers(dir.join("config.json").to_str().unwrap()), want);
}

#[test]
fn logits_prints_ids_and_top_k_as_json() {
    let dir = fixture("gpt2-tiny");
    let out = xtask(&["logits", "--model", dir.to_str().unwrap(), "--prompt", "Mary went to the store", "--top", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(!json["ids"].as_array().unwrap().is_empty());
    let top = json["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    let logits: Vec<f64> = top.iter().map(|p| p[1].as_f64().unwrap()).collect();
    assert!(logits.windows(2).all(|w| w[0] >= w[1]), "top logits are sorted: {logits:?}");
}

#[test]
fn unknown_model_is_a_clear_error() {
    let out = xtask(&["graph", "--model", "no-such-model"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown model `no-such-model`") && err.contains("smollm2-135m"), "{err}");
}
