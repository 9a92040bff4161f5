//! `cargo xtask attribute`: score every edge of a model's graph on a task's discovery split with one
//! method and write the scores as an EAP-IG circuit file.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use attribution::{Method, RunOptions, run_method};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::Args;
use graph::{Graph, GraphShape};
use patching::AblationKind;
use tasks::{PrepareOptions, Split, TaskKind};

use crate::Device;

/// Options of `attribute`.
#[derive(Args)]
pub struct AttributeArgs {
    /// A known name, a local directory, a config.json, a .gguf file or a hub repository id.
    #[arg(long)]
    model: String,
    #[arg(long)]
    task: TaskKind,
    /// One of attribution::METHOD_NAMES (random, exact, eap, eap-ig-inputs, eap-ig-activations,
    /// clean-corrupted, ifr, gim, grad, grad-freeze, grad-tsg, grad-norm, grad-freeze-norm).
    #[arg(long)]
    method: String,
    /// Interpolation steps m of the EAP-IG methods.
    #[arg(long, default_value_t = 5)]
    ig_steps: usize,
    /// Discovery split.
    #[arg(long, default_value = "train")]
    split: Split,
    /// Examples read from the start of the split (0: all).
    #[arg(long, default_value_t = 100)]
    examples: usize,
    /// Ablation defining Δ (gradient methods) or the patch (exact): counterfactual, mean, mean-positional or zero.
    #[arg(long, default_value = "counterfactual")]
    ablation: AblationKind,
    /// exact only: comma-separated edge names to score (default: every edge; meant for tiny models).
    #[arg(long, value_delimiter = ',')]
    edges: Vec<String>,
    /// Seed of the random method.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pairs per batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Output circuit file (EAP-IG JSON).
    #[arg(long)]
    out: PathBuf,
    /// Datasets directory (default: the workspace's tasks/).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
}

/// Runs `attribute` on the backend `args.device` names.
pub fn run(args: &AttributeArgs) -> Result<()> {
    crate::on_device!(args.device, attribute(args))
}

fn attribute<B: Backend>(device: &B::Device, args: &AttributeArgs) -> Result<()> {
    let loaded = transformer::load_model::<Autodiff<B>>(&args.model, device)?;
    let cfg = &loaded.model.config;
    let graph = Graph::new(GraphShape { n_layers: cfg.n_layers, n_heads: cfg.n_heads })?;
    let dir = args.dir.clone().unwrap_or_else(crate::tasks_cmd::default_dir);
    let mut examples = tasks::load_split(&dir, args.task, args.split)?;
    if args.examples > 0 {
        examples.truncate(args.examples);
    }
    let prepared = tasks::prepare(&examples, &loaded.tokenizer, cfg, &PrepareOptions::default())?;
    let started = Instant::now();
    let mut method = Method::parse(&args.method, args.ig_steps, args.seed)?;
    if let Method::Exact { edges } = &mut method
        && !args.edges.is_empty()
    {
        *edges = Some(args.edges.iter().map(|name| graph.parse_edge_name(name)).collect::<Result<_, _>>()?);
    }
    let options = RunOptions { batch_size: args.batch, ..RunOptions::default() };
    let scores = run_method(&loaded.model, &graph, &prepared.pairs, &method, args.ablation, options)?;
    let json = scores.to_circuit(cfg.d_model)?.to_json_string()?;
    let tmp = args.out.with_extension("json.tmp");
    std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{} on {} {} ({} pairs): {:.1} s, {} forward and {} backward passes; wrote {}",
        args.method,
        args.task.name(),
        args.split.name(),
        prepared.pairs.len(),
        started.elapsed().as_secs_f64(),
        scores.passes.forward,
        scores.passes.backward,
        args.out.display()
    );
    Ok(())
}
