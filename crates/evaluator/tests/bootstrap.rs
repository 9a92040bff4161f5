//! Bootstrap intervals over evaluation pairs: seeded and reproducible, the resample count honoured,
//! zero width for a constant series, around the estimate in ordinary cases, undefined resamples
//! counted; and through the pipeline, per-pair values that are the means' parts and intervals on
//! CPR, CMD and every curve point.

use attribution::random::random_scores;
use evaluator::bootstrap::{Bootstrap, resample};
use evaluator::{Candidates, CurveKind, EvalOptions, EvalPlan, evaluate_candidates, evaluate_circuits};
use graph::{EdgeMatrix, Graph, GraphShape};
use patching::{Ablation, AblationKind};
use tasks::PreparedPair;
use transformer::{CpuBackend, LoadedModel, LocalModel};

type B = CpuBackend;

/// A mean of one series: the simplest statistic.
fn mean_of_first(means: &[f64]) -> Option<Vec<f64>> {
    Some(vec![means[0]])
}

/// 200 values around 5, spread ±2 (a fixed, uneven pattern).
fn noisy() -> Vec<f64> {
    (0..200).map(|i| 5.0 + 2.0 * (((i * 37) % 101) as f64 / 50.0 - 1.0)).collect()
}

#[test]
fn the_same_seed_gives_the_same_intervals_and_another_seed_others() {
    let x = noisy();
    let run = |seed| resample(&[&x], Bootstrap { resamples: 300, seed }, mean_of_first);
    assert_eq!(run(3), run(3));
    assert_eq!(run(3).interval(0), run(3).interval(0));
    assert_ne!(run(3).values, run(4).values);
}

#[test]
fn every_resample_asked_for_is_drawn() {
    let x = noisy();
    for resamples in [1, 17, 1000] {
        let r = resample(&[&x], Bootstrap { resamples, seed: 0 }, mean_of_first);
        assert_eq!((r.resamples, r.values[0].len(), r.undefined), (resamples, resamples, 0));
        assert_eq!(r.record().resamples, resamples);
    }
    let none = resample(&[&x], Bootstrap { resamples: 0, seed: 0 }, mean_of_first);
    assert_eq!(none.interval(0), None, "no resamples, no interval");
}

#[test]
fn a_constant_series_has_an_interval_of_zero_width() {
    let x = vec![0.7; 64];
    let interval = resample(&[&x], Bootstrap::default(), mean_of_first).interval(0).unwrap();
    assert_eq!(interval.low, interval.high, "every resample's mean is the same sum of the same values");
    assert!((interval.low - 0.7).abs() < 1e-12, "{interval:?}");
}

#[test]
fn the_interval_holds_the_estimate_and_narrows_with_more_pairs() {
    let x = noisy();
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    let interval = resample(&[&x], Bootstrap::default(), mean_of_first).interval(0).unwrap();
    assert!(interval.low < mean && mean < interval.high, "{interval:?} around {mean}");
    // The standard error of the mean is sd / √n ≈ 1.15 / √200 ≈ 0.082: a 95% interval ≈ ±0.16.
    let width = interval.high - interval.low;
    assert!((0.2..0.45).contains(&width), "width {width}");
    let four_times: Vec<f64> = x.iter().cycle().take(800).copied().collect();
    let narrower = resample(&[&four_times], Bootstrap::default(), mean_of_first).interval(0).unwrap();
    assert!(narrower.high - narrower.low < 0.7 * width, "{narrower:?} vs {interval:?}");
}

#[test]
fn pairs_are_drawn_together_across_series() {
    // y = 2x pair by pair: a resample's mean of y is twice its mean of x, whichever pairs it drew.
    let x = noisy();
    let y: Vec<f64> = x.iter().map(|v| 2.0 * v).collect();
    let r = resample(&[&x, &y], Bootstrap { resamples: 100, seed: 9 }, |m| Some(vec![m[1] - 2.0 * m[0]]));
    assert!(r.values[0].iter().all(|d| d.abs() < 1e-9), "{:?}", &r.values[0][..5]);
}

#[test]
fn undefined_resamples_are_counted_and_too_many_leave_no_interval() {
    let x = noisy();
    // Every 50th resample undefined (2%): left out, counted, an interval still given.
    let mut k = 0;
    let r = resample(&[&x], Bootstrap::default(), |m| {
        k += 1;
        (k % 50 != 0).then(|| vec![m[0]])
    });
    assert_eq!((r.undefined, r.values[0].len()), (20, 980));
    assert!(r.interval(0).is_some());
    // Every 10th (10%, more than the 2.5% one tail holds): no interval.
    let mut k = 0;
    let r = resample(&[&x], Bootstrap::default(), |m| {
        k += 1;
        (k % 10 != 0).then(|| vec![m[0]])
    });
    assert_eq!(r.undefined, 100);
    assert_eq!(r.interval(0), None);
}

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
        pair(vec![20, 21, 22], vec![20, 23, 22], 6, 7),
    ]
}

#[test]
fn per_pair_values_are_the_parts_of_the_means() {
    let model = tiny();
    let graph = graph_of(&model);
    let pairs = pairs();
    let full = graph.real_edge_mask();
    let empty = EdgeMatrix::filled(graph, false);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    // Counterfactual ablation (m(∅) from the counterfactual run) and mean ablation (m(∅) patched
    // as a mask of its own), batches of 4 (a short last one) and two masks a pass.
    let clean: Vec<Vec<u32>> = pairs[..3].iter().map(|p| p.clean.clone()).collect();
    let mean_ablation = Ablation::fit(AblationKind::Mean, &model.model, &clean, 2, &Default::default()).unwrap();
    assert!(matches!(mean_ablation, Ablation::Mean(_)));
    for ablation in [Ablation::Counterfactual, mean_ablation] {
        let options = EvalOptions { batch_size: 4, masks_per_pass: 2, ..EvalOptions::default() };
        let r = evaluate_circuits(&model.model, &graph, &pairs, &[&full, &empty, &full], &ablation, options, &mut |_, _| {}).unwrap();
        assert_eq!((r.full_per_pair.len(), r.empty_per_pair.len(), r.circuits_per_pair.len()), (pairs.len(), pairs.len(), 3));
        assert!((mean(&r.full_per_pair) - r.m_full).abs() < 1e-9 && (mean(&r.empty_per_pair) - r.m_empty).abs() < 1e-9);
        for (values, m) in r.circuits_per_pair.iter().zip(&r.m_circuits) {
            assert_eq!(values.len(), pairs.len());
            assert!((mean(values) - m).abs() < 1e-9);
        }
        // In pair order: the full circuit is the model, pair by pair.
        for (a, b) in r.circuits_per_pair[0].iter().zip(&r.full_per_pair) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
        assert_eq!(r.circuits_per_pair[0], r.circuits_per_pair[2], "one circuit twice, the same values");
    }
}

#[test]
fn the_pipeline_gives_intervals_on_every_point_and_on_cpr_and_cmd() {
    let model = tiny();
    let graph = graph_of(&model);
    let pairs = pairs();
    let scores = random_scores(&graph, 4);
    let fractions = [0.01, 0.1, 0.5, 1.0];
    let run = |bootstrap| {
        let plan = EvalPlan { fractions: &fractions, options: EvalOptions { batch_size: 2, ..EvalOptions::default() }, bootstrap };
        evaluate_candidates(&model.model, &graph, &pairs, Candidates::Scores(&scores.values), &Ablation::Counterfactual, plan, &mut |_, _| {}).unwrap().curves
    };
    let curves = run(Bootstrap { resamples: 200, seed: 1 });
    assert_eq!(curves, run(Bootstrap { resamples: 200, seed: 1 }), "seeded: the same intervals");
    let record = curves.resampling.unwrap();
    assert_eq!((record.resamples, record.seed, record.undefined), (200, 1, 0));
    let (cpr, cmd) = (curves.cpr_interval.unwrap(), curves.cmd_interval.unwrap());
    assert!(cpr.low <= cpr.high && cmd.low <= cmd.high, "{cpr:?} {cmd:?}");
    for p in &curves.curve {
        let i = p.faithfulness_interval.unwrap_or_else(|| panic!("{p:?} has no interval"));
        assert!(i.low <= i.high, "{p:?}");
        if p.fraction == 1.0 {
            // The full circuit is the model on every pair: f = 1 in every resample.
            assert!((i.low - 1.0).abs() < 1e-3 && (i.high - 1.0).abs() < 1e-3, "{p:?}");
        }
    }
    assert!(curves.curve.iter().any(|p| p.kind == CurveKind::Absolute));
    // The point estimates do not depend on the resampling; no resamples, no intervals.
    let none = run(Bootstrap { resamples: 0, seed: 1 });
    assert_eq!((none.cpr, none.cmd), (curves.cpr, curves.cmd));
    assert!(none.cpr_interval.is_none() && none.cmd_interval.is_none() && none.resampling.is_none());
    assert!(none.curve.iter().all(|p| p.faithfulness_interval.is_none()));
    // Cell files written before intervals still parse: the fields default to none.
    let mut json = serde_json::to_value(&curves).unwrap();
    let object = json.as_object_mut().unwrap();
    for key in ["cpr_interval", "cmd_interval", "resampling"] {
        object.remove(key);
    }
    for p in object["curve"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("faithfulness_interval");
    }
    let old: evaluator::Curves = serde_json::from_value(json).unwrap();
    assert_eq!((old.cpr, old.cpr_interval, old.curve[0].faithfulness_interval), (curves.cpr, None, None));
}

#[test]
fn given_circuits_get_intervals_from_their_one_curve() {
    let model = tiny();
    let graph = graph_of(&model);
    let pairs = pairs();
    let circuits = [EdgeMatrix::filled(graph, false), graph.real_edge_mask()];
    let plan = EvalPlan { fractions: &[0.5, 1.0], options: EvalOptions::default(), bootstrap: Bootstrap { resamples: 100, seed: 5 } };
    let curves =
        evaluate_candidates(&model.model, &graph, &pairs, Candidates::Circuits(&circuits), &Ablation::Counterfactual, plan, &mut |_, _| {}).unwrap().curves;
    assert!(curves.curve.iter().all(|p| p.kind == CurveKind::Given && p.faithfulness_interval.is_some()));
    // f = (0, 1) in every resample: CPR = 0.5 · (0 + 1) / 2 and CMD = 0.5 · (1 + 0) / 2, intervals of no width.
    for (interval, want) in [(curves.cpr_interval.unwrap(), 0.25), (curves.cmd_interval.unwrap(), 0.25)] {
        assert!((interval.low - want).abs() < 1e-3 && (interval.high - want).abs() < 1e-3, "{interval:?}");
    }
}
