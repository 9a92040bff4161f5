//! The architecture-neutral description of a model that the forward pass is built from.

use serde::{Deserialize, Serialize};

/// Which family a checkpoint belongs to; decides weight names and defaults when loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// GPT-2: learned positions, LayerNorm, GELU MLP, tied unembedding.
    Gpt2,
    /// Llama (and SmolLM2): RMSNorm, rotary positions, gated MLP, grouped-query attention.
    Llama,
    /// Qwen2: the Llama layout with q/k/v biases.
    Qwen2,
    /// A RASP program compiled by tracr: no norm, ReLU MLPs, attention as compiled (not causal),
    /// one-hot token and position embeddings, read out through the program's output space.
    Tracr,
}

/// Normalisation kind, because GPT-2 centres (LayerNorm) and the Llama family does not (RMSNorm).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum NormKind {
    /// Subtracts the mean and divides by the standard deviation, then scales and shifts.
    LayerNorm,
    /// Divides by the root mean square, then scales.
    RmsNorm,
    /// No normalisation (tracr-compiled models): the residual stream is read as it is.
    Identity,
}

/// MLP kind: GPT-2's GELU(tanh) MLP or the Llama family's gated SiLU MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MlpKind {
    /// GELU (tanh approximation) between two biased linear maps.
    GeluTanh,
    /// SiLU(x W_gate) ⊙ x W_up, then W_down.
    SwiGlu,
    /// ReLU between two biased linear maps (tracr-compiled models).
    Relu,
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
    /// How much slower the long wavelengths rotate.
    pub factor: f64,
    /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are slowed fully.
    pub low_freq_factor: f64,
    /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are left alone.
    pub high_freq_factor: f64,
    /// The context length the model was pretrained with.
    pub original_max_position_embeddings: usize,
}

impl Llama3RopeScaling {
    /// Checks what the frequency correction divides by: every factor positive and finite, the
    /// high-frequency factor above the low one, a positive context length; the failing field and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (field, value) in [("factor", self.factor), ("low_freq_factor", self.low_freq_factor), ("high_freq_factor", self.high_freq_factor)] {
            positive_finite(value).map_err(|m| (field, m))?;
        }
        if self.high_freq_factor <= self.low_freq_factor {
            return Err(("high_freq_factor", format!("must be greater than low_freq_factor ({}), got {}", self.low_freq_factor, self.high_freq_factor)));
        }
        if self.original_max_position_embeddings == 0 {
            return Err(("original_max_position_embeddings", "must be positive, got 0".into()));
        }
        Ok(())
    }
}

/// Checks that a config number the forward pass divides by or takes a root or power of is finite
/// and greater than zero; the error says what it is instead (`must be positive and finite, got -1`).
pub fn positive_finite(value: f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 { Ok(()) } else { Err(format!("must be positive and finite, got {value}")) }
}

/// How token positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PositionEncoding {
    /// GPT-2's learned absolute embedding, added to the residual (a constant term, no MIB node).
    Learned {
        /// Rows of the position embedding: the longest sequence the model can read.
        max_positions: usize,
    },
    /// Rotary embedding applied to q and k inside every attention layer.
    Rope {
        /// Base of the rotation frequencies θ^(−2i/d_head).
        theta: f64,
        /// Which coordinates form each rotated pair, as the weights were stored.
        layout: RopeLayout,
        /// Llama-3's long-context frequency correction, when the config has one.
        scaling: Option<Llama3RopeScaling>,
    },
}

/// Everything the forward pass needs to know about a model's shape and variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Which family the weights come from (decides tensor names and defaults).
    pub architecture: Architecture,
    /// Number of blocks (attention then MLP).
    pub n_layers: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Query heads: the MIB graph has one node per query head (GQA is ungrouped).
    pub n_heads: usize,
    /// Key/value heads; fewer than `n_heads` under grouped-query attention.
    pub n_kv_heads: usize,
    /// Width of each head's q, k and v.
    pub d_head: usize,
    /// Width of the MLP's hidden layer.
    pub d_mlp: usize,
    /// Rows of the token embedding.
    pub vocab_size: usize,
    /// Columns of the logits: the vocabulary for a language model, the output space for a
    /// compiled (tracr) model, whose unembedding is a projection onto it.
    pub n_outputs: usize,
    /// Whether a position attends to earlier positions only (every language model here); tracr
    /// compiles bidirectional attention, under which no pass may skip a shared prefix.
    pub causal: bool,
    /// Which pre-norm the blocks and the final norm use.
    pub norm: NormKind,
    /// Added to the variance (or mean square) before the square root.
    pub norm_eps: f64,
    /// Which MLP the blocks use.
    pub mlp: MlpKind,
    /// How token positions enter: learned embedding or rotary.
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
            ("n_outputs", self.n_outputs),
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
        if self.norm != NormKind::Identity {
            positive_finite(self.norm_eps).map_err(|m| format!("norm_eps {m}"))?;
        }
        if self.tied_embeddings && self.n_outputs != self.vocab_size {
            return Err(format!("a tied unembedding has the vocabulary's {} columns, not n_outputs {}", self.vocab_size, self.n_outputs));
        }
        match self.positions {
            PositionEncoding::Learned { max_positions: 0 } => return Err("max_positions must be positive".into()),
            PositionEncoding::Learned { .. } => {}
            PositionEncoding::Rope { theta, scaling, .. } => {
                positive_finite(theta).map_err(|m| format!("rope theta {m}"))?;
                if let Some(s) = scaling {
                    s.check().map_err(|(field, m)| format!("rope scaling {field} {m}"))?;
                }
            }
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
            MlpKind::GeluTanh | MlpKind::Relu => 2.0,
            MlpKind::SwiGlu => 3.0,
        };
        let mlp = mlp_mats * d * self.d_mlp as f64;
        let attn = 2.0 * (self.n_heads * self.d_head) as f64 * ctx as f64;
        let per_token_layer = qkv + out + mlp + attn;
        2.0 * (tokens as f64 * self.n_layers as f64 * per_token_layer + readouts as f64 * d * self.n_outputs as f64)
    }
}
