//! `cargo xtask attribute`: score every edge of a model's graph on a task's discovery split with one
//! method and write the scores as an EAP-IG circuit file.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use attribution::{Discovery, Method, MethodOutput, fit_ablation, run_method};
use bench::cell::Phase;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::Args;
use graph::{Graph, GraphShape};
use patching::{AblationKind, Metric};
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
    /// The metric the method optimises: logit-diff, kl, prob-diff or nll (default: the method's own).
    #[arg(long)]
    metric: Option<Metric>,
    /// Seed of the random method.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pairs per batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Output circuit file (EAP-IG JSON): the scores, or for a method that gives one circuit per
    /// budget, the circuit at MIB's budget x as `<stem>.<x>.json` beside it.
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
    let examples = crate::tasks_cmd::first_examples(&dir, args.task, args.split, args.examples)?;
    let prepared = tasks::prepare(&examples, &loaded.tokenizer, cfg, &PrepareOptions::default())?;
    let started = Instant::now();
    let mut method = Method::parse(&args.method, args.ig_steps, args.seed)?;
    if let Method::Exact { edges } = &mut method
        && !args.edges.is_empty()
    {
        *edges = Some(args.edges.iter().map(|name| graph.parse_edge_name(name)).collect::<Result<_, _>>()?);
    }
    // A learned ablation learns the task loss (the logit difference unless --metric names another).
    let ablation = fit_ablation(args.ablation, &loaded.model, &prepared.pairs, args.batch, args.metric.unwrap_or(patching::Metric::LogitDifference))?;
    let discovery = Discovery {
        model: &loaded.model,
        graph: &graph,
        pairs: &prepared.pairs,
        ablation: &ablation,
        metric: args.metric.unwrap_or_else(|| method.default_metric()),
        batch_size: args.batch,
        edges_per_pass: attribution::exact::EDGES_PER_PASS,
        fractions: &evaluator::MIB_FRACTIONS,
        positions: patching::Positions::Suffix,
    };
    let mut batches = crate::progress::Batches::new(&args.method);
    let output = run_method(&method, &discovery, &mut |p| batches.batch(Phase::Discovery, p.done, p.total))
        .with_context(|| format!("{} on model `{}`, {} {} (pairs counted among those kept)", args.method, args.model, args.task.name(), args.split.name()))?;
    batches.finish();
    let passes = output.passes();
    let written = match &output {
        MethodOutput::Scores(scores) => {
            write_atomic(&args.out, &scores.to_circuit(cfg.d_model)?.to_json_string()?)?;
            args.out.display().to_string()
        }
        MethodOutput::Circuits(found) => {
            let mut files = Vec::new();
            for (fraction, edges) in evaluator::MIB_FRACTIONS.iter().zip(&found.circuits) {
                let mut circuit = graph::Circuit::new(graph, cfg.d_model);
                for ((f, b), &on) in edges.edge_values() {
                    circuit.set_edge_in_graph(f, b, on)?;
                    if let Some(scores) = &found.scores {
                        circuit.set_score(f, b, Some(scores[(f, b)]))?;
                    }
                }
                let path = args.out.with_extension(format!("{fraction}.json"));
                write_atomic(&path, &circuit.to_json_string()?)?;
                files.push(path.display().to_string());
            }
            // The method's own per-edge scores (ACDC's effect sizes) as a score file too, for
            // `eval --circuit` to rank by.
            if let Some(values) = &found.scores {
                let scores = attribution::EdgeScores { values: values.clone(), passes: found.passes, preferred: None };
                write_atomic(&args.out, &scores.to_circuit(cfg.d_model)?.to_json_string()?)?;
                files.push(format!("{} (scores)", args.out.display()));
            }
            files.join(", ")
        }
    };
    println!(
        "{} on {} {} ({} pairs): {:.1} s, {} forward and {} backward passes; wrote {}",
        args.method,
        args.task.name(),
        args.split.name(),
        prepared.pairs.len(),
        started.elapsed().as_secs_f64(),
        passes.forward,
        passes.backward,
        written
    );
    Ok(())
}

/// Writes `text` to `path` atomically ([`transformer::checkpoint::write_atomic`]), creating the
/// directory it goes in.
fn write_atomic(path: &std::path::Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(transformer::checkpoint::write_atomic(path, text.as_bytes())?)
}
