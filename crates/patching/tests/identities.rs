//! Identities of the patched forward pass (mib-spec §2): keeping every edge reproduces the clean
//! run, ablating every edge under counterfactual patching reproduces the counterfactual run, and
//! ablating only the edges into one destination changes only what that destination reads.

use burn::tensor::Tensor;
use graph::{EdgeMatrix, Graph, GraphShape};
use patching::{Ablation, AblationKind, EdgeMasks, PatchHooks, record_nodes};
use transformer::{Batch, CpuBackend, Hooks, LoadedModel, LocalModel, Readout};

type B = CpuBackend;

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn graph_of(model: &LoadedModel<B>) -> Graph {
    let c = &model.model.config;
    Graph::new(GraphShape { n_layers: c.n_layers, n_heads: c.n_heads }).unwrap()
}

fn tiny() -> LoadedModel<B> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transformer/tests/fixtures/llama-tiny");
    LocalModel::Dir(dir).load(&Default::default()).unwrap()
}

fn smollm2() -> LoadedModel<B> {
    transformer::load_model("smollm2-135m", &Default::default()).unwrap()
}

/// IOI-style clean / counterfactual prompt pairs of equal token length.
fn ioi_pairs(model: &LoadedModel<B>) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let pairs = [
        ("When Mary and John went to the store, John gave a drink to", "When Mary and John went to the store, Mary gave a drink to"),
        ("After Tom and Anna went to the park, Anna gave a ball to", "After Tom and Anna went to the park, Tom gave a ball to"),
    ];
    let enc = |s: &str| model.tokenizer.encode(s).unwrap();
    let clean: Vec<_> = pairs.iter().map(|p| enc(p.0)).collect();
    let corrupt: Vec<_> = pairs.iter().map(|p| enc(p.1)).collect();
    for (c, k) in clean.iter().zip(&corrupt) {
        assert_eq!(c.len(), k.len());
    }
    (clean, corrupt)
}

/// Last-token logits of `clean` patched with one mask per replica, [replicas × pairs, vocab].
fn patched(model: &LoadedModel<B>, clean: &[Vec<u32>], corrupt: &[Vec<u32>], masks: &[&EdgeMatrix<bool>], kind: AblationKind) -> Vec<f32> {
    let device = Default::default();
    let cfg = &model.model.config;
    let graph = graph_of(model);
    let ablation = Ablation::fit(kind, &model.model, clean, 8, &device).unwrap();
    let corrupt_batch = Batch::new(corrupt, cfg, &device).unwrap();
    let ablated = ablation.ablated_nodes(&model.model, &corrupt_batch).unwrap();
    let replicated: Vec<Vec<u32>> = masks.iter().flat_map(|_| clean.iter().cloned()).collect();
    let batch = Batch::new(&replicated, cfg, &device).unwrap();
    let mut hooks = PatchHooks::new(graph, &EdgeMasks::from_bools(&graph, masks, &device), ablated);
    values(model.model.forward_with(&batch, &Readout::ReadPosition, &mut hooks))
}

fn plain(model: &LoadedModel<B>, seqs: &[Vec<u32>]) -> Vec<f32> {
    let batch = Batch::new(seqs, &model.model.config, &Default::default()).unwrap();
    values(model.model.forward(&batch, &Readout::ReadPosition))
}

fn check_identities(model: &LoadedModel<B>, clean: &[Vec<u32>], corrupt: &[Vec<u32>]) {
    let graph = graph_of(model);
    let keep_all = graph.real_edge_mask();
    let ablate_all = EdgeMatrix::filled(graph, false);
    let want_clean = plain(model, clean);
    let want_corrupt = plain(model, corrupt);

    let got = patched(model, clean, corrupt, &[&keep_all, &ablate_all], AblationKind::Counterfactual);
    let (kept, ablated) = got.split_at(want_clean.len());
    let d_clean = max_abs_diff(kept, &want_clean);
    let d_corrupt = max_abs_diff(ablated, &want_corrupt);
    assert!(d_clean < 1e-4, "no edge ablated differs from the clean run by {d_clean}");
    assert!(d_corrupt < 1e-4, "every edge ablated differs from the counterfactual run by {d_corrupt}");
    assert!(max_abs_diff(&want_clean, &want_corrupt) > 0.1, "the pair must differ for the test to mean anything");

    // Only the edges into logits ablated: the final residual becomes the counterfactual's.
    let mut logits_only = keep_all.clone();
    let logits_col = graph.n_bwd() - 1;
    for f in 0..graph.n_fwd() {
        logits_only[(f, logits_col)] = false;
    }
    let got = patched(model, clean, corrupt, &[&logits_only], AblationKind::Counterfactual);
    let diff = max_abs_diff(&got, &want_corrupt);
    assert!(diff < 1e-4, "ablating the logits' inputs differs from the counterfactual run by {diff}");
}

#[test]
fn tiny_model_identities() {
    let model = tiny();
    let clean = vec![vec![5, 17, 42, 8, 3], vec![9, 9, 4, 60, 2]];
    let corrupt = vec![vec![5, 30, 42, 8, 3], vec![9, 11, 4, 61, 2]];
    check_identities(&model, &clean, &corrupt);
}

#[test]
fn smollm2_identities() {
    let model = smollm2();
    let (clean, corrupt) = ioi_pairs(&model);
    check_identities(&model, &clean, &corrupt);
}

/// Replaces every node's output by its ablated value: with every edge ablated, the patched run
/// must equal this (mean and zero ablations have no counterfactual run to compare with).
struct ReplaceOutputs {
    ablated: Tensor<B, 4>, // [n_fwd, pairs, pos, d]
    next: usize,
}

impl ReplaceOutputs {
    fn take(&mut self, k: usize) -> Tensor<B, 4> {
        let [_, b, t, d] = self.ablated.dims();
        let out = self.ablated.clone().slice([self.next..self.next + k, 0..b, 0..t, 0..d]);
        self.next += k;
        out
    }
}

impl Hooks<B> for ReplaceOutputs {
    fn wants_head_outputs(&self) -> bool {
        true
    }
    fn input_output(&mut self, _e: Tensor<B, 3>) -> Tensor<B, 3> {
        self.take(1).squeeze_dim(0)
    }
    fn head_outputs(&mut self, _l: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        self.take(heads.dims()[2]).permute([1, 2, 0, 3])
    }
    fn mlp_output(&mut self, _l: usize, _o: Tensor<B, 3>) -> Tensor<B, 3> {
        self.take(1).squeeze_dim(0)
    }
}

#[test]
fn mean_and_zero_ablation_of_every_edge_equals_replacing_every_node() {
    let model = tiny();
    let device = Default::default();
    let clean = vec![vec![5, 17, 42, 8, 3], vec![9, 9, 4, 60, 2], vec![1, 2, 3, 4, 5]];
    let graph = graph_of(&model);
    let none = EdgeMatrix::filled(graph, false);
    for kind in [AblationKind::Mean, AblationKind::MeanPositional, AblationKind::Zero] {
        let got = patched(&model, &clean, &clean, &[&none], kind);
        let ablation = Ablation::fit(kind, &model.model, &clean, 2, &device).unwrap();
        let batch = Batch::new(&clean, &model.model.config, &device).unwrap();
        let ablated = ablation.ablated_nodes(&model.model, &batch).unwrap();
        let mut replace = ReplaceOutputs { ablated, next: 0 };
        let want = values(model.model.forward_with(&batch, &Readout::ReadPosition, &mut replace));
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-4, "{kind}: every edge ablated vs every node replaced differ by {diff}");
    }
}

#[test]
fn means_are_averages_over_real_tokens() {
    let model = tiny();
    let device = Default::default();
    let seqs = vec![vec![5, 17, 42], vec![9, 9, 4, 60, 2]];
    let Ablation::MeanPositional(pos) = Ablation::fit(AblationKind::MeanPositional, &model.model, &seqs, 1, &device).unwrap() else {
        panic!("mean-positional");
    };
    let Ablation::Mean(mean) = Ablation::fit(AblationKind::Mean, &model.model, &seqs, 2, &device).unwrap() else {
        panic!("mean");
    };
    // Independently: record each prompt alone and average.
    let nodes: Vec<Tensor<B, 4>> =
        seqs.iter().map(|s| record_nodes(&model.model, &Batch::new(std::slice::from_ref(s), &model.model.config, &device).unwrap()).1).collect();
    let [n, _, _, d] = nodes[0].dims();
    let at = |i: usize, p: usize| -> Vec<f32> { values(nodes[i].clone().slice([0..n, 0..1, p..p + 1, 0..d])) };
    let pos_v = values(pos.clone());
    let pos_at = |p: usize| -> Vec<f32> { (0..n).flat_map(|k| pos_v[(k * 5 + p) * d..(k * 5 + p + 1) * d].to_vec()).collect() };
    // Position 1: both prompts; position 4: only the longer one.
    let both: Vec<f32> = at(0, 1).iter().zip(at(1, 1)).map(|(a, b)| (a + b) / 2.0).collect();
    assert!(max_abs_diff(&pos_at(1), &both) < 1e-5);
    assert!(max_abs_diff(&pos_at(4), &at(1, 4)) < 1e-5);
    let mut total = vec![0.0f32; n * d];
    for (i, s) in seqs.iter().enumerate() {
        for p in 0..s.len() {
            for (t, v) in total.iter_mut().zip(at(i, p)) {
                *t += v / 8.0;
            }
        }
    }
    assert!(max_abs_diff(&values(mean), &total) < 1e-5);
}

#[test]
fn sparse_forms_of_hard_masks_equal_the_dense_form() {
    let model = tiny();
    let device = Default::default();
    let graph = graph_of(&model);
    let clean = [vec![5, 17, 42, 8, 3], vec![9, 9, 4, 60, 2]];
    let corrupt = vec![vec![5, 30, 42, 8, 3], vec![9, 11, 4, 61, 2]];
    let cfg = &model.model.config;
    let ablated = Ablation::<B>::Counterfactual.ablated_nodes(&model.model, &Batch::new(&corrupt, cfg, &device).unwrap()).unwrap();
    // Masks keeping few, about half, and most edges, so both sparse forms and every term kind run.
    let n_bwd = graph.n_bwd();
    let masks: Vec<EdgeMatrix<bool>> = [7usize, 2, 1]
        .iter()
        .map(|&every| EdgeMatrix::from_fn(graph, |f, b| (f * n_bwd + b).is_multiple_of(every) || (every == 1 && !(f * n_bwd + b).is_multiple_of(13))))
        .collect();
    let refs: Vec<&EdgeMatrix<bool>> = masks.iter().collect();
    let rows: Vec<Vec<u32>> = refs.iter().flat_map(|_| clean.iter().cloned()).collect();
    let batch = Batch::new(&rows, cfg, &device).unwrap();
    let hard = EdgeMasks::from_bools(&graph, &refs, &device);
    let soft = EdgeMasks::from_tensor(hard.keep.clone());
    let run = |masks: &EdgeMasks<B>| {
        let mut hooks = PatchHooks::new(graph, masks, ablated.clone());
        values(model.model.forward_with(&batch, &Readout::ReadPosition, &mut hooks))
    };
    let diff = max_abs_diff(&run(&hard), &run(&soft));
    assert!(diff < 1e-4, "sparse and dense patching differ by {diff}");
}

/// Hook composition: a recorder beside the patcher, in either order, leaves the patched run as it
/// is; placed after the patcher it records the patched run's node outputs and what attention read.
#[test]
fn a_recorder_beside_the_patcher_sees_the_patched_run() {
    let model = tiny();
    let device = Default::default();
    let graph = graph_of(&model);
    let cfg = &model.model.config;
    let clean = vec![vec![5, 17, 42, 8, 3], vec![9, 9, 4, 60, 2]];
    let corrupt = vec![vec![5, 30, 42, 8, 3], vec![9, 11, 4, 61, 2]];
    let batch = Batch::new(&clean, cfg, &device).unwrap();
    let ablated = Ablation::<B>::Counterfactual.ablated_nodes(&model.model, &Batch::new(&corrupt, cfg, &device).unwrap()).unwrap();
    let n_bwd = graph.n_bwd();
    let mask = EdgeMatrix::from_fn(graph, |f, b| !(f * n_bwd + b).is_multiple_of(3));
    let masks = EdgeMasks::from_bools(&graph, &[&mask], &device);
    let patcher = || PatchHooks::new(graph, &masks, ablated.clone());
    let alone = values(model.model.forward_with(&batch, &Readout::ReadPosition, &mut patcher()));
    let clean_nodes = values(record_nodes(&model.model, &batch).1);

    let (mut first, mut recorder) = (patcher(), patching::NodeRecorder::default());
    let logits = values(model.model.forward_with(&batch, &Readout::ReadPosition, &mut (&mut first, &mut recorder)));
    assert_eq!(logits, alone, "a recorder after the patcher changes nothing");
    let recorded = values(recorder.into_nodes());
    let d = recorded.len() / (graph.n_fwd() * clean.len() * clean[0].len());
    let input = clean.len() * clean[0].len() * d;
    assert_eq!(recorded[..input], clean_nodes[..input], "the token embedding is never patched");
    assert!(max_abs_diff(&recorded, &clean_nodes) > 1e-3, "the recorder sees the patched run's node outputs");

    let (mut trace, mut second) = (transformer::Trace::new(cfg.n_heads), patcher());
    let logits = values(model.model.forward_with(&batch, &Readout::ReadPosition, &mut (&mut trace, &mut second)));
    let diff = max_abs_diff(&logits, &alone);
    assert!(diff < 1e-5, "the patcher behind a hook that splits attention per head still patches ({diff})");
    let (mut third, mut after) = (patcher(), transformer::Trace::new(cfg.n_heads));
    let _ = model.model.forward_with(&batch, &Readout::ReadPosition, &mut (&mut third, &mut after));
    let read = |t: &transformer::Trace<B>| match &t.attention_inputs[1] {
        transformer::AttentionInput::PerHead { q, .. } => values(q.clone()),
        transformer::AttentionInput::Shared(resid) => values(resid.clone()),
    };
    assert!(max_abs_diff(&read(&trace), &read(&after)) > 1e-3, "before the patcher a trace sees the unpatched input, after it the patched one");
}
