//! `cargo xtask eval`: judge what a method found on a task with the evaluator's one pipeline (the
//! bench's): a scored circuit file gives the faithfulness curves over the budgets (signed scores
//! for CPR, absolute scores for CMD) and, if it marks one, the file's own circuit; a list of binary
//! circuit files (one per budget, MIB's other submission form) is evaluated as given.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use attribution::{EdgeScores, fit_ablation};
use bench::cell::Phase;
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use clap::Args;
use evaluator::{Bootstrap, Candidates, CurveKind, Curves, EvalOptions, EvalPlan, Interval, MIB_FRACTIONS, evaluate_candidates};
use graph::{Circuit, EdgeMatrix, Graph, GraphShape};
use patching::{AblationKind, Metric};
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
    /// A circuit in EAP-IG's JSON format with a score on every edge.
    #[arg(long, required_unless_present = "circuits", conflicts_with = "circuits")]
    circuit: Option<PathBuf>,
    /// Binary circuits in EAP-IG's JSON format (edges marked in_graph), one per budget of
    /// `--fractions`, in the same order: evaluated as given.
    #[arg(long, value_delimiter = ',')]
    circuits: Vec<PathBuf>,
    /// The budgets, as increasing fractions of all edges (default: MIB's ten).
    #[arg(long, value_delimiter = ',')]
    fractions: Vec<f64>,
    /// The metric faithfulness is computed with: logit-diff (MIB's), kl, prob-diff or nll.
    #[arg(long, default_value = "logit-diff")]
    metric: Metric,
    /// counterfactual, mean, mean-positional or zero.
    #[arg(long, default_value = "counterfactual")]
    ablation: AblationKind,
    /// The split evaluated on.
    #[arg(long, default_value = "validation")]
    split: Split,
    /// The split whose clean prompts give the means of mean ablations (the discovery split).
    #[arg(long, default_value = "train")]
    reference_split: Split,
    /// Examples read from the start of each split (0: all).
    #[arg(long, default_value_t = 100)]
    examples: usize,
    /// Examples of the reference split the means are fitted on (default: `--examples`): the
    /// discovery pairs, as the bench fits them.
    #[arg(long)]
    reference_examples: Option<usize>,
    /// Pairs per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Bootstrap resamples of the evaluation pairs behind the 95% intervals of CPR, CMD and every
    /// point (0: no intervals).
    #[arg(long, default_value_t = evaluator::DEFAULT_RESAMPLES)]
    interval_resamples: usize,
    /// Seed of the intervals' resampling.
    #[arg(long, default_value_t = 0)]
    interval_seed: u64,
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

/// A circuit file read for `graph`, the error naming the file.
fn read_circuit(path: &PathBuf, graph: Graph) -> Result<Circuit> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Circuit::from_json_str(&text, graph).with_context(|| format!("{}", path.display()))
}

fn eval<B: Backend>(device: &B::Device, args: &EvalArgs) -> Result<()> {
    let started = Instant::now();
    // The autodiff twin trains a learned ablation; everything else runs on the plain model.
    let loaded = transformer::load_model::<Autodiff<B>>(&args.model, device)?;
    let model = loaded.model.valid();
    let cfg = &model.config;
    let graph = Graph::new(GraphShape { n_layers: cfg.n_layers, n_heads: cfg.n_heads })?;
    let fractions = if args.fractions.is_empty() { MIB_FRACTIONS.to_vec() } else { args.fractions.clone() };
    ensure!(fractions.iter().all(|&f| f > 0.0 && f <= 1.0), "--fractions: every budget must be in (0, 1]");
    ensure!(fractions.windows(2).all(|w| w[0] < w[1]), "--fractions: budgets must increase");
    ensure!(args.interval_resamples <= evaluator::MAX_RESAMPLES, "--interval-resamples: {} is more than {}", args.interval_resamples, evaluator::MAX_RESAMPLES);

    let dir = args.dir.clone().unwrap_or_else(crate::tasks_cmd::default_dir);
    let prepare = |split: Split, n: usize| -> Result<Vec<tasks::PreparedPair>> {
        let examples = crate::tasks_cmd::first_examples(&dir, args.task, split, n)?;
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
    let pairs = prepare(args.split, args.examples)?;
    let reference = match args.ablation {
        AblationKind::Mean | AblationKind::MeanPositional | AblationKind::Optimal | AblationKind::OptimalPositional => {
            prepare(args.reference_split, args.reference_examples.unwrap_or(args.examples))?
        }
        AblationKind::Counterfactual | AblationKind::Zero => Vec::new(),
    };
    // A learned ablation is trained (under the evaluation metric) on the reference pairs, through the model's autodiff twin.
    let ablation = fit_ablation(args.ablation, &loaded.model, &reference, args.batch, args.metric)?;
    let options = EvalOptions { batch_size: args.batch, masks_per_pass: args.masks_per_pass, metric: args.metric, ..EvalOptions::default() };
    let plan = EvalPlan { fractions: &fractions, options, bootstrap: Bootstrap { resamples: args.interval_resamples, seed: args.interval_seed } };
    let prep_time = started.elapsed();
    // An error's pair index counts the pairs kept of the split, in file order.
    let evaluate = |candidates: Candidates<'_>, plan: EvalPlan<'_>| {
        let mut batches = crate::progress::Batches::new("eval");
        let evaluation =
            evaluate_candidates(&model, &graph, &pairs, candidates, &ablation, plan, &mut |done, total| batches.batch(Phase::Evaluation, done, total))
                .with_context(|| format!("evaluating model `{}` on {} {} (pairs counted among those kept)", args.model, args.task.name(), args.split.name()));
        batches.finish();
        evaluation
    };

    let (result, own) = match &args.circuit {
        Some(path) => {
            let circuit = read_circuit(path, graph)?;
            let scores = EdgeScores::from_circuit(&circuit).with_context(|| format!("{}", path.display()))?;
            let result = evaluate(Candidates::Scores(&scores.values), plan)?;
            // The file's own circuit, if it marks one, at its own size.
            let own = circuit.edge_mask().clone();
            let size = own.count_edges();
            let own = match size {
                0 => None,
                _ => {
                    let fraction = [size as f64 / graph.n_edges() as f64];
                    Some((size, evaluate(Candidates::Circuits(std::slice::from_ref(&own)), EvalPlan { fractions: &fraction, ..plan })?))
                }
            };
            (result, own)
        }
        None => {
            ensure!(
                args.circuits.len() == fractions.len(),
                "--circuits: {} files for {} budgets (one file per budget of --fractions)",
                args.circuits.len(),
                fractions.len()
            );
            let circuits: Vec<EdgeMatrix<bool>> = args.circuits.iter().map(|p| Ok(read_circuit(p, graph)?.edge_mask().clone())).collect::<Result<_>>()?;
            (evaluate(Candidates::Circuits(&circuits), plan)?, None)
        }
    };
    print_evaluation(args, pairs.len(), &result.curves);
    if let Some((edges, own)) = own {
        let point = &own.curves.curve[0];
        println!(
            "the file's own circuit ({edges} edges, {} after pruning): f {:.4}{}",
            point.pruned_edges,
            point.faithfulness,
            interval_text(point.faithfulness_interval)
        );
    }
    println!(
        "time: {:.1} s loading and preparing, {:.1} s plain forward, {:.1} s patched forward; {} passes",
        prep_time.as_secs_f64(),
        result.plain_forward.as_secs_f64(),
        result.patched_forward.as_secs_f64(),
        result.passes
    );
    Ok(())
}

/// ` [low, high]` to three decimals after a number, or nothing where it has no interval.
pub fn interval_text(interval: Option<Interval>) -> String {
    interval.map(|i| format!(" {i:.3}")).unwrap_or_default()
}

/// A point's interval as a column of the curve table (`–` where it has none).
fn interval_column(p: &evaluator::CurvePoint) -> String {
    p.faithfulness_interval.map_or("–".into(), |i| format!("{i:.3}"))
}

/// The curves side by side, one row per budget, then the summaries.
fn print_evaluation(args: &EvalArgs, pairs: usize, result: &Curves) {
    println!("ablation {}  metric {}  pairs {}  m(N) {:.4}  m(∅) {:.4}", args.ablation, args.metric, pairs, result.m_full, result.m_empty);
    let curve = |kind: CurveKind| -> Vec<&evaluator::CurvePoint> { result.curve.iter().filter(|p| p.kind == kind).collect() };
    let (signed, absolute, given) = (curve(CurveKind::Signed), curve(CurveKind::Absolute), curve(CurveKind::Given));
    if given.is_empty() {
        println!(
            "{:>8} | {:>8} {:>8} {:>8} {:>16} | {:>8} {:>8} {:>8} {:>16}",
            "fraction", "edges", "pruned", "f signed", "95%", "edges", "pruned", "f abs", "95%"
        );
        for (s, a) in signed.iter().zip(&absolute) {
            println!(
                "{:>8} | {:>8} {:>8} {:>8.4} {:>16} | {:>8} {:>8} {:>8.4} {:>16}",
                s.fraction,
                s.nominal_edges,
                s.pruned_edges,
                s.faithfulness,
                interval_column(s),
                a.nominal_edges,
                a.pruned_edges,
                a.faithfulness,
                interval_column(a)
            );
        }
    } else {
        println!("{:>8} | {:>8} {:>8} {:>8} {:>16}", "fraction", "edges", "pruned", "f", "95%");
        for p in &given {
            println!("{:>8} | {:>8} {:>8} {:>8.4} {:>16}", p.fraction, p.nominal_edges, p.pruned_edges, p.faithfulness, interval_column(p));
        }
    }
    println!(
        "CPR {:.4}{}  CMD {:.4}{}  mean f (signed) {:.4}  mean f (abs) {:.4}",
        result.cpr,
        interval_text(result.cpr_interval),
        result.cmd,
        interval_text(result.cmd_interval),
        result.mean_f_signed,
        result.mean_f_absolute
    );
    if let Some(r) = result.resampling {
        let undefined = if r.undefined > 0 { format!(", {} undefined (m(N) ≈ m(∅)) left out", r.undefined) } else { String::new() };
        println!("95% intervals: bootstrap over the {pairs} evaluation pairs, {} resamples, seed {}{undefined}", r.resamples, r.seed);
    }
}
