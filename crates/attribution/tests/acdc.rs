//! ACDC: the batched, part-way passes decide every edge as the plain sequential algorithm does
//! (one full pass per edge, written out here), under every speculation and replica count; and the
//! thresholds behave as ACDC's definition says.

use attribution::acdc::{AcdcError, AcdcOptions, AcdcOrder, AcdcSetup, Speculation, reference_order};
use graph::{EdgeMatrix, Graph, GraphShape};
use patching::{Ablation, Metric, PairBatches, Positions, patched_logits};
use tasks::{PairBatch, PreparedPair};
use transformer::{CpuBackend, LocalModel, Readout, Transformer};

type B = CpuBackend;

fn load(name: &str) -> (Transformer<B>, Graph) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transformer/tests/fixtures").join(name);
    let model = LocalModel::Dir(dir).load::<B>(&Default::default()).unwrap().model;
    let graph = Graph::new(GraphShape { n_layers: model.config.n_layers, n_heads: model.config.n_heads }).unwrap();
    (model, graph)
}

/// Six pairs of seven tokens differing from position 2 or 4 on.
fn pairs(vocab: u32) -> Vec<PreparedPair> {
    (0..6u32)
        .map(|i| {
            let clean: Vec<u32> = (0..7).map(|p| (3 + 11 * i + 13 * p) % vocab).collect();
            let mut counterfactual = clean.clone();
            let from = if i % 2 == 0 { 2 } else { 4 };
            for (p, t) in counterfactual.iter_mut().enumerate().skip(from) {
                *t = (*t + 7 + p as u32) % vocab;
            }
            PreparedPair { clean, counterfactual, correct: (5 + i) % vocab, incorrect: (50 + i) % vocab, read: None }
        })
        .collect()
}

/// ACDC as its reference runs it: every edge in order, one full pass over every pair per test,
/// and a disconnected node's incoming edges dropped when the order first reaches the node.
fn sequential(model: &Transformer<B>, graph: &Graph, pairs: &[PreparedPair], metric: Metric, tau: f64, skip: bool) -> EdgeMatrix<bool> {
    let PairBatch { clean, counterfactual, answers, reads } = PairBatch::of(pairs);
    let batches = PairBatches::new(model, &clean, &counterfactual, &reads, &Ablation::Counterfactual, Positions::Full).unwrap();
    let ablated = Ablation::Counterfactual.ablated_nodes(model, &batches.counterfactual).unwrap();
    let full = model.forward(&batches.clean, &Readout::ReadPosition).squeeze_dim::<2>(1);
    let loss = |mask: &EdgeMatrix<bool>| -> f64 {
        let logits = patched_logits(model, graph, &batches.clean, ablated.clone(), &[mask]);
        let values = metric.values(logits, &answers, 1, &full);
        values.iter().map(|&v| metric.loss_of(v as f64)).sum::<f64>() / values.len() as f64
    };
    let mut present = graph.real_edge_mask();
    let mut current = loss(&present);
    let mut visited = vec![false; graph.n_fwd() + 1];
    let mut dropped = EdgeMatrix::filled(*graph, false);
    for (f, b) in reference_order(graph) {
        let node = graph.dest_node(b).unwrap();
        if skip && node < graph.n_fwd() && !std::mem::replace(&mut visited[node], true) {
            let connected = (0..graph.n_bwd()).any(|v| graph.is_edge(node, v) && present[(node, v)]);
            if !connected {
                for e in graph.edges().filter(|&(_, b)| graph.dest_node(b) == Some(node)) {
                    present[e] = false;
                    dropped[e] = true;
                }
                current = loss(&present);
            }
        }
        if dropped[(f, b)] {
            continue;
        }
        present[(f, b)] = false;
        let without = loss(&present);
        if without - current < tau {
            current = without;
        } else {
            present[(f, b)] = true;
        }
    }
    present
}

fn kept(circuit: &EdgeMatrix<bool>) -> usize {
    circuit.edge_values().filter(|(_, k)| **k).count()
}

/// A τ that removes some edges and keeps others: the median positive effect of a τ = 0 run.
fn middle_tau(setup: &AcdcSetup<B>, model: &Transformer<B>) -> f64 {
    let run = setup.run(model, &AcdcOptions::new(0.0, true, 8)).unwrap();
    let mut positive: Vec<f64> = run.effects.edge_values().map(|(_, &e)| e as f64).filter(|&e| e > 0.0).collect();
    positive.sort_by(f64::total_cmp);
    positive[positive.len() / 2]
}

#[test]
fn batched_runs_decide_every_edge_as_the_sequential_algorithm() {
    for name in ["gpt2-tiny", "llama-tiny"] {
        let (model, graph) = load(name);
        let pairs = pairs(model.config.vocab_size as u32);
        for metric in [Metric::Kl, Metric::LogitDifference] {
            let setup = AcdcSetup::new(&model, &graph, &pairs, &Ablation::Counterfactual, metric, Positions::Suffix).unwrap();
            let tau = middle_tau(&setup, &model);
            for skip in [true, false] {
                let expected = sequential(&model, &graph, &pairs, metric, tau, skip);
                let n = kept(&expected);
                assert!(n > 0 && n < graph.n_edges(), "{name} {metric}: τ {tau} keeps {n} of {} edges", graph.n_edges());
                let decisions = EdgeMatrix::from_fn(graph, |f, b| (f + b) % 3 == 0);
                let mut invariant = (0.0f64, 0usize);
                for speculation in [Speculation::Kept, Speculation::Removed, Speculation::Decisions(decisions)] {
                    for replicas in [1, 3, 64] {
                        let options = AcdcOptions { skip_disconnected: skip, speculation: speculation.clone(), ..AcdcOptions::new(tau, true, replicas) };
                        let run = setup.run(&model, &options).unwrap();
                        let differing: Vec<String> =
                            graph.edges().filter(|&e| run.circuit[e] != expected[e]).map(|(f, b)| graph.edge_name(f, b).unwrap()).collect();
                        assert!(differing.is_empty(), "{name} {metric} skip {skip} {speculation:?} × {replicas}: {differing:?}");
                        assert!(run.invariant_max < 1e-5, "dropping a disconnected node's inputs changed the metric by {}", run.invariant_max);
                        invariant = (invariant.0.max(run.invariant_max), invariant.1.max(run.skipped_nodes));
                        if replicas == 1 {
                            assert_eq!(run.replicas, run.passes, "one replica per pass");
                        }
                    }
                }
                println!(
                    "{name} {metric} skip {skip}: τ {tau:.3e} keeps {n} of {} edges; disconnected nodes dropped {}, largest metric change {:e}",
                    graph.n_edges(),
                    invariant.1,
                    invariant.0
                );
            }
        }
    }
}

#[test]
fn a_replayed_order_is_followed() {
    let (model, graph) = load("gpt2-tiny");
    let pairs = pairs(model.config.vocab_size as u32);
    let setup = AcdcSetup::new(&model, &graph, &pairs, &Ablation::Counterfactual, Metric::Kl, Positions::Suffix).unwrap();
    let tau = middle_tau(&setup, &model);
    // The reference order with each layer's edges reversed: another valid order.
    let mut order = reference_order(&graph);
    let layer_of = |b: usize| match graph.dest_at(b).unwrap() {
        graph::Dest::Head { layer, .. } | graph::Dest::Mlp { layer } => layer,
        graph::Dest::Logits => graph.shape().n_layers,
    };
    order.sort_by_key(|&(_, b)| std::cmp::Reverse(layer_of(b)));
    let mut replay = Vec::new();
    for layer in (0..=graph.shape().n_layers).rev() {
        replay.extend(order.iter().filter(|&&(_, b)| layer_of(b) == layer).rev().copied());
    }
    let options = |order: AcdcOrder| AcdcOptions { skip_disconnected: false, order, ..AcdcOptions::new(tau, true, 4) };
    let replayed = setup.run(&model, &options(AcdcOrder::Replay(replay))).unwrap();
    let reference = setup.run(&model, &options(AcdcOrder::Reference)).unwrap();
    assert_eq!(replayed.tested, graph.n_edges());
    assert_ne!(replayed.circuit, reference.circuit, "the order changes what ACDC finds here");
}

#[test]
fn thresholds_behave_as_defined() {
    let (model, graph) = load("llama-tiny");
    let pairs = pairs(model.config.vocab_size as u32);
    let setup = AcdcSetup::new(&model, &graph, &pairs, &Ablation::Counterfactual, Metric::Kl, Positions::Suffix).unwrap();
    // τ = 0 (no skip rule, so every edge is tested): an edge is kept exactly when its removal
    // did not lower the metric.
    let run = setup.run(&model, &AcdcOptions { skip_disconnected: false, ..AcdcOptions::new(0.0, true, 8) }).unwrap();
    assert_eq!(run.tested, graph.n_edges());
    for (edge, &effect) in run.effects.edge_values() {
        assert_eq!(run.circuit[edge], effect >= 0.0, "{edge:?}: effect {effect}");
    }
    assert!(kept(&run.circuit) > 0);
    // A τ above every effect removes every edge; the empty circuit is the counterfactual run.
    let empty = setup.run(&model, &AcdcOptions::new(1e9, true, 8)).unwrap();
    assert_eq!(kept(&empty.circuit), 0);
    let PairBatch { clean, counterfactual, answers, reads } = PairBatch::of(&pairs);
    let batches = PairBatches::new(&model, &clean, &counterfactual, &reads, &Ablation::Counterfactual, Positions::Full).unwrap();
    let full = model.forward(&batches.clean, &Readout::ReadPosition).squeeze_dim::<2>(1);
    let corrupted = model.forward(&batches.counterfactual, &Readout::ReadPosition).squeeze_dim::<2>(1);
    let kl: Vec<f32> = Metric::Kl.values(corrupted, &answers, 1, &full.clone());
    let expected = kl.iter().map(|&v| v as f64).sum::<f64>() / kl.len() as f64;
    assert!((empty.metric - expected).abs() < 1e-5, "empty circuit: KL {} vs the counterfactual run's {expected}", empty.metric);
    // The full circuit's KL is 0: a τ no effect reaches from below keeps whatever ACDC keeps at
    // τ = 0, and the metric never goes below the full model's.
    let full_kl: Vec<f32> = Metric::Kl.values(full.clone(), &answers, 1, &full);
    assert!(full_kl.iter().all(|v| v.abs() < 1e-6));
    // |Δ| with abs: only edges whose removal changes the metric by less than τ go.
    let tau = 1e-4;
    let abs = setup.run(&model, &AcdcOptions { abs: true, skip_disconnected: false, ..AcdcOptions::new(tau, true, 8) }).unwrap();
    for (edge, &effect) in abs.effects.edge_values() {
        assert_eq!(abs.circuit[edge], (effect as f64).abs() >= tau, "{edge:?}: effect {effect}");
    }
}

#[test]
fn bad_settings_are_clear_errors() {
    let (model, graph) = load("gpt2-tiny");
    let pairs = pairs(model.config.vocab_size as u32);
    let setup = AcdcSetup::new(&model, &graph, &pairs, &Ablation::Counterfactual, Metric::Kl, Positions::Suffix).unwrap();
    for tau in [-1e-3, f64::NAN, f64::INFINITY] {
        let err = setup.run(&model, &AcdcOptions::new(tau, true, 4)).unwrap_err();
        assert!(matches!(err, AcdcError::BadTau(_)) && err.to_string().contains("τ"), "{err}");
    }
    assert!(matches!(setup.run(&model, &AcdcOptions::new(0.1, true, 0)).unwrap_err(), AcdcError::NoReplicas));
    let zero = Ablation::<B>::fit(patching::AblationKind::Zero, &model, &[], 4, &Default::default()).unwrap();
    let zero_setup = AcdcSetup::new(&model, &graph, &pairs, &zero, Metric::Kl, Positions::Suffix).unwrap();
    let err = zero_setup.run(&model, &AcdcOptions::new(0.1, true, 4)).unwrap_err();
    assert!(err.to_string().contains("only under counterfactual"), "{err}");
    zero_setup.run(&model, &AcdcOptions::new(0.1, false, 4)).unwrap();
    assert!(matches!(AcdcSetup::new(&model, &graph, &[], &Ablation::Counterfactual, Metric::Kl, Positions::Suffix), Err(AcdcError::NoPairs)));
    let err = "kll".parse::<Metric>().unwrap_err();
    assert!(err.to_string().contains("unknown metric `kll`"), "{err}");
}
