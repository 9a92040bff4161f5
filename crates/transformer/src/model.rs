//! The decoder-only transformer shared by every architecture, with the MIB node graph exposed
//! through [`Hooks`]. Architecture files (`gpt2.rs`, `llama.rs`) only map configs and weights onto it.

use burn::module::{Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::config::{ModelConfig, PositionEncoding};
use crate::hooks::{AttentionInput, Hooks, NoHooks};
use crate::layers::{Linear, Mlp, Norm, RopeTables, matmul_last};
use crate::rules::{GradientRules, attention_softmax, scale_grad};

/// Multi-head (optionally grouped-query) self-attention whose heads can be read and fed one by one.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// [d_model, n_heads · d_head]
    pub q: Linear<B>,
    /// [d_model, n_kv_heads · d_head]
    pub k: Linear<B>,
    /// [d_model, n_kv_heads · d_head]
    pub v: Linear<B>,
    /// [n_heads · d_head, d_model]; its bias is b_O, which belongs to no MIB node.
    pub o: Linear<B>,
    /// Query heads: one MIB node each.
    pub n_heads: usize,
    /// Key/value heads; each serves n_heads / n_kv_heads adjacent query heads.
    pub n_kv_heads: usize,
    /// Width of each head's q, k and v.
    pub d_head: usize,
}

/// One pre-norm block: attention then MLP, each reading the residual stream through its own norm.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// The norm q, k and v read the residual through.
    pub attn_norm: Norm<B>,
    /// The block's attention.
    pub attn: Attention<B>,
    /// The norm the MLP reads the residual through.
    pub mlp_norm: Norm<B>,
    /// The block's MLP.
    pub mlp: Mlp<B>,
}

/// A decoder-only transformer (GPT-2 or Llama family).
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    /// [vocab, d_model]
    pub token_embedding: Param<Tensor<B, 2>>,
    /// [max_positions, d_model], GPT-2 only.
    pub position_embedding: Option<Param<Tensor<B, 2>>>,
    /// The layers, in order.
    pub blocks: Vec<Block<B>>,
    /// The norm before the unembedding.
    pub final_norm: Norm<B>,
    /// [d_model, vocab]; None when tied to the token embedding.
    pub unembedding: Option<Param<Tensor<B, 2>>>,
    /// The shape and variants the modules were built from.
    #[module(skip)]
    pub config: ModelConfig,
}

/// Right-padded token ids with each row's real length, the form every forward pass takes;
/// optionally with its first positions already computed ([`PrefixCache`]), so a pass runs only
/// the positions after them.
#[derive(Debug, Clone)]
pub struct Batch<B: Backend> {
    /// [batch, max_len]
    pub ids: Tensor<B, 2, Int>,
    /// Each row's real length; positions from it on are padding, masked as keys.
    pub lengths: Vec<usize>,
    /// Each row's read position, where [`Readout::ReadPosition`] takes its logits: its last token
    /// unless [`Batch::reading_at`] says otherwise (a bidirectional model is read anywhere).
    reads: Vec<usize>,
    /// Whether positions attend to earlier ones only (the model's [`ModelConfig::causal`]).
    causal: bool,
    /// Keys and values of each row's positions before its start, when a pass is to start there.
    prefix: Option<PrefixCache<B>>,
}

/// Every layer's keys and values at the first positions of each row of a batch (row i's first
/// `starts[i]`), computed once ([`Transformer::prefix_cache`]). A pass over a batch carrying it
/// computes row i's positions `starts[i]..` only — left-aligned: position q of the pass is row
/// i's position `starts[i] + q` — its queries attending over these keys and values and its own.
/// Exact whenever every activation before a row's start would be the same in that pass, as under
/// counterfactual patching before the first token where clean and counterfactual prompts differ.
/// Node outputs, hooks and destination inputs of such a pass cover the computed positions only.
#[derive(Debug, Clone)]
pub struct PrefixCache<B: Backend> {
    /// Each row's first computed position.
    starts: Vec<usize>,
    /// Per layer: keys (after RoPE) and values, each [rows, n_heads, max start, d_head] (key/value
    /// heads repeated for each query head of their group); row i's entries from `starts[i]` on
    /// are never read.
    layers: Vec<[Tensor<B, 4>; 2]>,
}

impl<B: Backend> PrefixCache<B> {
    /// Each row's first computed position.
    pub fn starts(&self) -> &[usize] {
        &self.starts
    }

    /// Block `layer`'s keys and values; panics for a batch narrowed to its last positions.
    fn layer(&self, layer: usize) -> &[Tensor<B, 4>; 2] {
        self.layers.get(layer).expect("a batch narrowed to its last positions runs no attention")
    }

    /// Cached positions of the longest prefix.
    fn width(&self) -> usize {
        self.starts.iter().copied().max().unwrap_or(0)
    }

    /// The same cache with its rows repeated `times` (replica-major, as [`Batch::repeat`]).
    fn repeat(&self, times: usize) -> Self {
        let layers = self.layers.iter().map(|kv| kv.clone().map(|x| Tensor::cat(vec![x; times], 0))).collect();
        Self { starts: (0..times).flat_map(|_| self.starts.iter().copied()).collect(), layers }
    }
}

impl<B: AutodiffBackend> Batch<B> {
    /// A batch made on the inner backend, for passes that take gradients; its cached keys and
    /// values are constants, so no gradient flows into positions before its start (none is
    /// needed where the cache is exact: nothing there differs between the runs compared).
    pub fn from_inner(inner: Batch<B::InnerBackend>) -> Self {
        let prefix = inner.prefix.map(|p| PrefixCache { starts: p.starts, layers: p.layers.into_iter().map(|kv| kv.map(Tensor::from_inner)).collect() });
        Self { ids: Tensor::from_inner(inner.ids), lengths: inner.lengths, reads: inner.reads, causal: inner.causal, prefix }
    }
}

/// Why a prefix cannot be attached to a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The cache was computed for another number of rows.
    #[error("a prefix cache of {cached} rows attached to a batch of {rows}")]
    Rows {
        /// Rows of the cache.
        cached: usize,
        /// Rows of the batch.
        rows: usize,
    },
    /// A row read inside its prefix: a pass over the suffix would not compute its logits.
    #[error("row {index} is read at position {read}, inside its cached prefix of {start}")]
    ReadWithinPrefix {
        /// The row.
        index: usize,
        /// Its read position.
        read: usize,
        /// The prefix's length.
        start: usize,
    },
    /// A bidirectional model's earlier positions read the later ones, so no prefix is fixed.
    #[error("a prefix cache needs causal attention; this model's attention is bidirectional")]
    Bidirectional,
}

/// Why a set of token sequences cannot be run as a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// No sequences at all.
    #[error("empty batch")]
    Empty,
    /// A sequence without tokens would leave its attention rows nothing to attend to.
    #[error("sequence {index} of the batch has no tokens")]
    EmptySequence {
        /// Its row in the batch.
        index: usize,
    },
    /// A token id has no embedding row.
    #[error("sequence {index} has token id {token}, outside the vocabulary of {vocab_size}")]
    TokenOutOfVocabulary {
        /// The row holding it.
        index: usize,
        /// The offending id.
        token: u32,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// A read position past its row's end.
    #[error("row {index} is read at position {read}, outside its {len} tokens")]
    ReadOutside {
        /// The row.
        index: usize,
        /// The position asked for.
        read: usize,
        /// The row's length.
        len: usize,
    },
    /// Read positions for another number of rows.
    #[error("{reads} read positions for a batch of {rows} rows")]
    ReadRows {
        /// Read positions given.
        reads: usize,
        /// Rows of the batch.
        rows: usize,
    },
    /// A read position inside the row's cached prefix, which no pass computes.
    #[error("row {index} is read at position {read}, inside its cached prefix of {start}")]
    ReadWithinPrefix {
        /// The row.
        index: usize,
        /// The position asked for.
        read: usize,
        /// The prefix's length.
        start: usize,
    },
    /// A sequence is longer than the learned position embedding.
    #[error("sequence {index} has {len} tokens, more than the model's {max_positions} positions")]
    TooLong {
        /// The row holding it.
        index: usize,
        /// Its length.
        len: usize,
        /// The model's learned positions.
        max_positions: usize,
    },
}

impl<B: Backend> Batch<B> {
    /// Right-pads `sequences` with the model's pad token, after checking they fit the model: no
    /// empty sequence (it would leave an attention row with nothing to attend to), every id in the
    /// vocabulary, no sequence longer than learned positions allow.
    pub fn new(sequences: &[Vec<u32>], config: &ModelConfig, device: &B::Device) -> Result<Self, BatchError> {
        if sequences.is_empty() {
            return Err(BatchError::Empty);
        }
        for (index, seq) in sequences.iter().enumerate() {
            if seq.is_empty() {
                return Err(BatchError::EmptySequence { index });
            }
            if let Some(&token) = seq.iter().find(|&&t| t as usize >= config.vocab_size) {
                return Err(BatchError::TokenOutOfVocabulary { index, token, vocab_size: config.vocab_size });
            }
            if let PositionEncoding::Learned { max_positions } = config.positions
                && seq.len() > max_positions
            {
                return Err(BatchError::TooLong { index, len: seq.len(), max_positions });
            }
        }
        let pad_id = config.pad_token_id;
        let max_len = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(sequences.len() * max_len);
        for seq in sequences {
            ids.extend(seq.iter().map(|&t| t as i64));
            ids.extend(std::iter::repeat_n(pad_id as i64, max_len - seq.len()));
        }
        Ok(Self {
            ids: Tensor::from_data(TensorData::new(ids, [sequences.len(), max_len]), device),
            lengths: sequences.iter().map(Vec::len).collect(),
            reads: sequences.iter().map(|s| s.len() - 1).collect(),
            causal: config.causal,
            prefix: None,
        })
    }

    /// This batch read at `reads` (one position per row, absolute) instead of each row's last
    /// token: a bidirectional model's output at a position depends on every token, so its rows
    /// are read where the task asks, not cut there.
    pub fn reading_at(mut self, reads: &[usize]) -> Result<Self, BatchError> {
        if reads.len() != self.size() {
            return Err(BatchError::ReadRows { reads: reads.len(), rows: self.size() });
        }
        if let Some((index, (&read, &len))) = reads.iter().zip(&self.lengths).enumerate().find(|(_, (r, l))| r >= l) {
            return Err(BatchError::ReadOutside { index, read, len });
        }
        if let Some(starts) = self.starts()
            && let Some((index, (&read, &start))) = reads.iter().zip(starts).enumerate().find(|(_, (r, s))| r < s)
        {
            return Err(BatchError::ReadWithinPrefix { index, read, start });
        }
        self.reads = reads.to_vec();
        Ok(self)
    }

    /// Each row's read position (absolute): where [`Readout::ReadPosition`] takes its logits.
    pub fn reads(&self) -> &[usize] {
        &self.reads
    }

    /// This batch with each row's first positions computed already: a pass over it computes row
    /// i's positions `prefix.starts()[i]..` only. The caller vouches that every activation before
    /// a row's start in the passes it runs equals the one the cache was computed from (see
    /// [`PrefixCache`]).
    pub fn with_prefix(mut self, prefix: PrefixCache<B>) -> Result<Self, PrefixError> {
        if !self.causal {
            return Err(PrefixError::Bidirectional);
        }
        if prefix.starts.len() != self.size() {
            return Err(PrefixError::Rows { cached: prefix.starts.len(), rows: self.size() });
        }
        if let Some((index, (&read, &start))) = self.reads.iter().zip(&prefix.starts).enumerate().find(|&(_, (&read, &start))| read < start) {
            return Err(PrefixError::ReadWithinPrefix { index, read, start });
        }
        self.prefix = Some(prefix);
        Ok(self)
    }

    /// This batch narrowed to each row's read position: a pass over it computes that position
    /// only, which is all a pass resumed after the last attention reads (nothing but the logits
    /// reads the last block's MLP and the final norm). It carries no keys or values, so it cannot
    /// run attention (and it ends at its read positions: rows are as long as them plus one).
    pub fn read_positions(&self) -> Self {
        let starts = self.reads.clone();
        Self {
            ids: self.ids.clone(),
            lengths: self.reads.iter().map(|r| r + 1).collect(),
            reads: self.reads.clone(),
            causal: self.causal,
            prefix: Some(PrefixCache { starts, layers: Vec::new() }),
        }
    }

    /// Each row's read position as an index into the positions a pass over this batch computes
    /// (where its logits are read).
    pub fn read_computed(&self) -> Vec<usize> {
        match self.starts() {
            Some(starts) => self.reads.iter().zip(starts).map(|(r, s)| r - s).collect(),
            None => self.reads.clone(),
        }
    }

    /// Each row's first computed position: its cached prefix's length (None: every position).
    pub fn starts(&self) -> Option<&[usize]> {
        self.prefix.as_ref().map(PrefixCache::starts)
    }

    /// Positions a pass over this batch computes per row: the longest row's, from its start.
    fn computed_len(&self) -> usize {
        match &self.prefix {
            None => self.max_len(),
            Some(p) => self.lengths.iter().zip(&p.starts).map(|(l, s)| l - s).max().unwrap_or(0),
        }
    }

    /// The rows repeated `times`, replica-major (rows `r·size .. (r+1)·size` are copy r), with
    /// the prefix cache repeated alike: one pass running several masks over the same pairs.
    pub fn repeat(&self, times: usize) -> Self {
        if times == 1 {
            return self.clone();
        }
        Self {
            ids: Tensor::cat(vec![self.ids.clone(); times], 0),
            lengths: (0..times).flat_map(|_| self.lengths.iter().copied()).collect(),
            reads: (0..times).flat_map(|_| self.reads.iter().copied()).collect(),
            causal: self.causal,
            prefix: self.prefix.as_ref().map(|p| p.repeat(times)),
        }
    }

    /// Number of rows.
    pub fn size(&self) -> usize {
        self.lengths.len()
    }

    /// Padded length.
    pub fn max_len(&self) -> usize {
        self.ids.dims()[1]
    }

    /// Causal mask (for a causal model) combined with key padding, true where attention is forbidden: [batch, 1,
    /// queries, keys] for the computed positions' queries over the cached keys (as wide as the
    /// longest prefix; row i reads its first `starts[i]`) and then the computed positions' keys.
    /// Each row's first computed position is real, so no row is fully masked.
    fn attention_mask(&self, device: &B::Device) -> Tensor<B, 4, Bool> {
        self.attention_mask_at(None, device)
    }

    /// [`Batch::attention_mask`] for the queries at one computed position per row (`at`), or at
    /// every one: [batch, 1, queries, keys].
    fn attention_mask_at(&self, at: Option<&[usize]>, device: &B::Device) -> Tensor<B, 4, Bool> {
        let n = self.computed_len();
        let (starts, width) = match &self.prefix {
            Some(p) => (p.starts.clone(), p.width()),
            None => (vec![0; self.size()], 0),
        };
        let queries = at.map_or(n, |_| 1);
        let mut mask = Vec::with_capacity(self.size() * queries * (width + n));
        for (row, (&len, &start)) in self.lengths.iter().zip(&starts).enumerate() {
            let rows_queries = match at {
                Some(at) => at[row]..at[row] + 1,
                None => 0..n,
            };
            for query in rows_queries {
                mask.extend((0..width).map(|key| key >= start));
                mask.extend((0..n).map(|key| (self.causal && key > query) || start + key >= len));
            }
        }
        Tensor::from_data(TensorData::new(mask, [self.size(), 1, queries, width + n]), device)
    }

    /// The absolute position of each computed position, row-major [rows × computed], clamped to
    /// the padded length (positions past a row's end are padding, read by nothing); None when
    /// every row computes every position.
    fn computed_positions(&self) -> Option<Vec<usize>> {
        let p = self.prefix.as_ref()?;
        let (n, t) = (self.computed_len(), self.max_len());
        Some(p.starts.iter().flat_map(|&s| (0..n).map(move |q| (s + q).min(t - 1))).collect())
    }
}

/// One of an attention head's three inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeadInput {
    /// What its queries read.
    Query,
    /// What its keys read.
    Key,
    /// What its values read.
    Value,
}

/// A point of the residual stream a pass can resume from ([`Transformer::forward_from`]),
/// ordered as a pass reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The stream entering block l: its attention onwards.
    Attention(usize),
    /// The stream entering block l's MLP (after its attention).
    Mlp(usize),
    /// The stream entering the final norm: the unembedding only.
    Final,
}

impl Resume {
    /// (block, 0 = attention / 1 = MLP), the final norm after every block.
    fn rank(self) -> (usize, u8) {
        match self {
            Self::Attention(l) => (l, 0),
            Self::Mlp(l) => (l, 1),
            Self::Final => (usize::MAX, 0),
        }
    }
}

impl PartialOrd for Resume {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Resume {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// Which positions to unembed: computing logits only where they are read saves the vocab matmul.
#[derive(Debug, Clone)]
pub enum Readout {
    /// Each row's read position (its last real token unless [`Batch::reading_at`] moved it):
    /// [batch, 1, vocab].
    ReadPosition,
    /// One position per row: [batch, 1, vocab].
    At(Vec<usize>),
    /// Every position: [batch, len, vocab].
    All,
}

impl<B: Backend> Attention<B> {
    /// Per-head weights [n, d_model, d_head] of a projection with `n` heads.
    fn per_head_weight(weight: Tensor<B, 2>, n: usize, d_head: usize) -> Tensor<B, 3> {
        let d_model = weight.dims()[0];
        weight.reshape([d_model, n, d_head]).swap_dims(0, 1)
    }

    /// The weights each query head applies with a projection `weight` [d_model, n·d_head] of `n`
    /// heads, [n_heads, d_model, d_head]: a key/value head's weights repeated for every query head
    /// of its group.
    fn query_head_weight(&self, weight: Tensor<B, 2>, n: usize) -> Tensor<B, 3> {
        let d_model = weight.dims()[0];
        let w = Self::per_head_weight(weight, n, self.d_head);
        if n == self.n_heads {
            return w;
        }
        w.unsqueeze_dim::<4>(1).expand([n, self.n_heads / n, d_model, self.d_head]).reshape([self.n_heads, d_model, self.d_head])
    }

    /// Per-head biases [1, n, 1, d_head], broadcastable over [batch, n, pos, d_head].
    fn per_head_bias(linear: &Linear<B>, n: usize, d_head: usize) -> Option<Tensor<B, 4>> {
        linear.bias.as_ref().map(|b| b.val().reshape([1, n, 1, d_head]))
    }

    /// Repeats key/value heads so query head h uses KV head h / group: [b, kv, t, d] → [b, h, t, d].
    fn ungroup(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let group = self.n_heads / self.n_kv_heads;
        if group == 1 {
            return x;
        }
        let [b, kv, t, d] = x.dims();
        x.unsqueeze_dim::<5>(2).expand([b, kv, group, t, d]).reshape([b, kv * group, t, d])
    }

    /// Shared input: one projection of the normed residual [b, t, d_model] → [b, heads, t, d_head].
    fn project_shared(&self, linear: &Linear<B>, n: usize, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, t, _] = x.dims();
        let y = linear.forward(x).reshape([b, t, n, self.d_head]).swap_dims(1, 2);
        self.ungroup_if_kv(y, n)
    }

    /// Per-head inputs [n_heads, b, t, d_model] (already normed): head h projected with its own
    /// (for k/v: its group's) weights → [b, n_heads, t, d_head].
    fn project_per_head(&self, linear: &Linear<B>, n: usize, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [heads, b, t, d_model] = x.dims();
        let group = heads / n;
        // As [n, group·b·t, d_model] @ [n, d_model, d_head]: one GEMM per projection head (a
        // key/value head serves its group's query heads, which are adjacent), so each head's
        // weights are packed once and never copied per query head.
        let w = Self::per_head_weight(linear.weight.val(), n, self.d_head);
        let y = x.reshape([n, group * b * t, d_model]).matmul(w);
        let y = y.reshape([heads, b, t, self.d_head]).swap_dims(0, 1);
        match Self::per_head_bias(linear, n, self.d_head) {
            Some(bias) if n == self.n_heads => y + bias,
            Some(bias) => y + self.ungroup(bias),
            None => y,
        }
    }

    /// ∂L/∂(the residual stream `resid` [1, b·t, d_model] that each query head's q, k and v read
    /// through `norm`) from ∂L/∂(their projection outputs) [b, heads, t, d_head] (as given by
    /// [`Hooks::qkv_outputs`]): g @ W_headᵀ per head (k and v through their group's weights), then
    /// the norm's backward ([`Norm::input_gradient`]), `freeze` holding its statistic constant;
    /// each [heads, b·t, d_model]. This is the per-head input path's backward without its copies.
    /// With the statistic frozen the norm's backward is linear, so it is folded into the weights
    /// and the narrow g instead of being applied to the wide product (GIM's most common case).
    pub fn input_gradients(&self, norm: &Norm<B>, resid: Tensor<B, 3>, grads: [Tensor<B, 4>; 3], freeze: bool) -> [Tensor<B, 3>; 3] {
        let [gq, gk, gv] = grads;
        let inverse_statistic = freeze.then(|| norm.inverse_statistic(resid.clone())); // [1, b·t, 1]
        let through = |linear: &Linear<B>, n: usize, g: Tensor<B, 4>| {
            let [b, heads, t, dh] = g.dims();
            let g = g.swap_dims(0, 1).reshape([heads, b * t, dh]);
            match &inverse_statistic {
                Some(scale) => {
                    let folded = norm.frozen_linear(linear.weight.val(), 0);
                    (g * scale.clone()).matmul(self.query_head_weight(folded, n).swap_dims(1, 2))
                }
                None => norm.input_gradient(resid.clone(), g.matmul(self.query_head_weight(linear.weight.val(), n).swap_dims(1, 2)), false),
            }
        };
        [through(&self.q, self.n_heads, gq), through(&self.k, self.n_kv_heads, gk), through(&self.v, self.n_kv_heads, gv)]
    }

    fn ungroup_if_kv(&self, y: Tensor<B, 4>, n: usize) -> Tensor<B, 4> {
        if n == self.n_heads { y } else { self.ungroup(y) }
    }

    /// Returns the attention's contribution to the residual stream (with b_O) and the keys (after
    /// RoPE) and values it attended over, [b, heads, keys, d_head]: `cached` ones of earlier
    /// positions first, then those of the input's. Calls `hooks.qkv_outputs` with the
    /// projections, `hooks.attention_pattern` with the pattern and `hooks.head_outputs` with the
    /// per-head outputs when the hooks want them; `rules` shape the backward of the norm, the
    /// q/k/v projections and the pattern softmax.
    #[allow(clippy::too_many_arguments)]
    fn forward<H: Hooks<B>>(
        &self,
        layer: usize,
        input: AttentionInput<B>,
        norm: &Norm<B>,
        mask: &Tensor<B, 4, Bool>,
        rope: Option<&RopeTables<B>>,
        cached: Option<&[Tensor<B, 4>; 2]>,
        hooks: &mut H,
        rules: &GradientRules,
    ) -> (Tensor<B, 3>, [Tensor<B, 4>; 2]) {
        let (q, k, v) = match input {
            AttentionInput::Shared(resid) => {
                let x = norm.forward(resid, rules);
                (
                    self.project_shared(&self.q, self.n_heads, x.clone()),
                    self.project_shared(&self.k, self.n_kv_heads, x.clone()),
                    self.project_shared(&self.v, self.n_kv_heads, x),
                )
            }
            AttentionInput::PerHead { q, k, v } => (
                self.project_per_head(&self.q, self.n_heads, norm.forward(q, rules)),
                self.project_per_head(&self.k, self.n_kv_heads, norm.forward(k, rules)),
                self.project_per_head(&self.v, self.n_kv_heads, norm.forward(v, rules)),
            ),
        };
        let [q, k, v] = hooks.qkv_outputs(layer, q, k, v);
        let (q, k, v) = (scale_grad(q, rules.q_scale), scale_grad(k, rules.k_scale), scale_grad(v, rules.v_scale));
        let (q, k) = match rope {
            Some(r) => (r.apply(q), r.apply(k)),
            None => (q, k),
        };
        let (k, v) = match cached {
            Some([ck, cv]) => (Tensor::cat(vec![ck.clone(), k], 2), Tensor::cat(vec![cv.clone(), v], 2)),
            None => (k, v),
        };
        let scale = (self.d_head as f64).powf(-0.5);
        let scores = q.matmul(k.clone().swap_dims(2, 3)) * scale;
        let pattern = attention_softmax(scores.mask_fill(mask.clone(), f32::NEG_INFINITY), rules.softmax_temperature);
        let pattern = hooks.attention_pattern(layer, pattern);
        let z = pattern.matmul(v.clone()); // [b, h, t, d_head]
        let [b, h, t, dh] = z.dims();

        let mixed = if hooks.wants_head_outputs() {
            let w_o = self.o.weight.val().reshape([h, dh, self.o.d_out()]);
            // One GEMM per head over all rows: [h, b·t, d_head] @ [h, d_head, d_model].
            let heads = z.swap_dims(0, 1).reshape([h, b * t, dh]).matmul(w_o);
            let heads = heads.reshape([h, b, t, self.o.d_out()]).permute([1, 2, 0, 3]); // [b, t, h, d_model]
            let heads = hooks.head_outputs(layer, heads);
            heads.sum_dim(2).squeeze_dim::<3>(2)
        } else {
            matmul_last(z.swap_dims(1, 2).reshape([b, t, h * dh]), self.o.weight.val())
        };
        let out = match &self.o.bias {
            Some(b_o) => mixed + b_o.val().unsqueeze(),
            None => mixed,
        };
        (out, [k, v])
    }
}

impl<B: Backend> Transformer<B> {
    /// Plain forward pass returning logits at the readout positions.
    pub fn forward(&self, batch: &Batch<B>, readout: &Readout) -> Tensor<B, 3> {
        self.forward_with(batch, readout, &mut NoHooks)
    }

    /// Forward pass with interception: every node output and destination input passes through `hooks`.
    pub fn forward_with<H: Hooks<B>>(&self, batch: &Batch<B>, readout: &Readout, hooks: &mut H) -> Tensor<B, 3> {
        self.forward_with_rules(batch, readout, hooks, &GradientRules::IDENTITY)
    }

    /// [`Transformer::forward_with`] whose backward pass follows `rules` (GIM); the logits are unchanged.
    ///
    /// Over a batch carrying a [`PrefixCache`], only each row's positions from its start are
    /// computed (hooks see those, left-aligned), and the last layer's MLP runs only at the readout
    /// positions: nothing but the logits reads it, so its output elsewhere is left zero. Readout
    /// positions are absolute and must not lie in a row's prefix.
    pub fn forward_with_rules<H: Hooks<B>>(&self, batch: &Batch<B>, readout: &Readout, hooks: &mut H, rules: &GradientRules) -> Tensor<B, 3> {
        self.forward_inner(batch, None, readout, hooks, rules)
    }

    /// [`Transformer::forward_with`] from `point` on, given `resid` [b, positions computed,
    /// d_model], the residual stream read there (as a pass over `batch` computed it below): a
    /// pass that changes nothing below `point` (ACDC's, the top layers first) need not compute it
    /// again. Hooks see what follows `point` only: no `input_output`, and no node before it.
    pub fn forward_from<H: Hooks<B>>(&self, batch: &Batch<B>, point: Resume, resid: Tensor<B, 3>, readout: &Readout, hooks: &mut H) -> Tensor<B, 3> {
        if let Resume::Attention(layer) | Resume::Mlp(layer) = point {
            assert!(layer < self.blocks.len(), "a pass resumes in one of the model's {} blocks, not {layer}", self.blocks.len());
        }
        assert_eq!(resid.dims(), [batch.size(), batch.computed_len(), self.config.d_model], "the residual stream of the batch's computed positions");
        self.forward_inner(batch, Some((point, resid)), readout, hooks, &GradientRules::IDENTITY)
    }

    /// Query heads `heads` of block `layer` (a head may appear in several jobs) projected from
    /// residual inputs of their own, `inputs` [jobs, rows, positions, d_model] (before the norm)
    /// at every computed position or, with `at`, at one per row (`at[row]`): [rows, jobs,
    /// positions, d_head], RoPE applied to queries and keys. With
    /// [`Transformer::heads_attend`], what a patched pass computes for heads whose inputs alone
    /// changed, without the rest of the block (an incremental patched run's).
    pub fn head_projections(
        &self,
        batch: &Batch<B>,
        layer: usize,
        input: HeadInput,
        heads: &[usize],
        inputs: Tensor<B, 4>,
        at: Option<&[usize]>,
    ) -> Tensor<B, 4> {
        let block = &self.blocks[layer];
        let attn = &block.attn;
        let [jobs, rows, tq, d] = inputs.dims();
        let positions = at.map_or(batch.computed_len(), |_| 1);
        assert_eq!((jobs, rows, tq), (heads.len(), batch.size(), positions), "one job per head over the batch's computed positions, or one per row");
        assert!(heads.iter().all(|&h| h < attn.n_heads), "heads of the block's {}", attn.n_heads);
        let (linear, n) = match input {
            HeadInput::Query => (&attn.q, attn.n_heads),
            HeadInput::Key => (&attn.k, attn.n_kv_heads),
            HeadInput::Value => (&attn.v, attn.n_kv_heads),
        };
        let device = self.token_embedding.device();
        let dh = attn.d_head;
        let group = attn.n_heads / n;
        let own = index_tensor(heads.iter().map(|h| h / group), &device);
        // Each job's weights [jobs, d_model, d_head] (a key/value head's for its group's query
        // heads): one batched GEMM.
        let w = Attention::per_head_weight(linear.weight.val(), n, dh).select(0, own.clone());
        let x = block.attn_norm.forward(inputs, &GradientRules::IDENTITY).reshape([jobs, rows * tq, d]);
        let y = x.matmul(w).reshape([jobs, rows, tq, dh]);
        let y = match &linear.bias {
            Some(b) => y + b.val().reshape([n, dh]).select(0, own).reshape([jobs, 1, 1, dh]),
            None => y,
        };
        let y = y.swap_dims(0, 1);
        if input == HeadInput::Value {
            return y;
        }
        let rope = match at {
            Some(at) => {
                let absolute: Vec<usize> = match batch.starts() {
                    Some(starts) => starts.iter().zip(at).map(|(s, a)| s + a).collect(),
                    None => at.to_vec(),
                };
                RopeTables::new(&self.config.positions, dh, rows, &absolute, &device)
            }
            None => self.rope_tables(batch),
        };
        match rope {
            Some(r) => r.apply(y),
            None => y,
        }
    }

    /// The outputs [jobs, rows, queries, d_model] (without b_O) of query heads `heads` of block
    /// `layer` from their projections [rows, jobs, ·, d_head] as [`Transformer::head_projections`]
    /// gives them (queries at every computed position, or at `at`, one per row), attending over
    /// `batch`'s cached prefix and these keys and values.
    pub fn heads_attend(&self, batch: &Batch<B>, layer: usize, heads: &[usize], [q, k, v]: [Tensor<B, 4>; 3], at: Option<&[usize]>) -> Tensor<B, 4> {
        let attn = &self.blocks[layer].attn;
        let device = self.token_embedding.device();
        let [rows, jobs, tq, dh] = q.dims();
        let query_heads = index_tensor(heads.iter().copied(), &device);
        let (k, v) = match batch.prefix.as_ref().map(|p| p.layer(layer)) {
            Some([ck, cv]) => {
                (Tensor::cat(vec![ck.clone().select(1, query_heads.clone()), k], 2), Tensor::cat(vec![cv.clone().select(1, query_heads.clone()), v], 2))
            }
            None => (k, v),
        };
        let scores = q.matmul(k.swap_dims(2, 3)) * (dh as f64).powf(-0.5);
        let pattern = attention_softmax(scores.mask_fill(batch.attention_mask_at(at, &device), f32::NEG_INFINITY), None);
        let z = pattern.matmul(v).swap_dims(0, 1).reshape([jobs, rows * tq, dh]);
        let w_o = attn.o.weight.val().reshape([attn.n_heads, dh, attn.o.d_out()]).select(0, query_heads);
        z.matmul(w_o).reshape([jobs, rows, tq, attn.o.d_out()])
    }

    /// Block `layer`'s MLP output (its bias included) for the residual stream `input` [rows,
    /// positions, d_model] it reads: a node recomputed alone.
    pub fn mlp_node(&self, layer: usize, input: Tensor<B, 3>) -> Tensor<B, 3> {
        let block = &self.blocks[layer];
        block.mlp.forward(block.mlp_norm.forward(input, &GradientRules::IDENTITY), &GradientRules::IDENTITY)
    }

    /// Logits [rows, vocab] of the residual stream entering the final norm at one position per
    /// row, `resid` [rows, 1, d_model]; only `tokens`' columns [rows, tokens] when given (a
    /// metric that reads the answers alone need not unembed the vocabulary).
    pub fn logits_of(&self, resid: Tensor<B, 3>, tokens: Option<&[u32]>) -> Tensor<B, 2> {
        let normed = self.final_norm.forward(resid, &GradientRules::IDENTITY);
        let Some(tokens) = tokens else {
            return self.unembed(normed).squeeze_dim(1);
        };
        let index = index_tensor(tokens.iter().map(|&t| t as usize), &normed.device());
        let w = match &self.unembedding {
            Some(w) => w.val().select(1, index),
            None => self.token_embedding.val().select(0, index).transpose(),
        };
        matmul_last(normed, w).squeeze_dim(1)
    }

    /// Rotary tables for the positions a pass over `batch` computes (None for learned positions).
    fn rope_tables(&self, batch: &Batch<B>) -> Option<RopeTables<B>> {
        let device = self.token_embedding.device();
        match batch.computed_positions() {
            None => RopeTables::new(&self.config.positions, self.config.d_head, 1, &(0..batch.max_len()).collect::<Vec<_>>(), &device),
            Some(p) => RopeTables::new(&self.config.positions, self.config.d_head, batch.size(), &p, &device),
        }
    }

    fn forward_inner<H: Hooks<B>>(
        &self,
        batch: &Batch<B>,
        start: Option<(Resume, Tensor<B, 3>)>,
        readout: &Readout,
        hooks: &mut H,
        rules: &GradientRules,
    ) -> Tensor<B, 3> {
        let readout_rows: Option<Vec<usize>> = match readout {
            Readout::All => None,
            Readout::ReadPosition => Some(batch.reads.clone()),
            Readout::At(positions) => Some(positions.clone()),
        };
        let readout_rows = readout_rows.map(|rows| match batch.starts() {
            None => rows,
            Some(starts) => {
                assert!(rows.iter().zip(starts).all(|(p, s)| p >= s), "readout positions lie after each row's cached prefix");
                rows.iter().zip(starts).map(|(p, s)| p - s).collect()
            }
        });
        // Only a suffix pass narrows the last MLP: a full pass's node outputs are read at every
        // position (mean ablations average them).
        let last_mlp_rows = if batch.prefix.is_some() { readout_rows.as_deref() } else { None };
        let final_in = self.residual_stream(batch, start, hooks, rules, last_mlp_rows, None);
        let read = match &readout_rows {
            None => final_in,
            Some(rows) => gather_positions(final_in, rows.iter().copied()),
        };
        self.unembed(self.final_norm.forward(read, rules))
    }

    /// Every layer's keys and values at positions `0..starts[i]` of each row i of `batch`: the
    /// prefixes the passes of [`Batch::with_prefix`] skip. One pass over the longest prefix,
    /// without hooks; `starts` must not all be 0.
    pub fn prefix_cache(&self, batch: &Batch<B>, starts: &[usize]) -> PrefixCache<B> {
        let [b, t] = batch.ids.dims();
        assert_eq!(starts.len(), b, "one start per row");
        let width = starts.iter().copied().max().unwrap_or(0);
        assert!(width > 0 && width <= t, "a prefix of 1..={t} positions");
        assert!(self.config.causal, "a prefix cache needs causal attention");
        let lengths: Vec<usize> = batch.lengths.iter().map(|&l| l.min(width)).collect();
        let reads = lengths.iter().map(|l| l - 1).collect();
        let prefix = Batch { ids: batch.ids.clone().slice([0..b, 0..width]), lengths, reads, causal: true, prefix: None };
        let mut layers = Vec::with_capacity(self.blocks.len());
        self.residual_stream(&prefix, None, &mut NoHooks, &GradientRules::IDENTITY, Some(&vec![0; b]), Some(&mut layers));
        PrefixCache { starts: starts.to_vec(), layers }
    }

    /// The residual stream the final norm reads, [b, positions computed, d_model], through
    /// `hooks`; the last layer's MLP runs only at `last_mlp_rows` (one computed position per row)
    /// when given; each layer's keys and values are pushed to `keys_values` when given. With
    /// `start` = (p, r) the stream resumes at p reading r.
    fn residual_stream<H: Hooks<B>>(
        &self,
        batch: &Batch<B>,
        start: Option<(Resume, Tensor<B, 3>)>,
        hooks: &mut H,
        rules: &GradientRules,
        last_mlp_rows: Option<&[usize]>,
        mut keys_values: Option<&mut Vec<[Tensor<B, 4>; 2]>>,
    ) -> Tensor<B, 3> {
        let device = self.token_embedding.device();
        let [b, t] = batch.ids.dims();
        let d = self.config.d_model;
        let n = batch.computed_len();
        // Row-major absolute positions of the computed positions (None: 0..t in every row).
        let positions = batch.computed_positions();
        let index = |p: &[usize]| Tensor::<B, 1, Int>::from_data(TensorData::new(p.iter().map(|&x| x as i64).collect::<Vec<_>>(), [p.len()]), &device);
        let n_layers = self.blocks.len();
        let (point, mut resid) = match start {
            Some(start) => start,
            None => {
                let ids = match &positions {
                    None => batch.ids.clone(),
                    Some(p) => batch.ids.clone().gather(1, index(p).reshape([b, n])),
                };
                let embedding = self.token_embedding.val().select(0, ids.reshape([b * n])).reshape([b, n, d]);
                let mut resid = hooks.input_output(embedding);
                if let Some(pos) = &self.position_embedding {
                    resid = resid
                        + match &positions {
                            None => pos.val().slice([0..t, 0..d]).unsqueeze(),
                            Some(p) => pos.val().select(0, index(p)).reshape([b, n, d]),
                        };
                }
                (Resume::Attention(0), resid)
            }
        };
        let (first_layer, skip_attention) = match point {
            Resume::Attention(l) => (l, false),
            Resume::Mlp(l) => (l, true),
            Resume::Final => (n_layers, false),
        };

        let mask = batch.attention_mask(&device);
        let rope = self.rope_tables(batch);
        for (layer, block) in self.blocks.iter().enumerate().skip(first_layer) {
            if !(skip_attention && layer == first_layer) {
                let cached = batch.prefix.as_ref().map(|p| p.layer(layer));
                let input = hooks.attention_input(layer, resid.clone());
                let (attn, kv) = block.attn.forward(layer, input, &block.attn_norm, &mask, rope.as_ref(), cached, hooks, rules);
                if let Some(sink) = keys_values.as_mut() {
                    sink.push(kv);
                }
                resid = resid + attn;
            }
            let mlp_in = hooks.mlp_input(layer, resid.clone());
            let mlp = |x: Tensor<B, 3>, hooks: &mut H| block.mlp.project(hooks.mlp_hidden(layer, block.mlp.hidden(block.mlp_norm.forward(x, rules), rules)));
            let mlp_out = match last_mlp_rows {
                Some(rows) if layer + 1 == n_layers => {
                    let out = mlp(gather_positions(mlp_in, rows.iter().copied()), hooks);
                    scatter_positions(out, rows, n)
                }
                _ => mlp(mlp_in, hooks),
            };
            resid = resid + hooks.mlp_output(layer, mlp_out);
        }
        hooks.final_input(resid)
    }

    /// Maps normed residuals [b, n, d_model] to logits [b, n, vocab].
    fn unembed(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let w = match &self.unembedding {
            Some(w) => w.val(),
            None => self.token_embedding.val().transpose(),
        };
        matmul_last(x, w)
    }
}

/// An index tensor of `ids`.
fn index_tensor<B: Backend>(ids: impl Iterator<Item = usize>, device: &B::Device) -> Tensor<B, 1, Int> {
    let ids: Vec<i64> = ids.map(|i| i as i64).collect();
    let n = ids.len();
    Tensor::from_data(TensorData::new(ids, [n]), device)
}

/// One position per row back in place: [b, 1, d] → [b, len, d], zero elsewhere.
fn scatter_positions<B: Backend>(x: Tensor<B, 3>, positions: &[usize], len: usize) -> Tensor<B, 3> {
    let [b, _, d] = x.dims();
    let device = x.device();
    let idx: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [b]), &device).reshape([b, 1, 1]).expand([b, 1, d]);
    Tensor::zeros([b, len, d], &device).scatter(1, index, x, burn::tensor::IndexingUpdateOp::Add)
}

/// Picks one position per row: [b, t, d] → [b, 1, d].
fn gather_positions<B: Backend>(x: Tensor<B, 3>, positions: impl Iterator<Item = usize>) -> Tensor<B, 3> {
    let [b, _, d] = x.dims();
    let device = x.device();
    let idx: Vec<i64> = positions.map(|p| p as i64).collect();
    assert_eq!(idx.len(), b, "one readout position per batch row");
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [b]), &device).reshape([b, 1, 1]).expand([b, 1, d]);
    x.gather(1, index)
}
