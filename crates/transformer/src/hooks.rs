//! Interception points of the forward pass: where the MIB graph's node outputs are produced and
//! where each destination slot reads the residual stream.
//!
//! A [`Hooks`] implementation sees every node output as it is produced and decides what each
//! destination reads. Tracing, patching edges (with a per-edge mask that may carry gradients),
//! interpolating activations and adding gradient probes are all hooks over the same forward pass,
//! so no method re-implements the model.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// What the q, k and v projections of one attention layer read.
#[derive(Debug, Clone)]
pub enum AttentionInput<B: Backend> {
    /// Every head's q, k and v read the same residual stream [batch, pos, d_model]: the fast path.
    Shared(Tensor<B, 3>),
    /// Each query head has its own copy for each of q, k and v, each [n_heads, batch, pos, d_model]
    /// (MIB's split q/k/v inputs, ungrouped for GQA), so each can be patched or probed alone. Head
    /// first: the per-head projections multiply [heads, batch·pos, d_model] blocks, and the
    /// patching engine's terms come out head by head, so neither side permutes (copies) them.
    PerHead { q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4> },
}

impl<B: Backend> AttentionInput<B> {
    /// Per-head copies of one residual stream, for hooks that patch or probe slots one by one.
    pub fn per_head(resid: &Tensor<B, 3>, n_heads: usize) -> Self {
        let [b, t, d] = resid.dims();
        let copies = || resid.clone().unsqueeze_dim::<4>(0).expand([n_heads, b, t, d]);
        AttentionInput::PerHead { q: copies(), k: copies(), v: copies() }
    }
}

/// Callbacks of the forward pass. Every method has a pass-through default, so a hook overrides only
/// the points it cares about. Shapes: [batch, pos, d_model] unless stated.
pub trait Hooks<B: Backend> {
    /// Whether attention must produce per-head outputs [batch, pos, n_heads, d_model] (and call
    /// [`Hooks::head_outputs`]); when false the cheaper fused output projection is used.
    fn wants_head_outputs(&self) -> bool {
        false
    }

    /// The `input` node's output: the token embedding alone (positional embedding excluded).
    fn input_output(&mut self, embedding: Tensor<B, 3>) -> Tensor<B, 3> {
        embedding
    }

    /// What layer `layer`'s q, k and v read, given the residual stream entering it.
    fn attention_input(&mut self, _layer: usize, resid: Tensor<B, 3>) -> AttentionInput<B> {
        AttentionInput::Shared(resid)
    }

    /// Every query head's q, k and v [batch, heads, pos, d_head] right after the projections (k and
    /// v repeated per query head; before RoPE and GIM's gradient scaling): where a hook can probe
    /// each head's projection gradients without per-head input copies (see
    /// [`crate::model::Attention::projection_input_gradients`]).
    fn qkv_outputs(&mut self, _layer: usize, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
        [q, k, v]
    }

    /// The outputs of layer `layer`'s heads, each z_h @ W_O[h] before b_O: [batch, pos, n_heads, d_model].
    fn head_outputs(&mut self, _layer: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        heads
    }

    /// What MLP `layer` reads, given the residual stream entering it (before its norm).
    fn mlp_input(&mut self, _layer: usize, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        resid
    }

    /// MLP `layer`'s output (its bias included): the `m{layer}` node.
    fn mlp_output(&mut self, _layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        out
    }

    /// What the final norm and unembedding read (the `logits` node's input slot).
    fn final_input(&mut self, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        resid
    }
}

/// The plain forward pass: no interception.
pub struct NoHooks;

impl<B: Backend> Hooks<B> for NoHooks {}

/// Records every MIB node output and every destination slot's input of one forward pass.
#[derive(Debug, Clone)]
pub struct Trace<B: Backend> {
    n_heads: usize,
    /// The `input` node's output.
    pub input: Option<Tensor<B, 3>>,
    /// Per layer: the heads' outputs [batch, pos, n_heads, d_model].
    pub heads: Vec<Tensor<B, 4>>,
    /// Per layer: the MLP's output.
    pub mlps: Vec<Tensor<B, 3>>,
    /// Per layer: the per-head q/k/v input copies actually read by attention.
    pub attention_inputs: Vec<AttentionInput<B>>,
    /// Per layer: the MLP's input.
    pub mlp_inputs: Vec<Tensor<B, 3>>,
    /// The residual read by the final norm.
    pub final_input: Option<Tensor<B, 3>>,
}

impl<B: Backend> Trace<B> {
    /// An empty trace for a model with `n_heads` query heads per layer.
    pub fn new(n_heads: usize) -> Self {
        Self { n_heads, input: None, heads: Vec::new(), mlps: Vec::new(), attention_inputs: Vec::new(), mlp_inputs: Vec::new(), final_input: None }
    }
}

impl<B: Backend> Hooks<B> for Trace<B> {
    fn wants_head_outputs(&self) -> bool {
        true
    }

    fn input_output(&mut self, embedding: Tensor<B, 3>) -> Tensor<B, 3> {
        self.input = Some(embedding.clone());
        embedding
    }

    fn attention_input(&mut self, _layer: usize, resid: Tensor<B, 3>) -> AttentionInput<B> {
        let input = AttentionInput::per_head(&resid, self.n_heads);
        self.attention_inputs.push(input.clone());
        input
    }

    fn head_outputs(&mut self, _layer: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        self.heads.push(heads.clone());
        heads
    }

    fn mlp_input(&mut self, _layer: usize, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        self.mlp_inputs.push(resid.clone());
        resid
    }

    fn mlp_output(&mut self, _layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        self.mlps.push(out.clone());
        out
    }

    fn final_input(&mut self, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        self.final_input = Some(resid.clone());
        resid
    }
}
