//! The MIB shared-task selections built from other methods: bootstrapped scores (resamples, the
//! per-pair shortcut against rerunning the method on a resample, the preferred-edge rule) and
//! score ensembles (normalisation, mean / min / max), their names, and both run end to end.

use attribution::bootstrap::{RESAMPLES, bootstrap_scores, mean_and_std, preferred_edges, resample_counts, resample_scores};
use attribution::ensemble::{Combine, combine, normalise};
use attribution::gradient::GradientMethod;
use attribution::{Discovery, EdgeScores, Method, MethodError, MethodOutput, run_method};
use burn::backend::Autodiff;
use graph::{EdgeMatrix, Graph, GraphShape};
use patching::{Ablation, Metric, Positions};
use tasks::PreparedPair;
use transformer::{CpuBackend, LocalModel, Transformer};

type AD = Autodiff<CpuBackend>;

fn tiny() -> Transformer<AD> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transformer/tests/fixtures/gpt2-tiny");
    LocalModel::Dir(dir).load::<AD>(&Default::default()).unwrap().model
}

fn graph_of(m: &Transformer<AD>) -> Graph {
    Graph::new(GraphShape { n_layers: m.config.n_layers, n_heads: m.config.n_heads }).unwrap()
}

/// Five pairs of one length (no padding), so batched and single-pair runs sum the same numbers.
fn pairs() -> Vec<PreparedPair> {
    let pair =
        |clean: [u32; 4], cf: [u32; 4], correct, incorrect| PreparedPair { clean: clean.to_vec(), counterfactual: cf.to_vec(), correct, incorrect, read: None };
    vec![
        pair([5, 17, 42, 8], [5, 30, 42, 8], 10, 20),
        pair([9, 4, 60, 2], [9, 11, 60, 2], 33, 44),
        pair([70, 71, 72, 73], [70, 12, 72, 73], 3, 4),
        pair([1, 2, 3, 4], [1, 2, 50, 4], 7, 8),
        pair([21, 22, 23, 24], [25, 22, 23, 24], 11, 12),
    ]
}

fn discovery<'a>(model: &'a Transformer<AD>, graph: &'a Graph, pairs: &'a [PreparedPair]) -> Discovery<'a, AD> {
    Discovery {
        model,
        graph,
        pairs,
        ablation: &Ablation::Counterfactual,
        metric: Metric::LogitDifference,
        batch_size: 3,
        edges_per_pass: 16,
        fractions: &[],
        positions: Positions::Suffix,
    }
}

fn scores_of(output: MethodOutput) -> EdgeScores {
    match output {
        MethodOutput::Scores(s) => s,
        MethodOutput::Circuits(_) => panic!("a score method"),
    }
}

fn max_abs_diff(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, &y)| (x - y as f64).abs()).fold(0.0, f64::max)
}

#[test]
fn resamples_are_seeded_and_of_the_discovery_size() {
    let a = resample_counts(7, 4, 3);
    assert_eq!(a, resample_counts(7, 4, 3));
    assert_ne!(a, resample_counts(7, 4, 4));
    assert_eq!(a.len(), 4);
    for counts in &a {
        assert_eq!(counts.len(), 7);
        assert_eq!(counts.iter().sum::<u32>(), 7, "n draws per resample");
    }
    // With replacement: some pair is drawn twice in some resample.
    assert!(a.iter().flatten().any(|&k| k > 1));
}

#[test]
fn a_resample_from_per_pair_runs_equals_rerunning_the_method_on_it() {
    let model = tiny();
    let graph = graph_of(&model);
    let pairs = pairs();
    let all = discovery(&model, &graph, &pairs);
    let counts = resample_counts(pairs.len(), 3, 11);
    for method in [Method::Gradient(GradientMethod::IgInputs { steps: 2 }), Method::Exact { edges: None }] {
        let (shortcut, passes) = resample_scores(&all, &method, &counts, &mut |_| {}).unwrap();
        assert!(passes.forward > 0);
        for (b, c) in counts.iter().enumerate() {
            // The resample itself: pair i repeated c[i] times, run as one discovery set.
            let drawn: Vec<PreparedPair> = pairs.iter().zip(c).flat_map(|(p, &k)| std::iter::repeat_n(p.clone(), k as usize)).collect();
            let rerun = scores_of(run_method(&method, &discovery(&model, &graph, &drawn), &mut |_| {}).unwrap());
            let scale = rerun.values.as_slice().iter().fold(1.0f32, |m, v| m.max(v.abs())) as f64;
            let diff = max_abs_diff(shortcut[b].as_slice(), rerun.values.as_slice());
            assert!(diff <= 1e-5 * scale, "{method:?} resample {b}: differs by {diff} (scores up to {scale})");
        }
    }
}

#[test]
fn bootstrap_is_deterministic_for_a_seed() {
    let model = tiny();
    let graph = graph_of(&model);
    let pairs = pairs();
    let d = discovery(&model, &graph, &pairs);
    let eap = Method::Gradient(GradientMethod::Eap(transformer::GradientRules::IDENTITY));
    let mut reports = Vec::new();
    let a = bootstrap_scores(&d, &eap, 4, 7, &mut |p| reports.push(p)).unwrap();
    assert_eq!(a, bootstrap_scores(&d, &eap, 4, 7, &mut |_| {}).unwrap());
    assert_ne!(a.values, bootstrap_scores(&d, &eap, 4, 8, &mut |_| {}).unwrap().values);
    let preferred = a.preferred.as_ref().expect("a bootstrap prefers edges");
    assert!(preferred.edge_values().any(|(_, &p)| p) && preferred.edge_values().any(|(_, &p)| !p), "some edges, not all");
    // One batch per pair alone, counted to the end.
    let last = reports.last().unwrap();
    assert_eq!((last.done, last.total), (pairs.len(), pairs.len()));
    // The method's own scores on all pairs are the mean of per-pair scores; the bootstrap mean
    // is near them, and its passes are one run's per pair.
    let plain = scores_of(run_method(&eap, &d, &mut |_| {}).unwrap());
    let scale = plain.values.as_slice().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(a.values.as_slice().iter().zip(plain.values.as_slice()).all(|(x, y)| (x - y).abs() <= scale), "within the scores' range");
    assert_eq!(a.passes.backward, pairs.len(), "one backward pass per pair");
}

#[test]
fn an_edge_is_preferred_when_its_interval_excludes_zero_on_its_side() {
    let graph = Graph::new(GraphShape { n_layers: 1, n_heads: 1 }).unwrap();
    let edges: Vec<(usize, usize)> = graph.edges().collect();
    // Per edge, its score in each of four resamples.
    let table: [[f64; 4]; 6] = [
        [1.0, 1.0, 1.0, 1.0],     // std 0, mean 1: preferred
        [1.0, -1.0, 1.0, -1.0],   // mean 0: never
        [2.0, 2.2, 1.8, 2.0],     // mean 2, half-width 1.96·0.163/2 = 0.16: preferred
        [-1.0, -0.1, -0.2, 0.1],  // mean −0.3, half-width 0.47: not
        [-3.0, -3.1, -2.9, -3.0], // negative and tight: preferred
        [0.0, 0.0, 0.0, 0.0],     // zero: never
    ];
    assert!(edges.len() >= table.len());
    let resamples: Vec<EdgeMatrix<f64>> = (0..4)
        .map(|b| {
            let mut m = EdgeMatrix::filled(graph, 0.0);
            for (e, row) in edges.iter().zip(&table) {
                m[*e] = row[b];
            }
            m
        })
        .collect();
    let (mean, std) = mean_and_std(&resamples).unwrap();
    assert!((mean[edges[2]] - 2.0).abs() < 1e-12);
    // ddof 1: Σ(x − 2)² = 0.08 over 3.
    assert!((std[edges[2]] - (0.08f64 / 3.0).sqrt()).abs() < 1e-12);
    assert!((std[edges[1]] - (4.0f64 / 3.0).sqrt()).abs() < 1e-12);
    let preferred = preferred_edges(&mean, &std, 4);
    let got: Vec<bool> = edges[..table.len()].iter().map(|&e| preferred[e]).collect();
    assert_eq!(got, [true, false, true, false, true, false]);
    assert!(matches!(mean_and_std(&resamples[..1]), Err(MethodError::TooFewResamples(1))));
}

#[test]
fn normalisation_scales_each_method_to_its_largest_magnitude() {
    let graph = Graph::new(GraphShape { n_layers: 1, n_heads: 1 }).unwrap();
    let edges: Vec<(usize, usize)> = graph.edges().collect();
    let mut s = EdgeMatrix::filled(graph, 0.0f32);
    s[edges[0]] = 2.0;
    s[edges[1]] = -4.0;
    s[edges[2]] = 1.0;
    let n = normalise(&s);
    assert_eq!([n[edges[0]], n[edges[1]], n[edges[2]]], [0.5, -1.0, 0.25], "divided by 4, signs kept");
    let zeros = EdgeMatrix::filled(graph, 0.0f32);
    assert_eq!(normalise(&zeros), zeros, "all zeros stay zeros");
}

#[test]
fn ensembles_combine_normalised_scores_by_mean_min_and_max() {
    let graph = Graph::new(GraphShape { n_layers: 1, n_heads: 1 }).unwrap();
    let e: Vec<(usize, usize)> = graph.edges().collect();
    let member = |values: [f32; 3]| {
        let mut m = EdgeMatrix::filled(graph, 0.0f32);
        for (edge, v) in e.iter().zip(values) {
            m[*edge] = v;
        }
        m
    };
    // Different units: normalised to [0.5, −1, 0.25] and [1, 0.5, −0.5].
    let members = [member([2.0, -4.0, 1.0]), member([0.1, 0.05, -0.05])];
    let at = |m: &EdgeMatrix<f32>| [m[e[0]], m[e[1]], m[e[2]]];
    let close = |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
    assert!(close(at(&combine(&members, Combine::Mean).unwrap()), [0.75, -0.25, -0.125]));
    assert!(close(at(&combine(&members, Combine::Min).unwrap()), [0.5, -1.0, -0.5]));
    assert!(close(at(&combine(&members, Combine::Max).unwrap()), [1.0, 0.5, 0.25]));
    // Every other edge is 0 in both members, so 0 combined.
    assert!(combine(&members, Combine::Max).unwrap().edge_values().skip(3).all(|(_, &v)| v == 0.0));
    assert!(matches!(combine(&[], Combine::Mean), Err(MethodError::EmptyEnsemble)));
    let other = EdgeMatrix::filled(Graph::new(GraphShape { n_layers: 2, n_heads: 1 }).unwrap(), 0.0f32);
    assert!(matches!(combine(&[members[0].clone(), other], Combine::Mean), Err(MethodError::EnsembleGraphs { member: 1 })));
}

#[test]
fn composite_names_parse_and_bad_ones_say_why() {
    let parse = |name: &str| Method::parse(name, 5, 9);
    match parse("bootstrap:eap-ig-inputs").unwrap() {
        Method::Bootstrap { method, resamples, seed } => {
            assert_eq!(*method, Method::Gradient(GradientMethod::IgInputs { steps: 5 }));
            assert_eq!((resamples, seed), (RESAMPLES, 9));
        }
        other => panic!("{other:?}"),
    }
    match parse("ensemble-min:eap+eap-ig-inputs+gim").unwrap() {
        Method::Ensemble { combine, members } => {
            assert_eq!(combine, Combine::Min);
            assert_eq!(members.len(), 3);
            assert_eq!(members[1], Method::Gradient(GradientMethod::IgInputs { steps: 5 }));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(parse("ensemble-max:random+ifr").unwrap(), Method::Ensemble { combine: Combine::Max, .. }));
    for (name, says) in [
        ("bootstrap:nope", "unknown method `nope`"),
        ("bootstrap:ifr", "`ifr` cannot be bootstrapped"),
        ("bootstrap:random", "`random` cannot be bootstrapped"),
        ("bootstrap:bootstrap:eap", "itself built from other methods"),
        ("bootstrap:ensemble-mean:eap+gim", "itself built from other methods"),
        ("ensemble-mean:", "lists no methods"),
        ("ensemble-mean:eap", "at least two methods"),
        ("ensemble-mean:eap+eap", "`eap` is listed twice"),
        ("ensemble-mean:eap+nope", "unknown method `nope`"),
        ("ensemble-mean:eap+", "unknown method ``"),
        ("ensemble-mean:eap+ensemble-min:gim+ifr", "itself built from other methods"),
        ("ensemble-mean:eap+bootstrap:gim", "itself built from other methods"),
        ("ensemble-median:eap+gim", "`median` is not a combiner"),
        ("ensemble-mean", "is `ensemble-<mean|min|max>:"),
    ] {
        let err = parse(name).unwrap_err().to_string();
        assert!(err.starts_with(&format!("`{name}`: ")) && err.contains(says), "{name}: {err}");
    }
    // A plain unknown name lists the composite forms too.
    assert!(parse("bootstrap").unwrap_err().to_string().contains("bootstrap:<method>"));
}

#[test]
fn composite_methods_run_end_to_end_on_a_tiny_model() {
    let model = tiny();
    let graph = graph_of(&model);
    let pairs = pairs();
    let d = discovery(&model, &graph, &pairs);
    let run = |name: &str| scores_of(run_method(&Method::parse(name, 2, 0).unwrap(), &d, &mut |_| {}).unwrap());

    let ensemble = run("ensemble-mean:eap+eap-ig-inputs+ifr");
    let members = ["eap", "eap-ig-inputs", "ifr"].map(run);
    let values: Vec<EdgeMatrix<f32>> = members.iter().map(|m| m.values.clone()).collect();
    assert_eq!(ensemble.values, combine(&values, Combine::Mean).unwrap());
    assert_eq!(ensemble.passes.forward, members.iter().map(|m| m.passes.forward).sum::<usize>());
    assert_eq!(ensemble.preferred, None);
    assert!(ensemble.values.edge_values().all(|(_, v)| v.abs() <= 1.0));

    let boot = run("bootstrap:eap-ig-inputs");
    let preferred = boot.preferred.expect("a bootstrap prefers edges");
    assert_eq!(preferred.graph(), graph);
    // Non-edges are never preferred.
    let n_preferred = preferred.as_slice().iter().filter(|&&p| p).count();
    assert_eq!(n_preferred, preferred.edge_values().filter(|(_, p)| **p).count());
}
