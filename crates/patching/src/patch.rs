//! The patched forward pass: per-edge masks applied at every destination's input.

use burn::tensor::backend::Backend;
use std::ops::Range;

use burn::tensor::{Tensor, TensorData};
use graph::{EdgeMatrix, Graph};
use transformer::products::selected_rows_product;
use transformer::{AttentionInput, Batch, Hooks, Readout, Transformer};

use crate::activations::heads_source_major;
use crate::resume::ResumeState;

/// Keep-weights of every edge, one dense [n_fwd, n_bwd] matrix per replica of the batch: 1 keeps
/// the edge (it carries the actual activation), 0 ablates it, values between interpolate. A tensor
/// of the model's backend, so it can require gradients and be optimised. A replica is either a
/// copy of the whole batch (rows replica-major) or, when there are as many replicas as rows, one
/// row: `batch.repeat(samples)` with `samples × pairs` masks gives every row its own mask (the
/// per-example sampling of learned masks).
#[derive(Debug, Clone)]
pub struct EdgeMasks<B: Backend> {
    /// [replicas, n_fwd, n_bwd]; entries that are not real edges are ignored.
    pub keep: Tensor<B, 3>,
    /// The same masks on the host when they are hard (0/1): lets the engine touch only the sources
    /// that matter. None for soft masks, which take the dense path.
    hard: Option<Vec<EdgeMatrix<bool>>>,
}

impl<B: Backend> EdgeMasks<B> {
    /// Hard masks (true = keep), one per replica, each of `graph`'s layout.
    pub fn from_bools(graph: &Graph, masks: &[&EdgeMatrix<bool>], device: &B::Device) -> Self {
        let (n_fwd, n_bwd) = (graph.n_fwd(), graph.n_bwd());
        let mut data = Vec::with_capacity(masks.len() * n_fwd * n_bwd);
        for mask in masks {
            assert_eq!(mask.graph(), *graph, "an edge mask is of the patched graph");
            data.extend(mask.as_slice().iter().map(|&k| if k { 1.0f32 } else { 0.0 }));
        }
        let hard = masks.iter().map(|&m| m.clone()).collect();
        Self { keep: Tensor::from_data(TensorData::new(data, [masks.len(), n_fwd, n_bwd]), device), hard: Some(hard) }
    }

    /// Soft or learned masks given directly as a [replicas, n_fwd, n_bwd] tensor.
    pub fn from_tensor(keep: Tensor<B, 3>) -> Self {
        Self { keep, hard: None }
    }

    /// Number of replicas (masks) the batch is repeated for.
    pub fn replicas(&self) -> usize {
        self.keep.dims()[0]
    }
}

/// The destination slots of one layer group and the sources upstream of them.
#[derive(Debug, Clone)]
struct Group {
    upstream: usize,
    dst: Range<usize>,
}

/// What a group's destinations add to the residual they read.
enum Term<B: Backend> {
    /// Nothing: every edge into the group is kept in every replica.
    Nothing,
    /// The same term [replicas, pairs·pos·d] for every destination of the group.
    Shared(Tensor<B, 2>),
    /// One term per destination: [replicas, n_dst, pairs·pos·d].
    PerDestination(Tensor<B, 3>),
}

/// What an attention layer's q, k and v inputs add to the residual they read.
enum QkvTerms<B: Backend> {
    /// Nothing: every edge into the layer's heads is kept.
    Nothing,
    /// One term [rows, pos, d] for every head and slot.
    Shared(Tensor<B, 3>),
    /// A term per slot (q, k, v), each head-major [heads, rows, pos, d].
    PerHead([Tensor<B, 4>; 3]),
}

/// Hooks that run a batch of `pairs` rows repeated once per mask replica (rows replica-major) with
/// every destination reading `resid + Σ_u (1 − keep[u,v]) (ablated_u − actual_u)`.
///
/// With hard masks, each group uses whichever of two exact forms touches fewer sources: the sum
/// over ablated edges as written, or `resid + Σ_u δ_u − Σ_u keep[u,v] δ_u` over kept edges (the
/// running sum Σ_u δ_u is maintained as sources are produced). Small circuits and near-complete
/// circuits are therefore cheap, and a group with nothing kept reads one shared residual.
pub struct PatchHooks<B: Backend> {
    graph: Graph,
    /// Ablated node outputs [n_fwd, pairs, pos, d_model] (the counterfactual run's, means, or zeros).
    ablated: Tensor<B, 4>,
    keep: Tensor<B, 3>,
    hard: Option<Vec<EdgeMatrix<bool>>>,
    replicas: usize,
    /// (ablated − actual) of every source, [replicas, n_fwd, pairs·pos·d], filled as sources are
    /// produced (written in place: the engine holds the only reference between groups).
    deltas: Option<Tensor<B, 3>>,
    /// Σ of all deltas so far, [replicas, pairs·pos·d] (hard masks only).
    delta_sum: Option<Tensor<B, 2>>,
    produced: usize,
    /// False when every mask keeps every edge: nothing to patch, nothing to record.
    active: bool,
}

impl<B: Backend> PatchHooks<B> {
    /// Prepares the engine; `ablated` is [n_fwd, pairs, pos, d_model]; δ follows the actual run.
    pub fn new(graph: Graph, masks: &EdgeMasks<B>, ablated: Tensor<B, 4>) -> Self {
        let all_kept = masks.hard.as_ref().is_some_and(|h| h.iter().all(|m| m.edge_values().all(|(_, &keep)| keep)));
        Self {
            graph,
            ablated,
            keep: masks.keep.clone(),
            hard: masks.hard.clone(),
            replicas: masks.replicas(),
            deltas: None,
            delta_sum: None,
            produced: 0,
            active: !all_kept,
        }
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
        let width = pairs * t * d;
        let ablated: Tensor<B, 4> = self.ablated.clone().slice([start..start + k, 0..ablated_pairs, 0..t, 0..d]);
        let ablated: Tensor<B, 5> = if pairs == ablated_pairs {
            ablated.unsqueeze_dim(1)
        } else {
            // One mask per row (`EdgeMasks` with a replica per row of `batch.repeat(samples)`):
            // row r is pair r mod P of the ablated outputs.
            assert!(
                pairs == 1 && self.replicas.is_multiple_of(ablated_pairs),
                "{rows} rows are {} mask replicas of the {ablated_pairs} ablated pairs, or one per row",
                self.replicas
            );
            let samples = self.replicas / ablated_pairs;
            ablated.unsqueeze_dim::<5>(1).expand([k, samples, ablated_pairs, t, d]).reshape([k, self.replicas, 1, t, d])
        };
        let actual: Tensor<B, 5> = actual.reshape([k, self.replicas, pairs, t, d]);
        let delta = (ablated - actual).swap_dims(0, 1).reshape([self.replicas, k, width]);
        if self.hard.is_some() {
            self.add_to_sum(delta.clone());
        }
        let buffer = match self.deltas.take() {
            Some(buffer) => buffer,
            None => Tensor::zeros([self.replicas, self.graph.n_fwd(), width], &delta.device()),
        };
        self.deltas = Some(buffer.slice_assign([0..self.replicas, start..start + k, 0..width], delta));
        self.produced += k;
    }

    /// Starts from δ of the first `produced` sources already laid out (a resumed pass).
    fn resume(&mut self, deltas: Tensor<B, 3>, delta_sum: Tensor<B, 2>, produced: usize) {
        if self.active {
            self.deltas = Some(deltas);
            self.delta_sum = Some(delta_sum);
        }
        self.produced = produced;
    }

    /// Adds a chunk of deltas [replicas, k, width] to the running sum Σ_u δ_u.
    fn add_to_sum(&mut self, delta: Tensor<B, 3>) {
        let chunk_sum: Tensor<B, 2> = delta.sum_dim(1).squeeze_dim(1);
        self.delta_sum = Some(match self.delta_sum.take() {
            Some(sum) => sum + chunk_sum,
            None => chunk_sum,
        });
    }

    /// The δ buffer [replicas, n_fwd, pairs·pos·d].
    fn deltas(&self) -> &Tensor<B, 3> {
        self.deltas.as_ref().expect("sources are produced before they are read")
    }

    /// The patch term of one group of destinations.
    fn term(&self, group: &Group) -> Term<B> {
        if !self.active {
            return Term::Nothing;
        }
        let Some(hard) = &self.hard else {
            // Soft masks: the dense form over every upstream source.
            let r = self.replicas;
            let ablate = self.keep.clone().slice([0..r, 0..group.upstream, group.dst.clone()]).neg() + 1.0;
            let rows: Vec<usize> = (0..group.upstream).collect();
            return Term::PerDestination(selected_rows_product(ablate.swap_dims(1, 2), self.deltas(), &rows));
        };
        let is_edge = |u: usize, v: usize| self.graph.is_edge(u, v);
        let touched = |want_kept: bool| -> Vec<usize> {
            (0..group.upstream).filter(|&u| hard.iter().any(|m| group.dst.clone().any(|v| is_edge(u, v) && m[(u, v)] == want_kept))).collect()
        };
        let (ablated_rows, kept_rows) = (touched(false), touched(true));
        let direct = ablated_rows.len() <= kept_rows.len();
        let rows = if direct { ablated_rows } else { kept_rows };
        let sum = || self.delta_sum.clone().expect("sources are produced before they are read");
        if rows.is_empty() {
            return if direct { Term::Nothing } else { Term::Shared(sum()) };
        }
        // Weights [replicas, n_dst, rows]: (1 − keep) in the direct form, keep in the complement.
        let mut w = Vec::with_capacity(self.replicas * group.dst.len() * rows.len());
        for m in hard {
            for v in group.dst.clone() {
                w.extend(rows.iter().map(|&u| if m[(u, v)] != direct { 1.0f32 } else { 0.0 }));
            }
        }
        let device = self.keep.device();
        let w = Tensor::<B, 3>::from_data(TensorData::new(w, [self.replicas, group.dst.len(), rows.len()]), &device);
        let weighted = selected_rows_product(w, self.deltas(), &rows);
        Term::PerDestination(if direct { weighted } else { sum().unsqueeze_dim::<3>(1) - weighted })
    }

    /// What layer `layer`'s q, k and v inputs add to the residual [rows, pos, d] they read.
    fn attention_terms(&self, layer: usize, rows: usize, t: usize, d: usize) -> QkvTerms<B> {
        let indices = self.graph.layer(layer).expect("the model and the graph have the same layers");
        let group = Group { upstream: indices.heads_fwd.start, dst: indices.q_bwd.start..indices.v_bwd.end };
        let h = self.graph.shape().n_heads;
        let pairs = rows / self.replicas;
        let term = match self.term(&group) {
            Term::Nothing => return QkvTerms::Nothing,
            Term::Shared(sum) => return QkvTerms::Shared(sum.reshape([rows, t, d])),
            Term::PerDestination(term) => term,
        };
        let term: Tensor<B, 6> = term.reshape([self.replicas, 3, h, pairs, t, d]);
        // Head-major [h, rows, pos, d] (rows replica-major): with one replica, a slice as it lies.
        let slot = |s: usize| -> Tensor<B, 4> {
            let part: Tensor<B, 5> = term.clone().slice([0..self.replicas, s..s + 1, 0..h, 0..pairs, 0..t, 0..d]).squeeze_dim(1);
            part.swap_dims(0, 1).reshape([h, rows, t, d])
        };
        QkvTerms::PerHead([slot(0), slot(1), slot(2)])
    }

    /// Adds a single-destination group's term to a residual [rows, pos, d].
    fn patch_residual(&mut self, group: Group, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        let dims = resid.dims();
        match self.term(&group) {
            Term::Nothing => resid,
            Term::Shared(term) => resid + term.reshape(dims),
            Term::PerDestination(term) => resid + term.reshape(dims),
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
        let [rows, t, d] = resid.dims();
        match self.attention_terms(layer, rows, t, d) {
            QkvTerms::Nothing => AttentionInput::Shared(resid),
            QkvTerms::Shared(sum) => AttentionInput::Shared(resid + sum),
            QkvTerms::PerHead(terms) => {
                let [q, k, v] = terms.map(|term| term + resid.clone().unsqueeze_dim::<4>(0));
                AttentionInput::PerHead { q, k, v }
            }
        }
    }

    /// Behind a hook that already split attention's input per head (a composition): the same
    /// terms, added to the copies it hands over.
    fn per_head_attention_input(&mut self, layer: usize, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
        let [_, rows, t, d] = q.dims();
        match self.attention_terms(layer, rows, t, d) {
            QkvTerms::Nothing => [q, k, v],
            QkvTerms::Shared(sum) => [q, k, v].map(|x| x + sum.clone().unsqueeze_dim::<4>(0)),
            QkvTerms::PerHead([tq, tk, tv]) => [q + tq, k + tk, v + tv],
        }
    }

    fn head_outputs(&mut self, _layer: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        self.push_actual(heads_source_major(heads.clone()));
        heads
    }

    fn mlp_input(&mut self, layer: usize, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        let indices = self.graph.layer(layer).expect("the model and the graph have the same layers");
        self.patch_residual(Group { upstream: indices.mlp_fwd, dst: indices.mlp_bwd..indices.mlp_bwd + 1 }, resid)
    }

    fn mlp_output(&mut self, _layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        self.push_actual(out.clone().unsqueeze());
        out
    }

    fn final_input(&mut self, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        let n_bwd = self.graph.n_bwd();
        self.patch_residual(Group { upstream: self.graph.n_fwd(), dst: n_bwd - 1..n_bwd }, resid)
    }
}

/// [`patched_logits`] resumed at `state.point` from `state` (one replica per mask, as
/// [`crate::ResumableRun::state`] gives a recorded run's): the residual stream there and δ of
/// every source before it. The caller vouches that the state is what each mask computes before
/// the point (ACDC's passes, the top layers first, resume where their masks first differ from
/// the recorded run's).
pub fn patched_logits_from<B: Backend>(
    model: &Transformer<B>,
    graph: &Graph,
    clean: &Batch<B>,
    state: ResumeState<B>,
    ablated: Tensor<B, 4>,
    masks: &[&EdgeMatrix<bool>],
) -> Tensor<B, 2> {
    let device = model.token_embedding.device();
    let batch = clean.repeat(masks.len());
    assert_eq!(state.deltas.dims()[0], masks.len(), "one resumed replica per mask");
    let mut hooks = PatchHooks::new(*graph, &EdgeMasks::from_bools(graph, masks, &device), ablated);
    hooks.resume(state.deltas, state.delta_sum, crate::resume::sources_before(graph, state.point));
    model.forward_from(&batch, state.point, state.resid, &Readout::ReadPosition, &mut hooks).squeeze_dim::<2>(1)
}

/// One patched pass: the `clean` batch repeated once per mask (rows mask-major), each copy with
/// its mask applied against `ablated` [n_fwd, pairs, pos, d_model] (the positions the batch's
/// passes compute); returns the last-token logits [masks × pairs, vocab], for a [`crate::Metric`]
/// to read.
pub fn patched_logits<B: Backend>(model: &Transformer<B>, graph: &Graph, clean: &Batch<B>, ablated: Tensor<B, 4>, masks: &[&EdgeMatrix<bool>]) -> Tensor<B, 2> {
    let device = model.token_embedding.device();
    let batch = clean.repeat(masks.len());
    let mut hooks = PatchHooks::new(*graph, &EdgeMasks::from_bools(graph, masks, &device), ablated);
    model.forward_with(&batch, &Readout::ReadPosition, &mut hooks).squeeze_dim::<2>(1)
}
