//! The patched forward pass: per-edge masks applied at every destination's input.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use graph::Graph;
use transformer::{AttentionInput, Batch, BatchError, Hooks, Readout, Transformer};

use crate::activations::heads_source_major;
use crate::metric::logit_differences;

/// Keep-weights of every edge, one dense [n_fwd, n_bwd] matrix per replica of the batch: 1 keeps
/// the edge (it carries the actual activation), 0 ablates it, values between interpolate. A tensor
/// of the model's backend, so it can require gradients and be optimised.
#[derive(Debug, Clone)]
pub struct EdgeMasks<B: Backend> {
    /// [replicas, n_fwd, n_bwd]; entries that are not real edges are ignored.
    pub keep: Tensor<B, 3>,
    /// Per replica: whether every edge is kept (lets the engine skip work); None for soft masks.
    all_kept_hint: Option<Vec<bool>>,
}

impl<B: Backend> EdgeMasks<B> {
    /// Hard masks from row-major [n_fwd × n_bwd] booleans (true = keep), one slice per replica.
    pub fn from_bools(graph: &Graph, masks: &[&[bool]], device: &B::Device) -> Self {
        let (n_fwd, n_bwd) = (graph.n_fwd(), graph.n_bwd());
        let mut data = Vec::with_capacity(masks.len() * n_fwd * n_bwd);
        for mask in masks {
            assert_eq!(mask.len(), n_fwd * n_bwd, "an edge mask has one entry per [n_fwd × n_bwd] cell");
            data.extend(mask.iter().map(|&k| if k { 1.0f32 } else { 0.0 }));
        }
        let all_kept = masks.iter().map(|m| graph.edges().all(|(f, b)| m[f * n_bwd + b])).collect();
        Self {
            keep: Tensor::from_data(TensorData::new(data, [masks.len(), n_fwd, n_bwd]), device),
            all_kept_hint: Some(all_kept),
        }
    }

    /// Soft or learned masks given directly as a [replicas, n_fwd, n_bwd] tensor.
    pub fn from_tensor(keep: Tensor<B, 3>) -> Self {
        Self { keep, all_kept_hint: None }
    }

    /// Number of replicas (masks) the batch is repeated for.
    pub fn replicas(&self) -> usize {
        self.keep.dims()[0]
    }
}

/// Ablation weights (1 − keep) of one destination group, restricted to its upstream sources:
/// [replicas, n_dst, n_upstream].
fn group_weights<B: Backend>(keep: &Tensor<B, 3>, upstream: usize, dst: std::ops::Range<usize>) -> Tensor<B, 3> {
    let r = keep.dims()[0];
    let ablate = keep.clone().slice([0..r, 0..upstream, dst]).neg() + 1.0;
    ablate.swap_dims(1, 2)
}

/// Hooks that run a batch of `pairs` rows repeated once per mask replica (rows replica-major) with
/// every destination reading `resid + Σ_u (1 − keep[u,v]) (ablated_u − actual_u)`.
pub struct PatchHooks<B: Backend> {
    graph: Graph,
    /// Ablated node outputs [n_fwd, pairs, pos, d_model] (the counterfactual run's, means, or zeros).
    ablated: Tensor<B, 4>,
    replicas: usize,
    attention: Vec<Option<Tensor<B, 3>>>,
    mlp: Vec<Option<Tensor<B, 3>>>,
    logits: Option<Tensor<B, 3>>,
    /// (ablated − actual) of the sources produced so far, [replicas, k, pairs·pos·d] chunks.
    deltas: Vec<Tensor<B, 3>>,
    produced: usize,
    /// False when every mask keeps every edge: nothing to patch, nothing to record.
    active: bool,
}

impl<B: Backend> PatchHooks<B> {
    /// Prepares the per-layer weights; `ablated` is [n_fwd, pairs, pos, d_model].
    pub fn new(graph: Graph, masks: &EdgeMasks<B>, ablated: Tensor<B, 4>) -> Self {
        let replicas = masks.replicas();
        let all_kept = masks.all_kept_hint.as_ref().is_some_and(|k| k.iter().all(|&x| x));
        let weights = |upstream: usize, dst: std::ops::Range<usize>| {
            (!all_kept).then(|| group_weights(&masks.keep, upstream, dst))
        };
        let (mut attention, mut mlp) = (Vec::new(), Vec::new());
        for layer in graph.layers() {
            let upstream = layer.heads_fwd.start;
            attention.push(weights(upstream, layer.q_bwd.start..layer.v_bwd.end));
            mlp.push(weights(layer.mlp_fwd, layer.mlp_bwd..layer.mlp_bwd + 1));
        }
        let logits = weights(graph.n_fwd(), graph.n_bwd() - 1..graph.n_bwd());
        Self { graph, ablated, replicas, attention, mlp, logits, deltas: Vec::new(), produced: 0, active: !all_kept }
    }

    /// Records (ablated − actual) for the next `k` sources, given actual outputs [k, rows, pos, d].
    fn push_actual(&mut self, actual: Tensor<B, 4>) {
        if !self.active {
            return;
        }
        let [k, rows, t, d] = actual.dims();
        let pairs = rows / self.replicas;
        let start = self.produced;
        let ablated_pairs = self.ablated.dims()[1];
        let ablated: Tensor<B, 5> = self
            .ablated
            .clone()
            .slice([start..start + k, 0..ablated_pairs, 0..t, 0..d])
            .unsqueeze_dim(1);
        let actual: Tensor<B, 5> = actual.reshape([k, self.replicas, pairs, t, d]);
        let delta = ablated - actual; // [k, R, pairs, t, d]
        self.deltas.push(delta.swap_dims(0, 1).reshape([self.replicas, k, pairs * t * d]));
        self.produced += k;
    }

    /// Σ_u w[·,u] δ_u for one destination group: [replicas, n_dst, pairs·pos·d].
    fn patch_term(&mut self, weights: &Tensor<B, 3>) -> Tensor<B, 3> {
        if self.deltas.len() > 1 {
            let all = Tensor::cat(std::mem::take(&mut self.deltas), 1);
            self.deltas.push(all);
        }
        weights.clone().matmul(self.deltas[0].clone())
    }

    /// Adds a group's single-destination patch term to a residual [rows, pos, d].
    fn patch_residual(&mut self, weights: Option<Tensor<B, 3>>, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        match weights {
            None => resid,
            Some(w) => {
                let dims = resid.dims();
                resid + self.patch_term(&w).reshape(dims)
            }
        }
    }
}

impl<B: Backend> Hooks<B> for PatchHooks<B> {
    fn wants_head_outputs(&self) -> bool {
        true
    }

    fn input_output(&mut self, embedding: Tensor<B, 3>) -> Tensor<B, 3> {
        self.push_actual(embedding.clone().unsqueeze());
        embedding
    }

    fn attention_input(&mut self, layer: usize, resid: Tensor<B, 3>) -> AttentionInput<B> {
        let Some(weights) = self.attention[layer].clone() else {
            return AttentionInput::Shared(resid);
        };
        let h = self.graph.shape().n_heads;
        let [rows, t, d] = resid.dims();
        let pairs = rows / self.replicas;
        let term: Tensor<B, 6> = self.patch_term(&weights).reshape([self.replicas, 3, h, pairs, t, d]);
        let slot = |s: usize| -> Tensor<B, 4> {
            let part: Tensor<B, 5> = term.clone().slice([0..self.replicas, s..s + 1, 0..h, 0..pairs, 0..t, 0..d]).squeeze_dim(1);
            let per_head = part.permute([0, 2, 3, 1, 4]).reshape([rows, t, h, d]);
            resid.clone().unsqueeze_dim::<4>(2) + per_head
        };
        AttentionInput::PerHead { q: slot(0), k: slot(1), v: slot(2) }
    }

    fn head_outputs(&mut self, _layer: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        self.push_actual(heads_source_major(heads.clone()));
        heads
    }

    fn mlp_input(&mut self, layer: usize, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        let weights = self.mlp[layer].clone();
        self.patch_residual(weights, resid)
    }

    fn mlp_output(&mut self, _layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        self.push_actual(out.clone().unsqueeze());
        out
    }

    fn final_input(&mut self, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        let weights = self.logits.clone();
        self.patch_residual(weights, resid)
    }
}

/// One patched pass: the `clean` prompts repeated once per mask (rows mask-major), each copy with
/// its mask applied against `ablated` [n_fwd, pairs, pos, d_model]; returns m per row.
pub fn patched_logit_differences<B: Backend>(
    model: &Transformer<B>,
    graph: &Graph,
    clean: &[Vec<u32>],
    answers: &[(u32, u32)],
    ablated: Tensor<B, 4>,
    masks: &[&[bool]],
) -> Result<Vec<f32>, BatchError> {
    let device = model.token_embedding.device();
    let rows: Vec<Vec<u32>> = masks.iter().flat_map(|_| clean.iter().cloned()).collect();
    let batch = Batch::new(&rows, &model.config, &device)?;
    let mut hooks = PatchHooks::new(*graph, &EdgeMasks::from_bools(graph, masks, &device), ablated);
    let logits = model.forward_with(&batch, &Readout::LastToken, &mut hooks).squeeze_dim::<2>(1);
    Ok(logit_differences(logits, answers, masks.len()))
}
