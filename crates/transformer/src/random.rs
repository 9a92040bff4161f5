//! Models with a real architecture's shape and random weights (`random:<shape>`): what a speed or
//! memory measurement needs where the real weights are out of reach (a GPU machine with no
//! internet, Llama-3.1-8B's gated hub repository). They do no task and their scores mean nothing;
//! their cost per pass is the real model's, up to the prompt lengths.
//!
//! Prompts are tokenized with the IOI task model's word-level tokenizer (`models/ioi`), so IOI is
//! the task to time them on: its prompts come out about as long as with GPT-2's or Llama's BPE,
//! and every name is one token. The model's vocabulary keeps the real size, so the embedding and
//! the unembedding cost what they really do.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::ModelConfig;
use crate::error::LoadError;
use crate::load::{hf_config_from_json, task_models_dir};
use crate::tokenizer::Tokenizer;

/// A shape circuitbench can build, named after the model it copies (MIB's circuit-track models).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandomShape {
    /// GPT-2 small: 12 layers, d_model 768, 12 heads, 124M parameters.
    Gpt2,
    /// Qwen2.5-0.5B: 24 layers, d_model 896, 14 query and 2 key/value heads.
    Qwen2_5_0_5B,
    /// Llama-3.1-8B: 32 layers, d_model 4096, 32 query and 8 key/value heads.
    Llama3_1_8B,
}

/// Every shape with the name `random:<name>` takes.
pub const RANDOM_SHAPES: [(&str, RandomShape); 3] =
    [("gpt2", RandomShape::Gpt2), ("qwen2.5-0.5b", RandomShape::Qwen2_5_0_5B), ("llama-3.1-8b", RandomShape::Llama3_1_8B)];

impl RandomShape {
    /// The shape `name` names, or an error listing the known ones.
    pub fn parse(name: &str) -> Result<Self, LoadError> {
        RANDOM_SHAPES.iter().find(|(n, _)| *n == name).map(|&(_, shape)| shape).ok_or_else(|| LoadError::UnknownModel {
            spec: format!("random:{name}"),
            known: RANDOM_SHAPES.iter().map(|(n, _)| format!("random:{n}")).collect::<Vec<_>>().join(", "),
        })
    }

    /// The name `random:<name>` takes.
    pub fn name(self) -> &'static str {
        RANDOM_SHAPES.iter().find(|(_, shape)| *shape == self).map(|(name, _)| *name).expect("every shape is listed")
    }

    /// The tokenizer file prompts are encoded with (see the module docs).
    pub fn tokenizer_path() -> PathBuf {
        task_models_dir().join("ioi").join("tokenizer.json")
    }

    /// The tokenizer, with the ids of its `<bos>` and `<pad>` tokens.
    pub fn tokenizer() -> Result<(Tokenizer, u32, u32), LoadError> {
        let path = Self::tokenizer_path();
        let tokenizer = Tokenizer::from_file(&path)?;
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| LoadError::InvalidConfig { path: path.clone(), message: format!("the tokenizer has no `{token}` token") })
        };
        let (bos, pad) = (id("<bos>")?, id("<pad>")?);
        Ok((tokenizer, bos, pad))
    }

    /// The architecture fields of the real model's Hugging Face `config.json`, as on the hub.
    fn hub_config(self) -> serde_json::Value {
        match self {
            RandomShape::Gpt2 => json!({
                "model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024,
                "vocab_size": 50257, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
            }),
            RandomShape::Qwen2_5_0_5B => json!({
                "model_type": "qwen2", "num_hidden_layers": 24, "hidden_size": 896, "intermediate_size": 4864,
                "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true,
            }),
            RandomShape::Llama3_1_8B => json!({
                "model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336,
                "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": false,
                "rope_scaling": {
                    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192,
                },
            }),
        }
    }

    /// The real model's config, converted as the loaders convert a `config.json`, with the given
    /// special ids (those of the tokenizer in use).
    pub fn config(self, bos: u32, pad: u32) -> Result<ModelConfig, LoadError> {
        let config = hf_config_from_json(Path::new(&format!("<random:{}>", self.name())), &self.hub_config())?;
        Ok(ModelConfig { bos_token_id: Some(bos), pad_token_id: pad, ..config })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Llama3RopeScaling, MlpKind, NormKind, PositionEncoding};

    /// Parameters of a model of `c`, counted from the config alone.
    fn parameters(c: &ModelConfig) -> usize {
        let (d, q, kv) = (c.d_model, c.n_heads * c.d_head, c.n_kv_heads * c.d_head);
        let embeddings = c.vocab_size * d * if c.tied_embeddings { 1 } else { 2 };
        let positions = match c.positions {
            PositionEncoding::Learned { max_positions } => max_positions * d,
            PositionEncoding::Rope { .. } => 0,
        };
        let norm = if c.norm == NormKind::LayerNorm { 2 * d } else { d };
        let attention = 2 * d * q + 2 * d * kv + usize::from(c.qkv_bias) * (q + 2 * kv) + usize::from(c.out_bias) * d;
        let mlp = match c.mlp {
            MlpKind::GeluTanh | MlpKind::Relu => 2 * d * c.d_mlp + usize::from(c.mlp_bias) * (c.d_mlp + d),
            MlpKind::SwiGlu => 3 * d * c.d_mlp,
        };
        embeddings + positions + c.n_layers * (attention + mlp + 2 * norm) + norm
    }

    #[test]
    fn shapes_parse_by_name_and_have_their_parameter_counts() {
        // Parameter counts of the real models (embedding counted once when tied).
        let expected = [("gpt2", 124_439_808usize), ("qwen2.5-0.5b", 494_032_768), ("llama-3.1-8b", 8_030_261_248)];
        for (name, params) in expected {
            let config = RandomShape::parse(name).unwrap().config(0, 1).unwrap();
            assert_eq!(parameters(&config), params, "{name}");
        }
        // Llama-3.1's rotary scaling comes through the loaders' conversion, which the count does not see.
        let llama = RandomShape::Llama3_1_8B.config(0, 1).unwrap();
        let PositionEncoding::Rope { theta, scaling, .. } = llama.positions else { panic!("Llama uses RoPE") };
        let expected = Llama3RopeScaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 };
        assert_eq!((theta, scaling), (500_000.0, Some(expected)));
        let err = RandomShape::parse("gpt3").unwrap_err().to_string();
        assert!(err.contains("random:gpt3") && err.contains("random:llama-3.1-8b"), "{err}");
    }
}
