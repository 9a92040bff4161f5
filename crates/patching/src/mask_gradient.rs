//! The engine's fast path for ∂L/∂keep, the one quantity every gradient attribution method needs,
//! when the keep mask is 1 on every edge except whole rows (all edges out of a source at one α).
//!
//! [`crate::PatchHooks`] with the keep mask as a leaf computes the same gradient (the tests check
//! that they agree), but it forms Σ_u (1 − keep_uv) δ_u at every destination in the forward pass —
//! a product over all upstream sources that is zero at keep = 1 and costs as much as the model —
//! and autodiff then contracts every destination's gradient with δ again. Here instead:
//! - a row of keep at α is a shift of that source's output by (1 − α)·δ_u where it is written to
//!   the residual stream, which is exactly what every downstream destination would have added;
//! - one backward gives every destination's input gradient g_v = ∂L/∂input_v, and ∂L/∂keep_uv =
//!   −Σ δ_u · g_v over batch, positions and d_model: one matrix product per block of layers, over
//!   the upstream sources only. MLP inputs and the final residual read their input plus a zero
//!   leaf (a probe); a head's q, k and v inputs are all the same residual here, so attention takes
//!   the shared fast path and the probes sit on each head's q, k and v projection outputs, whose
//!   gradients are mapped back through the head's weights and the norm's Jacobian
//!   ([`transformer::model::Attention::input_gradients`])
//!   — the per-head input path's backward without its per-head copies.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use graph::{EdgeMatrix, Graph};
use transformer::products::rows_times_transposed;
use transformer::{AttentionInput, GradientRules, Hooks, Transformer};

use crate::activations::heads_source_major;

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// Layers whose destinations are scored together: each block contracts its destinations'
/// gradients with the sources upstream of its last layer, so larger blocks do more products with
/// sources that are downstream (and discarded), smaller blocks more, smaller products.
const LAYERS_PER_BLOCK: usize = 4;

/// The probes of one layer: zero leaves on its heads' q, k, v projection outputs [b, heads, t,
/// d_head] and on its MLP's input, with the residual the attention's norm read.
struct LayerProbes<B: AutodiffBackend> {
    resid: Tensor<Inner<B>, 3>,
    qkv: [Tensor<B, 4>; 3],
    mlp: Tensor<B, 3>,
}

/// A layer whose attention has run and whose MLP input is still to come.
struct PendingLayer<B: AutodiffBackend> {
    resid: Tensor<Inner<B>, 3>,
    qkv: Option<[Tensor<B, 4>; 3]>,
}

/// Hooks that make one forward/backward pass yield ∂L/∂keep for a keep mask that is 1 except on
/// whole source rows; see the module docs. δ_u = ablated_u − reference_u.
pub struct MaskGradientHooks<B: AutodiffBackend> {
    graph: Graph,
    /// Ablated node outputs [n_fwd, batch, pos, d_model].
    ablated: Tensor<Inner<B>, 4>,
    /// Outputs δ is measured against; None = this run's own outputs, recorded as they appear.
    reference: Option<Tensor<Inner<B>, 4>>,
    /// This run's outputs in forward order, [k, batch, pos, d_model] chunks (when `reference` is None).
    recorded: Vec<Tensor<Inner<B>, 4>>,
    /// Per source: 1 − keep on its row (0 leaves the source alone).
    shifts: Vec<f32>,
    /// Per layer: the residual entering attention and the q/k/v output probes, until its MLP probe
    /// completes it.
    layers: Vec<LayerProbes<B>>,
    pending: Option<PendingLayer<B>>,
    /// The final residual's probe.
    logits: Option<Tensor<B, 3>>,
    produced: usize,
}

impl<B: AutodiffBackend> MaskGradientHooks<B> {
    /// Scores against the run's own outputs with every edge kept (EAP, GIM on the clean run).
    /// Handing over the only reference to `ablated` lets δ be formed in its buffer.
    pub fn new(graph: Graph, ablated: Tensor<Inner<B>, 4>) -> Self {
        let n_fwd = graph.n_fwd();
        Self { graph, ablated, reference: None, recorded: Vec::new(), shifts: vec![0.0; n_fwd], layers: Vec::new(), pending: None, logits: None, produced: 0 }
    }

    /// Measures δ against fixed outputs [n_fwd, batch, pos, d_model] (the clean run's) and sets the
    /// keep row of each source to `keep[u]` (1 = untouched): integrated gradients, and gradients on
    /// runs other than the clean one.
    pub fn with_fixed_reference(mut self, reference: Tensor<Inner<B>, 4>, keep_rows: &[f32]) -> Self {
        assert_eq!(keep_rows.len(), self.graph.n_fwd(), "one keep value per source");
        self.shifts = keep_rows.iter().map(|k| 1.0 - k).collect();
        self.reference = Some(reference);
        self
    }

    /// (1 − keep) · δ for sources `start..start + k`, as [k, batch, pos, d] in the autodiff backend,
    /// or None when none of them is shifted.
    fn shift(&self, start: usize, k: usize) -> Option<Tensor<B, 4>> {
        let shifts = &self.shifts[start..start + k];
        if shifts.iter().all(|&s| s == 0.0) {
            return None;
        }
        let reference = self.reference.clone().expect("shifted rows come with a fixed reference");
        let [_, b, t, d] = reference.dims();
        let rows = start..start + k;
        let delta = self.ablated.clone().slice([rows.clone(), 0..b, 0..t, 0..d]) - reference.slice([rows, 0..b, 0..t, 0..d]);
        let weights = Tensor::<Inner<B>, 4>::from_data(TensorData::new(shifts.to_vec(), [k, 1, 1, 1]), &delta.device());
        Some(Tensor::from_inner(delta * weights))
    }

    /// Records (when measuring against this run) and shifts the next `k` sources, given as
    /// [k, batch, pos, d_model]; returns the shift to add, if any.
    fn produce(&mut self, outputs: &Tensor<B, 4>) -> Option<Tensor<B, 4>> {
        let k = outputs.dims()[0];
        if self.reference.is_none() {
            self.recorded.push(outputs.clone().inner());
        }
        let shift = self.shift(self.produced, k);
        self.produced += k;
        shift
    }

    fn probe3(resid: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let probe = Tensor::<B, 3>::zeros(resid.dims(), &resid.device()).require_grad();
        (resid + probe.clone(), probe)
    }

    /// Every destination's input gradient of this pass (times `w`), with the δ it is contracted
    /// with, from the gradients of the backward pass of this forward pass's loss; `model` and
    /// `rules` are the pass's (the norms' backward is recomputed here).
    pub fn destination_gradients(self, grads: &B::Gradients, model: &Transformer<Inner<B>>, rules: &GradientRules, w: f64) -> DestinationGradients<Inner<B>> {
        let graph = self.graph;
        let mut blocks = Vec::new();
        let delta = self.gradient_blocks(grads, model, rules, w, |_, block| blocks.push(block));
        DestinationGradients { graph, delta, blocks }
    }

    /// ∂L/∂keep of this pass alone (0 off the graph's edges): as
    /// `destination_gradients(..).keep_gradient()`, but each block of destinations is contracted
    /// as soon as its gradients are complete, so only one block's gradients are ever held (EAP
    /// and GIM, whose single pass would otherwise hold every destination's: ~0.5 GB for SmolLM2 on
    /// 16 pairs, paid again in fresh pages).
    pub fn keep_gradient(self, grads: &B::Gradients, model: &Transformer<Inner<B>>, rules: &GradientRules) -> EdgeMatrix<f32> {
        let graph = self.graph;
        let mut out = EdgeMatrix::filled(graph, 0.0f32);
        let mut bwd_start = 0;
        self.gradient_blocks(grads, model, rules, 1.0, |delta, block| bwd_start = block.contract(&graph, delta, bwd_start, &mut out));
        debug_assert_eq!(bwd_start, graph.n_bwd());
        out
    }

    /// Hands every block of destinations' gradients (times `w`) to `sink` with δ, in
    /// backward-index order, as soon as the block is complete; returns δ [n_fwd, batch·pos·d].
    fn gradient_blocks(
        self,
        grads: &B::Gradients,
        model: &Transformer<Inner<B>>,
        rules: &GradientRules,
        w: f64,
        mut sink: impl FnMut(&Tensor<Inner<B>, 2>, GradientBlock<Inner<B>>),
    ) -> Tensor<Inner<B>, 2> {
        let graph = self.graph;
        let n_fwd = graph.n_fwd();
        let [_, b, t, d] = self.ablated.dims();
        let width = b * t * d;
        let delta: Tensor<Inner<B>, 4> = match self.reference {
            Some(reference) => self.ablated - reference,
            None => {
                // In the ablated buffer itself, chunk by chunk: when the hooks hold its only
                // reference (EAP, GIM) no second [n_fwd, batch, pos, d] buffer is allocated.
                let (mut delta, mut start) = (self.ablated, 0);
                for chunk in self.recorded {
                    let rows = [start..start + chunk.dims()[0], 0..b, 0..t, 0..d];
                    start = rows[0].end;
                    let difference = delta.clone().slice(rows.clone()) - chunk;
                    delta = delta.slice_assign(rows, difference);
                }
                delta
            }
        };
        let delta = delta.reshape([n_fwd, width]);
        let grad3 = |p: &Tensor<B, 3>| p.grad(grads).expect("every probe takes part in the loss");
        // Every destination's input gradient as a row [slots, width], in backward-index order: the
        // projections' gradients come out of their GEMMs in this layout, so gathering a block is
        // a plain concatenation; the contraction multiplies by the block's transpose on views.
        let n_layers = graph.shape().n_layers;
        let mut rows: Vec<Tensor<Inner<B>, 2>> = Vec::with_capacity(4 * LAYERS_PER_BLOCK + 1);
        for (layer, probes) in self.layers.iter().enumerate() {
            let block = &model.blocks[layer];
            let outputs = probes.qkv.clone().map(|p| p.grad(grads).expect("every probe takes part in the loss"));
            let resid = probes.resid.clone().reshape([1, b * t, d]);
            for g in block.attn.input_gradients(&block.attn_norm, resid.clone(), outputs, rules.freeze_norm) {
                let heads = g.dims()[0]; // [heads, b·t, d]
                rows.push(g.reshape([heads, width]));
            }
            rows.push(grad3(&probes.mlp).reshape([1, width]));
            let final_block = layer + 1 == n_layers;
            if final_block {
                // The logits row joins the last block.
                rows.push(grad3(self.logits.as_ref().expect("the final residual was probed")).reshape([1, width]));
            }
            if final_block || (layer + 1) % LAYERS_PER_BLOCK == 0 {
                let upstream = if final_block { n_fwd } else { graph.layer(layer).expect("a layer of the graph").mlp_fwd };
                let rows = Tensor::cat(std::mem::take(&mut rows), 0);
                sink(&delta, GradientBlock { upstream, rows: if w == 1.0 { rows } else { rows * w } });
            }
        }
        delta
    }
}

/// The input gradients of every destination, summed over one or more passes that share δ (a fixed
/// reference), with that δ: contracting once per batch rather than once per pass is what makes
/// integrated gradients' many passes cheap.
pub struct DestinationGradients<B: Backend> {
    graph: Graph,
    /// δ = ablated − reference, [n_fwd, batch·pos·d_model].
    delta: Tensor<B, 2>,
    /// Per block of `LAYERS_PER_BLOCK` layers, in backward-index order.
    blocks: Vec<GradientBlock<B>>,
}

/// The destinations of a block of layers: their gradients and how many sources can feed them.
struct GradientBlock<B: Backend> {
    /// Sources upstream of the block's last destination (the first `upstream` forward indices).
    upstream: usize,
    /// The destinations' gradients as rows [destinations, batch·pos·d_model].
    rows: Tensor<B, 2>,
}

impl<B: Backend> DestinationGradients<B> {
    /// ∂L/∂keep summed over the passes, row-major [n_fwd × n_bwd] (0 off the graph's edges):
    /// −Σ δ_u · g_v, one product per block over the sources upstream of its last layer.
    pub fn keep_gradient(&self) -> EdgeMatrix<f32> {
        let graph = self.graph;
        let mut out = EdgeMatrix::filled(graph, 0.0f32);
        let mut bwd_start = 0;
        for block in &self.blocks {
            bwd_start = block.contract(&graph, &self.delta, bwd_start, &mut out);
        }
        debug_assert_eq!(bwd_start, graph.n_bwd());
        out
    }
}

impl<B: Backend> GradientBlock<B> {
    /// Writes −Σ δ_u · g_v into `out` for the block's destinations,
    /// which start at backward index `bwd_start`, over the sources upstream of them; returns the
    /// backward index after the block.
    fn contract(&self, graph: &Graph, delta: &Tensor<B, 2>, bwd_start: usize, out: &mut EdgeMatrix<f32>) -> usize {
        let n_dst = self.rows.dims()[0];
        let values = rows_times_transposed(delta, self.upstream, &self.rows);
        for u in 0..self.upstream {
            for j in 0..n_dst {
                let v = bwd_start + j;
                if graph.is_edge(u, v) {
                    out[(u, v)] = -values[u * n_dst + j];
                }
            }
        }
        bwd_start + n_dst
    }
}

/// Another pass's (already weighted) gradients added in; both must measure δ against the same
/// fixed reference.
impl<B: Backend> std::ops::Add for DestinationGradients<B> {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        let blocks = self.blocks.into_iter().zip(other.blocks).map(|(a, b)| GradientBlock { upstream: a.upstream, rows: a.rows + b.rows }).collect();
        Self { blocks, ..self }
    }
}

impl<B: AutodiffBackend> Hooks<B> for MaskGradientHooks<B> {
    fn wants_head_outputs(&self) -> bool {
        true
    }

    fn input_output(&mut self, embedding: Tensor<B, 3>) -> Tensor<B, 3> {
        match self.produce(&embedding.clone().unsqueeze()) {
            Some(shift) => embedding + shift.squeeze_dim(0),
            None => embedding,
        }
    }

    fn attention_input(&mut self, _layer: usize, resid: Tensor<B, 3>) -> AttentionInput<B> {
        self.pending = Some(PendingLayer { resid: resid.clone().inner(), qkv: None });
        AttentionInput::Shared(resid)
    }

    fn qkv_outputs(&mut self, _layer: usize, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
        let probe = |x: &Tensor<B, 4>| Tensor::<B, 4>::zeros(x.dims(), &x.device()).require_grad();
        let probes = [probe(&q), probe(&k), probe(&v)];
        let out = [q + probes[0].clone(), k + probes[1].clone(), v + probes[2].clone()];
        if let Some(pending) = self.pending.as_mut() {
            pending.qkv = Some(probes);
        }
        out
    }

    fn head_outputs(&mut self, _layer: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.produce(&heads_source_major(heads.clone())) {
            // [k, b, t, d] back to [b, t, k, d].
            Some(shift) => heads + shift.permute([1, 2, 0, 3]),
            None => heads,
        }
    }

    fn mlp_input(&mut self, _layer: usize, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        let (input, mlp) = Self::probe3(resid);
        let pending = self.pending.take().expect("attention runs before the MLP");
        self.layers.push(LayerProbes { resid: pending.resid, qkv: pending.qkv.expect("attention reports its q, k and v"), mlp });
        input
    }

    fn mlp_output(&mut self, _layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        match self.produce(&out.clone().unsqueeze()) {
            Some(shift) => out + shift.squeeze_dim(0),
            None => out,
        }
    }

    fn final_input(&mut self, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        let (input, probe) = Self::probe3(resid);
        self.logits = Some(probe);
        input
    }
}
