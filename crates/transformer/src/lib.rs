//! GPT-2 and Llama-family transformers (and tracr-compiled RASP programs) on burn, loaded from Hugging Face safetensors or GGUF, whose
//! forward pass exposes the MIB node graph (input embedding, every head's output, per-head q/k/v
//! inputs, MLP inputs and outputs, the final residual; inside the nodes each attention pattern and
//! MLP hidden layer) through [`Hooks`], so tracing and edge patching share one implementation of
//! the model.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod fetch;
pub mod finite;
pub mod gpt2;
pub mod hooks;
pub mod hub;
pub mod layers;
pub mod llama;
pub mod load;
pub mod model;
pub mod products;
pub mod random;
pub mod rules;
pub mod tokenizer;
pub mod tracr;
pub mod weights;

pub use config::ModelConfig;
pub use error::LoadError;
pub use finite::{NonFinite, ensure_finite};
pub use hooks::{AttentionInput, Hooks, NoHooks, Trace};
pub use load::{LoadedModel, LocalModel, ModelSpec, load_model};
pub use model::{Batch, BatchError, HeadInput, PrefixCache, PrefixError, Readout, Resume, Transformer};
pub use rules::GradientRules;
pub use tokenizer::Tokenizer;

/// The CPU backend every test and default command runs on.
pub type CpuBackend = burn::backend::NdArray<f32>;

/// The GPU backend, when built with the `cuda` feature.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda<f32>;
