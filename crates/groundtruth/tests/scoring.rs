//! AUROC and precision / recall against true edge sets: perfect, inverted, random and tied
//! rankings, absolute scores, and hand-checked small cases.

use graph::{EdgeMatrix, Graph, GraphShape};
use groundtruth::{PrecisionRecall, auroc, compute_dir, precision_recall, tracr_dirs};
use transformer::load::task_models_dir;

/// SplitMix64: seeded uniform numbers in [0, 1) without a dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn small() -> Graph {
    // 8 edges: input->a0.h0<q,k,v>, input->m0, a0.h0->m0, {input, a0.h0, m0}->logits.
    Graph::new(GraphShape { n_layers: 1, n_heads: 1 }).unwrap()
}

fn edges(graph: Graph, names: &[&str]) -> EdgeMatrix<bool> {
    let mut m = EdgeMatrix::filled(graph, false);
    for name in names {
        m[graph.parse_edge_name(name).unwrap()] = true;
    }
    m
}

fn scores(graph: Graph, named: &[(&str, f32)]) -> EdgeMatrix<f32> {
    let mut m = EdgeMatrix::filled(graph, 0.0);
    for (name, score) in named {
        m[graph.parse_edge_name(name).unwrap()] = *score;
    }
    m
}

#[test]
fn the_truth_as_scores_ranks_perfectly_and_inverted_ranks_last() {
    for dir in tracr_dirs(&task_models_dir()).unwrap() {
        let truth = compute_dir(&dir).unwrap();
        for set in [&truth.structural, &truth.patching] {
            let as_scores = set.map(|&on| if on { 1.0 } else { 0.0 });
            assert_eq!(auroc(&as_scores, set, truth.graph), 1.0, "{}", truth.program);
            let inverted = set.map(|on| !on);
            assert_eq!(auroc(&as_scores, &inverted, truth.graph), 0.0, "{}", truth.program);
            // Ranking is by |score|: negated scores rank the same.
            assert_eq!(auroc(&as_scores.map(|s| -s), set, truth.graph), 1.0);
        }
    }
}

#[test]
fn random_scores_give_one_half_on_average() {
    let graph = Graph::new(GraphShape { n_layers: 6, n_heads: 4 }).unwrap();
    let mut rng = SplitMix(7);
    let truth = EdgeMatrix::from_fn(graph, |_, _| rng.next() < 0.1);
    let seeds = 40;
    let mean = (0..seeds)
        .map(|seed| {
            let mut rng = SplitMix(1000 + seed);
            let scores = EdgeMatrix::from_fn(graph, |_, _| (rng.next() - 0.5) as f32);
            auroc(&scores, &truth, graph)
        })
        .sum::<f64>()
        / seeds as f64;
    assert!((mean - 0.5).abs() < 0.02, "mean AUROC of random scores {mean}");
}

#[test]
fn ties_share_their_average_rank() {
    let graph = small();
    let truth = edges(graph, &["input->a0.h0<q>", "m0->logits"]);
    // All tied: one half.
    assert_eq!(auroc(&EdgeMatrix::filled(graph, 3.0), &truth, graph), 0.5);
    // Hand-checked: positives scored 5 and -2; negatives 2, 1, and four at 0. Pairs (p, n) won:
    // 5 beats all 6; |-2| ties the 2 (1/2) and beats the other 5: (6 + 5.5) / 12.
    let s = scores(graph, &[("input->a0.h0<q>", 5.0), ("m0->logits", -2.0), ("input->m0", 2.0), ("a0.h0->m0", 1.0)]);
    assert_eq!(auroc(&s, &truth, graph), 11.5 / 12.0);
    // A NaN score counts as zero.
    let nan = scores(graph, &[("input->a0.h0<q>", f32::NAN), ("m0->logits", 1.0)]);
    assert_eq!(auroc(&nan, &truth, graph), (6.0 + 3.0) / 12.0);
}

#[test]
fn auroc_is_undefined_without_positives_or_negatives() {
    let graph = small();
    let s = EdgeMatrix::filled(graph, 1.0);
    assert!(auroc(&s, &EdgeMatrix::filled(graph, false), graph).is_nan());
    assert!(auroc(&s, &graph.real_edge_mask(), graph).is_nan());
}

#[test]
fn precision_and_recall_on_a_hand_checked_case() {
    let graph = small();
    let truth = edges(graph, &["input->a0.h0<q>", "a0.h0->m0", "m0->logits"]);
    let circuit = edges(graph, &["input->a0.h0<q>", "input->m0"]);
    let pr = precision_recall(&circuit, &truth, graph);
    assert_eq!((pr.true_positives, pr.found, pr.truth), (1, 2, 3));
    assert_eq!((pr.precision, pr.recall), (0.5, 1.0 / 3.0));
    assert!((pr.f1 - 0.4).abs() < 1e-12, "{pr:?}");
    // Cells of the dense layout that are not edges are not counted.
    let mut with_non_edge = circuit.clone();
    let non_edge = (0..graph.n_fwd()).flat_map(|f| (0..graph.n_bwd()).map(move |b| (f, b))).find(|&(f, b)| !graph.is_edge(f, b)).unwrap();
    with_non_edge[non_edge] = true;
    assert_eq!(precision_recall(&with_non_edge, &truth, graph), pr);
    // The truth itself is perfect.
    let perfect = precision_recall(&truth, &truth, graph);
    assert_eq!((perfect.precision, perfect.recall, perfect.f1), (1.0, 1.0, 1.0));
}

#[test]
fn an_empty_circuit_or_truth_scores_zero() {
    let graph = small();
    let truth = edges(graph, &["m0->logits"]);
    let empty = EdgeMatrix::filled(graph, false);
    let zero = PrecisionRecall { precision: 0.0, recall: 0.0, f1: 0.0, true_positives: 0, found: 0, truth: 1 };
    assert_eq!(precision_recall(&empty, &truth, graph), zero);
    let pr = precision_recall(&truth, &empty, graph);
    assert_eq!((pr.precision, pr.recall, pr.f1, pr.found, pr.truth), (0.0, 0.0, 0.0, 1, 0));
}
