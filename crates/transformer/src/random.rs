//! Models with a real architecture's shape and random weights (`random:<shape>`): what a speed or
//! memory measurement needs where the real weights are out of reach (a GPU machine with no
//! internet, Llama-3.1-8B's gated hub repository). They do no task and their scores mean nothing;
//! their cost per pass is the real model's, up to the prompt lengths.
//!
//! Prompts are tokenized with the IOI task model's word-level tokenizer (`models/ioi`), so IOI is
//! the task to time them on: its prompts come out about as long as with GPT-2's or Llama's BPE,
//! and every name is one token. The model's vocabulary keeps the real size, so the embedding and
//! the unembedding cost what they really do.

use std::path::PathBuf;

use crate::config::{Architecture, Llama3RopeScaling, MlpKind, ModelConfig, NormKind, PositionEncoding, RopeLayout};
use crate::error::LoadError;
use crate::load::task_models_dir;
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

    /// The tokenizer file prompts are encoded with (see the module docs).
    pub fn tokenizer_path() -> PathBuf {
        task_models_dir().join("ioi").join("tokenizer.json")
    }

    /// The tokenizer, with the ids of its `<bos>` and `<pad>` tokens.
    pub fn tokenizer() -> Result<(Tokenizer, u32, u32), LoadError> {
        let path = Self::tokenizer_path();
        let tokenizer = Tokenizer::from_file(&path)?;
        let id = |token: &str| {
            tokenizer.token_to_id(token).ok_or_else(|| LoadError::InvalidConfig { path: path.clone(), message: format!("the tokenizer has no `{token}` token") })
        };
        let (bos, pad) = (id("<bos>")?, id("<pad>")?);
        Ok((tokenizer, bos, pad))
    }

    /// The real model's config (from its Hugging Face config.json) with the given special ids.
    pub fn config(self, bos: u32, pad: u32) -> ModelConfig {
        let llama_family = |n_layers, d_model, n_heads, n_kv_heads, d_mlp, vocab_size, theta, scaling, qkv_bias, tied| ModelConfig {
            architecture: if qkv_bias { Architecture::Qwen2 } else { Architecture::Llama },
            n_layers,
            d_model,
            n_heads,
            n_kv_heads,
            d_head: d_model / n_heads,
            d_mlp,
            vocab_size,
            norm: NormKind::RmsNorm,
            norm_eps: 1e-5,
            mlp: MlpKind::SwiGlu,
            positions: PositionEncoding::Rope { theta, layout: RopeLayout::HalfSplit, scaling },
            qkv_bias,
            out_bias: false,
            mlp_bias: false,
            tied_embeddings: tied,
            bos_token_id: Some(bos),
            pad_token_id: pad,
        };
        match self {
            RandomShape::Gpt2 => ModelConfig {
                architecture: Architecture::Gpt2,
                n_layers: 12,
                d_model: 768,
                n_heads: 12,
                n_kv_heads: 12,
                d_head: 64,
                d_mlp: 3072,
                vocab_size: 50257,
                norm: NormKind::LayerNorm,
                norm_eps: 1e-5,
                mlp: MlpKind::GeluTanh,
                positions: PositionEncoding::Learned { max_positions: 1024 },
                qkv_bias: true,
                out_bias: true,
                mlp_bias: true,
                tied_embeddings: true,
                bos_token_id: Some(bos),
                pad_token_id: pad,
            },
            RandomShape::Qwen2_5_0_5B => llama_family(24, 896, 14, 2, 4864, 151_936, 1_000_000.0, None, true, true),
            RandomShape::Llama3_1_8B => {
                let scaling = Llama3RopeScaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 };
                llama_family(32, 4096, 32, 8, 14336, 128_256, 500_000.0, Some(scaling), false, false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            MlpKind::GeluTanh => 2 * d * c.d_mlp + usize::from(c.mlp_bias) * (c.d_mlp + d),
            MlpKind::SwiGlu => 3 * d * c.d_mlp,
        };
        embeddings + positions + c.n_layers * (attention + mlp + 2 * norm) + norm
    }

    #[test]
    fn shapes_parse_by_name_and_have_their_parameter_counts() {
        // Parameter counts of the real models (embedding counted once when tied).
        let expected = [("gpt2", 124_439_808usize), ("qwen2.5-0.5b", 494_032_768), ("llama-3.1-8b", 8_030_261_248)];
        for (name, params) in expected {
            let config = RandomShape::parse(name).unwrap().config(0, 1);
            config.validate().unwrap();
            assert_eq!(parameters(&config), params, "{name}");
        }
        let err = RandomShape::parse("gpt3").unwrap_err().to_string();
        assert!(err.contains("random:gpt3") && err.contains("random:llama-3.1-8b"), "{err}");
    }
}
