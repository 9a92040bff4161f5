//! Evaluating circuits on a tiny real checkpoint: the full circuit is the model, the empty one is
//! the ablated model, curves are reproducible however the work is batched, and circuits can be
//! judged under an ablation other than the one that found them.

use attribution::random::random_scores;
use evaluator::circuit::edge_budget;
use evaluator::{EvalOptions, MIB_FRACTIONS, Selection, cpr, evaluate_circuits, faithfulness, top_n};
use graph::{Graph, GraphShape};
use patching::{Ablation, AblationKind, logit_differences};
use tasks::PreparedPair;
use transformer::{Batch, CpuBackend, LoadedModel, LocalModel, Readout};

type B = CpuBackend;

fn tiny() -> LoadedModel<B> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transformer/tests/fixtures/llama-tiny");
    LocalModel::Dir(dir).load(&Default::default()).unwrap()
}

fn graph_of(model: &LoadedModel<B>) -> Graph {
    let c = &model.model.config;
    Graph::new(GraphShape { n_layers: c.n_layers, n_heads: c.n_heads }).unwrap()
}

fn pairs() -> Vec<PreparedPair> {
    let pair = |clean: Vec<u32>, counterfactual: Vec<u32>, correct, incorrect| PreparedPair { clean, counterfactual, correct, incorrect };
    vec![
        pair(vec![5, 17, 42, 8, 3], vec![5, 30, 42, 8, 3], 10, 20),
        pair(vec![9, 9, 4, 60, 2, 7], vec![9, 11, 4, 61, 2, 7], 33, 44),
        pair(vec![1, 2, 3], vec![4, 2, 3], 50, 51),
        pair(vec![70, 71, 72, 73], vec![70, 12, 72, 73], 3, 4),
        pair(vec![8, 8, 8, 8, 8], vec![8, 9, 8, 9, 8], 90, 91),
    ]
}

/// Mean m of `prompts` run plainly.
fn mean_metric(model: &LoadedModel<B>, prompts: &[Vec<u32>], pairs: &[PreparedPair]) -> f64 {
    let batch = Batch::new(prompts, &model.model.config, &Default::default()).unwrap();
    let logits = model.model.forward(&batch, &Readout::LastToken).squeeze_dim(1);
    let answers: Vec<(u32, u32)> = pairs.iter().map(|p| (p.correct, p.incorrect)).collect();
    logit_differences(logits, &answers, 1).iter().map(|&m| m as f64).sum::<f64>() / pairs.len() as f64
}

#[test]
fn full_and_empty_circuits_bracket_the_curve() {
    let model = tiny();
    let graph = graph_of(&model);
    let pairs = pairs();
    let full = graph.real_edge_mask();
    let empty = vec![false; full.len()];
    let result = evaluate_circuits(&model.model, &graph, &pairs, &[&full, &empty], &Ablation::Counterfactual, EvalOptions::default()).unwrap();
    let clean: Vec<Vec<u32>> = pairs.iter().map(|p| p.clean.clone()).collect();
    let counterfactual: Vec<Vec<u32>> = pairs.iter().map(|p| p.counterfactual.clone()).collect();
    assert!((result.m_full - mean_metric(&model, &clean, &pairs)).abs() < 1e-5);
    assert!((result.m_empty - mean_metric(&model, &counterfactual, &pairs)).abs() < 1e-4, "m(∅) is the counterfactual run's m");
    // The identity that lets m(∅) come from the counterfactual run: patching every edge is that run.
    assert!((result.m_circuits[1] - result.m_empty).abs() < 1e-4, "the patched empty circuit is the counterfactual run");
    assert!((result.m_circuits[0] - result.m_full).abs() < 1e-4, "the full circuit is the model");
    let f = faithfulness(result.m_circuits[0], result.m_full, result.m_empty).unwrap();
    assert!((f - 1.0).abs() < 1e-3);
    assert_eq!(result.passes, 2 + 2, "one batch: clean, counterfactual, then one patched pass per circuit (full, empty)");
}

#[test]
fn batching_does_not_change_the_curve() {
    let model = tiny();
    let graph = graph_of(&model);
    let pairs = pairs();
    let scores = random_scores(&graph, 3);
    let circuits: Vec<Vec<bool>> = MIB_FRACTIONS.iter().map(|&x| top_n(&graph, &scores.values, edge_budget(&graph, x), Selection::Signed).edges).collect();
    let refs: Vec<&[bool]> = circuits.iter().map(Vec::as_slice).collect();
    let run = |batch_size, masks_per_pass| {
        evaluate_circuits(&model.model, &graph, &pairs, &refs, &Ablation::Counterfactual, EvalOptions { batch_size, masks_per_pass }).unwrap()
    };
    let a = run(5, 11);
    let b = run(2, 3);
    for (x, y) in a.m_circuits.iter().zip(&b.m_circuits) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
    let f: Vec<f64> = a.m_circuits.iter().map(|&m| faithfulness(m, a.m_full, a.m_empty).unwrap()).collect();
    assert!((f[9] - 1.0).abs() < 1e-3, "f(100%) = 1");
    assert!(cpr(&MIB_FRACTIONS, &f).is_finite());
}

#[test]
fn circuits_can_be_judged_under_another_ablation() {
    let model = tiny();
    let graph = graph_of(&model);
    let pairs = pairs();
    let device = Default::default();
    let reference: Vec<Vec<u32>> = pairs.iter().map(|p| p.clean.clone()).collect();
    let scores = random_scores(&graph, 9);
    let half = top_n(&graph, &scores.values, graph.n_edges() / 2, Selection::Absolute).edges;
    let full = graph.real_edge_mask();
    let mut seen = Vec::new();
    for kind in [AblationKind::Counterfactual, AblationKind::Mean, AblationKind::MeanPositional, AblationKind::Zero] {
        let ablation = Ablation::fit(kind, &model.model, &reference, 4, &device).unwrap();
        let r = evaluate_circuits(&model.model, &graph, &pairs, &[&half, &full], &ablation, EvalOptions::default()).unwrap();
        assert!((r.m_circuits[1] - r.m_full).abs() < 1e-4, "{kind}: the full circuit is the model");
        seen.push(r.m_empty);
    }
    seen.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
    assert_eq!(seen.len(), 4, "each ablation gives its own m(∅): {seen:?}");
}

#[test]
fn bad_inputs_are_errors() {
    let model = tiny();
    let graph = graph_of(&model);
    let full = graph.real_edge_mask();
    let mut pairs = pairs();
    assert!(evaluate_circuits(&model.model, &graph, &[], &[&full], &Ablation::Counterfactual, EvalOptions::default()).is_err());
    let short = vec![true; 3];
    let err = evaluate_circuits(&model.model, &graph, &pairs, &[&short], &Ablation::Counterfactual, EvalOptions::default()).unwrap_err();
    assert!(err.to_string().contains("cells"), "{err}");
    pairs[1].counterfactual.pop();
    let err = evaluate_circuits(&model.model, &graph, &pairs, &[&full], &Ablation::Counterfactual, EvalOptions::default()).unwrap_err();
    assert!(err.to_string().contains("pair 1"), "{err}");
}
