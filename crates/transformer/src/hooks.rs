//! Interception points of the forward pass: where the MIB graph's node outputs are produced, where
//! each destination slot reads the residual stream, and the activations inside a node (each head's
//! q/k/v projections and attention pattern, each MLP's hidden layer).
//!
//! A [`Hooks`] implementation sees every node output as it is produced and decides what each
//! destination reads. Tracing, patching edges (with a per-edge mask that may carry gradients),
//! interpolating activations and adding gradient probes are all hooks over the same forward pass,
//! so no method re-implements the model.
//!
//! In the order the forward pass calls them, per layer: [`Hooks::attention_input`] (what q, k and
//! v read), [`Hooks::qkv_outputs`] (the projections), [`Hooks::attention_pattern`] (the
//! post-softmax pattern that multiplies v), [`Hooks::head_outputs`] (the `a{layer}.h{h}` nodes),
//! [`Hooks::mlp_input`], [`Hooks::mlp_hidden`] (after the activation, before the down projection)
//! and [`Hooks::mlp_output`] (the `m{layer}` node); around the layers [`Hooks::input_output`] and
//! [`Hooks::final_input`].
//!
//! Two hooks run in one pass as a pair: `(first, second)` is itself a hook in which every value
//! passes through `first`, then `second` (see the pair's [`Hooks`] impl for the attention input),
//! and `&mut H` is a hook wherever `H` is, so `&mut (&mut patcher, &mut recorder)` leaves both
//! with their owner.

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
    PerHead {
        /// What each head's query projection reads.
        q: Tensor<B, 4>,
        /// What each query head's key projection reads (through its KV head's weights).
        k: Tensor<B, 4>,
        /// What each query head's value projection reads (through its KV head's weights).
        v: Tensor<B, 4>,
    },
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

    /// Layer `layer`'s q, k and v inputs when an earlier hook of a composition has already given
    /// them per-head copies, each [n_heads, batch, pos, d_model] (see [`AttentionInput::PerHead`]).
    /// The default reads them as given; a hook that records or changes what attention reads
    /// overrides this as well as [`Hooks::attention_input`] to act after such a hook.
    fn per_head_attention_input(&mut self, _layer: usize, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
        [q, k, v]
    }

    /// Every query head's q, k and v [batch, heads, pos, d_head] right after the projections (k and
    /// v repeated per query head; before RoPE and GIM's gradient scaling): where a hook can probe
    /// each head's projection gradients without per-head input copies (see
    /// [`crate::model::Attention::input_gradients`]).
    fn qkv_outputs(&mut self, _layer: usize, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
        [q, k, v]
    }

    /// Layer `layer`'s attention pattern [batch, n_heads, query pos, key pos] after the softmax (and
    /// GIM's softmax rule): rows sum to 1 over the allowed keys and are 0 at future and padded
    /// ones. The returned pattern is what multiplies v.
    fn attention_pattern(&mut self, _layer: usize, pattern: Tensor<B, 4>) -> Tensor<B, 4> {
        pattern
    }

    /// The outputs of layer `layer`'s heads, each `z_h @ W_O[h]` before b_O: [batch, pos, n_heads, d_model].
    fn head_outputs(&mut self, _layer: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        heads
    }

    /// What MLP `layer` reads, given the residual stream entering it (before its norm).
    fn mlp_input(&mut self, _layer: usize, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        resid
    }

    /// MLP `layer`'s hidden activations [batch, pos, d_mlp] after the activation (GELU(x W_in + b_in),
    /// or act(x W_gate) ⊙ x W_up after GIM's gradient scalings) and before the down projection,
    /// which maps the returned value to the MLP's output.
    fn mlp_hidden(&mut self, _layer: usize, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        hidden
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

/// A hook borrowed for one pass, so its owner reads it afterwards (and pairs can hold borrows).
impl<B: Backend, H: Hooks<B> + ?Sized> Hooks<B> for &mut H {
    fn wants_head_outputs(&self) -> bool {
        (**self).wants_head_outputs()
    }

    fn input_output(&mut self, embedding: Tensor<B, 3>) -> Tensor<B, 3> {
        (**self).input_output(embedding)
    }

    fn attention_input(&mut self, layer: usize, resid: Tensor<B, 3>) -> AttentionInput<B> {
        (**self).attention_input(layer, resid)
    }

    fn per_head_attention_input(&mut self, layer: usize, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
        (**self).per_head_attention_input(layer, q, k, v)
    }

    fn qkv_outputs(&mut self, layer: usize, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
        (**self).qkv_outputs(layer, q, k, v)
    }

    fn attention_pattern(&mut self, layer: usize, pattern: Tensor<B, 4>) -> Tensor<B, 4> {
        (**self).attention_pattern(layer, pattern)
    }

    fn head_outputs(&mut self, layer: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        (**self).head_outputs(layer, heads)
    }

    fn mlp_input(&mut self, layer: usize, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        (**self).mlp_input(layer, resid)
    }

    fn mlp_hidden(&mut self, layer: usize, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        (**self).mlp_hidden(layer, hidden)
    }

    fn mlp_output(&mut self, layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        (**self).mlp_output(layer, out)
    }

    fn final_input(&mut self, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        (**self).final_input(resid)
    }
}

/// Two hooks in one pass, e.g. a recorder beside a patcher: every value passes through the first
/// hook, then the second, so each sees it as the hooks before it left it (a recorder placed second
/// records the patched values, placed first the unpatched ones).
///
/// Per-head outputs are produced when either hook wants them, and both hooks' `head_outputs` run.
/// What attention reads: the first hook's [`Hooks::attention_input`] runs on the residual; if it
/// returns [`AttentionInput::Shared`] the second's `attention_input` runs on that residual and
/// decides, and if it returns [`AttentionInput::PerHead`] the second is shown the copies through
/// [`Hooks::per_head_attention_input`] (a pass-through unless it overrides it, as [`Trace`] and
/// the patching engine do). A per-head input stays per head through both hooks'
/// `per_head_attention_input`. So either order patches; a recorder placed second,
/// `(patcher, trace)`, records what attention actually read, placed first what it would have read.
impl<B: Backend, First: Hooks<B>, Second: Hooks<B>> Hooks<B> for (First, Second) {
    fn wants_head_outputs(&self) -> bool {
        self.0.wants_head_outputs() || self.1.wants_head_outputs()
    }

    fn input_output(&mut self, embedding: Tensor<B, 3>) -> Tensor<B, 3> {
        let embedding = self.0.input_output(embedding);
        self.1.input_output(embedding)
    }

    fn attention_input(&mut self, layer: usize, resid: Tensor<B, 3>) -> AttentionInput<B> {
        match self.0.attention_input(layer, resid) {
            AttentionInput::Shared(resid) => self.1.attention_input(layer, resid),
            AttentionInput::PerHead { q, k, v } => {
                let [q, k, v] = self.1.per_head_attention_input(layer, q, k, v);
                AttentionInput::PerHead { q, k, v }
            }
        }
    }

    fn per_head_attention_input(&mut self, layer: usize, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
        let [q, k, v] = self.0.per_head_attention_input(layer, q, k, v);
        self.1.per_head_attention_input(layer, q, k, v)
    }

    fn qkv_outputs(&mut self, layer: usize, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
        let [q, k, v] = self.0.qkv_outputs(layer, q, k, v);
        self.1.qkv_outputs(layer, q, k, v)
    }

    fn attention_pattern(&mut self, layer: usize, pattern: Tensor<B, 4>) -> Tensor<B, 4> {
        let pattern = self.0.attention_pattern(layer, pattern);
        self.1.attention_pattern(layer, pattern)
    }

    fn head_outputs(&mut self, layer: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        let heads = self.0.head_outputs(layer, heads);
        self.1.head_outputs(layer, heads)
    }

    fn mlp_input(&mut self, layer: usize, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        let resid = self.0.mlp_input(layer, resid);
        self.1.mlp_input(layer, resid)
    }

    fn mlp_hidden(&mut self, layer: usize, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = self.0.mlp_hidden(layer, hidden);
        self.1.mlp_hidden(layer, hidden)
    }

    fn mlp_output(&mut self, layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        let out = self.0.mlp_output(layer, out);
        self.1.mlp_output(layer, out)
    }

    fn final_input(&mut self, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        let resid = self.0.final_input(resid);
        self.1.final_input(resid)
    }
}

/// Records every MIB node output, every destination slot's input, and each layer's attention pattern
/// and MLP hidden layer of one forward pass.
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
    /// Per layer: the post-softmax attention pattern [batch, n_heads, query pos, key pos].
    pub attention_patterns: Vec<Tensor<B, 4>>,
    /// Per layer: the MLP's input.
    pub mlp_inputs: Vec<Tensor<B, 3>>,
    /// Per layer: the MLP's hidden activations [batch, pos, d_mlp], before the down projection.
    pub mlp_hidden: Vec<Tensor<B, 3>>,
    /// The residual read by the final norm.
    pub final_input: Option<Tensor<B, 3>>,
}

impl<B: Backend> Trace<B> {
    /// An empty trace for a model with `n_heads` query heads per layer.
    pub fn new(n_heads: usize) -> Self {
        Self {
            n_heads,
            input: None,
            heads: Vec::new(),
            mlps: Vec::new(),
            attention_inputs: Vec::new(),
            attention_patterns: Vec::new(),
            mlp_inputs: Vec::new(),
            mlp_hidden: Vec::new(),
            final_input: None,
        }
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

    fn per_head_attention_input(&mut self, _layer: usize, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
        self.attention_inputs.push(AttentionInput::PerHead { q: q.clone(), k: k.clone(), v: v.clone() });
        [q, k, v]
    }

    fn attention_pattern(&mut self, _layer: usize, pattern: Tensor<B, 4>) -> Tensor<B, 4> {
        self.attention_patterns.push(pattern.clone());
        pattern
    }

    fn head_outputs(&mut self, _layer: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        self.heads.push(heads.clone());
        heads
    }

    fn mlp_input(&mut self, _layer: usize, resid: Tensor<B, 3>) -> Tensor<B, 3> {
        self.mlp_inputs.push(resid.clone());
        resid
    }

    fn mlp_hidden(&mut self, _layer: usize, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        self.mlp_hidden.push(hidden.clone());
        hidden
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
