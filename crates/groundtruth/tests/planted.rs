//! Planted circuits: the true edges of a planted model are those among the input, its planted
//! components and the logits, the stored file says so, and exact patching finds every other
//! component below the stated bound on the task's validation pairs.

use std::path::{Path, PathBuf};

use evaluator::{EvalOptions, evaluate_circuits};
use graph::EdgeMatrix;
use graph::{Graph, GraphShape};
use groundtruth::{OUTSIDE_EFFECT_BOUND, TrueEdges, planted_components, planted_dir};
use patching::Ablation;
use tasks::{PrepareOptions, Split, TaskKind};
use transformer::{CpuBackend, LocalModel};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

#[test]
fn planted_edges_join_the_input_the_planted_components_and_the_logits() {
    let graph = Graph::new(GraphShape { n_layers: 2, n_heads: 2 }).unwrap();
    let node = |name: &str| graph.parse_edge_name(&format!("{name}->logits")).unwrap().0;
    let truth = TrueEdges::planted("test", graph, &[node("a0.h0"), node("m1")]);
    let mut want = vec!["input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h0<v>", "input->m1", "a0.h0->m1", "input->logits", "a0.h0->logits", "m1->logits"];
    want.sort_unstable();
    assert_eq!(truth.names(&truth.structural), want);
    assert_eq!(truth.patching, truth.structural);
    assert!(truth.names(&truth.plumbing).is_empty());
}

#[test]
fn the_planted_ioi_model_has_no_effect_outside_its_planted_components() {
    let dir = models().join("ioi-planted");
    let stored = TrueEdges::read(&dir).unwrap();
    assert_eq!(stored, planted_dir(&dir).unwrap(), "the stored true edges are the planted set's");
    let loaded = LocalModel::Dir(dir.clone()).load::<CpuBackend>(&Default::default()).unwrap();
    let graph = stored.graph;
    let planted = planted_components(&dir, graph).unwrap();
    assert_eq!(planted.len(), 6, "four heads and two MLPs");
    let tasks_dir = models().join("../tasks");
    let mut examples = tasks::load_split(&tasks_dir, TaskKind::Ioi, Split::Validation).unwrap();
    examples.truncate(64);
    let pairs = tasks::prepare(&examples, &loaded.tokenizer, &loaded.model.config, &PrepareOptions::default()).unwrap().pairs;
    // Each node's effect under exact patching: (m(N) − m(N without its outgoing edges)) / (m(N) − m(∅)).
    let full = graph.real_edge_mask();
    let without: Vec<EdgeMatrix<bool>> = (0..graph.n_fwd()).map(|u| EdgeMatrix::from_fn(graph, |fwd, bwd| full[(fwd, bwd)] && fwd != u)).collect();
    let masks: Vec<&EdgeMatrix<bool>> = without.iter().collect();
    let options = EvalOptions { batch_size: 32, ..EvalOptions::default() };
    let result = evaluate_circuits(&loaded.model, &graph, &pairs, &masks, &Ablation::Counterfactual, options, &mut |_, _| {}).unwrap();
    let effects: Vec<f64> = result.m_circuits.iter().map(|m| (result.m_full - m) / (result.m_full - result.m_empty)).collect();
    let logits = (0..graph.n_bwd()).find(|&b| graph.dest_at(b) == Some(graph::Dest::Logits)).unwrap();
    for (u, &effect) in effects.iter().enumerate().skip(1) {
        let name = graph.edge_name(u, logits).unwrap();
        println!("{}: {effect:+.4}{}", name.trim_end_matches("->logits"), if planted.contains(&u) { " (planted)" } else { "" });
        if planted.contains(&u) {
            continue;
        }
        assert!(effect.abs() < OUTSIDE_EFFECT_BOUND, "{name}: effect {effect:.4} outside the planted circuit");
    }
    let strongest = planted.iter().map(|&u| effects[u].abs()).fold(0.0, f64::max);
    assert!(strongest > 0.3, "some planted component carries the task: {effects:?}");
}
