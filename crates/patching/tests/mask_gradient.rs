//! The mask-gradient fast path agrees with differentiating the general engine: ∂L/∂keep at keep = 1
//! from `MaskGradientHooks` equals the gradient of `PatchHooks`' keep-mask leaf, under plain and
//! GIM backward rules, on a GPT-2-style and a Llama-style (grouped-query) model; and a keep row at α
//! is the same forward pass as an interpolated source.

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::{Tensor, TensorData};
use graph::{EdgeMatrix, Graph, GraphShape};
use patching::{EdgeMasks, MaskGradientHooks, PatchHooks, record_nodes};
use transformer::{Batch, CpuBackend, GradientRules, LoadedModel, LocalModel, Readout};

type A = Autodiff<CpuBackend>;

fn load(name: &str) -> LoadedModel<A> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transformer/tests/fixtures").join(name);
    LocalModel::Dir(dir).load(&Default::default()).unwrap()
}

/// Two prompts of equal length from the fixture's vocabulary, and a counterfactual for each.
fn prompts(vocab: usize) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let seq = |start: u32| (0..7).map(|i| (start + 13 * i) % vocab as u32).collect::<Vec<u32>>();
    (vec![seq(3), seq(40)], vec![seq(5), seq(71)])
}

/// L = Σ over rows of (logit[a] − logit[b]) at the last position, a loss with a real gradient.
fn loss(logits: Tensor<A, 3>) -> Tensor<A, 1> {
    let logits = logits.squeeze_dim::<2>(1);
    let vocab = logits.dims()[1];
    let cols = |i: usize| logits.clone().slice([0..2, i..i + 1]);
    (cols(1) - cols(vocab - 1)).sum()
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

/// A fixture with its graph, the counterfactual run's node outputs and the clean batch.
struct Setup {
    model: LoadedModel<A>,
    graph: Graph,
    inner: transformer::Transformer<CpuBackend>,
    ablated: Tensor<CpuBackend, 4>,
    batch: Batch<A>,
    clean: Batch<CpuBackend>,
}

fn setup(name: &str) -> Setup {
    let model = load(name);
    let cfg = model.model.config.clone();
    let graph = Graph::new(GraphShape { n_layers: cfg.n_layers, n_heads: cfg.n_heads }).unwrap();
    let device = Default::default();
    let (clean, corrupt) = prompts(cfg.vocab_size);
    let inner = model.model.valid();
    let ablated = record_nodes(&inner, &Batch::new(&corrupt, &cfg, &device).unwrap()).1;
    let batch = Batch::<A>::new(&clean, &cfg, &device).unwrap();
    let clean = Batch::new(&clean, &cfg, &device).unwrap();
    Setup { model, graph, inner, ablated, batch, clean }
}

fn check(name: &str, rules: GradientRules) {
    let Setup { model, graph, inner, ablated, batch, .. } = setup(name);
    let device = Default::default();

    let keep = Tensor::<A, 3>::ones([1, graph.n_fwd(), graph.n_bwd()], &device).require_grad();
    let mut general = PatchHooks::new(graph, &EdgeMasks::from_tensor(keep.clone()), Tensor::from_inner(ablated.clone()));
    let grads = loss(model.model.forward_with_rules(&batch, &Readout::ReadPosition, &mut general, &rules)).backward();
    let dense = EdgeMatrix::from_vec(graph, keep.grad(&grads).unwrap().into_data().to_vec().unwrap()).unwrap();
    let expected: EdgeMatrix<f32> = EdgeMatrix::from_fn(graph, |f, b| if graph.is_edge(f, b) { dense[(f, b)] } else { 0.0 });
    let expected = expected.as_slice();

    let mut fast = MaskGradientHooks::new(graph, ablated);
    let grads = loss(model.model.forward_with_rules(&batch, &Readout::ReadPosition, &mut fast, &rules)).backward();
    let got = fast.destination_gradients(&grads, &inner, &rules, 1.0).keep_gradient();
    assert!(expected.iter().any(|&g| g.abs() > 1e-4), "{name}: the gradient is not trivially zero");
    let diff = max_rel_diff(got.as_slice(), expected);
    assert!(diff < 1e-4, "{name}: fast path differs from the general engine by {diff} (relative to the largest entry)");
}

#[test]
fn agrees_with_the_general_engine_gpt2() {
    check("gpt2-tiny", GradientRules::IDENTITY);
    check("gpt2-tiny", GradientRules::GIM);
}

#[test]
fn agrees_with_the_general_engine_llama() {
    check("llama-tiny", GradientRules::IDENTITY);
    check("llama-tiny", GradientRules::GIM);
}

/// Keep rows at α on one group of sources (the heads of layer 0, whose inputs are untouched, so
/// their actual outputs are the clean ones): the shifted pass gives the general engine's logits.
#[test]
fn keep_rows_match_the_general_engine() {
    let Setup { model, graph, inner, ablated, batch, clean } = setup("llama-tiny");
    let device = Default::default();
    let reference = record_nodes(&inner, &clean).1;
    let layer0 = graph.layer(0).unwrap();
    let mut rows = vec![1.0f32; graph.n_fwd()];
    rows[layer0.heads_fwd.clone()].fill(0.3);
    let mut keep = Vec::with_capacity(graph.n_fwd() * graph.n_bwd());
    for &k in &rows {
        keep.extend(std::iter::repeat_n(k, graph.n_bwd()));
    }
    let keep = Tensor::<A, 3>::from_data(TensorData::new(keep, [1, graph.n_fwd(), graph.n_bwd()]), &device);
    let mut general = PatchHooks::new(graph, &EdgeMasks::from_tensor(keep), Tensor::from_inner(ablated.clone()));
    let expected: Vec<f32> = model.model.forward_with(&batch, &Readout::ReadPosition, &mut general).into_data().to_vec().unwrap();
    let mut fast = MaskGradientHooks::new(graph, ablated).with_fixed_reference(reference, &rows);
    let got: Vec<f32> = model.model.forward_with(&batch, &Readout::ReadPosition, &mut fast).into_data().to_vec().unwrap();
    let diff = max_rel_diff(&got, &expected);
    assert!(diff < 1e-5, "shifted sources differ from keep rows by {diff}");
}
