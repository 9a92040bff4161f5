//! One discovery and one evaluation path: a cell fits its ablation once on all its discovery pairs
//! (the object its evaluation uses too), so the bench's scores are `xtask attribute`'s and its
//! curve is `xtask eval`'s for the same circuit file.

use std::path::{Path, PathBuf};

use attribution::{Discovery, EdgeScores, Method, fit_ablation, run_method};
use bench::{Config, SweepModel, run_cell};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use evaluator::{Bootstrap, Candidates, EvalOptions, EvalPlan, evaluate_candidates};
use patching::{AblationKind, Metric};
use tasks::{PrepareOptions, PreparedPair, Split, TaskKind};
use transformer::CpuBackend;

type B = Autodiff<CpuBackend>;

const CONFIG: &str = r#"
name = "seams"
ablation = "mean"
batch_size = 4
fractions = [0.01, 0.1, 0.5, 1.0]

[[group]]
model = "task:ioi"
tasks = ["ioi"]
methods = ["eap"]
discovery_examples = 12
evaluation_examples = 8
"#;

fn tasks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tasks")
}

/// The first `n` prepared pairs of a split, as `xtask attribute` and `xtask eval` read them.
fn pairs(model: &SweepModel<B>, split: Split, n: usize) -> Vec<PreparedPair> {
    let mut examples = tasks::load_split(&tasks_dir(), TaskKind::Ioi, split).unwrap();
    examples.truncate(n);
    tasks::prepare(&examples, &model.tokenizer, &model.model.config, &PrepareOptions::default()).unwrap().pairs
}

/// EAP's scores on `pairs` with a mean ablation fitted on `fit_on`, 4 pairs per batch.
fn eap_scores(model: &SweepModel<B>, pairs: &[PreparedPair], fit_on: &[PreparedPair]) -> EdgeScores {
    let ablation = fit_ablation(AblationKind::Mean, &model.model, fit_on, 4, Metric::LogitDifference).unwrap();
    let discovery = Discovery {
        model: &model.model,
        graph: &model.graph,
        pairs,
        ablation: &ablation,
        metric: Metric::LogitDifference,
        batch_size: 4,
        edges_per_pass: 16,
        fractions: &[],
        positions: patching::Positions::Suffix,
    };
    match run_method(&Method::parse("eap", 5, 0).unwrap(), &discovery, &mut |_| {}).unwrap() {
        attribution::MethodOutput::Scores(scores) => scores,
        attribution::MethodOutput::Circuits(_) => panic!("EAP gives scores"),
    }
}

#[test]
fn bench_discovers_and_evaluates_as_attribute_and_eval_do() {
    let config = Config::parse(CONFIG, "seams.toml").unwrap();
    let cell = &config.cells[0];
    let model = SweepModel::new(transformer::load_model::<B>("task:ioi", &Default::default()).unwrap()).unwrap();
    let result = run_cell(&config, cell, &model, &tasks_dir(), "test".into(), false, &mut |_| {}).unwrap();
    assert_eq!((result.output.as_str(), result.metric.as_str(), result.evaluation_metric.as_str()), ("scores", "logit-diff", "logit-diff"));

    // `xtask attribute --ablation mean --examples 12 --batch 4`: the means of all 12 pairs.
    let discovery = pairs(&model, Split::Train, 12);
    let scores = eap_scores(&model, &discovery, &discovery);
    let name = |e: (usize, usize)| model.graph.edge_name(e.0, e.1).unwrap();
    for (edge, score) in &result.top_edges {
        let found = scores.values.edge_values().find(|(e, _)| name(*e) == *edge).map(|(_, &s)| s).unwrap();
        assert!((found - score).abs() <= 1e-6 * score.abs().max(1e-3), "{edge}: bench {score}, attribute {found}");
    }
    // Means fitted batch by batch (what the bench did before) give other scores: the test can fail.
    let per_batch: Vec<EdgeScores> = discovery.chunks(4).map(|chunk| eap_scores(&model, chunk, chunk)).collect();
    let moved = result.top_edges.iter().any(|(edge, score)| {
        let mean: f32 = per_batch.iter().map(|s| s.values.edge_values().find(|(e, _)| name(*e) == *edge).map(|(_, &v)| v).unwrap()).sum::<f32>() / 3.0;
        (mean - score).abs() > 1e-4 * score.abs().max(1e-3)
    });
    assert!(moved, "per-batch means would have given the same top edges: the check above means nothing");

    // `xtask eval --circuit scores.json --ablation mean --examples 8 --batch 4`, with the means of
    // the discovery pairs (its reference split): the same curve, point for point.
    let file = scores.to_circuit(model.model.config.d_model).unwrap().to_json_string().unwrap();
    let read = EdgeScores::from_circuit(&graph::Circuit::from_json_str(&file, model.graph).unwrap()).unwrap();
    let inner = model.model.valid();
    let ablation = fit_ablation(AblationKind::Mean, &model.model, &discovery, 4, Metric::LogitDifference).unwrap();
    let plan = EvalPlan {
        fractions: &config.fractions,
        options: EvalOptions { batch_size: 4, masks_per_pass: 1, metric: Metric::LogitDifference, ..EvalOptions::default() },
        bootstrap: Bootstrap { resamples: config.interval_resamples, seed: config.seed },
    };
    let evaluation = pairs(&model, Split::Validation, 8);
    let eval = evaluate_candidates(&inner, &model.graph, &evaluation, Candidates::Scores(&read.values), &ablation, plan, &mut |_, _| {}).unwrap();
    let (eval, bench) = (&eval.curves, &result.curves);
    assert_eq!(eval.curve.len(), bench.curve.len());
    for (e, b) in eval.curve.iter().zip(&bench.curve) {
        assert_eq!((e.kind, e.fraction, e.nominal_edges, e.pruned_edges), (b.kind, b.fraction, b.nominal_edges, b.pruned_edges));
        assert!((e.faithfulness - b.faithfulness).abs() < 1e-9, "{} {}: eval {} vs bench {}", b.kind.name(), b.fraction, e.faithfulness, b.faithfulness);
    }
    assert!((eval.cpr - bench.cpr).abs() < 1e-9 && (eval.cmd - bench.cmd).abs() < 1e-9);
}

#[test]
fn metrics_are_chosen_per_method_and_per_evaluation() {
    let config = Config::parse(
        &(CONFIG
            .replace("methods = [\"eap\"]", "methods = [\"eap\", \"gim\"]")
            .replace("batch_size = 4", "batch_size = 4\nmetric = \"kl\"\nevaluation_metric = \"prob-diff\"")
            + "[group.metric_overrides]\ngim = \"nll\"\n"),
        "seams.toml",
    )
    .unwrap();
    assert_eq!(config.cells.iter().map(|c| c.metric).collect::<Vec<_>>(), [Metric::Kl, Metric::AnswerNll]);
    assert_eq!(config.evaluation_metric, Metric::ProbabilityDifference);
    let model = SweepModel::new(transformer::load_model::<B>("task:ioi", &Default::default()).unwrap()).unwrap();
    let gim = run_cell(&config, &config.cells[1], &model, &tasks_dir(), "test".into(), false, &mut |_| {}).unwrap();
    assert_eq!((gim.metric.as_str(), gim.evaluation_metric.as_str()), ("nll", "prob-diff"));
    assert!(gim.curves.m_full > 0.0 && gim.curves.m_full <= 1.0, "a probability difference: {}", gim.curves.m_full);
    let row = &bench::report::summary_rows(std::slice::from_ref(&gim))[0];
    assert_eq!((row["output"].as_str(), row["metric"].as_str(), row["evaluation_metric"].as_str()), (Some("scores"), Some("nll"), Some("prob-diff")));
}
