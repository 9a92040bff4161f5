//! The true edge sets of the committed tracr models: the stored files equal what the weights and
//! datasets give, the sets agree with the peers' published circuits, the thresholds sit in wide
//! gaps, and bad files are refused by name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use graph::{EdgeMatrix, Graph, GraphShape};
use groundtruth::{
    ACTIVATION_TOLERANCE, FILE_NAME, GroundTruthError, TrueEdges, WEIGHT_ZERO, close_paths, compute_dir, tracr_dirs, writer_differences, writer_dims,
};
use tasks::tracr::TracrTask;
use transformer::load::task_models_dir;
use transformer::tracr::TracrConfig;
use transformer::{CpuBackend, LocalModel, Transformer};

fn model_dir(name: &str) -> PathBuf {
    task_models_dir().join(name)
}

fn load(dir: &Path) -> Transformer<CpuBackend> {
    LocalModel::Dir(dir.to_path_buf()).load::<CpuBackend>(&Default::default()).unwrap().model
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn names(edges: &TrueEdges, which: &EdgeMatrix<bool>) -> BTreeSet<String> {
    edges.names(which).into_iter().collect()
}

#[test]
fn stored_files_equal_the_recomputed_sets() {
    let dirs = tracr_dirs(&task_models_dir()).unwrap();
    assert!(dirs.len() >= 6, "six or more compiled programs are committed, found {dirs:?}");
    for dir in dirs {
        let computed = compute_dir(&dir).unwrap();
        let stored = TrueEdges::read(&dir).unwrap_or_else(|e| panic!("{e} (regenerate: cargo test --release -p groundtruth -- --ignored)"));
        for (which, s, c) in [
            ("structural", &stored.structural, &computed.structural),
            ("patching", &stored.patching, &computed.patching),
            ("plumbing", &stored.plumbing, &computed.plumbing),
        ] {
            assert_eq!(stored.names(s), computed.names(c), "{}: stored {which} edges differ from the recomputed ones", dir.display());
        }
        assert_eq!(stored, computed, "{}: stored true edges differ from the recomputed ones", dir.display());
        let text = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap();
        assert_eq!(text, computed.to_json_string().unwrap(), "{}: the file is not as written", dir.display());
        // Plumbing never differs between clean and corrupt inputs.
        for (e, on) in computed.plumbing.edge_values() {
            assert!(!*on || !computed.patching[e], "{}: plumbing edge {e:?} is in the patching set", computed.program);
        }
        // Every set is a sub-set of the structural one, and every path set is closed.
        for (e, on) in computed.patching.edge_values().chain(computed.plumbing.edge_values()) {
            assert!(!*on || computed.structural[e], "{}: {e:?} is not structural", computed.program);
        }
        assert_eq!(close_paths(computed.graph, &computed.structural), computed.structural);
        assert_eq!(close_paths(computed.graph, &computed.patching), computed.patching);
    }
}

/// Regenerates every committed `true_edges.json`:
/// `cargo test --release -p groundtruth -- --ignored write_committed_true_edges`.
#[test]
#[ignore = "writes models/tracr-*/true_edges.json"]
fn write_committed_true_edges() {
    for path in groundtruth::write_all(&task_models_dir()).unwrap() {
        println!("wrote {}", path.display());
    }
}

#[test]
fn reverse_matches_the_peers_circuits() {
    let edges = compute_dir(&model_dir("tracr-reverse")).unwrap();
    let structural = set(&[
        "input->a0.h0<q>",
        "input->a0.h0<k>",
        "input->a0.h0<v>",
        "a0.h0->m0",
        "input->m0",
        "input->m1",
        "m0->m1",
        "m1->m2",
        "input->a3.h0<q>",
        "input->a3.h0<k>",
        "input->a3.h0<v>",
        "m2->a3.h0<q>",
        "a3.h0->logits",
    ]);
    assert_eq!(names(&edges, &edges.structural), structural);
    // AutoCircuit's official reverse circuit.
    assert_eq!(names(&edges, &edges.patching), set(&["input->a3.h0<v>", "a3.h0->logits"]));
    // ACDC's reverse circuit (10 edges) leaves out the q and k of the length head (a select with
    // the TRUE predicate reads nothing of its tokens) and the BOS-default `one` of a3's query.
    let acdc: BTreeSet<String> = &structural - &set(&["input->a0.h0<q>", "input->a0.h0<k>", "input->a3.h0<q>"]);
    assert_eq!(acdc.len(), 10);
    // The label rule tags only edges that share nothing but `one` / `tokens:BOS`; the length head's
    // q and k also share the token directions, so they are not plumbing by it, while the value of
    // the length head (BOS) and m0's `one` are, though ACDC keeps them.
    let plumbing = set(&["input->a0.h0<v>", "input->m0", "input->a3.h0<q>"]);
    assert_eq!(names(&edges, &edges.plumbing), plumbing);
    let left_out_by_acdc = &structural - &acdc;
    assert_eq!(&plumbing & &left_out_by_acdc, set(&["input->a3.h0<q>"]));
    let shared = |name: &str| edges.shared[&edges.graph.parse_edge_name(name).unwrap()].clone();
    assert_eq!(shared("input->a3.h0<q>"), ["one"]);
    assert_eq!(shared("input->a0.h0<v>"), ["tokens:BOS"]);
    assert_eq!(shared("a3.h0->logits"), ["reverse_1:1", "reverse_1:2", "reverse_1:3"]);
}

#[test]
fn xproportion_matches_the_peers_circuits() {
    let edges = compute_dir(&model_dir("tracr-xproportion")).unwrap();
    // ACDC's and AutoCircuit's acdc edges.
    let structural = set(&["input->m0", "input->a1.h0<q>", "input->a1.h0<k>", "m0->a1.h0<v>", "a1.h0->logits"]);
    assert_eq!(names(&edges, &edges.structural), structural);
    // AutoCircuit's official circuit.
    assert_eq!(names(&edges, &edges.patching), set(&["input->m0", "m0->a1.h0<v>", "a1.h0->logits"]));
    assert!(names(&edges, &edges.plumbing).is_empty());
}

#[test]
fn hist_drops_the_bos_value_and_the_mlps_bookkeeping_under_patching() {
    let edges = compute_dir(&model_dir("tracr-hist")).unwrap();
    let structural = set(&["input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h0<v>", "a0.h0->m0", "input->m0", "m0->logits"]);
    assert_eq!(names(&edges, &edges.structural), structural);
    assert_eq!(names(&edges, &edges.patching), &structural - &set(&["input->a0.h0<v>", "input->m0"]));
    assert_eq!(names(&edges, &edges.plumbing), set(&["input->a0.h0<v>", "input->m0"]));
}

#[test]
fn sort_patching_set_is_the_data_path() {
    let edges = compute_dir(&model_dir("tracr-sort")).unwrap();
    assert_eq!(edges.structural.count_edges(), 13);
    let patching = set(&["input->m0", "m0->a1.h0<q>", "m0->a1.h0<k>", "a1.h0->m1", "m1->a2.h0<k>", "input->a2.h0<v>", "a2.h0->logits"]);
    assert_eq!(names(&edges, &edges.patching), patching);
    let plumbing = set(&["input->a1.h0<q>", "input->a1.h0<k>", "input->a1.h0<v>", "input->m1", "input->a2.h0<k>"]);
    assert_eq!(names(&edges, &edges.plumbing), plumbing);
    // The structural edges are the data path, the plumbing and the query's positions.
    assert_eq!(names(&edges, &edges.structural), &(&patching | &plumbing) | &set(&["input->a2.h0<q>"]));
}

#[test]
fn the_other_programs_sets_are_as_computed_when_this_was_written() {
    let sizes = |name: &str| {
        let e = compute_dir(&model_dir(name)).unwrap();
        (e.structural.count_edges(), e.patching.count_edges(), e.plumbing.count_edges())
    };
    assert_eq!(sizes("tracr-sort-unique"), (10, 6, 3));
    assert_eq!(sizes("tracr-pair-balance"), (10, 6, 0));
}

/// Every weight of every committed model is an exact zero or at least 1e3 × the threshold, so the
/// structural sets do not depend on where in that gap the threshold sits.
#[test]
fn weight_threshold_sits_in_a_wide_gap() {
    for dir in tracr_dirs(&task_models_dir()).unwrap() {
        let model = load(&dir);
        let mut params: Vec<Vec<f32>> = vec![model.token_embedding.val().into_data().to_vec().unwrap()];
        params.extend(model.position_embedding.iter().map(|p| p.val().into_data().to_vec().unwrap()));
        params.extend(model.unembedding.iter().map(|p| p.val().into_data().to_vec().unwrap()));
        for block in &model.blocks {
            for linear in [&block.attn.q, &block.attn.k, &block.attn.v, &block.attn.o, block.mlp.down()] {
                params.push(linear.weight.val().into_data().to_vec().unwrap());
            }
            if let transformer::layers::Mlp::Relu(mlp) = &block.mlp {
                params.push(mlp.fc_in.weight.val().into_data().to_vec().unwrap());
            }
        }
        let smallest = params.iter().flatten().map(|w| w.abs()).filter(|&w| w != 0.0).fold(f32::INFINITY, f32::min);
        assert!(smallest >= 1e3 * WEIGHT_ZERO, "{}: a weight of magnitude {smallest}", dir.display());
    }
}

/// Every structural edge's largest clean/corrupt difference over its shared dimensions is below
/// 1e-5 (float noise) or above 1e-2, so the tolerance (1e-3) decides nothing close.
#[test]
fn activation_tolerance_sits_in_a_wide_gap() {
    const { assert!(1e-5 < ACTIVATION_TOLERANCE && ACTIVATION_TOLERANCE < 1e-2) };
    for dir in tracr_dirs(&task_models_dir()).unwrap() {
        let model = load(&dir);
        let config = TracrConfig::read(&dir.join("config.json")).unwrap();
        let edges = compute_dir(&dir).unwrap();
        let differences = writer_differences(&model, edges.graph, &TracrTask::load(&dir).unwrap().examples).unwrap();
        for (&(fwd, bwd), labels) in &edges.shared {
            let largest = labels.iter().map(|l| differences[fwd][config.residual_labels.iter().position(|x| x == l).unwrap()]).fold(0f32, f32::max);
            let name = edges.graph.edge_name(fwd, bwd).unwrap();
            assert!(!(1e-5..=1e-2).contains(&largest), "{}: {name} differs by {largest}", edges.program);
        }
    }
}

#[test]
fn the_input_writes_the_token_and_position_directions() {
    let dir = model_dir("tracr-xproportion");
    let model = load(&dir);
    let config = TracrConfig::read(&dir.join("config.json")).unwrap();
    let graph = Graph::new(GraphShape { n_layers: 2, n_heads: 1 }).unwrap();
    let input: Vec<&str> = writer_dims(&model, graph).unwrap()[0].iter().map(|&d| config.residual_labels[d].as_str()).collect();
    // `one` is part of the token embedding (every token writes it).
    let expected =
        ["indices:0", "indices:1", "indices:2", "indices:3", "indices:4", "one", "tokens:BOS", "tokens:PAD", "tokens:w", "tokens:x", "tokens:y", "tokens:z"];
    assert_eq!(input, expected);
}

#[test]
fn close_paths_keeps_only_input_to_logits_paths() {
    let graph = Graph::new(GraphShape { n_layers: 2, n_heads: 1 }).unwrap();
    let mut candidates = EdgeMatrix::filled(graph, false);
    let mut on = |name: &str| candidates[graph.parse_edge_name(name).unwrap()] = true;
    for name in ["input->a0.h0<v>", "a0.h0->m1", "m1->logits", "input->m0", "a1.h0->logits", "input->a1.h0<q>", "m0->a1.h0<k>"] {
        on(name);
    }
    // m0 feeds only a1.h0, which reaches logits: kept. Nothing else dangles.
    let kept = close_paths(graph, &candidates);
    assert_eq!(kept, candidates);
    // Without a1.h0's output, its inputs and m0's lead nowhere.
    candidates[graph.parse_edge_name("a1.h0->logits").unwrap()] = false;
    let kept = close_paths(graph, &candidates);
    let kept_names: BTreeSet<String> = kept.edge_values().filter(|(_, on)| **on).map(|((f, b), _)| graph.edge_name(f, b).unwrap()).collect();
    assert_eq!(kept_names, set(&["input->a0.h0<v>", "a0.h0->m1", "m1->logits"]));
    // A writer nothing feeds is cut too.
    let mut orphan = EdgeMatrix::filled(graph, false);
    orphan[graph.parse_edge_name("a0.h0->logits").unwrap()] = true;
    assert_eq!(close_paths(graph, &orphan).count_edges(), 0);
}

#[test]
fn compute_refuses_a_graph_the_model_does_not_have_and_an_empty_dataset() {
    let dir = model_dir("tracr-hist");
    let model = load(&dir);
    let config = TracrConfig::read(&dir.join("config.json")).unwrap();
    let examples = TracrTask::load(&dir).unwrap().examples;
    let wrong = Graph::new(GraphShape { n_layers: 2, n_heads: 1 }).unwrap();
    let err = TrueEdges::compute(&model, wrong, &config, &examples).unwrap_err();
    assert!(matches!(err, GroundTruthError::Mismatch(_)) && err.to_string().contains("layers"), "{err}");
    let graph = Graph::new(GraphShape { n_layers: 1, n_heads: 1 }).unwrap();
    let err = TrueEdges::compute(&model, graph, &config, &[]).unwrap_err();
    assert!(err.to_string().contains("no dataset pair"), "{err}");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("groundtruth-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn write_then_read_round_trips_and_leaves_no_temporary() {
    let edges = compute_dir(&model_dir("tracr-reverse")).unwrap();
    let dir = temp_dir("round-trip");
    let path = edges.write(&dir).unwrap();
    assert_eq!(path, dir.join(FILE_NAME));
    assert_eq!(TrueEdges::read(&dir).unwrap(), edges);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [FILE_NAME]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_files_are_refused_naming_the_file() {
    let dir = temp_dir("bad");
    let path = dir.join(FILE_NAME);
    let err = TrueEdges::read(&dir).unwrap_err();
    assert!(matches!(err, GroundTruthError::Io { .. }) && err.to_string().contains(FILE_NAME), "{err}");
    let good = compute_dir(&model_dir("tracr-xproportion")).unwrap().to_json_string().unwrap();
    let cases: [(String, &str); 7] = [
        ("{".into(), "malformed"),
        (good.replace("\"program\"", "\"programme\""), "unknown field"),
        (good.replace("\"patching\": [", "\"patching\": [\n    \"input->a1.h0<v>\","), "is not a structural edge"),
        (good.replacen("\"input->m0\",", "\"a1.h0->m0\",", 1), "not an edge"),
        (good.replace("\"patching\": [", "\"patching\": [\n    \"input->m0\","), "is listed twice"),
        (good.replace("\"plumbing\": []", "\"plumbing\": [\"input->a2.h0<q>\"]"), "outside a model"),
        (good.replace("\"n_layers\": 2", "\"n_layers\": 1"), "outside a model"),
    ];
    for (text, expected) in cases {
        assert_ne!(text, good, "the case must change the file ({expected})");
        let err = TrueEdges::from_json_str(&text, &path).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()) && message.contains(expected), "expected {expected:?}: {message}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
