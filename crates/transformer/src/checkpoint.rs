//! Models made here rather than downloaded: a seeded random initialisation that goes through the
//! same loaders as real checkpoints (so there is one model definition), and the inverse of those
//! loaders, writing a Hugging Face directory (config.json + model.safetensors) that every tool that
//! reads GPT-2 or Llama checkpoints, circuitbench included, can load back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use serde_json::json;

use crate::config::{Architecture, ModelConfig, PositionEncoding, RopeLayout};
use crate::error::LoadError;
use crate::layers::{Linear, Mlp, Norm};
use crate::llama::TensorNames;
use crate::model::Transformer;
use crate::weights::TensorStore;
use crate::{gpt2, llama, tracr};

/// Standard deviation of every initial weight matrix (GPT-2's choice).
const INIT_STD: f64 = 0.02;

/// A tensor store that makes up seeded tensors of whatever shape a loader asks for: norm weights 1,
/// biases 0, other weights N(0, 0.02²). Each tensor's stream depends on the seed and its name only,
/// so the result does not depend on the order the loader reads tensors in.
struct RandomStore {
    seed: u64,
    /// Whether the unembedding is tied (then `lm_head.weight` does not exist).
    tied: bool,
    /// Uniform weights from a counter hash instead of Box–Muller normals (see [`Transformer::init_fast`]).
    fast: bool,
}

impl RandomStore {
    fn name_seed(&self, name: &str) -> u64 {
        // FNV-1a: a fixed, platform-independent hash (std's hasher is randomised per process).
        name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)) ^ self.seed
    }
}

impl TensorStore for RandomStore {
    fn tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), LoadError> {
        Err(LoadError::InvalidConfig { path: self.file_of(name), message: format!("a random tensor `{name}` needs a shape") })
    }

    fn contains(&self, name: &str) -> bool {
        // Unprefixed GPT-2 names; an unembedding only when untied.
        !name.starts_with("transformer.") && (name != "lm_head.weight" || !self.tied)
    }

    fn file_of(&self, _name: &str) -> PathBuf {
        PathBuf::from(format!("<random init, seed {}>", self.seed))
    }

    fn tensor_shaped(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let len = shape.iter().product();
        let is_norm = name.contains("norm") || name.contains(".ln_") || name.starts_with("ln_");
        if name.ends_with(".bias") {
            return Ok(vec![0.0; len]);
        }
        if is_norm {
            return Ok(vec![1.0; len]);
        }
        if self.fast {
            return Ok(uniform_weights(self.name_seed(name), len));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.name_seed(name));
        // Box–Muller: two uniforms give one standard normal.
        Ok((0..len)
            .map(|_| {
                let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * INIT_STD) as f32
            })
            .collect())
    }
}

/// `len` weights uniform on [−√3σ, √3σ] (standard deviation σ = [`INIT_STD`]), element i a
/// SplitMix64 hash of (seed, i): about 1 ns per weight where Box–Muller takes about 30.
fn uniform_weights(seed: u64, len: usize) -> Vec<f32> {
    let half_width = 3f64.sqrt() * INIT_STD;
    (0..len as u64)
        .map(|i| {
            let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
            ((2.0 * unit - 1.0) * half_width) as f32
        })
        .collect()
}

impl<B: Backend> Transformer<B> {
    /// A freshly initialised model of `config`, the same for the same seed on every machine.
    pub fn init(config: ModelConfig, seed: u64, device: &B::Device) -> Result<Self, LoadError> {
        Self::init_with(config, RandomStore { seed, tied: false, fast: false }, device)
    }

    /// Like [`init`](Self::init) with uniform weights of the same scale, made ~30× faster: for
    /// timing models of billions of parameters (Llama-3.1-8B's shape in seconds, not minutes).
    pub fn init_fast(config: ModelConfig, seed: u64, device: &B::Device) -> Result<Self, LoadError> {
        Self::init_with(config, RandomStore { seed, tied: false, fast: true }, device)
    }

    fn init_with(config: ModelConfig, store: RandomStore, device: &B::Device) -> Result<Self, LoadError> {
        config.validate().map_err(|message| LoadError::InvalidConfig { path: "<config>".into(), message })?;
        let store = RandomStore { tied: config.tied_embeddings, ..store };
        match config.architecture {
            Architecture::Gpt2 => gpt2::load(&store, config, device),
            Architecture::Llama | Architecture::Qwen2 => llama::load(&store, &TensorNames::hugging_face(), config, device),
            Architecture::Tracr => tracr::load(&store, config, device),
        }
    }
}

/// A named row-major f32 tensor in Hugging Face layout.
type Named = (String, Vec<usize>, Vec<f32>);

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("f32 data")
}

/// A `Linear` ([in, out]) as PyTorch's [out, in] weight, plus its bias.
fn torch_linear<B: Backend>(name: &str, linear: &Linear<B>, out: &mut Vec<Named>) {
    let [d_in, d_out] = linear.weight.dims();
    out.push((format!("{name}.weight"), vec![d_out, d_in], values(linear.weight.val().transpose())));
    if let Some(b) = &linear.bias {
        out.push((format!("{name}.bias"), vec![d_out], values(b.val())));
    }
}

/// A `Linear` as GPT-2's `Conv1D`, which is already [in, out].
fn conv1d<B: Backend>(name: &str, linear: &Linear<B>, out: &mut Vec<Named>) {
    out.push((format!("{name}.weight"), linear.weight.dims().to_vec(), values(linear.weight.val())));
    if let Some(b) = &linear.bias {
        out.push((format!("{name}.bias"), vec![b.dims()[0]], values(b.val())));
    }
}

fn norm<B: Backend>(name: &str, norm: &Norm<B>, out: &mut Vec<Named>) {
    let (weight, bias) = match norm {
        Norm::Layer(n) => (n.weight.val(), Some(n.bias.val())),
        Norm::Rms(n) => (n.weight.val(), None),
        Norm::Identity(_) => return,
    };
    let d = weight.dims()[0];
    // Llama names carry `.weight` in the template; GPT-2 names are prefixes.
    let weight_name = if name.ends_with(".weight") { name.to_string() } else { format!("{name}.weight") };
    out.push((weight_name, vec![d], values(weight)));
    if let Some(bias) = bias {
        out.push((format!("{name}.bias"), vec![d], values(bias)));
    }
}

/// The model's tensors under Hugging Face names: the exact inverse of `gpt2::load` and `llama::load`.
fn hf_tensors<B: Backend>(model: &Transformer<B>) -> Result<Vec<Named>, LoadError> {
    let cfg = &model.config;
    let mut out = Vec::new();
    let [v, d] = model.token_embedding.dims();
    match cfg.architecture {
        Architecture::Tracr => {
            return Err(LoadError::InvalidConfig { path: "<export>".into(), message: "tracr models are compiled by xtask/tracr, not written here".into() });
        }
        Architecture::Gpt2 => {
            out.push(("transformer.wte.weight".into(), vec![v, d], values(model.token_embedding.val())));
            let wpe = model.position_embedding.as_ref().expect("GPT-2 has learned positions");
            out.push(("transformer.wpe.weight".into(), wpe.dims().to_vec(), values(wpe.val())));
            for (l, block) in model.blocks.iter().enumerate() {
                let p = format!("transformer.h.{l}");
                norm(&format!("{p}.ln_1"), &block.attn_norm, &mut out);
                let a = &block.attn;
                let fused = Tensor::cat(vec![a.q.weight.val(), a.k.weight.val(), a.v.weight.val()], 1);
                out.push((format!("{p}.attn.c_attn.weight"), vec![d, 3 * d], values(fused)));
                let biases = [&a.q, &a.k, &a.v].map(|m| m.bias.as_ref().expect("GPT-2 has q/k/v biases").val());
                out.push((format!("{p}.attn.c_attn.bias"), vec![3 * d], values(Tensor::cat(biases.to_vec(), 0))));
                conv1d(&format!("{p}.attn.c_proj"), &a.o, &mut out);
                norm(&format!("{p}.ln_2"), &block.mlp_norm, &mut out);
                let Mlp::Gelu(mlp) = &block.mlp else { unreachable!("GPT-2 blocks have GELU MLPs") };
                conv1d(&format!("{p}.mlp.c_fc"), &mlp.fc_in, &mut out);
                conv1d(&format!("{p}.mlp.c_proj"), &mlp.fc_out, &mut out);
            }
            norm("transformer.ln_f", &model.final_norm, &mut out);
        }
        Architecture::Llama | Architecture::Qwen2 => {
            if let PositionEncoding::Rope { layout: RopeLayout::Interleaved, .. } = cfg.positions {
                return Err(LoadError::InvalidConfig {
                    path: "<export>".into(),
                    message: "a model in llama.cpp's interleaved RoPE layout has no Hugging Face form here".into(),
                });
            }
            let names = TensorNames::hugging_face();
            let n = &names.layer;
            out.push((names.embedding.clone(), vec![v, d], values(model.token_embedding.val())));
            for (l, block) in model.blocks.iter().enumerate() {
                let at = |template: &str| template.replace("{l}", &l.to_string());
                norm(&at(n.attn_norm), &block.attn_norm, &mut out);
                torch_linear(&at(n.q), &block.attn.q, &mut out);
                torch_linear(&at(n.k), &block.attn.k, &mut out);
                torch_linear(&at(n.v), &block.attn.v, &mut out);
                torch_linear(&at(n.o), &block.attn.o, &mut out);
                norm(&at(n.mlp_norm), &block.mlp_norm, &mut out);
                let Mlp::Gated(mlp) = &block.mlp else { unreachable!("Llama blocks have gated MLPs") };
                torch_linear(&at(n.gate), &mlp.gate, &mut out);
                torch_linear(&at(n.up), &mlp.up, &mut out);
                torch_linear(&at(n.down), &mlp.down, &mut out);
            }
            norm(&names.final_norm, &model.final_norm, &mut out);
            if let Some(unembedding) = &model.unembedding {
                out.push((names.unembedding.clone(), vec![v, d], values(unembedding.val().transpose())));
            }
        }
    }
    Ok(out)
}

/// The Hugging Face `config.json` that loads back as `config`.
pub fn hf_config(config: &ModelConfig) -> Result<serde_json::Value, LoadError> {
    let c = config;
    Ok(match (c.architecture, c.positions) {
        (Architecture::Gpt2, PositionEncoding::Learned { max_positions }) => json!({
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "n_layer": c.n_layers,
            "n_head": c.n_heads,
            "n_embd": c.d_model,
            "n_inner": c.d_mlp,
            "n_positions": max_positions,
            "n_ctx": max_positions,
            "vocab_size": c.vocab_size,
            "layer_norm_epsilon": c.norm_eps,
            "activation_function": "gelu_new",
            "tie_word_embeddings": true,
            "bos_token_id": c.bos_token_id,
            // GPT-2 configs have no pad id; circuitbench pads with eos.
            "eos_token_id": c.pad_token_id,
        }),
        (Architecture::Llama | Architecture::Qwen2, PositionEncoding::Rope { theta, layout: RopeLayout::HalfSplit, scaling: None }) => json!({
            "model_type": if c.architecture == Architecture::Qwen2 { "qwen2" } else { "llama" },
            "architectures": [if c.architecture == Architecture::Qwen2 { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
            "hidden_size": c.d_model,
            "intermediate_size": c.d_mlp,
            "num_hidden_layers": c.n_layers,
            "num_attention_heads": c.n_heads,
            "num_key_value_heads": c.n_kv_heads,
            "head_dim": c.d_head,
            "vocab_size": c.vocab_size,
            "rms_norm_eps": c.norm_eps,
            "rope_theta": theta,
            "tie_word_embeddings": c.tied_embeddings,
            "attention_bias": c.qkv_bias && c.architecture == Architecture::Llama,
            "mlp_bias": false,
            "hidden_act": "silu",
            "bos_token_id": c.bos_token_id,
            "pad_token_id": c.pad_token_id,
        }),
        _ => {
            return Err(LoadError::InvalidConfig {
                path: "<export>".into(),
                message: "only GPT-2 with learned positions and Llama/Qwen2 with half-split, unscaled RoPE can be written".into(),
            });
        }
    })
}

/// Writes `model` as a Hugging Face directory: `config.json` and `model.safetensors` (the caller
/// adds the tokenizer and a card). Each file is written to a temporary name and renamed.
pub fn save_hf_dir<B: Backend>(model: &Transformer<B>, dir: &Path) -> Result<(), LoadError> {
    std::fs::create_dir_all(dir).map_err(|e| LoadError::io(dir, e))?;
    let config = serde_json::to_string_pretty(&hf_config(&model.config)?).expect("JSON values serialise");
    write_atomic(&dir.join("config.json"), config.as_bytes())?;
    let tensors = hf_tensors(model)?;
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.into_iter().map(|(name, shape, data)| (name, shape, data.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let path = dir.join("model.safetensors");
    let views: BTreeMap<String, TensorView> = bytes
        .iter()
        .map(|(name, shape, data)| {
            let view = TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map_err(|e| LoadError::Safetensors { file: path.clone(), message: e.to_string() })?;
            Ok((name.clone(), view))
        })
        .collect::<Result<_, LoadError>>()?;
    let data = safetensors::serialize(&views, None).map_err(|e| LoadError::Safetensors { file: path.clone(), message: e.to_string() })?;
    write_atomic(&path, &data)
}

/// This machine's name, for files that several hosts may write side by side (a shared results
/// directory): `/etc/hostname`, else `$HOSTNAME`, else `localhost`.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees half a file. The temporary file, `.{name}.{host}.{pid}.{n}.tmp`, is named by
/// host, process and a per-process counter, so writers in other processes (on a shared
/// directory, other hosts too) or other threads never share one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let host: String = host_name().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.{host}.{}.{n}.tmp", std::process::id()));
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(LoadError::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        LoadError::io(path, e)
    })
}
