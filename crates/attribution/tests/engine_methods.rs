//! `random` and `exact`, the two methods that need only the patching engine.

use attribution::EdgeScores;
use attribution::exact::{ExactError, ExactOptions, exact_scores};
use attribution::random::random_scores;
use burn::tensor::Tensor;
use graph::{Dest, Graph, GraphShape, Source};
use patching::{Ablation, Metric, record_nodes};
use tasks::PreparedPair;
use transformer::{Batch, CpuBackend, Hooks, LoadedModel, LocalModel, Readout};

type B = CpuBackend;

fn tiny() -> LoadedModel<B> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transformer/tests/fixtures/gpt2-tiny");
    LocalModel::Dir(dir).load(&Default::default()).unwrap()
}

fn graph_of(model: &LoadedModel<B>) -> Graph {
    let c = &model.model.config;
    Graph::new(GraphShape { n_layers: c.n_layers, n_heads: c.n_heads }).unwrap()
}

fn pairs() -> Vec<PreparedPair> {
    vec![
        PreparedPair { clean: vec![5, 17, 42, 8, 3], counterfactual: vec![5, 30, 42, 8, 3], correct: 10, incorrect: 20, read: None },
        PreparedPair { clean: vec![9, 9, 4, 60, 2, 7], counterfactual: vec![9, 11, 4, 61, 2, 7], correct: 33, incorrect: 44, read: None },
        PreparedPair { clean: vec![70, 71, 72, 73], counterfactual: vec![70, 12, 72, 73], correct: 3, incorrect: 4, read: None },
    ]
}

/// Exact scores of `edges` (all when None) under the logit difference.
fn exact(
    model: &LoadedModel<B>,
    graph: &Graph,
    pairs: &[PreparedPair],
    edges: Option<&[(usize, usize)]>,
    options: ExactOptions,
) -> Result<EdgeScores, ExactError> {
    exact_scores(&model.model, graph, pairs, edges, &Ablation::Counterfactual, Metric::LogitDifference, options, &mut |_| {})
}

/// m of every row of last-token logits [pairs, 1, vocab].
fn logit_differences(logits: Tensor<B, 3>, answers: &[(u32, u32)]) -> Vec<f32> {
    let logits = logits.squeeze_dim(1);
    Metric::LogitDifference.values(logits.clone(), answers, 1, &logits)
}

#[test]
fn random_scores_are_seeded() {
    let g = Graph::new(GraphShape { n_layers: 3, n_heads: 4 }).unwrap();
    assert_eq!(random_scores(&g, 1), random_scores(&g, 1));
    assert_ne!(random_scores(&g, 1).values, random_scores(&g, 2).values);
    let s = random_scores(&g, 1);
    assert!(s.values.edge_values().all(|(_, v)| (-1.0..1.0).contains(v)));
    let non_edges = (0..g.n_fwd()).flat_map(|f| (0..g.n_bwd()).map(move |b| (f, b))).filter(|&(f, b)| !g.is_edge(f, b));
    assert!(non_edges.into_iter().all(|cell| s.values[cell] == 0.0));
}

/// Ablates the single edge a0.h1 -> m1 by hand: MLP 1 reads its residual plus
/// (counterfactual a0.h1 − actual a0.h1), nothing else changes.
struct OneEdge {
    counterfactual_heads0: Tensor<B, 4>, // [b, t, H, d]
    actual_head: Option<Tensor<B, 3>>,
}

impl Hooks<B> for OneEdge {
    fn wants_head_outputs(&self) -> bool {
        true
    }
    fn head_outputs(&mut self, layer: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        if layer == 0 {
            let [b, t, _, d] = heads.dims();
            self.actual_head = Some(heads.clone().slice([0..b, 0..t, 1..2, 0..d]).squeeze_dim(2));
        }
        heads
    }
    fn mlp_input(&mut self, layer: usize, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        if layer != 1 {
            return resid;
        }
        let [b, t, _, d] = self.counterfactual_heads0.dims();
        let cf: Tensor<B, 3> = self.counterfactual_heads0.clone().slice([0..b, 0..t, 1..2, 0..d]).squeeze_dim(2);
        resid + cf - self.actual_head.clone().unwrap()
    }
}

#[test]
fn exact_matches_a_hand_patched_edge() {
    let model = tiny();
    let graph = graph_of(&model);
    let pairs = pairs();
    let device = Default::default();
    let edge = (graph.fwd_index(Source::Head { layer: 0, head: 1 }).unwrap(), graph.bwd_index(Dest::Mlp { layer: 1 }).unwrap());
    let scores = exact(&model, &graph, &pairs, Some(&[edge]), ExactOptions::default()).unwrap();

    let cfg = &model.model.config;
    let answers: Vec<(u32, u32)> = pairs.iter().map(|p| (p.correct, p.incorrect)).collect();
    let clean = Batch::new(&pairs.iter().map(|p| p.clean.clone()).collect::<Vec<_>>(), cfg, &device).unwrap();
    let cf = Batch::new(&pairs.iter().map(|p| p.counterfactual.clone()).collect::<Vec<_>>(), cfg, &device).unwrap();
    let (_, cf_nodes) = record_nodes(&model.model, &cf); // [n_fwd, b, t, d]
    let [_, b, t, d] = cf_nodes.dims();
    let heads0 = cf_nodes.slice([1..1 + cfg.n_heads, 0..b, 0..t, 0..d]).permute([1, 2, 0, 3]);
    let mut hook = OneEdge { counterfactual_heads0: heads0, actual_head: None };
    let patched = logit_differences(model.model.forward_with(&clean, &Readout::ReadPosition, &mut hook), &answers);
    let plain = logit_differences(model.model.forward(&clean, &Readout::ReadPosition), &answers);
    let want: f32 = plain.iter().zip(&patched).map(|(c, p)| c - p).sum::<f32>() / pairs.len() as f32;
    let got = scores.values[edge];
    assert!(want.abs() > 1e-4, "the edge matters on these pairs");
    assert!((got - want).abs() < 1e-5, "exact {got} vs hand-patched {want}");
}

#[test]
fn exact_scores_the_whole_tiny_graph_independent_of_batching() {
    let model = tiny();
    let graph = graph_of(&model);
    let pairs = pairs();
    let run = |batch_size, edges_per_pass| exact(&model, &graph, &pairs, None, ExactOptions { batch_size, edges_per_pass, ..ExactOptions::default() }).unwrap();
    let a = run(3, 37);
    let b = run(2, 8);
    let diff = a.values.as_slice().iter().zip(b.values.as_slice()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(diff < 1e-4, "batching changed exact scores by {diff}");
    assert_eq!(a.passes.forward, 2 + graph.n_edges().div_ceil(37));
    let scored = a.values.edge_values().filter(|(_, v)| **v != 0.0).count();
    assert!(scored > graph.n_edges() * 9 / 10, "almost every edge has an effect: {scored} of {}", graph.n_edges());
    a.validate().unwrap();
}

#[test]
fn scores_round_trip_through_circuit_json_and_reject_nan() {
    let model = tiny();
    let graph = graph_of(&model);
    let scores = random_scores(&graph, 5);
    let json = scores.to_circuit(model.model.config.d_model).unwrap().to_json_string().unwrap();
    let back = EdgeScores::from_circuit(&graph::Circuit::from_json_str(&json, graph).unwrap()).unwrap();
    assert_eq!(back.values, scores.values);
    let mut bad = scores.clone();
    let (f, b) = graph.edges().nth(7).unwrap();
    bad.values[(f, b)] = f32::NAN;
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains(&graph.edge_name(f, b).unwrap()), "{err}");
}

#[test]
fn exact_rejects_non_edges() {
    let model = tiny();
    let graph = graph_of(&model);
    let last = graph.n_fwd() - 1; // m1 cannot feed a0's heads
    assert!(exact(&model, &graph, &pairs(), Some(&[(last, 0)]), ExactOptions::default()).is_err());
}

#[test]
fn exact_runs_on_a_chosen_subset_of_smollm2() {
    let loaded = transformer::load_model::<B>("smollm2-135m", &Default::default()).unwrap();
    let graph = graph_of(&loaded);
    let enc = |s: &str| loaded.tokenizer.encode(s).unwrap();
    let name = |s: &str| enc(s).last().copied().unwrap();
    let pairs = vec![PreparedPair {
        clean: enc("When Mary and John went to the store, John gave a drink to"),
        counterfactual: enc("When Mary and John went to the store, Mary gave a drink to"),
        correct: name(" Mary"),
        incorrect: name(" John"),
        read: None,
    }];
    let edges = [graph.parse_edge_name("m29->logits").unwrap(), graph.parse_edge_name("input->a0.h0<q>").unwrap()];
    let scores = exact(&loaded, &graph, &pairs, Some(&edges), ExactOptions::default()).unwrap();
    let scored: Vec<f32> = edges.iter().map(|&edge| scores.values[edge]).collect();
    assert!(scored.iter().all(|v| v.is_finite()) && scored[0] != 0.0, "{scored:?}");
    let others = scores.values.as_slice().iter().filter(|&&v| v != 0.0).count();
    assert!(others <= 2, "only the chosen edges are scored");
    assert_eq!(scores.passes.forward, 3, "clean, counterfactual, one pass for both edges");
}
