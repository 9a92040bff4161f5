//! Recording every MIB source node's output of a forward pass in one source-major tensor.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use transformer::{AttentionInput, Batch, Hooks, Readout, Transformer};

/// Collects node outputs in forward-index order (input, then per layer its heads and its MLP),
/// each as [k, batch, pos, d_model], the layout the patching GEMMs consume.
/// It also keeps the residual stream entering each block, each MLP and the final norm (handles,
/// no copies), which [`record_run`] returns.
#[derive(Default)]
pub struct NodeRecorder<B: Backend> {
    chunks: Vec<Tensor<B, 4>>,
    layer_inputs: Vec<Tensor<B, 3>>,
    mlp_inputs: Vec<Tensor<B, 3>>,
    final_input: Option<Tensor<B, 3>>,
}

impl<B: Backend> NodeRecorder<B> {
    /// All recorded outputs: [n_fwd, batch, pos, d_model].
    pub fn into_nodes(self) -> Tensor<B, 4> {
        Tensor::cat(self.chunks, 0)
    }
}

/// A recorded run kept so later passes can start part-way up the model
/// ([`crate::ResumableRun`]): a pass that changes no destination below block l computes
/// exactly this run below l.
#[derive(Debug, Clone)]
pub struct RecordedRun<B: Backend> {
    /// Last-token logits [batch, vocab].
    pub logits: Tensor<B, 2>,
    /// Every node's output [n_fwd, batch, pos, d_model].
    pub nodes: Tensor<B, 4>,
    /// The residual stream entering each block, [batch, pos, d_model] per layer.
    pub layer_inputs: Vec<Tensor<B, 3>>,
    /// The residual stream entering each block's MLP, [batch, pos, d_model] per layer.
    pub mlp_inputs: Vec<Tensor<B, 3>>,
    /// The residual stream entering the final norm, [batch, pos, d_model].
    pub final_input: Tensor<B, 3>,
}

impl<B: Backend> RecordedRun<B> {
    /// This run at one computed position per row (`positions[row]`): what a pass resumed after
    /// the last attention over [`Batch::read_positions`] reads.
    pub fn at_positions(&self, positions: &[usize]) -> Self {
        let at3 = |x: &Tensor<B, 3>| at_positions(x.clone().unsqueeze(), positions).squeeze_dim(0);
        Self {
            logits: self.logits.clone(),
            nodes: at_positions(self.nodes.clone(), positions),
            layer_inputs: self.layer_inputs.iter().map(at3).collect(),
            mlp_inputs: self.mlp_inputs.iter().map(at3).collect(),
            final_input: at3(&self.final_input),
        }
    }
}

/// [k, rows, pos, d] at one position per row (rows broadcast from 1 if need be): [k, rows, 1, d].
pub fn at_positions<B: Backend>(x: Tensor<B, 4>, positions: &[usize]) -> Tensor<B, 4> {
    let [k, rows, t, d] = x.dims();
    let n = positions.len();
    assert!(rows == n || rows == 1, "one position per row");
    let device = x.device();
    let index: Tensor<B, 1, Int> = Tensor::from_data(TensorData::new(positions.iter().map(|&p| p as i64).collect::<Vec<_>>(), [n]), &device);
    let x = if rows == n { x } else { x.expand([k, n, t, d]) };
    x.gather(2, index.reshape([1, n, 1, 1]).expand([k, n, 1, d]))
}

/// One forward pass over `batch`, kept whole: see [`RecordedRun`].
pub fn record_run<B: Backend>(model: &Transformer<B>, batch: &Batch<B>) -> RecordedRun<B> {
    let mut recorder = NodeRecorder::default();
    let logits = model.forward_with(batch, &Readout::ReadPosition, &mut recorder).squeeze_dim(1);
    let layer_inputs = std::mem::take(&mut recorder.layer_inputs);
    let mlp_inputs = std::mem::take(&mut recorder.mlp_inputs);
    let final_input = recorder.final_input.take().expect("every pass reaches the final norm");
    RecordedRun { logits, nodes: recorder.into_nodes(), layer_inputs, mlp_inputs, final_input }
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

    fn mlp_input(&mut self, _layer: usize, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        self.mlp_inputs.push(resid.clone());
        resid
    }

    fn mlp_output(&mut self, _layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        self.chunks.push(out.clone().unsqueeze());
        out
    }

    fn final_input(&mut self, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        self.final_input = Some(resid.clone());
        resid
    }
}

/// One forward pass returning its last-token logits [batch, vocab] and all node outputs
/// [n_fwd, batch, pos, d_model].
pub fn record_nodes<B: Backend>(model: &Transformer<B>, batch: &Batch<B>) -> (Tensor<B, 2>, Tensor<B, 4>) {
    let run = record_run(model, batch);
    (run.logits, run.nodes)
}
