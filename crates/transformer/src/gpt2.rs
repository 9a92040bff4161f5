//! GPT-2: learned positions, LayerNorm, GELU (tanh), biases everywhere, tied unembedding.
//! Hugging Face stores its projections as `Conv1D`, i.e. already [in, out].

use std::path::Path;

use burn::tensor::backend::Backend;
use serde::Deserialize;

use crate::config::{Architecture, MlpKind, ModelConfig, NormKind, PositionEncoding, positive_finite};
use crate::error::LoadError;
use crate::layers::{DenseMlp, LayerNorm, Linear, Mlp, Norm, param};
use crate::model::{Attention, Block, Transformer};
use crate::weights::TensorStore;

/// The fields of a Hugging Face GPT-2 `config.json` that shape the model.
#[derive(Debug, Deserialize)]
pub struct Gpt2Config {
    /// Number of blocks.
    pub n_layer: usize,
    /// Attention heads per block (each of width n_embd / n_head).
    pub n_head: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Rows of the learned position embedding: the longest readable sequence.
    pub n_positions: usize,
    /// Rows of the token embedding.
    pub vocab_size: usize,
    /// Width of the MLP's hidden layer; 4 · n_embd when absent.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// LayerNorm's ε (1e-5 when absent).
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// The MLP activation; only the tanh GELU variants are accepted.
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// Must be true: the unembedding here is always the token embedding's transpose.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// The token MIB prepends to prompts.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-text token, which also pads batches (GPT-2 has no pad token).
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_activation() -> String {
    "gelu_new".into()
}
fn default_true() -> bool {
    true
}

impl Gpt2Config {
    /// The architecture-neutral config; rejects what the GPT-2 forward here does not implement.
    pub fn to_model_config(&self, path: &Path) -> Result<ModelConfig, LoadError> {
        if !matches!(self.activation_function.as_str(), "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") {
            return Err(LoadError::ConfigField {
                path: path.into(),
                field: "activation_function".into(),
                message: format!("`{}` is not supported (only the tanh GELU)", self.activation_function),
            });
        }
        if !self.tie_word_embeddings {
            return Err(LoadError::ConfigField {
                path: path.into(),
                field: "tie_word_embeddings".into(),
                message: "GPT-2 checkpoints with an untied unembedding are not supported".into(),
            });
        }
        let field_err = |field: &str, message: String| LoadError::ConfigField { path: path.into(), field: field.into(), message };
        let sizes = [
            ("n_layer", Some(self.n_layer)),
            ("n_head", Some(self.n_head)),
            ("n_embd", Some(self.n_embd)),
            ("n_positions", Some(self.n_positions)),
            ("vocab_size", Some(self.vocab_size)),
            ("n_inner", self.n_inner),
        ];
        if let Some((field, _)) = sizes.into_iter().find(|(_, v)| *v == Some(0)) {
            return Err(field_err(field, "must be positive, got 0".into()));
        }
        positive_finite(self.layer_norm_epsilon).map_err(|m| field_err("layer_norm_epsilon", m))?;
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(LoadError::ConfigField {
                path: path.into(),
                field: "n_head".into(),
                message: format!("n_embd {} is not a multiple of n_head {}", self.n_embd, self.n_head),
            });
        }
        let config = ModelConfig {
            architecture: Architecture::Gpt2,
            n_layers: self.n_layer,
            d_model: self.n_embd,
            n_heads: self.n_head,
            n_kv_heads: self.n_head,
            d_head: self.n_embd / self.n_head,
            d_mlp: self.n_inner.unwrap_or(4 * self.n_embd),
            vocab_size: self.vocab_size,
            n_outputs: self.vocab_size,
            causal: true,
            norm: NormKind::LayerNorm,
            norm_eps: self.layer_norm_epsilon,
            mlp: MlpKind::GeluTanh,
            positions: PositionEncoding::Learned { max_positions: self.n_positions },
            qkv_bias: true,
            out_bias: true,
            mlp_bias: true,
            tied_embeddings: true,
            bos_token_id: self.bos_token_id,
            pad_token_id: self.eos_token_id.unwrap_or(0),
        };
        config.validate().map_err(|message| LoadError::InvalidConfig { path: path.into(), message })?;
        Ok(config)
    }
}

fn layer_norm<B: Backend>(store: &dyn TensorStore, prefix: &str, cfg: &ModelConfig, device: &B::Device) -> Result<Norm<B>, LoadError> {
    let d = cfg.d_model;
    Ok(Norm::Layer(LayerNorm {
        weight: param(store.tensor_shaped(&format!("{prefix}.weight"), &[d])?, [d], device),
        bias: param(store.tensor_shaped(&format!("{prefix}.bias"), &[d])?, [d], device),
        eps: cfg.norm_eps,
    }))
}

/// A biased `[d_in, d_out]` map stored as `{prefix}.weight` and `{prefix}.bias` (GPT-2's `Conv1D` layout).
pub(crate) fn conv1d<B: Backend>(store: &dyn TensorStore, prefix: &str, d_in: usize, d_out: usize, device: &B::Device) -> Result<Linear<B>, LoadError> {
    Ok(Linear {
        weight: param(store.tensor_shaped(&format!("{prefix}.weight"), &[d_in, d_out])?, [d_in, d_out], device),
        bias: Some(param(store.tensor_shaped(&format!("{prefix}.bias"), &[d_out])?, [d_out], device)),
    })
}

/// Splits the fused `c_attn` [d, 3d] into q, k and v maps (columns 0..d, d..2d, 2d..3d).
fn split_qkv<B: Backend>(store: &dyn TensorStore, prefix: &str, d: usize, device: &B::Device) -> Result<[Linear<B>; 3], LoadError> {
    let w = store.tensor_shaped(&format!("{prefix}.weight"), &[d, 3 * d])?;
    let b = store.tensor_shaped(&format!("{prefix}.bias"), &[3 * d])?;
    Ok(std::array::from_fn(|part| {
        let cols = part * d..(part + 1) * d;
        let weight: Vec<f32> = w.chunks_exact(3 * d).flat_map(|row| row[cols.clone()].iter().copied()).collect();
        Linear { weight: param(weight, [d, d], device), bias: Some(param(b[cols].to_vec(), [d], device)) }
    }))
}

/// Builds a GPT-2 from Hugging Face tensor names (with or without the `transformer.` prefix).
pub fn load<B: Backend>(store: &dyn TensorStore, cfg: ModelConfig, device: &B::Device) -> Result<Transformer<B>, LoadError> {
    // Decided by several top-level tensors, so that a missing one is reported under its own name.
    let prefixed = ["wte.weight", "wpe.weight", "ln_f.weight"].iter().any(|n| store.contains(&format!("transformer.{n}")));
    let root = if prefixed { "transformer." } else { "" };
    let (d, v) = (cfg.d_model, cfg.vocab_size);
    let PositionEncoding::Learned { max_positions } = cfg.positions else {
        return Err(LoadError::InvalidConfig { path: store.file_of(&format!("{root}wpe.weight")), message: "a GPT-2 model needs learned positions".into() });
    };
    let blocks = (0..cfg.n_layers)
        .map(|l| {
            let p = format!("{root}h.{l}");
            let [q, k, v] = split_qkv(store, &format!("{p}.attn.c_attn"), d, device)?;
            Ok(Block {
                attn_norm: layer_norm(store, &format!("{p}.ln_1"), &cfg, device)?,
                attn: Attention {
                    q,
                    k,
                    v,
                    o: conv1d(store, &format!("{p}.attn.c_proj"), d, d, device)?,
                    n_heads: cfg.n_heads,
                    n_kv_heads: cfg.n_kv_heads,
                    d_head: cfg.d_head,
                },
                mlp_norm: layer_norm(store, &format!("{p}.ln_2"), &cfg, device)?,
                mlp: Mlp::Gelu(DenseMlp {
                    fc_in: conv1d(store, &format!("{p}.mlp.c_fc"), d, cfg.d_mlp, device)?,
                    fc_out: conv1d(store, &format!("{p}.mlp.c_proj"), cfg.d_mlp, d, device)?,
                }),
            })
        })
        .collect::<Result<Vec<_>, LoadError>>()?;
    Ok(Transformer {
        token_embedding: param(store.tensor_shaped(&format!("{root}wte.weight"), &[v, d])?, [v, d], device),
        position_embedding: Some(param(store.tensor_shaped(&format!("{root}wpe.weight"), &[max_positions, d])?, [max_positions, d], device)),
        blocks,
        final_norm: layer_norm(store, &format!("{root}ln_f"), &cfg, device)?,
        unembedding: None,
        config: cfg,
    })
}
