//! `ifr`: information flow routes (Ferrando & Voita 2024) on the clean run only. At each destination
//! input x_v and upstream output a_u at the same position, prox = max(0, ‖x_v‖₁ − ‖x_v − a_u‖₁) and
//! importance = prox / Σ_u prox; scores are importances averaged over real positions and examples.
//! A head's q, k and v slots read the same residual, so they get the same scores.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use graph::{EdgeMatrix, Graph};
use tasks::PreparedPair;
use transformer::{AttentionInput, Batch, BatchError, Hooks, Readout, Transformer};

use crate::method::Progress;
use crate::scores::{EdgeScores, PassCount};

/// Records node outputs and the residual each destination group reads, in one plain pass.
struct Reads<B: Backend> {
    nodes: Vec<Tensor<B, 4>>,
    /// Per destination group in forward order: (attention of layer l, MLP of layer l, ..., final).
    inputs: Vec<Tensor<B, 3>>,
}

impl<B: Backend> Hooks<B> for Reads<B> {
    fn wants_head_outputs(&self) -> bool {
        true
    }
    fn input_output(&mut self, e: Tensor<B, 3>) -> Tensor<B, 3> {
        self.nodes.push(e.clone().unsqueeze());
        e
    }
    fn attention_input(&mut self, _layer: usize, resid: Tensor<B, 3>) -> AttentionInput<B> {
        self.inputs.push(resid.clone());
        AttentionInput::Shared(resid)
    }
    fn head_outputs(&mut self, _layer: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        self.nodes.push(heads.clone().permute([2, 0, 1, 3]));
        heads
    }
    fn mlp_input(&mut self, _layer: usize, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        self.inputs.push(resid.clone());
        resid
    }
    fn mlp_output(&mut self, _layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        self.nodes.push(out.clone().unsqueeze());
        out
    }
    fn final_input(&mut self, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        self.inputs.push(resid.clone());
        resid
    }
}

/// Σ over real positions of importance(u → group) for the first `up` sources: [up].
fn importance_sums<B: Backend>(x: &Tensor<B, 3>, nodes: &Tensor<B, 4>, up: usize, real: &Tensor<B, 3>) -> Vec<f32> {
    let [_, b, t, d] = nodes.dims();
    let upstream = nodes.clone().slice([0..up, 0..b, 0..t, 0..d]);
    let x4: Tensor<B, 4> = x.clone().unsqueeze();
    let norm = x.clone().abs().sum_dim(2).squeeze_dim::<2>(2).unsqueeze::<3>(); // [1, b, t]
    let distance = (x4 - upstream).abs().sum_dim(3).squeeze_dim::<3>(3); // [up, b, t]
    let prox = (norm - distance).clamp_min(0.0);
    let total = prox.clone().sum_dim(0).clamp_min(f32::MIN_POSITIVE); // [1, b, t]
    let importance = prox / total * real.clone();
    importance.sum_dim(2).sum_dim(1).into_data().to_vec().expect("f32 importances")
}

/// IFR scores of every edge on the clean prompts of `pairs` (one forward pass per batch);
/// `progress` hears after every batch.
pub fn ifr_scores<B: Backend>(
    model: &Transformer<B>,
    graph: &Graph,
    pairs: &[PreparedPair],
    batch_size: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<EdgeScores, BatchError> {
    let device = model.token_embedding.device();
    let mut sums = EdgeMatrix::filled(*graph, 0.0f64);
    let mut tokens = 0usize;
    let mut passes = PassCount::default();
    let batch_size = batch_size.max(1);
    let total = pairs.len().div_ceil(batch_size);
    for (done, chunk) in pairs.chunks(batch_size).enumerate() {
        let clean: Vec<Vec<u32>> = chunk.iter().map(|p| p.clean.clone()).collect();
        let batch = Batch::new(&clean, &model.config, &device)?;
        let mut reads = Reads { nodes: Vec::new(), inputs: Vec::new() };
        model.forward_with(&batch, &Readout::ReadPosition, &mut reads);
        passes.forward += 1;
        let nodes = Tensor::cat(reads.nodes, 0);
        let t = batch.max_len();
        let real: Vec<f32> = clean.iter().flat_map(|s| (0..t).map(move |p| if p < s.len() { 1.0 } else { 0.0 })).collect();
        tokens += clean.iter().map(Vec::len).sum::<usize>();
        let real = Tensor::<B, 2>::from_data(TensorData::new(real, [clean.len(), t]), &device).unsqueeze::<3>();
        let mut inputs = reads.inputs.iter();
        let mut add = |x: &Tensor<B, 3>, up: usize, cols: std::ops::Range<usize>| {
            for (f, v) in importance_sums(x, &nodes, up, &real).into_iter().enumerate() {
                for c in cols.clone() {
                    sums[(f, c)] += v as f64;
                }
            }
        };
        for layer in graph.layers() {
            let attn = inputs.next().expect("one attention input per layer");
            add(attn, layer.heads_fwd.start, layer.q_bwd.start..layer.v_bwd.end);
            let mlp = inputs.next().expect("one MLP input per layer");
            add(mlp, layer.mlp_fwd, layer.mlp_bwd..layer.mlp_bwd + 1);
        }
        let last = inputs.next().expect("the final input");
        let logits = graph.n_bwd() - 1;
        add(last, graph.n_fwd(), logits..logits + 1);
        progress(Progress { done: done + 1, total });
    }
    Ok(EdgeScores { values: sums.map(|&s| (s / tokens as f64) as f32), passes, preferred: None })
}
