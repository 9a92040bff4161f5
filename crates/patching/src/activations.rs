//! Recording every MIB source node's output of a forward pass in one source-major tensor.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use transformer::{Batch, Hooks, Readout, Transformer};

/// Collects node outputs in forward-index order (input, then per layer its heads and its MLP),
/// each as [k, batch, pos, d_model], the layout the patching GEMMs consume.
#[derive(Default)]
pub struct NodeRecorder<B: Backend> {
    chunks: Vec<Tensor<B, 4>>,
}

impl<B: Backend> NodeRecorder<B> {
    /// All recorded outputs: [n_fwd, batch, pos, d_model].
    pub fn into_nodes(self) -> Tensor<B, 4> {
        Tensor::cat(self.chunks, 0)
    }
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
    let mut recorder = NodeRecorder::default();
    let logits = model.forward_with(batch, &Readout::LastToken, &mut recorder);
    (logits.squeeze_dim(1), recorder.into_nodes())
}
