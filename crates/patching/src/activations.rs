//! Recording every MIB source node's output of a forward pass in one source-major tensor.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use transformer::{AttentionInput, Batch, Hooks, Readout, Transformer};

/// Collects node outputs in forward-index order (input, then per layer its heads and its MLP),
/// each as [k, batch, pos, d_model], the layout the patching GEMMs consume.
/// It also keeps each block's input residual (a handle, no copy), which [`record_run`] returns.
#[derive(Default)]
pub struct NodeRecorder<B: Backend> {
    chunks: Vec<Tensor<B, 4>>,
    layer_inputs: Vec<Tensor<B, 3>>,
}

impl<B: Backend> NodeRecorder<B> {
    /// All recorded outputs: [n_fwd, batch, pos, d_model].
    pub fn into_nodes(self) -> Tensor<B, 4> {
        Tensor::cat(self.chunks, 0)
    }
}

/// A recorded run kept so later passes can start part-way up the model
/// ([`crate::patched_logits_from`]): a pass that changes no destination below block l computes
/// exactly this run below l.
#[derive(Debug, Clone)]
pub struct RecordedRun<B: Backend> {
    /// Last-token logits [batch, vocab].
    pub logits: Tensor<B, 2>,
    /// Every node's output [n_fwd, batch, pos, d_model].
    pub nodes: Tensor<B, 4>,
    /// The residual stream entering each block, [batch, pos, d_model] per layer.
    pub layer_inputs: Vec<Tensor<B, 3>>,
}

/// One forward pass over `batch`, kept whole: see [`RecordedRun`].
pub fn record_run<B: Backend>(model: &Transformer<B>, batch: &Batch<B>) -> RecordedRun<B> {
    let mut recorder = NodeRecorder::default();
    let logits = model.forward_with(batch, &Readout::LastToken, &mut recorder).squeeze_dim(1);
    let layer_inputs = std::mem::take(&mut recorder.layer_inputs);
    RecordedRun { logits, nodes: recorder.into_nodes(), layer_inputs }
}

/// Head outputs [batch, pos, heads, d] as source-major [heads, batch, pos, d].
pub fn heads_source_major<B: Backend>(heads: Tensor<B, 4>) -> Tensor<B, 4> {
    heads.permute([2, 0, 1, 3])
}

impl<B: Backend> Hooks<B> for NodeRecorder<B> {
    fn wants_head_outputs(&self) -> bool {
        true
    }

    fn input_output(&mut self, embedding: Tensor<B, 3>) -> Tensor<B, 3> {
        self.chunks.push(embedding.clone().unsqueeze());
        embedding
    }

    fn attention_input(&mut self, _layer: usize, resid: Tensor<B, 3>) -> AttentionInput<B> {
        self.layer_inputs.push(resid.clone());
        AttentionInput::Shared(resid)
    }

    fn head_outputs(&mut self, _layer: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        self.chunks.push(heads_source_major(heads.clone()));
        heads
    }

    fn mlp_output(&mut self, _layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        self.chunks.push(out.clone().unsqueeze());
        out
    }
}

/// One forward pass returning its last-token logits [batch, vocab] and all node outputs
/// [n_fwd, batch, pos, d_model].
pub fn record_nodes<B: Backend>(model: &Transformer<B>, batch: &Batch<B>) -> (Tensor<B, 2>, Tensor<B, 4>) {
    let run = record_run(model, batch);
    (run.logits, run.nodes)
}
