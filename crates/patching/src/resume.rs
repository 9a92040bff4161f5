//! Patched passes resumed part-way up the model: a pass whose masks change nothing before some
//! point of the residual stream computes exactly a recorded run there (ACDC's passes, the top
//! layers first), so it starts from that run's state instead of recomputing it.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use graph::Graph;
use transformer::Resume;

use crate::RecordedRun;

/// What a patched pass resumes from, rows replica-major: the residual stream at `point` and
/// δ = ablated − actual of every source before it, in [`crate::PatchHooks`]' layout.
#[derive(Debug, Clone)]
pub struct ResumeState<B: Backend> {
    /// Where the pass resumes.
    pub point: Resume,
    /// The stream read there, [replicas · rows, pos, d_model].
    pub resid: Tensor<B, 3>,
    /// [replicas, n_fwd, rows · pos · d_model]: the sources before `point` filled (forward
    /// indices `0..sources_before(point)`), the rest written by the pass.
    pub deltas: Tensor<B, 3>,
    /// Σ of the filled δ, [replicas, rows · pos · d_model].
    pub delta_sum: Tensor<B, 2>,
}

/// How many sources (forward indices) precede `point`: all of them before the final norm.
pub fn sources_before(graph: &Graph, point: Resume) -> usize {
    match point {
        Resume::Attention(l) => graph.layer(l).expect("a layer of the graph").heads_fwd.start,
        Resume::Mlp(l) => graph.layer(l).expect("a layer of the graph").mlp_fwd,
        Resume::Final => graph.n_fwd(),
    }
}

/// A recorded run with every source's δ against the ablated outputs laid out once, so a pass
/// resumed anywhere starts without copying node outputs.
#[derive(Debug, Clone)]
pub struct ResumableRun<B: Backend> {
    /// The run.
    pub run: RecordedRun<B>,
    graph: Graph,
    /// [1, n_fwd, rows · pos · d_model].
    deltas: Tensor<B, 3>,
    /// Σ of the first k δ, for every k, [1, rows · pos · d_model] (k = 0: zeros).
    prefix_sums: Vec<Tensor<B, 2>>,
}

impl<B: Backend> ResumableRun<B> {
    /// `run`'s δ against `ablated` [n_fwd, pairs or 1, pos, d_model] (the ablation's node outputs).
    pub fn new(graph: &Graph, run: RecordedRun<B>, ablated: &Tensor<B, 4>) -> Self {
        let [n, rows, t, d] = run.nodes.dims();
        let width = rows * t * d;
        let deltas: Tensor<B, 3> = (ablated.clone() - run.nodes.clone()).reshape([1, n, width]);
        let mut prefix_sums = Vec::with_capacity(n + 1);
        prefix_sums.push(Tensor::zeros([1, width], &deltas.device()));
        for k in 0..n {
            let row: Tensor<B, 2> = deltas.clone().slice([0..1, k..k + 1, 0..width]).squeeze_dim(1);
            prefix_sums.push(prefix_sums[k].clone() + row);
        }
        Self { run, graph: *graph, deltas, prefix_sums }
    }

    /// The run's state at `point`, `replicas` times over (rows replica-major).
    pub fn state(&self, point: Resume, replicas: usize) -> ResumeState<B> {
        let resid = match point {
            Resume::Attention(l) => self.run.layer_inputs[l].clone(),
            Resume::Mlp(l) => self.run.mlp_inputs[l].clone(),
            Resume::Final => self.run.final_input.clone(),
        };
        let k = sources_before(&self.graph, point);
        ResumeState {
            point,
            resid: repeat(resid, replicas),
            deltas: repeat(self.deltas.clone(), replicas),
            delta_sum: repeat(self.prefix_sums[k].clone(), replicas),
        }
    }
}

/// `x` repeated `times` along its first dimension.
fn repeat<B: Backend, const D: usize>(x: Tensor<B, D>, times: usize) -> Tensor<B, D> {
    if times == 1 { x } else { Tensor::cat(vec![x; times], 0) }
}
