//! Models compiled from RASP programs by tracr (`xtask/tracr/` exports them): no norm, ReLU MLPs,
//! attention as compiled (bidirectional unless compiled causal), one-hot token and position
//! embeddings (position 0 is BOS, its position row zero), and an unembedding that projects the
//! residual stream onto the program's output space. Every weight is stored [in, out] and applied
//! as `x @ W + b`; q, k and v are separate maps of `n_head · head_dim` columns, head-major.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::config::{Architecture, MlpKind, ModelConfig, NormKind, PositionEncoding};
use crate::error::LoadError;
use crate::gpt2::conv1d;
use crate::layers::{DenseMlp, Mlp, NoNorm, Norm, param};
use crate::load::parse_config;
use crate::model::{Attention, Block, Transformer};
use crate::weights::TensorStore;

/// How a compiled program's output is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TracrOutput {
    /// One logit per output value: the arg-max is the program's output at that position.
    Categorical,
    /// A single column holding the output value itself.
    Numerical,
}

/// The `config.json` that `xtask/tracr/export.py` writes beside a compiled model's weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TracrConfig {
    /// The RASP program's name.
    pub program: String,
    /// Blocks (attention then MLP; tracr leaves unused halves all zero).
    pub n_layer: usize,
    /// Heads per attention layer (the most any layer needs; empty heads are zero).
    pub n_head: usize,
    /// Width of each head's q, k and v (tracr's key size).
    pub head_dim: usize,
    /// Width of the residual stream: one named direction per dimension.
    pub n_embd: usize,
    /// Width of the MLP hidden layer (the widest MLP; MLPs of one layer sit side by side).
    pub n_inner: usize,
    /// Must be `relu`.
    pub activation_function: String,
    /// Must be false: tracr compiles no normalisation.
    pub layer_norm: bool,
    /// The attention logits' scale; must be 1/√head_dim (softmax coldness is in the weights).
    pub attn_scale: f64,
    /// Whether the program was compiled with causal attention (tracr's default is not).
    pub causal: bool,
    /// The longest input after BOS; the position embedding has one more row.
    pub max_seq_len: usize,
    /// Input token → id (the sorted values, then BOS and PAD, as tracr assembles them).
    pub vocab: BTreeMap<String, u32>,
    /// The BOS id, at position 0 of every input.
    pub bos_token_id: u32,
    /// The PAD id (tracr masks nothing: batches here mask it instead).
    pub pad_token_id: u32,
    /// Categorical or numerical output.
    pub output: TracrOutput,
    /// One label per unembedding column: each output value (categorical) or the output's name.
    pub output_labels: Vec<String>,
    /// What each residual dimension means (`tokens:3`, `indices:0`, `one`, `frac_prevs`, …).
    pub residual_labels: Vec<String>,
}

impl TracrConfig {
    /// Reads and checks a tracr `config.json`.
    pub fn read(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|source| LoadError::Json { path: path.into(), source })?;
        let config: Self = parse_config(path, &json)?;
        config.to_model_config(path)?;
        Ok(config)
    }

    /// The architecture-neutral config; rejects what a compiled model cannot be.
    pub fn to_model_config(&self, path: &Path) -> Result<ModelConfig, LoadError> {
        let field_err = |field: &str, message: String| LoadError::ConfigField { path: path.into(), field: field.into(), message };
        if self.activation_function != "relu" {
            return Err(field_err("activation_function", format!("`{}`: tracr compiles ReLU MLPs", self.activation_function)));
        }
        if self.layer_norm {
            return Err(field_err("layer_norm", "tracr compiles no normalisation".into()));
        }
        let sizes = [("n_layer", self.n_layer), ("n_head", self.n_head), ("head_dim", self.head_dim), ("n_embd", self.n_embd), ("n_inner", self.n_inner)];
        if let Some((field, _)) = sizes.into_iter().find(|(_, v)| *v == 0) {
            return Err(field_err(field, "must be positive, got 0".into()));
        }
        let expected_scale = (self.head_dim as f64).powf(-0.5);
        if (self.attn_scale - expected_scale).abs() > 1e-6 * expected_scale {
            return Err(field_err("attn_scale", format!("{} is not 1/√head_dim = {expected_scale}", self.attn_scale)));
        }
        let mut ids: Vec<u32> = self.vocab.values().copied().collect();
        ids.sort_unstable();
        if ids.iter().enumerate().any(|(i, &id)| id as usize != i) {
            return Err(field_err("vocab", format!("ids must be 0..{} once each, got {ids:?}", self.vocab.len())));
        }
        for (field, id) in [("bos_token_id", self.bos_token_id), ("pad_token_id", self.pad_token_id)] {
            if id as usize >= self.vocab.len() {
                return Err(field_err(field, format!("{id} is outside the vocabulary of {}", self.vocab.len())));
            }
        }
        match (self.output, self.output_labels.len()) {
            (_, 0) => return Err(field_err("output_labels", "no output column".into())),
            (TracrOutput::Numerical, n) if n != 1 => return Err(field_err("output_labels", format!("a numerical output has one column, got {n}"))),
            _ => {}
        }
        if self.residual_labels.len() != self.n_embd {
            return Err(field_err("residual_labels", format!("{} labels for a residual stream of {}", self.residual_labels.len(), self.n_embd)));
        }
        let config = ModelConfig {
            architecture: Architecture::Tracr,
            n_layers: self.n_layer,
            d_model: self.n_embd,
            n_heads: self.n_head,
            n_kv_heads: self.n_head,
            d_head: self.head_dim,
            d_mlp: self.n_inner,
            vocab_size: self.vocab.len(),
            n_outputs: self.output_labels.len(),
            causal: self.causal,
            norm: NormKind::Identity,
            norm_eps: 0.0,
            mlp: MlpKind::Relu,
            positions: PositionEncoding::Learned { max_positions: self.max_seq_len + 1 },
            qkv_bias: true,
            out_bias: true,
            mlp_bias: true,
            tied_embeddings: false,
            bos_token_id: Some(self.bos_token_id),
            pad_token_id: self.pad_token_id,
        };
        config.validate().map_err(|message| LoadError::InvalidConfig { path: path.into(), message })?;
        Ok(config)
    }
}

/// Builds a compiled model from the exported tensor names (`wte`, `wpe`, `h.{l}.attn.{q,k,v,o}_proj`,
/// `h.{l}.mlp.{c_fc,c_proj}`, `unembed`).
pub fn load<B: Backend>(store: &dyn TensorStore, cfg: ModelConfig, device: &B::Device) -> Result<Transformer<B>, LoadError> {
    let (d, hd, v) = (cfg.d_model, cfg.n_heads * cfg.d_head, cfg.vocab_size);
    let PositionEncoding::Learned { max_positions } = cfg.positions else {
        return Err(LoadError::InvalidConfig { path: store.file_of("wpe.weight"), message: "a tracr model has learned (one-hot) positions".into() });
    };
    let blocks = (0..cfg.n_layers)
        .map(|l| {
            let p = format!("h.{l}");
            Ok(Block {
                attn_norm: Norm::Identity(NoNorm),
                attn: Attention {
                    q: conv1d(store, &format!("{p}.attn.q_proj"), d, hd, device)?,
                    k: conv1d(store, &format!("{p}.attn.k_proj"), d, hd, device)?,
                    v: conv1d(store, &format!("{p}.attn.v_proj"), d, hd, device)?,
                    o: conv1d(store, &format!("{p}.attn.o_proj"), hd, d, device)?,
                    n_heads: cfg.n_heads,
                    n_kv_heads: cfg.n_kv_heads,
                    d_head: cfg.d_head,
                },
                mlp_norm: Norm::Identity(NoNorm),
                mlp: Mlp::Relu(DenseMlp {
                    fc_in: conv1d(store, &format!("{p}.mlp.c_fc"), d, cfg.d_mlp, device)?,
                    fc_out: conv1d(store, &format!("{p}.mlp.c_proj"), cfg.d_mlp, d, device)?,
                }),
            })
        })
        .collect::<Result<Vec<_>, LoadError>>()?;
    let n_out = cfg.n_outputs;
    Ok(Transformer {
        token_embedding: param(store.tensor_shaped("wte.weight", &[v, d])?, [v, d], device),
        position_embedding: Some(param(store.tensor_shaped("wpe.weight", &[max_positions, d])?, [max_positions, d], device)),
        blocks,
        final_norm: Norm::Identity(NoNorm),
        unembedding: Some(param(store.tensor_shaped("unembed.weight", &[d, n_out])?, [d, n_out], device)),
        config: cfg,
    })
}
