//! Evaluating circuits on a tiny real checkpoint: the full circuit is the model, the empty one is
//! the ablated model, curves are reproducible however the work is batched, and circuits can be
//! judged under an ablation other than the one that found them.

use attribution::random::random_scores;
use evaluator::{Bootstrap, Candidates, CurveKind, EvalOptions, EvalPlan, EvalResult, MIB_FRACTIONS, Selection, cpr, evaluate_candidates, faithfulness, top_n};
use graph::{EdgeMatrix, Graph, GraphShape};
use patching::{Ablation, AblationKind, Metric};
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
    let pair = |clean: Vec<u32>, counterfactual: Vec<u32>, correct, incorrect| PreparedPair { clean, counterfactual, correct, incorrect, read: None };
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
    let logits = last_logits(model, prompts);
    let answers: Vec<(u32, u32)> = pairs.iter().map(|p| (p.correct, p.incorrect)).collect();
    Metric::LogitDifference.values(logits.clone(), &answers, 1, &logits).iter().map(|&m| m as f64).sum::<f64>() / pairs.len() as f64
}

/// Last-token logits [prompts, vocab] of a plain run.
fn last_logits(model: &LoadedModel<B>, prompts: &[Vec<u32>]) -> burn::tensor::Tensor<B, 2> {
    let batch = Batch::new(prompts, &model.model.config, &Default::default()).unwrap();
    model.model.forward(&batch, &Readout::ReadPosition).squeeze_dim(1)
}

/// `evaluate_circuits` under the logit difference, progress unheard.
fn evaluate(
    model: &LoadedModel<B>,
    graph: &Graph,
    pairs: &[PreparedPair],
    circuits: &[&EdgeMatrix<bool>],
    ablation: &Ablation<B>,
    options: EvalOptions,
) -> Result<EvalResult, evaluator::EvalError> {
    evaluator::evaluate_circuits(&model.model, graph, pairs, circuits, ablation, options, &mut |_, _| {})
}

#[test]
fn full_and_empty_circuits_bracket_the_curve() {
    let model = tiny();
    let graph = graph_of(&model);
    let pairs = pairs();
    let full = graph.real_edge_mask();
    let empty = EdgeMatrix::filled(graph, false);
    let result = evaluate(&model, &graph, &pairs, &[&full, &empty], &Ablation::Counterfactual, EvalOptions::default()).unwrap();
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
    let circuits: Vec<EdgeMatrix<bool>> = MIB_FRACTIONS.iter().map(|&x| top_n(&graph, &scores.values, graph.edge_budget(x), Selection::Signed).edges).collect();
    let refs: Vec<&EdgeMatrix<bool>> = circuits.iter().collect();
    let run = |batch_size, masks_per_pass| {
        evaluate(&model, &graph, &pairs, &refs, &Ablation::Counterfactual, EvalOptions { batch_size, masks_per_pass, ..EvalOptions::default() }).unwrap()
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
        let r = evaluate(&model, &graph, &pairs, &[&half, &full], &ablation, EvalOptions::default()).unwrap();
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
    assert!(evaluate(&model, &graph, &[], &[&full], &Ablation::Counterfactual, EvalOptions::default()).is_err());
    let other = Graph::new(GraphShape { n_layers: 3, n_heads: 1 }).unwrap().real_edge_mask();
    let err = evaluate(&model, &graph, &pairs, &[&other], &Ablation::Counterfactual, EvalOptions::default()).unwrap_err();
    assert!(err.to_string().contains("a circuit is of a graph of"), "{err}");
    let too_few = [full.clone()];
    let plan = EvalPlan { fractions: &[0.5, 1.0], options: EvalOptions::default(), bootstrap: Bootstrap::default() };
    let err = evaluate_candidates(&model.model, &graph, &pairs, Candidates::Circuits(&too_few), &Ablation::Counterfactual, plan, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("1 circuits were given for 2 budgets"), "{err}");
    pairs[1].counterfactual.pop();
    let err = evaluate(&model, &graph, &pairs, &[&full], &Ablation::Counterfactual, EvalOptions::default()).unwrap_err();
    assert!(err.to_string().contains("pair 1"), "{err}");
}

/// KL(full ‖ patched) at the answer position: 0 for the full circuit, and for the empty circuit the
/// divergence of the counterfactual run from the clean one, computed here by hand in f64.
#[test]
fn kl_of_the_full_circuit_is_zero_and_matches_a_direct_computation() {
    let model = tiny();
    let graph = graph_of(&model);
    let pairs = pairs();
    let full = graph.real_edge_mask();
    let empty = EdgeMatrix::filled(graph, false);
    let r = evaluator::evaluate_circuits(
        &model.model,
        &graph,
        &pairs,
        &[&full, &empty],
        &Ablation::Counterfactual,
        EvalOptions { metric: Metric::Kl, ..EvalOptions::default() },
        &mut |_, _| {},
    )
    .unwrap();
    assert!(r.m_full.abs() < 1e-7, "KL of the model with itself: {}", r.m_full);
    assert!(r.m_circuits[0].abs() < 1e-5, "KL of the full circuit: {}", r.m_circuits[0]);
    let rows = |prompts: Vec<Vec<u32>>| -> Vec<Vec<f64>> {
        let logits: Vec<f32> = last_logits(&model, &prompts).into_data().to_vec().unwrap();
        logits
            .chunks(logits.len() / prompts.len())
            .map(|row| {
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
                let z: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
                row.iter().map(|&x| x as f64 - max - z.ln()).collect()
            })
            .collect()
    };
    let clean = rows(pairs.iter().map(|p| p.clean.clone()).collect());
    let corrupt = rows(pairs.iter().map(|p| p.counterfactual.clone()).collect());
    let want: f64 =
        clean.iter().zip(&corrupt).map(|(p, q)| p.iter().zip(q).map(|(lp, lq)| lp.exp() * (lp - lq)).sum::<f64>()).sum::<f64>() / pairs.len() as f64;
    assert!(want > 1e-3, "the pairs differ");
    assert!((r.m_empty - want).abs() < 1e-5 * want.max(1.0), "m(∅) {} vs direct {want}", r.m_empty);
    assert!((r.m_circuits[1] - want).abs() < 1e-4, "the patched empty circuit is the counterfactual run: {} vs {want}", r.m_circuits[1]);
    assert!(faithfulness(r.m_circuits[0], r.m_full, r.m_empty).is_ok_and(|f| (f - 1.0).abs() < 1e-3));
}

/// The pipeline from scores: top-n circuits at each budget, signed then absolute, as
/// `evaluate_circuits` measures them; CPR and CMD from the two curves.
#[test]
fn the_pipeline_selects_and_evaluates_as_the_parts_do() {
    let model = tiny();
    let graph = graph_of(&model);
    let pairs = pairs();
    let scores = random_scores(&graph, 4);
    let fractions = [0.01, 0.1, 0.5, 1.0];
    let plan = EvalPlan { fractions: &fractions, options: EvalOptions { batch_size: 2, ..EvalOptions::default() }, bootstrap: Bootstrap::default() };
    let mut reports = Vec::new();
    let result = evaluate_candidates(&model.model, &graph, &pairs, Candidates::Scores(&scores.values), &Ablation::Counterfactual, plan, &mut |d, t| {
        reports.push((d, t))
    })
    .unwrap()
    .curves;
    assert_eq!(reports, vec![(1, 3), (2, 3), (3, 3)], "one report per batch of 2 pairs");
    let kinds: Vec<CurveKind> = result.curve.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [[CurveKind::Signed; 4], [CurveKind::Absolute; 4]].concat());
    let circuits: Vec<EdgeMatrix<bool>> = [Selection::Signed, Selection::Absolute]
        .iter()
        .flat_map(|&s| fractions.iter().map(move |&x| (s, x)))
        .map(|(s, x)| top_n(&graph, &scores.values, graph.edge_budget(x), s).edges)
        .collect();
    let direct = evaluate(&model, &graph, &pairs, &circuits.iter().collect::<Vec<_>>(), &Ablation::Counterfactual, plan.options).unwrap();
    for (p, m) in result.curve.iter().zip(&direct.m_circuits) {
        assert_eq!(p.m_circuit, *m);
    }
    let f = |kind| -> Vec<f64> { result.curve.iter().filter(|p| p.kind == kind).map(|p| p.faithfulness).collect() };
    assert_eq!(result.cpr, cpr(&fractions, &f(CurveKind::Signed)));
    assert_eq!(result.cmd, evaluator::cmd(&fractions, &f(CurveKind::Absolute)));

    // The same circuits handed over as a method's own: evaluated as given, one curve for both areas.
    let signed: Vec<EdgeMatrix<bool>> = circuits[..4].to_vec();
    let given =
        evaluate_candidates(&model.model, &graph, &pairs, Candidates::Circuits(&signed), &Ablation::Counterfactual, plan, &mut |_, _| {}).unwrap().curves;
    assert!(given.curve.iter().all(|p| p.kind == CurveKind::Given));
    for (g, s) in given.curve.iter().zip(&result.curve[..4]) {
        assert_eq!((g.pruned_edges, g.m_circuit), (s.pruned_edges, s.m_circuit));
        assert!(g.nominal_edges >= g.pruned_edges);
    }
    assert_eq!(given.cpr, result.cpr);
    assert_eq!(given.cmd, evaluator::cmd(&fractions, &f(CurveKind::Signed)));
}
