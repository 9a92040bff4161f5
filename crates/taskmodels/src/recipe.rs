//! How each task model is shaped and trained: one recipe per task, so `cargo xtask train --task T`
//! reproduces the shipped checkpoint from its seed.

use tasks::TaskKind;

use crate::planted::Planted;
use transformer::config::{Architecture, MlpKind, ModelConfig, NormKind, PositionEncoding, RopeLayout};

/// The seed the shipped models were trained with.
pub const DEFAULT_SEED: u64 = 7;

/// GPT-2-style (learned positions, LayerNorm, GELU) or Llama-style (RoPE, RMSNorm, SwiGLU, GQA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Learned positions, LayerNorm, GELU MLP, tied unembedding.
    Gpt2,
    /// Rotary positions, RMSNorm, SwiGLU MLP, grouped-query attention.
    Llama,
}

/// Shape and schedule of one task model.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// Which architecture the model takes.
    pub style: Style,
    /// Blocks.
    pub n_layers: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Query heads per block.
    pub n_heads: usize,
    /// Key/value heads (Llama style; GPT-2 style uses one per query head).
    pub n_kv_heads: usize,
    /// Width of the MLP's hidden layer.
    pub d_mlp: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Prompts per step, drawn with replacement.
    pub batch_size: usize,
    /// Peak learning rate (linear warm-up over the first 5% of steps, then cosine decay to 10%).
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f32,
    /// Weight of the next-token loss inside prompts, beside the answer's loss (0: answers only).
    pub lm_weight: f64,
    /// Distinct training examples drawn from the task's generator (besides the train split),
    /// none of whose prompts occurs in validation or test.
    pub generated_examples: usize,
    /// A circuit to plant: every other head and MLP is resampled while training
    /// ([`crate::planted`]); None for the shipped task models.
    pub planted: Option<Planted>,
}

/// The recipe of the shipped model for `task`.
pub fn recipe(task: TaskKind) -> Recipe {
    let base = Recipe {
        style: Style::Gpt2,
        n_layers: 2,
        d_model: 128,
        n_heads: 4,
        n_kv_heads: 4,
        d_mlp: 512,
        steps: 1500,
        batch_size: 64,
        learning_rate: 2e-3,
        weight_decay: 0.1,
        lm_weight: 0.0,
        generated_examples: 20_000,
        planted: None,
    };
    // Llama style for every task: rotary positions make "the name two tokens back" or "the most
    // recent name" easy to attend to, and with 8 heads IOI leaves its 50% plateau within ~900 steps
    // (a GPT-2-style model with 4 heads stayed on it for 1,500).
    let llama = Recipe { style: Style::Llama, n_heads: 8, n_kv_heads: 4, d_mlp: 384, learning_rate: 3e-3, weight_decay: 0.01, ..base.clone() };
    match task {
        TaskKind::Ioi => Recipe { steps: 2000, ..llama },
        // MCQA's answer needs two compositions (match the stated colour, read the letter moved
        // onto the matching option); the next-token loss inside the prompt (the next option letter)
        // trains the letter-moving heads directly. Batch accuracy sits near chance (0.29) until
        // step ≈ 3,600 and then climbs to 0.93 by 4,500 (validation 100%); with 3,000 steps the
        // climb started at ≈ 2,000 and ended at 94%. Where the plateau ends depends on the
        // schedule and on float rounding, so this recipe is reproducible only bit for bit.
        TaskKind::Mcqa => Recipe { style: Style::Gpt2, n_heads: 8, d_mlp: 512, steps: 4500, learning_rate: 3e-3, weight_decay: 0.01, lm_weight: 1.0, ..base },
        TaskKind::ArithmeticAddition | TaskKind::ArithmeticSubtraction => Recipe { steps: 2000, batch_size: 128, weight_decay: 0.5, ..llama },
    }
}

/// The recipe of the planted-circuit model for `task` (`models/<task>-planted`), where there is
/// one: IOI's recipe with two heads of each layer and both MLPs planted (a quarter of the heads),
/// every other head resampled from another prompt at every step.
pub fn planted_recipe(task: TaskKind) -> Option<Recipe> {
    match task {
        TaskKind::Ioi => Some(Recipe { planted: Some(Planted { heads: vec![(0, 0), (0, 1), (1, 0), (1, 1)], mlps: vec![0, 1] }), ..recipe(task) }),
        _ => None,
    }
}

impl Recipe {
    /// A much smaller and shorter variant with the same style, for tests.
    pub fn tiny(&self) -> Recipe {
        Recipe {
            n_layers: 1,
            d_model: 32,
            n_heads: 2,
            n_kv_heads: if self.style == Style::Llama { 1 } else { 2 },
            d_mlp: 64,
            steps: 60,
            batch_size: 32,
            generated_examples: 500,
            ..self.clone()
        }
    }

    /// The model config for a vocabulary of `vocab_size` with the given special ids.
    pub fn model_config(&self, vocab_size: usize, bos: u32, pad: u32) -> ModelConfig {
        let d_head = self.d_model / self.n_heads;
        let (architecture, norm, mlp, positions, n_kv_heads, biases) = match self.style {
            Style::Gpt2 => (Architecture::Gpt2, NormKind::LayerNorm, MlpKind::GeluTanh, PositionEncoding::Learned { max_positions: 64 }, self.n_heads, true),
            Style::Llama => (
                Architecture::Llama,
                NormKind::RmsNorm,
                MlpKind::SwiGlu,
                PositionEncoding::Rope { theta: 10_000.0, layout: RopeLayout::HalfSplit, scaling: None },
                self.n_kv_heads,
                false,
            ),
        };
        ModelConfig {
            architecture,
            n_layers: self.n_layers,
            d_model: self.d_model,
            n_heads: self.n_heads,
            n_kv_heads,
            d_head,
            d_mlp: self.d_mlp,
            vocab_size,
            n_outputs: vocab_size,
            causal: true,
            norm,
            norm_eps: 1e-5,
            mlp,
            positions,
            qkv_bias: biases,
            out_bias: biases,
            mlp_bias: biases,
            tied_embeddings: true,
            bos_token_id: Some(bos),
            pad_token_id: pad,
        }
    }
}
