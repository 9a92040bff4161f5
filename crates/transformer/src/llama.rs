//! The Llama family (Llama, Qwen2, SmolLM2): RMSNorm, rotary positions, SwiGLU, grouped-query
//! attention, optional q/k/v biases (Qwen2), tied or untied unembedding. Loaded from Hugging Face
//! checkpoints or from GGUF files, whose Q/K rows llama.cpp stores in the interleaved RoPE layout.

use std::path::Path;

use burn::tensor::backend::Backend;
use serde::Deserialize;

use crate::config::{Architecture, Llama3RopeScaling, MlpKind, ModelConfig, NormKind, PositionEncoding, RopeLayout, positive_finite};
use crate::error::LoadError;
use crate::layers::{GatedMlp, Linear, Mlp, Norm, RmsNorm, param};
use crate::model::{Attention, Block, Transformer};
use crate::weights::TensorStore;

/// The fields of a Hugging Face Llama or Qwen2 `config.json` that shape the model.
#[derive(Debug, Deserialize)]
pub struct LlamaConfig {
    /// `llama` or `qwen2`: picks the architecture (Qwen2 always has q/k/v biases).
    pub model_type: String,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of blocks.
    pub num_hidden_layers: usize,
    /// Query heads per block.
    pub num_attention_heads: usize,
    /// Key/value heads per block (grouped-query attention); the query heads' number when absent.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of each head; hidden_size / num_attention_heads when absent.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Rows of the token embedding.
    pub vocab_size: usize,
    /// RMSNorm's ε (1e-6 when absent).
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Base of the rotary frequencies (10⁴ when absent here and in `rope_parameters`).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Newer transformers releases nest theta and scaling here instead.
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    /// Long-context frequency correction; only `llama3` (or none) is accepted.
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    /// Whether the unembedding is the token embedding's transpose (no `lm_head.weight`).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on q, k, v and o (Qwen2 has q/k/v biases regardless).
    #[serde(default)]
    pub attention_bias: bool,
    /// Must be false: the gated MLP here has no biases.
    #[serde(default)]
    pub mlp_bias: bool,
    /// The gate activation; only `silu` is accepted.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// The token MIB prepends to prompts.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-text token(s), a number or a list: the first pads batches when `pad_token_id` is absent.
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// The token that right-pads batches.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

/// `rope_scaling` / `rope_parameters` of a Hugging Face config.
#[derive(Debug, Clone, Deserialize)]
pub struct RopeParameters {
    /// `default`, `llama3` or another scheme (rejected); `type` in older configs.
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    /// Base of the rotary frequencies, where newer configs keep it.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Llama-3 scaling: how much slower the long wavelengths rotate.
    #[serde(default)]
    pub factor: Option<f64>,
    /// Llama-3 scaling: where the slowed band starts.
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    /// Llama-3 scaling: where the unchanged band ends.
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    /// Llama-3 scaling: the pretraining context length.
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}

impl LlamaConfig {
    /// The architecture-neutral config; rejects variants this forward does not implement.
    pub fn to_model_config(&self, path: &Path) -> Result<ModelConfig, LoadError> {
        let field_err = |field: &str, message: String| LoadError::ConfigField { path: path.into(), field: field.into(), message };
        let architecture = match self.model_type.as_str() {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            other => return Err(LoadError::UnknownArchitecture { path: path.into(), name: other.into() }),
        };
        if self.hidden_act != "silu" {
            return Err(field_err("hidden_act", format!("`{}` is not supported (only silu)", self.hidden_act)));
        }
        if self.mlp_bias {
            return Err(field_err("mlp_bias", "MLP biases are not supported for the Llama family".into()));
        }
        let sizes = [
            ("hidden_size", Some(self.hidden_size)),
            ("intermediate_size", Some(self.intermediate_size)),
            ("num_hidden_layers", Some(self.num_hidden_layers)),
            ("num_attention_heads", Some(self.num_attention_heads)),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", Some(self.vocab_size)),
        ];
        if let Some((field, _)) = sizes.into_iter().find(|(_, v)| *v == Some(0)) {
            return Err(field_err(field, "must be positive, got 0".into()));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(field_err(
                "num_attention_heads",
                format!("hidden_size {} is not a multiple of num_attention_heads {} (and there is no head_dim)", self.hidden_size, self.num_attention_heads),
            ));
        }
        positive_finite(self.rms_norm_eps).map_err(|m| field_err("rms_norm_eps", m))?;
        let scaling_source = self.rope_scaling.as_ref().or(self.rope_parameters.as_ref());
        let scaling_field = if self.rope_scaling.is_some() { "rope_scaling" } else { "rope_parameters" };
        let scaling = match scaling_source {
            None => None,
            Some(p) => match p.rope_type.as_deref() {
                None | Some("default") => None,
                Some("llama3") => {
                    let need = |v: Option<f64>, name: &str| v.ok_or_else(|| field_err(scaling_field, format!("llama3 scaling needs `{name}`")));
                    let scaling = Llama3RopeScaling {
                        factor: need(p.factor, "factor")?,
                        low_freq_factor: need(p.low_freq_factor, "low_freq_factor")?,
                        high_freq_factor: need(p.high_freq_factor, "high_freq_factor")?,
                        original_max_position_embeddings: p
                            .original_max_position_embeddings
                            .ok_or_else(|| field_err(scaling_field, "llama3 scaling needs `original_max_position_embeddings`".into()))?,
                    };
                    scaling.check().map_err(|(name, m)| field_err(&format!("{scaling_field}.{name}"), m))?;
                    Some(scaling)
                }
                Some(other) => return Err(field_err(scaling_field, format!("rope type `{other}` is not supported"))),
            },
        };
        let (theta, theta_field) = match (self.rope_theta, self.rope_parameters.as_ref().and_then(|p| p.rope_theta)) {
            (Some(theta), _) => (theta, "rope_theta"),
            (None, Some(theta)) => (theta, "rope_parameters.rope_theta"),
            (None, None) => (10_000.0, "rope_theta"),
        };
        positive_finite(theta).map_err(|m| field_err(theta_field, m))?;
        let eos = match &self.eos_token_id {
            Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| v as u32),
            Some(serde_json::Value::Array(a)) => a.first().and_then(|v| v.as_u64()).map(|v| v as u32),
            _ => None,
        };
        let config = ModelConfig {
            architecture,
            n_layers: self.num_hidden_layers,
            d_model: self.hidden_size,
            n_heads: self.num_attention_heads,
            n_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            d_head: self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads),
            d_mlp: self.intermediate_size,
            vocab_size: self.vocab_size,
            n_outputs: self.vocab_size,
            causal: true,
            norm: NormKind::RmsNorm,
            norm_eps: self.rms_norm_eps,
            mlp: MlpKind::SwiGlu,
            positions: PositionEncoding::Rope { theta, layout: RopeLayout::HalfSplit, scaling },
            qkv_bias: architecture == Architecture::Qwen2 || self.attention_bias,
            out_bias: self.attention_bias,
            mlp_bias: false,
            tied_embeddings: self.tie_word_embeddings,
            bos_token_id: self.bos_token_id,
            pad_token_id: self.pad_token_id.or(eos).unwrap_or(0),
        };
        config.validate().map_err(|message| LoadError::InvalidConfig { path: path.into(), message })?;
        Ok(config)
    }
}

/// Where a checkpoint format keeps each Llama tensor.
pub struct TensorNames {
    /// The token embedding [vocab, d_model].
    pub embedding: String,
    /// The unembedding, when untied.
    pub unembedding: String,
    /// The final norm's weight.
    pub final_norm: String,
    /// Per-layer names, with `{l}` standing for the layer index.
    pub layer: LayerNames,
}

/// Per-layer tensor name templates (`{l}` = layer index).
pub struct LayerNames {
    /// Weight of the norm before attention.
    pub attn_norm: &'static str,
    /// Query projection (prefix of `.weight` and `.bias`).
    pub q: &'static str,
    /// Key projection (prefix of `.weight` and `.bias`).
    pub k: &'static str,
    /// Value projection (prefix of `.weight` and `.bias`).
    pub v: &'static str,
    /// Output projection (prefix of `.weight` and `.bias`).
    pub o: &'static str,
    /// Weight of the norm before the MLP.
    pub mlp_norm: &'static str,
    /// The MLP's gate projection (prefix of `.weight`).
    pub gate: &'static str,
    /// The MLP's up projection (prefix of `.weight`).
    pub up: &'static str,
    /// The MLP's down projection (prefix of `.weight`).
    pub down: &'static str,
}

impl TensorNames {
    /// Hugging Face names (`model.layers.{l}.self_attn.q_proj`, ...); biases add `.bias`.
    pub fn hugging_face() -> Self {
        Self {
            embedding: "model.embed_tokens.weight".into(),
            unembedding: "lm_head.weight".into(),
            final_norm: "model.norm.weight".into(),
            layer: LayerNames {
                attn_norm: "model.layers.{l}.input_layernorm.weight",
                q: "model.layers.{l}.self_attn.q_proj",
                k: "model.layers.{l}.self_attn.k_proj",
                v: "model.layers.{l}.self_attn.v_proj",
                o: "model.layers.{l}.self_attn.o_proj",
                mlp_norm: "model.layers.{l}.post_attention_layernorm.weight",
                gate: "model.layers.{l}.mlp.gate_proj",
                up: "model.layers.{l}.mlp.up_proj",
                down: "model.layers.{l}.mlp.down_proj",
            },
        }
    }

    /// llama.cpp's GGUF names (`blk.{l}.attn_q`, ...).
    pub fn gguf() -> Self {
        Self {
            embedding: "token_embd.weight".into(),
            unembedding: "output.weight".into(),
            final_norm: "output_norm.weight".into(),
            layer: LayerNames {
                attn_norm: "blk.{l}.attn_norm.weight",
                q: "blk.{l}.attn_q",
                k: "blk.{l}.attn_k",
                v: "blk.{l}.attn_v",
                o: "blk.{l}.attn_output",
                mlp_norm: "blk.{l}.ffn_norm.weight",
                gate: "blk.{l}.ffn_gate",
                up: "blk.{l}.ffn_up",
                down: "blk.{l}.ffn_down",
            },
        }
    }
}

/// Row-major [rows, cols] → [cols, rows].
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Reads an [out, in] projection (PyTorch order) as an [in, out] `Linear`, with its bias if asked.
fn projection<B: Backend>(store: &dyn TensorStore, prefix: &str, d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Result<Linear<B>, LoadError> {
    let w = store.tensor_shaped(&format!("{prefix}.weight"), &[d_out, d_in])?;
    let bias = if bias { Some(param(store.tensor_shaped(&format!("{prefix}.bias"), &[d_out])?, [d_out], device)) } else { None };
    Ok(Linear { weight: param(transpose(&w, d_out, d_in), [d_in, d_out], device), bias })
}

fn rms_norm<B: Backend>(store: &dyn TensorStore, name: &str, cfg: &ModelConfig, device: &B::Device) -> Result<Norm<B>, LoadError> {
    let d = cfg.d_model;
    Ok(Norm::Rms(RmsNorm { weight: param(store.tensor_shaped(name, &[d])?, [d], device), eps: cfg.norm_eps }))
}

/// Builds a Llama-family model from `store` under the given naming scheme. An unembedding tensor
/// that is absent means the embedding is tied, whatever the config says.
pub fn load<B: Backend>(store: &dyn TensorStore, names: &TensorNames, mut cfg: ModelConfig, device: &B::Device) -> Result<Transformer<B>, LoadError> {
    let (d, v, dh) = (cfg.d_model, cfg.vocab_size, cfg.d_head);
    let (q_out, kv_out) = (cfg.n_heads * dh, cfg.n_kv_heads * dh);
    let blocks = (0..cfg.n_layers)
        .map(|l| {
            let at = |template: &str| template.replace("{l}", &l.to_string());
            let n = &names.layer;
            Ok(Block {
                attn_norm: rms_norm(store, &at(n.attn_norm), &cfg, device)?,
                attn: Attention {
                    q: projection(store, &at(n.q), d, q_out, cfg.qkv_bias, device)?,
                    k: projection(store, &at(n.k), d, kv_out, cfg.qkv_bias, device)?,
                    v: projection(store, &at(n.v), d, kv_out, cfg.qkv_bias, device)?,
                    o: projection(store, &at(n.o), q_out, d, cfg.out_bias, device)?,
                    n_heads: cfg.n_heads,
                    n_kv_heads: cfg.n_kv_heads,
                    d_head: dh,
                },
                mlp_norm: rms_norm(store, &at(n.mlp_norm), &cfg, device)?,
                mlp: Mlp::Gated(GatedMlp {
                    gate: projection(store, &at(n.gate), d, cfg.d_mlp, false, device)?,
                    up: projection(store, &at(n.up), d, cfg.d_mlp, false, device)?,
                    down: projection(store, &at(n.down), cfg.d_mlp, d, false, device)?,
                }),
            })
        })
        .collect::<Result<Vec<_>, LoadError>>()?;
    let unembedding = if store.contains(&names.unembedding) {
        cfg.tied_embeddings = false;
        let w = store.tensor_shaped(&names.unembedding, &[v, d])?;
        Some(param(transpose(&w, v, d), [d, v], device))
    } else if cfg.tied_embeddings {
        None
    } else {
        return Err(LoadError::MissingTensor { file: store.file_of(&names.unembedding), name: names.unembedding.clone() });
    };
    Ok(Transformer {
        token_embedding: param(store.tensor_shaped(&names.embedding, &[v, d])?, [v, d], device),
        position_embedding: None,
        blocks,
        final_norm: rms_norm(store, &names.final_norm, &cfg, device)?,
        unembedding,
        config: cfg,
    })
}

/// The model config stored in a GGUF file's metadata (`{arch}.block_count`, ...). llama.cpp keeps
/// `llama` Q/K rows permuted for interleaved RoPE and `qwen2` rows in Hugging Face's half-split order.
pub fn gguf_config(file: &gguf::GgufFile) -> Result<ModelConfig, LoadError> {
    let path = file.path().to_path_buf();
    let arch = file.get_str("general.architecture")?.to_string();
    let (architecture, layout) = match arch.as_str() {
        "llama" => (Architecture::Llama, RopeLayout::Interleaved),
        "qwen2" => (Architecture::Qwen2, RopeLayout::HalfSplit),
        other => return Err(LoadError::UnknownArchitecture { path, name: other.into() }),
    };
    let key = |k: &str| format!("{arch}.{k}");
    let field_err = |k: &str, message: String| LoadError::ConfigField { path: path.clone(), field: key(k), message };
    let u = |k: &str| -> Result<usize, LoadError> {
        match file.get_u32(&key(k))? {
            0 => Err(field_err(k, "must be positive, got 0".into())),
            v => Ok(v as usize),
        }
    };
    let n_heads = u("attention.head_count")?;
    let d_model = u("embedding_length")?;
    let d_head = match file.metadata(&key("attention.key_length")) {
        Some(_) => u("attention.key_length")?,
        None if d_model.is_multiple_of(n_heads) => d_model / n_heads,
        None => {
            return Err(field_err(
                "attention.head_count",
                format!("embedding_length {d_model} is not a multiple of {n_heads} heads (and there is no key_length)"),
            ));
        }
    };
    if let Some(dim) = file.metadata(&key("rope.dimension_count")).and_then(|v| v.as_u32())
        && dim as usize != d_head
    {
        return Err(LoadError::InvalidConfig { path: path.clone(), message: format!("partial rotary embedding ({dim} of {d_head} dims) is not supported") });
    }
    let theta = match file.metadata(&key("rope.freq_base")) {
        Some(_) => file.get_f32(&key("rope.freq_base"))? as f64,
        None => 10_000.0,
    };
    positive_finite(theta).map_err(|m| field_err("rope.freq_base", m))?;
    let norm_eps = file.get_f32(&key("attention.layer_norm_rms_epsilon"))? as f64;
    positive_finite(norm_eps).map_err(|m| field_err("attention.layer_norm_rms_epsilon", m))?;
    let vocab_size = file.get_str_array("tokenizer.ggml.tokens")?.len();
    let optional_id = |k: &str| file.metadata(k).and_then(|v| v.as_u32());
    let eos = optional_id("tokenizer.ggml.eos_token_id");
    let config = ModelConfig {
        architecture,
        n_layers: u("block_count")?,
        d_model,
        n_heads,
        n_kv_heads: match file.metadata(&key("attention.head_count_kv")) {
            Some(_) => u("attention.head_count_kv")?,
            None => n_heads,
        },
        d_head,
        d_mlp: u("feed_forward_length")?,
        vocab_size,
        n_outputs: vocab_size,
        causal: true,
        norm: NormKind::RmsNorm,
        norm_eps,
        mlp: MlpKind::SwiGlu,
        positions: PositionEncoding::Rope { theta, layout, scaling: None },
        qkv_bias: file.tensor("blk.0.attn_q.bias").is_some(),
        out_bias: false,
        mlp_bias: false,
        tied_embeddings: file.tensor("output.weight").is_none(),
        bos_token_id: optional_id("tokenizer.ggml.bos_token_id"),
        pad_token_id: optional_id("tokenizer.ggml.padding_token_id").or(eos).unwrap_or(0),
    };
    config.validate().map_err(|message| LoadError::InvalidConfig { path: file.path().into(), message })?;
    Ok(config)
}
