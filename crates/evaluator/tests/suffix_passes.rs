//! Suffix-only passes (patching::prefix) change no number: every method's scores and every
//! evaluation's metrics equal those of full passes, within 1e-5, on GPT-2- and Llama-shaped tiny
//! models and on SmolLM2 with IOI pairs.

use attribution::{Discovery, METHOD_NAMES, Method, MethodOutput, run_method};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use evaluator::{EvalOptions, EvalResult, Selection, evaluate_circuits, top_n};
use graph::{EdgeMatrix, Graph, GraphShape};
use patching::{Ablation, Metric, PairBatches, Positions};
use tasks::{PairBatch, PreparedPair};
use transformer::{CpuBackend, LoadedModel, LocalModel, Transformer};

type AD = Autodiff<CpuBackend>;

fn fixture(name: &str) -> LoadedModel<AD> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transformer/tests/fixtures").join(name);
    LocalModel::Dir(dir).load(&Default::default()).unwrap()
}

fn graph_of(model: &Transformer<AD>) -> Graph {
    Graph::new(GraphShape { n_layers: model.config.n_layers, n_heads: model.config.n_heads }).unwrap()
}

/// Pairs that share prefixes of 2 to 4 tokens, in batches of 2 of different starts, lengths 5 to 7.
fn tiny_pairs() -> Vec<PreparedPair> {
    let pair = |clean: Vec<u32>, counterfactual: Vec<u32>, correct, incorrect| PreparedPair { clean, counterfactual, correct, incorrect, read: None };
    vec![
        pair(vec![5, 17, 42, 8, 3], vec![5, 17, 30, 8, 3], 10, 20),
        pair(vec![9, 9, 4, 60, 2, 7], vec![9, 9, 4, 61, 2, 7], 33, 44),
        pair(vec![1, 2, 3, 4, 5, 6, 7], vec![1, 2, 3, 9, 5, 6, 7], 50, 51),
        pair(vec![70, 71, 72, 73, 74], vec![70, 71, 72, 73, 12], 3, 4),
    ]
}

/// Largest |a − b| over two score matrices, relative to the larger score (at least 1).
fn relative_difference(a: &EdgeMatrix<f32>, b: &EdgeMatrix<f32>) -> f32 {
    let scale = a.as_slice().iter().fold(1.0f32, |m, x| m.max(x.abs()));
    a.as_slice().iter().zip(b.as_slice()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

fn scores(model: &Transformer<AD>, graph: &Graph, pairs: &[PreparedPair], method: &Method, positions: Positions) -> EdgeMatrix<f32> {
    let discovery = Discovery {
        model,
        graph,
        pairs,
        ablation: &Ablation::Counterfactual,
        metric: Metric::LogitDifference,
        batch_size: 2,
        edges_per_pass: 16,
        fractions: &[],
        positions,
    };
    match run_method(method, &discovery, &mut |_| {}).unwrap() {
        MethodOutput::Scores(s) => s.values,
        // ACDC: each edge's effect size in its smallest-τ run (the same decisions give the same sizes).
        MethodOutput::Circuits(c) => c.scores.unwrap_or_else(|| panic!("{method:?} gives no scores")),
    }
}

fn evaluate(model: &Transformer<CpuBackend>, graph: &Graph, pairs: &[PreparedPair], circuits: &[&EdgeMatrix<bool>], positions: Positions) -> EvalResult {
    let options = EvalOptions { batch_size: 2, positions, ..EvalOptions::default() };
    evaluate_circuits(model, graph, pairs, circuits, &Ablation::Counterfactual, options, &mut |_, _| {}).unwrap()
}

/// `methods` (by name; `steps` for the IG ones) and an evaluation of EAP's circuits give the same
/// numbers with and without suffix passes.
fn check(model: &Transformer<AD>, pairs: &[PreparedPair], methods: &[Method], label: &str) {
    let graph = graph_of(model);
    // The passes really skip a prefix.
    let PairBatch { clean, counterfactual, reads, .. } = PairBatch::of(&pairs[..2]);
    let inner = model.valid();
    let batches = PairBatches::new(&inner, &clean, &counterfactual, &reads, &Ablation::Counterfactual, Positions::Suffix).unwrap();
    assert!(batches.starts().is_some_and(|s| s.iter().all(|&s| s > 0)), "{label}");
    let mut eap = None;
    for method in methods {
        let suffix = scores(model, &graph, pairs, method, Positions::Suffix);
        let full = scores(model, &graph, pairs, method, Positions::Full);
        assert!(full.as_slice().iter().any(|&s| s != 0.0), "{label}, {method:?}: the scores are not all zero");
        let diff = relative_difference(&full, &suffix);
        assert!(diff < 1e-5, "{label}, {method:?}: suffix passes move the scores by {diff} (relative)");
        if eap.is_none() {
            eap = Some(full);
        }
    }
    let eap = eap.expect("at least one method");
    let circuits: Vec<EdgeMatrix<bool>> = [1, 10, 40, 200]
        .into_iter()
        .flat_map(|n| [Selection::Signed, Selection::Absolute].map(|s| top_n(&graph, &eap, n, s).edges))
        .chain([graph.real_edge_mask()])
        .collect();
    let refs: Vec<&EdgeMatrix<bool>> = circuits.iter().collect();
    let (suffix, full) = (evaluate(&inner, &graph, pairs, &refs, Positions::Suffix), evaluate(&inner, &graph, pairs, &refs, Positions::Full));
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(1.0);
    assert!(close(suffix.m_full, full.m_full) && close(suffix.m_empty, full.m_empty), "{label}: {suffix:?} vs {full:?}");
    for (i, (s, f)) in suffix.m_circuits.iter().zip(&full.m_circuits).enumerate() {
        assert!(close(*s, *f), "{label}, circuit {i}: {s} vs {f}");
    }
    assert!(full.m_full != full.m_empty, "{label}: the evaluation measures something");
}

/// Every method that reads a model, by its benchmark name (exact over every edge), but those that
/// learn masks: a thousand optimiser steps turn float-level differences into different masks
/// (their passes are checked step by step in attribution's tests/learned.rs).
fn every_method() -> Vec<Method> {
    METHOD_NAMES
        .iter()
        .filter(|&&n| n != "random")
        .map(|n| Method::parse(n, 3, 0).unwrap())
        .filter(|m| !matches!(m, Method::EdgePruning { .. } | Method::Ugs { .. } | Method::PgbCt { .. }))
        .collect()
}

#[test]
fn gpt2_methods_and_evaluation_are_unchanged_by_suffix_passes() {
    check(&fixture("gpt2-tiny").model, &tiny_pairs(), &every_method(), "gpt2-tiny");
}

#[test]
fn llama_methods_and_evaluation_are_unchanged_by_suffix_passes() {
    check(&fixture("llama-tiny").model, &tiny_pairs(), &every_method(), "llama-tiny");
}

#[test]
fn smollm2_ioi_methods_and_evaluation_are_unchanged_by_suffix_passes() {
    let loaded = transformer::load_model::<AD>("smollm2-135m", &Default::default()).unwrap();
    let enc = |s: &str| loaded.tokenizer.encode(s).unwrap();
    let name = |s: &str| enc(s).last().copied().unwrap();
    let ioi = |a: &str, b: &str, place: &str, object: &str| {
        let prompt = |subject: &str| enc(&format!("When {a} and {b} went to the {place}, {subject} gave a {object} to"));
        PreparedPair { clean: prompt(b), counterfactual: prompt(a), correct: name(&format!(" {a}")), incorrect: name(&format!(" {b}")), read: None }
    };
    // One batch of two (the tiny models cover batches of different starts).
    let pairs = vec![ioi("Mary", "John", "store", "drink"), ioi("Alice", "Bob", "park", "ball")];
    assert!(pairs.iter().all(|p| p.clean.len() == p.counterfactual.len()), "names of one token each");
    let graph = graph_of(&loaded.model);
    let some_edges = vec![
        graph.parse_edge_name("m29->logits").unwrap(),
        graph.parse_edge_name("a20.h3->logits").unwrap(),
        graph.parse_edge_name("input->a0.h0<q>").unwrap(),
    ];
    let methods: Vec<Method> = ["eap", "gim", "clean-corrupted", "eap-ig-inputs"]
        .iter()
        .map(|n| Method::parse(n, 2, 0).unwrap())
        .chain([Method::parse("eap-ig-activations", 1, 0).unwrap(), Method::Exact { edges: Some(some_edges) }])
        .collect();
    check(&loaded.model, &pairs, &methods, "smollm2-135m");
}
