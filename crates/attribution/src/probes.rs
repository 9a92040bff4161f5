//! Gradient probes: one forward/backward pass gives dL/d(input) at every destination slot of the
//! MIB graph — each head's q, k and v copy separately — plus the clean node outputs of that pass.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use transformer::{AttentionInput, Hooks};

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// A group of source nodes whose outputs EAP-IG interpolates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeGroup {
    Input,
    Heads(usize),
    Mlp(usize),
}

/// Replace one group's outputs by α·actual + (1 − α)·corrupted (integrated gradients' path).
#[derive(Debug, Clone)]
pub struct Interpolation<B: Backend> {
    pub group: NodeGroup,
    pub alpha: f64,
    /// Corrupted node outputs [n_fwd, batch, pos, d_model].
    pub corrupted: Tensor<B, 4>,
}

/// Hooks adding a zero leaf at every destination slot and recording every source node's output.
pub struct GradientProbes<B: AutodiffBackend> {
    n_heads: usize,
    /// Per layer: the q, k and v leaves, each [batch, pos, n_heads, d_model].
    pub qkv: Vec<[Tensor<B, 4>; 3]>,
    /// Per layer: the MLP input leaf [batch, pos, d_model].
    pub mlp: Vec<Tensor<B, 3>>,
    /// The final residual's leaf.
    pub last: Option<Tensor<B, 3>>,
    /// Node outputs of this pass, source-major chunks [k, batch, pos, d_model], without gradients.
    nodes: Vec<Tensor<Inner<B>, 4>>,
    interpolation: Option<Interpolation<B>>,
    produced: usize,
}

impl<B: AutodiffBackend> GradientProbes<B> {
    /// Probes for a model with `n_heads` query heads, optionally interpolating one node group.
    pub fn new(n_heads: usize, interpolation: Option<Interpolation<B>>) -> Self {
        Self { n_heads, qkv: Vec::new(), mlp: Vec::new(), last: None, nodes: Vec::new(), interpolation, produced: 0 }
    }

    /// The node outputs recorded in this pass: [n_fwd, batch, pos, d_model].
    pub fn nodes(&self) -> Tensor<Inner<B>, 4> {
        Tensor::cat(self.nodes.clone(), 0)
    }

    fn leaf<const D: usize>(like: &Tensor<B, D>) -> Tensor<B, D> {
        Tensor::zeros(like.dims(), &like.device()).require_grad()
    }

    /// Records `k` outputs (source-major) and applies the interpolation when this is its group.
    fn produce(&mut self, group: NodeGroup, out: Tensor<B, 4>) -> Tensor<B, 4> {
        let k = out.dims()[0];
        let start = self.produced;
        self.produced += k;
        let out = match &self.interpolation {
            Some(i) if i.group == group => {
                let [_, b, t, d] = out.dims();
                let corrupted = i.corrupted.clone().slice([start..start + k, 0..b, 0..t, 0..d]);
                out * i.alpha + corrupted * (1.0 - i.alpha)
            }
            _ => out,
        };
        self.nodes.push(out.clone().inner());
        out
    }
}

impl<B: AutodiffBackend> Hooks<B> for GradientProbes<B> {
    fn wants_head_outputs(&self) -> bool {
        true
    }

    fn input_output(&mut self, embedding: Tensor<B, 3>) -> Tensor<B, 3> {
        self.produce(NodeGroup::Input, embedding.unsqueeze()).squeeze_dim(0)
    }

    fn attention_input(&mut self, _layer: usize, resid: Tensor<B, 3>) -> AttentionInput<B> {
        let [b, t, d] = resid.dims();
        let shared: Tensor<B, 4> = resid.unsqueeze_dim::<4>(2).expand([b, t, self.n_heads, d]);
        let leaves = [Self::leaf(&shared), Self::leaf(&shared), Self::leaf(&shared)];
        let [q, k, v] = leaves.clone().map(|leaf| shared.clone() + leaf);
        self.qkv.push(leaves);
        AttentionInput::PerHead { q, k, v }
    }

    fn head_outputs(&mut self, layer: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        let out = self.produce(NodeGroup::Heads(layer), heads.permute([2, 0, 1, 3]));
        out.permute([1, 2, 0, 3])
    }

    fn mlp_input(&mut self, _layer: usize, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        let leaf = Self::leaf(&resid);
        self.mlp.push(leaf.clone());
        resid + leaf
    }

    fn mlp_output(&mut self, layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        self.produce(NodeGroup::Mlp(layer), out.unsqueeze()).squeeze_dim(0)
    }

    fn final_input(&mut self, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        let leaf = Self::leaf(&resid);
        self.last = Some(leaf.clone());
        resid + leaf
    }
}
