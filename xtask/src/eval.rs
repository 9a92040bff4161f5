//! `cargo xtask eval`: judge a scored circuit file on a task — the faithfulness curve over MIB's ten
//! budgets (signed scores for CPR, absolute scores for CMD) and the file's own circuit if it marks one.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use attribution::EdgeScores;
use burn::tensor::backend::Backend;
use clap::Args;
use evaluator::circuit::edge_budget;
use evaluator::{EvalOptions, MIB_FRACTIONS, Selection, cmd, cpr, evaluate_circuits, faithfulness, top_n};
use graph::{Circuit, Graph, GraphShape};
use patching::{Ablation, AblationKind};
use tasks::{PrepareOptions, Split, TaskKind};

use crate::Device;

/// Options of `eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// A known name, a local directory, a config.json, a .gguf file or a hub repository id.
    #[arg(long)]
    model: String,
    #[arg(long)]
    task: TaskKind,
    /// A circuit in EAP-IG's JSON format, with a score on every edge.
    #[arg(long)]
    circuit: PathBuf,
    /// counterfactual, mean, mean-positional or zero.
    #[arg(long, default_value = "counterfactual")]
    ablation: AblationKind,
    /// The split evaluated on.
    #[arg(long, default_value = "validation")]
    split: Split,
    /// The split whose clean prompts give the means of mean ablations.
    #[arg(long, default_value = "train")]
    reference_split: Split,
    /// Examples read from the start of each split (0: all).
    #[arg(long, default_value_t = 100)]
    examples: usize,
    /// Pairs per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Circuits run side by side in one patched pass.
    #[arg(long, default_value_t = 1)]
    masks_per_pass: usize,
    /// Datasets directory (default: the workspace's tasks/).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
}

/// Runs `eval` on the backend `args.device` names.
pub fn run(args: &EvalArgs) -> Result<()> {
    crate::on_device!(args.device, eval(args))
}

fn eval<B: Backend>(device: &B::Device, args: &EvalArgs) -> Result<()> {
    let started = Instant::now();
    let loaded = transformer::load_model::<B>(&args.model, device)?;
    let cfg = &loaded.model.config;
    let graph = Graph::new(GraphShape { n_layers: cfg.n_layers, n_heads: cfg.n_heads })?;
    let text = std::fs::read_to_string(&args.circuit).with_context(|| format!("reading {}", args.circuit.display()))?;
    let circuit = Circuit::from_json_str(&text, graph).with_context(|| format!("{}", args.circuit.display()))?;
    let scores = EdgeScores::from_circuit(&circuit).with_context(|| format!("{}", args.circuit.display()))?;

    let dir = args.dir.clone().unwrap_or_else(crate::tasks_cmd::default_dir);
    let prepare = |split: Split| -> Result<Vec<tasks::PreparedPair>> {
        let mut examples = tasks::load_split(&dir, args.task, split)?;
        if args.examples > 0 {
            examples.truncate(args.examples);
        }
        let prepared = tasks::prepare(&examples, &loaded.tokenizer, cfg, &PrepareOptions::default())?;
        let dropped: Vec<String> = prepared.dropped.iter().map(|(r, n)| format!("{} {n}", r.name())).collect();
        println!(
            "{} {}: {} pairs kept, dropped: {}",
            args.task.name(),
            split.name(),
            prepared.pairs.len(),
            if dropped.is_empty() { "none".into() } else { dropped.join(", ") }
        );
        Ok(prepared.pairs)
    };
    let pairs = prepare(args.split)?;
    let reference: Vec<Vec<u32>> = match args.ablation {
        AblationKind::Mean | AblationKind::MeanPositional => prepare(args.reference_split)?.into_iter().map(|p| p.clean).collect(),
        _ => Vec::new(),
    };
    let ablation = Ablation::fit(args.ablation, &loaded.model, &reference, args.batch, device)?;

    let signed: Vec<_> = MIB_FRACTIONS.iter().map(|&x| top_n(&graph, &scores.values, edge_budget(&graph, x), Selection::Signed)).collect();
    let absolute: Vec<_> = MIB_FRACTIONS.iter().map(|&x| top_n(&graph, &scores.values, edge_budget(&graph, x), Selection::Absolute)).collect();
    let own = circuit.edge_mask().to_vec();
    let has_own = own.iter().any(|&e| e);
    let mut masks: Vec<&[bool]> = signed.iter().chain(&absolute).map(|c| c.edges.as_slice()).collect();
    if has_own {
        masks.push(&own);
    }
    let prep_time = started.elapsed();
    let options = EvalOptions { batch_size: args.batch, masks_per_pass: args.masks_per_pass };
    let result = evaluate_circuits(&loaded.model, &graph, &pairs, &masks, &ablation, options)?;

    let f = |m: f64| faithfulness(m, result.m_full, result.m_empty);
    let f_signed: Vec<f64> = result.m_circuits[..10].iter().map(|&m| f(m)).collect::<Result<_, _>>()?;
    let f_abs: Vec<f64> = result.m_circuits[10..20].iter().map(|&m| f(m)).collect::<Result<_, _>>()?;
    println!("ablation {}  pairs {}  m(N) {:.4}  m(∅) {:.4}", args.ablation, pairs.len(), result.m_full, result.m_empty);
    println!("{:>8} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8}", "fraction", "edges", "pruned", "f signed", "edges", "pruned", "f abs");
    for i in 0..10 {
        println!(
            "{:>8} | {:>8} {:>8} {:>8.4} | {:>8} {:>8} {:>8.4}",
            MIB_FRACTIONS[i],
            signed[i].nominal_edges,
            signed[i].edges_after_pruning,
            f_signed[i],
            absolute[i].nominal_edges,
            absolute[i].edges_after_pruning,
            f_abs[i]
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "CPR {:.4}  CMD {:.4}  mean f (signed) {:.4}  mean f (abs) {:.4}",
        cpr(&MIB_FRACTIONS, &f_signed),
        cmd(&MIB_FRACTIONS, &f_abs),
        mean(&f_signed),
        mean(&f_abs)
    );
    if has_own {
        let edges = graph.edges().filter(|&(a, b)| own[a * graph.n_bwd() + b]).count();
        println!("the file's own circuit ({edges} edges): f {:.4}", f(result.m_circuits[20])?);
    }
    println!(
        "time: {:.1} s loading and preparing, {:.1} s plain forward, {:.1} s patched forward, {:.1} s other; {} passes",
        prep_time.as_secs_f64(),
        result.plain_forward.as_secs_f64(),
        result.patched_forward.as_secs_f64(),
        result.other.as_secs_f64(),
        result.passes
    );
    Ok(())
}
