//! The architecture-neutral description of a model that the forward pass is built from.

use serde::{Deserialize, Serialize};

/// Which family a checkpoint belongs to; decides weight names and defaults when loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Gpt2,
    Llama,
    Qwen2,
}

/// Normalisation kind, because GPT-2 centres (LayerNorm) and the Llama family does not (RMSNorm).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum NormKind {
    LayerNorm,
    RmsNorm,
}

/// MLP kind: GPT-2's GELU(tanh) MLP or the Llama family's gated SiLU MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MlpKind {
    GeluTanh,
    SwiGlu,
}

/// Pairing of rotary dimensions, since Hugging Face and llama.cpp store Q/K rows differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RopeLayout {
    /// Hugging Face "rotate half": dimension i pairs with i + d/2.
    HalfSplit,
    /// llama.cpp (GGUF) rows: dimension 2i pairs with 2i + 1.
    Interleaved,
}

/// Llama-3's long-context frequency correction (`rope_scaling.rope_type = "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// How token positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PositionEncoding {
    /// GPT-2's learned absolute embedding, added to the residual (a constant term, no MIB node).
    Learned { max_positions: usize },
    /// Rotary embedding applied to q and k inside every attention layer.
    Rope { theta: f64, layout: RopeLayout, scaling: Option<Llama3RopeScaling> },
}

/// Everything the forward pass needs to know about a model's shape and variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub n_layers: usize,
    pub d_model: usize,
    /// Query heads: the MIB graph has one node per query head (GQA is ungrouped).
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub vocab_size: usize,
    pub norm: NormKind,
    pub norm_eps: f64,
    pub mlp: MlpKind,
    pub positions: PositionEncoding,
    /// Biases on q, k and v (GPT-2, Qwen2).
    pub qkv_bias: bool,
    /// Bias b_O after the attention output projection (GPT-2).
    pub out_bias: bool,
    /// Biases inside the MLP (GPT-2).
    pub mlp_bias: bool,
    /// Unembedding shares the token-embedding matrix.
    pub tied_embeddings: bool,
    /// The token MIB prepends to every prompt, when the model defines one.
    pub bos_token_id: Option<u32>,
    /// The token used to right-pad batches (any id works: padded positions are masked and never read).
    pub pad_token_id: u32,
}

impl ModelConfig {
    /// Query heads that share one key/value head, for grouped-query attention.
    pub fn kv_group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Checks the invariants the forward pass relies on, so a bad config fails at load, not mid-run.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("n_layers", self.n_layers),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("d_head", self.d_head),
            ("d_mlp", self.d_mlp),
            ("vocab_size", self.vocab_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(format!("n_heads ({}) must be a multiple of n_kv_heads ({})", self.n_heads, self.n_kv_heads));
        }
        if matches!(self.positions, PositionEncoding::Rope { .. }) && !self.d_head.is_multiple_of(2) {
            return Err(format!("rotary embedding needs an even d_head, got {}", self.d_head));
        }
        if self.pad_token_id as usize >= self.vocab_size {
            return Err(format!("pad_token_id {} is outside the vocabulary", self.pad_token_id));
        }
        Ok(())
    }

    /// Multiply-accumulate FLOPs (×2) of one forward pass over `tokens` tokens with context `ctx`,
    /// unembedding `readouts` positions; the yardstick the forward benchmark reports GFLOP/s against.
    pub fn forward_flops(&self, tokens: usize, ctx: usize, readouts: usize) -> f64 {
        let d = self.d_model as f64;
        let qkv = d * (self.n_heads + 2 * self.n_kv_heads) as f64 * self.d_head as f64;
        let out = (self.n_heads * self.d_head) as f64 * d;
        let mlp_mats = match self.mlp {
            MlpKind::GeluTanh => 2.0,
            MlpKind::SwiGlu => 3.0,
        };
        let mlp = mlp_mats * d * self.d_mlp as f64;
        let attn = 2.0 * (self.n_heads * self.d_head) as f64 * ctx as f64;
        let per_token_layer = qkv + out + mlp + attn;
        2.0 * (tokens as f64 * self.n_layers as f64 * per_token_layer + readouts as f64 * d * self.vocab_size as f64)
    }
}
