//! Circuit construction from scores: budgets, top-n (with preferred edges first), greedy and
//! pruning to a fixed point.

use evaluator::pipeline::{CurveKind, circuits_at_budgets};
use evaluator::{Candidates, EvalError, Selection, given, greedy, prune, top_n, top_n_preferred};
use graph::{Dest, EdgeMatrix, Graph, GraphShape, Qkv, Source};

fn gpt2() -> Graph {
    Graph::new(GraphShape { n_layers: 12, n_heads: 12 }).unwrap()
}

fn small() -> Graph {
    Graph::new(GraphShape { n_layers: 2, n_heads: 2 }).unwrap()
}

fn idx(g: &Graph, src: Source, dst: Dest) -> (usize, usize) {
    (g.fwd_index(src).unwrap(), g.bwd_index(dst).unwrap())
}

#[test]
fn budgets_match_mib_for_gpt2() {
    let g = gpt2();
    let sizes: Vec<usize> = evaluator::MIB_FRACTIONS.iter().map(|&f| g.edge_budget(f)).collect();
    assert_eq!(sizes, vec![32, 64, 162, 324, 649, 1624, 3249, 6498, 16245, 32491]);
}

#[test]
fn prune_removes_dangling_edges_and_nodes_until_fixed_point() {
    let g = small();
    let mut edges = EdgeMatrix::filled(g, false);
    // A chain input -> a0.h0<v> -> m0 -> logits survives.
    let chain = [
        idx(&g, Source::Input, Dest::Head { layer: 0, head: 0, qkv: Qkv::V }),
        idx(&g, Source::Head { layer: 0, head: 0 }, Dest::Mlp { layer: 0 }),
        idx(&g, Source::Mlp { layer: 0 }, Dest::Logits),
    ];
    // a0.h1 -> m1: a0.h1 is never fed and m1 never read, so both edges go, and then
    // input -> a1.h0<q> dies too because a1.h0 reaches nothing.
    let dangling = [idx(&g, Source::Head { layer: 0, head: 1 }, Dest::Mlp { layer: 1 }), idx(&g, Source::Input, Dest::Head { layer: 1, head: 0, qkv: Qkv::Q })];
    for &e in chain.iter().chain(&dangling) {
        edges[e] = true;
    }
    let nodes = prune(&g, &mut edges);
    for &e in &chain {
        assert!(edges[e]);
    }
    for &e in &dangling {
        assert!(!edges[e]);
    }
    let on: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i]).collect();
    let want = vec![0, g.fwd_index(Source::Head { layer: 0, head: 0 }).unwrap(), g.fwd_index(Source::Mlp { layer: 0 }).unwrap(), g.n_fwd()];
    assert_eq!(on, want);
}

#[test]
fn pruning_cascades_through_several_rounds() {
    let g = small();
    let mut edges = EdgeMatrix::filled(g, false);
    // input -> a0.h0<q> -> a1.h1<k> -> m1, but m1 reaches nothing: everything unwinds.
    for e in [
        idx(&g, Source::Input, Dest::Head { layer: 0, head: 0, qkv: Qkv::Q }),
        idx(&g, Source::Head { layer: 0, head: 0 }, Dest::Head { layer: 1, head: 1, qkv: Qkv::K }),
        idx(&g, Source::Head { layer: 1, head: 1 }, Dest::Mlp { layer: 1 }),
    ] {
        edges[e] = true;
    }
    let nodes = prune(&g, &mut edges);
    assert_eq!(edges.count_edges(), 0, "nothing reaches the logits");
    assert_eq!(nodes.iter().filter(|&&n| n).count(), 1, "only logits stays on");
}

#[test]
fn top_n_signed_and_absolute_rank_differently() {
    let g = small();
    let mut scores = EdgeMatrix::filled(g, 0.0f32);
    let good = idx(&g, Source::Input, Dest::Logits);
    let bad = idx(&g, Source::Mlp { layer: 1 }, Dest::Logits);
    scores[good] = 1.0;
    scores[bad] = -5.0;
    let signed = top_n(&g, &scores, 1, Selection::Signed);
    assert!(signed.edges[good] && !signed.edges[bad]);
    let absolute = top_n(&g, &scores, 1, Selection::Absolute);
    // Absolute picks m1 -> logits; alone, m1 is not fed, so pruning removes it.
    assert!(!absolute.edges[bad] && !absolute.edges[good]);
    assert_eq!((absolute.nominal_edges, absolute.edges_after_pruning), (1, 0));
    assert_eq!((signed.nominal_edges, signed.edges_after_pruning), (1, 1));
}

#[test]
fn all_edges_is_the_whole_graph() {
    let g = small();
    let scores = EdgeMatrix::from_fn(g, |f, b| ((f * g.n_bwd() + b) % 7) as f32 - 3.0);
    for c in [top_n(&g, &scores, g.n_edges(), Selection::Signed), greedy(&g, &scores, g.n_edges(), Selection::Absolute)] {
        assert_eq!(c.edges_after_pruning, g.n_edges());
        assert_eq!(c.edges, g.real_edge_mask());
        assert!(c.nodes.iter().all(|&n| n));
    }
}

#[test]
fn greedy_only_takes_edges_into_nodes_already_on() {
    let g = small();
    let mut scores = EdgeMatrix::filled(g, 0.0f32);
    // The best edge overall feeds a1.h0, which nothing connects to the logits yet; greedy must start
    // from the logits' inputs.
    scores[idx(&g, Source::Input, Dest::Head { layer: 1, head: 0, qkv: Qkv::Q })] = 10.0;
    scores[idx(&g, Source::Head { layer: 1, head: 0 }, Dest::Logits)] = 1.0;
    scores[idx(&g, Source::Input, Dest::Logits)] = 0.5;
    let c = greedy(&g, &scores, 2, Selection::Signed);
    assert!(c.edges[idx(&g, Source::Head { layer: 1, head: 0 }, Dest::Logits)]);
    assert!(c.edges[idx(&g, Source::Input, Dest::Head { layer: 1, head: 0, qkv: Qkv::Q })]);
    assert!(!c.edges[idx(&g, Source::Input, Dest::Logits)]);
    let t = top_n(&g, &scores, 1, Selection::Signed);
    assert_eq!(t.edges_after_pruning, 0, "top-1 picks the stranded edge, which pruning removes");
}

#[test]
fn a_given_circuit_is_pruned_like_a_selected_one() {
    let g = small();
    let mut edges = EdgeMatrix::filled(g, false);
    let chain = [idx(&g, Source::Input, Dest::Mlp { layer: 0 }), idx(&g, Source::Mlp { layer: 0 }, Dest::Logits)];
    let stranded = idx(&g, Source::Head { layer: 1, head: 1 }, Dest::Mlp { layer: 1 });
    for &e in chain.iter().chain([&stranded]) {
        edges[e] = true;
    }
    let c = given(&g, &edges);
    assert_eq!((c.nominal_edges, c.edges_after_pruning), (3, 2), "the stranded edge is pruned, the count before is kept");
    assert!(chain.iter().all(|&e| c.edges[e]) && !c.edges[stranded]);
    let mut again = edges.clone();
    assert_eq!(prune(&g, &mut again), c.nodes);
    assert_eq!(again, c.edges);
}

#[test]
fn preferred_edges_come_first_then_the_rest_by_score() {
    let g = small();
    let e = |src, dst| idx(&g, src, dst);
    let direct = e(Source::Input, Dest::Logits);
    let (into_m0, m0_out) = (e(Source::Input, Dest::Mlp { layer: 0 }), e(Source::Mlp { layer: 0 }, Dest::Logits));
    let (into_m1, m1_out) = (e(Source::Input, Dest::Mlp { layer: 1 }), e(Source::Mlp { layer: 1 }, Dest::Logits));
    let mut scores = EdgeMatrix::filled(g, 0.0f32);
    for (edge, s) in [(direct, 0.5), (into_m0, 3.0), (m0_out, 2.0), (into_m1, -4.0), (m1_out, 0.1)] {
        scores[edge] = s;
    }
    let mut preferred = EdgeMatrix::filled(g, false);
    for edge in [direct, into_m1, m1_out] {
        preferred[edge] = true;
    }
    let on = |c: &evaluator::BuiltCircuit| -> Vec<(usize, usize)> { g.edges().filter(|&x| c.edges[x]).collect() };
    let sorted = |mut v: Vec<(usize, usize)>| {
        v.sort();
        v
    };
    // Signed: the three preferred edges (0.5, 0.1, −4) before the better-scored m0 chain.
    let c = top_n_preferred(&g, &scores, &preferred, 3, Selection::Signed);
    assert_eq!(on(&c), sorted(vec![direct, into_m1, m1_out]));
    assert_eq!(on(&top_n(&g, &scores, 3, Selection::Signed)), sorted(vec![direct, into_m0, m0_out]), "by score alone: the m0 chain");
    // Absolute: the preferred by |score| (−4, 0.5): input -> m1 dangles without m1 -> logits and is pruned.
    let c = top_n_preferred(&g, &scores, &preferred, 2, Selection::Absolute);
    assert_eq!((c.nominal_edges, on(&c)), (2, vec![direct]));
    // Past the preferred edges, the budget fills by score.
    let c = top_n_preferred(&g, &scores, &preferred, 5, Selection::Signed);
    assert_eq!(on(&c), sorted(vec![direct, into_m0, m0_out, into_m1, m1_out]));
    // With nothing preferred it is top-n.
    let none = EdgeMatrix::filled(g, false);
    for (n, selection) in [(1, Selection::Signed), (3, Selection::Absolute), (5, Selection::Signed)] {
        assert_eq!(top_n_preferred(&g, &scores, &none, n, selection), top_n(&g, &scores, n, selection));
    }
}

#[test]
fn preferred_scores_give_signed_and_absolute_curves_and_check_their_graph() {
    let g = small();
    let scores = EdgeMatrix::from_fn(g, |f, b| ((f * g.n_bwd() + b) % 7) as f32 - 3.0);
    let preferred = EdgeMatrix::from_fn(g, |f, b| (f + b) % 3 == 0);
    let fractions = [0.1, 0.5, 1.0];
    let built = circuits_at_budgets(&g, Candidates::PreferredScores { scores: &scores, preferred: &preferred }, &fractions).unwrap();
    let kinds: Vec<CurveKind> = built.iter().map(|(k, _, _)| *k).collect();
    assert_eq!(kinds, [[CurveKind::Signed; 3], [CurveKind::Absolute; 3]].concat());
    let n = g.edge_budget(0.5);
    assert_eq!(built[1].2, top_n_preferred(&g, &scores, &preferred, n, Selection::Signed));
    assert_eq!(built[4].2, top_n_preferred(&g, &scores, &preferred, n, Selection::Absolute));
    let other = EdgeMatrix::filled(Graph::new(GraphShape { n_layers: 3, n_heads: 2 }).unwrap(), false);
    let err = circuits_at_budgets(&g, Candidates::PreferredScores { scores: &scores, preferred: &other }, &fractions).unwrap_err();
    assert!(matches!(err, EvalError::GraphMismatch { .. }), "{err}");
}
