//! `cargo xtask perf acdc`: ACDC side by side, auto-circuit 1.0.1's (the Python peer
//! `xtask/peers/acdc_peer.py`, protocol in `xtask/peers/README.md`) and circuitbench's
//! ([`attribution::acdc`]), on the same task model, pairs, τ and edge order: wall time per τ, the
//! ratio, and whether the two circuits are identical edge for edge.
//!
//! The peer runs first: it reports the order in which auto-circuit visits the edges (a Python
//! set's order, fixed by `PYTHONHASHSEED` = `--hash-seed`), which circuitbench then replays
//! ([`AcdcOrder::Replay`]). auto-circuit has no disconnected-node rule, so circuitbench runs
//! without it. Both time each τ with the shared clean and counterfactual passes and model loading
//! excluded; circuitbench does one untimed warm-up run first (`--no-warm-up`: none).
//!
//! With `--peer none`, circuitbench runs alone as the `acdc` method does (ACDC's reference order,
//! the disconnected-node rule), on any model, with any metric (`--metric`): what one run costs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use attribution::acdc::{AcdcOptions, AcdcOrder, AcdcSetup};
use burn::tensor::backend::Backend;
use graph::{EdgeMatrix, Graph, GraphShape};
use patching::{Ablation, Metric, Positions};
use serde_json::{Value, json};
use tasks::{PrepareOptions, Split, TaskKind};
use transformer::{LocalModel, ModelSpec};

/// Options of `perf acdc`.
#[derive(clap::Args)]
pub struct AcdcArgs {
    /// A task model (a GPT-2-shaped Hugging Face checkpoint directory; the peer loads it too).
    #[arg(long, default_value = "task:mcqa")]
    model: String,
    #[arg(long, default_value = "mcqa")]
    task: TaskKind,
    /// The split the pairs come from.
    #[arg(long, default_value = "validation")]
    split: Split,
    /// Pairs, all of one prompt length (clean and counterfactual alike): one batch, no padding.
    #[arg(long, default_value_t = 24)]
    pairs: usize,
    /// Thresholds τ, each run independently from the full graph.
    #[arg(long, value_delimiter = ',', default_values = ["1e-3", "1e-2"])]
    taus: Vec<String>,
    /// PYTHONHASHSEED of the peer: fixes auto-circuit's edge order.
    #[arg(long, default_value_t = 0)]
    hash_seed: u64,
    /// The peer to run beside circuitbench: `autocircuit`, or `none` (circuitbench alone, in
    /// ACDC's reference order).
    #[arg(long, default_value = "autocircuit")]
    peer: String,
    /// Candidates circuitbench tries side by side in one pass (replicas of the batch).
    #[arg(long, default_value_t = attribution::acdc::REPLICAS_PER_PASS)]
    replicas: usize,
    /// No untimed warm-up run before the timed ones (for models where one run takes minutes).
    #[arg(long)]
    no_warm_up: bool,
    /// The metric (`kl`, the peer's; others with `--peer none` only).
    #[arg(long, default_value = "kl")]
    metric: String,
    /// Where the job, the peer's result and `acdc.csv` go (default `results/perf/acdc`).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = crate::Device::Cpu)]
    pub device: crate::Device,
}

/// τ as the peer computes it, `base * 10**exp` in Python (its `tao_bases`, `tao_exps`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tau {
    base: f64,
    exp: i32,
}

impl Tau {
    /// Python's `base * 10**exp`: an exact integer power for exp ≥ 0, else C's `pow(10.0, exp)`
    /// (what Python's float power calls and `powf` compiles to), then one f64 multiplication.
    fn value(self) -> f64 {
        let power = if self.exp >= 0 { 10f64.powi(self.exp) } else { 10f64.powf(self.exp as f64) };
        self.base * power
    }

    /// A decomposition of `tau` whose value is exactly `tau`: the shortest decimal mantissa with
    /// an integer exponent when one reproduces it, else `tau` itself times 10**0 (always exact).
    fn of(tau: f64) -> Self {
        if tau > 0.0 && tau.is_finite() {
            let e = tau.log10().floor() as i32;
            for exp in [e, e - 1, e + 1] {
                for digits in 1..=17 {
                    let scaled = tau / 10f64.powi(exp);
                    let base: f64 = format!("{scaled:.prec$}", prec = digits - 1).parse().expect("a formatted float parses");
                    let candidate = Tau { base, exp };
                    if candidate.value() == tau {
                        return candidate;
                    }
                }
            }
        }
        Tau { base: tau, exp: 0 }
    }
}

/// One τ's result from the peer.
struct PeerRun {
    tau: f64,
    seconds: f64,
    circuit: Vec<String>,
}

/// What the peer reported.
struct PeerResult {
    system: String,
    threads: Option<u64>,
    edge_order: Vec<String>,
    runs: Vec<PeerRun>,
}

fn read_peer(path: &Path) -> Result<PeerResult> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let field = |v: &Value, key: &str| -> Result<Value> { v.get(key).cloned().with_context(|| format!("{}: no `{key}`", path.display())) };
    let names = |v: Value, what: &str| -> Result<Vec<String>> {
        v.as_array()
            .with_context(|| format!("{}: `{what}` is not a list", path.display()))?
            .iter()
            .map(|x| x.as_str().map(str::to_string).with_context(|| format!("{}: `{what}` holds a non-string", path.display())))
            .collect()
    };
    let number = |v: &Value, key: &str| -> Result<f64> { field(v, key)?.as_f64().with_context(|| format!("{}: `{key}` is not a number", path.display())) };
    let mut runs = Vec::new();
    for run in field(&value, "runs")?.as_array().with_context(|| format!("{}: `runs` is not a list", path.display()))? {
        runs.push(PeerRun { tau: number(run, "tau")?, seconds: number(run, "seconds")?, circuit: names(field(run, "circuit")?, "circuit")? });
    }
    Ok(PeerResult {
        system: value.get("system").and_then(Value::as_str).unwrap_or("auto-circuit").to_string(),
        threads: value.get("threads").and_then(Value::as_u64),
        edge_order: names(field(&value, "edge_order")?, "edge_order")?,
        runs,
    })
}

/// Kept edges by MIB name.
fn kept_names(graph: &Graph, circuit: &EdgeMatrix<bool>) -> Result<std::collections::BTreeSet<String>> {
    circuit.edge_values().filter(|(_, on)| **on).map(|((f, b), _)| Ok(graph.edge_name(f, b)?)).collect()
}

/// Runs both ACDCs, prints the table and writes `acdc.csv`, the job and the peer's result.
pub fn acdc<B: Backend>(device: &B::Device, args: &AcdcArgs) -> Result<()> {
    let peer = match args.peer.as_str() {
        "autocircuit" | "auto-circuit" => Some("autocircuit"),
        "none" => None,
        other => bail!("unknown peer `{other}` (known: autocircuit, none)"),
    };
    let metric: Metric = args.metric.parse()?;
    ensure!(peer.is_none() || metric == Metric::Kl, "the auto-circuit peer runs ACDC with KL; --metric {} needs --peer none", args.metric);
    // The peer loads a checkpoint directory; circuitbench alone runs any model.
    let model_dir = match ModelSpec::parse(&args.model)?.materialise()? {
        LocalModel::Dir(dir) => std::path::absolute(&dir).with_context(|| format!("resolving {}", dir.display()))?,
        LocalModel::Gguf(file) if peer.is_none() => file,
        LocalModel::Gguf(_) | LocalModel::Random(_) => {
            bail!("{}: the ACDC peer loads a Hugging Face checkpoint directory; give a task model, or --peer none", args.model)
        }
    };
    let taus: Vec<(f64, Tau)> = args
        .taus
        .iter()
        .map(|text| {
            let tau: f64 = text.trim().parse().with_context(|| format!("τ `{text}` is not a number"))?;
            ensure!(tau.is_finite() && tau >= 0.0, "τ must be finite and ≥ 0, not {text}");
            let parts = Tau::of(tau);
            ensure!(parts.value() == tau, "τ {text}: no base·10^exp reproduces it exactly");
            Ok((tau, parts))
        })
        .collect::<Result<_>>()?;
    ensure!(!taus.is_empty(), "no τ given");
    let out_dir = args.out.clone().unwrap_or_else(|| crate::workspace().join("results").join("perf").join("acdc"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let loaded = transformer::load_model::<B>(&args.model, device)?;
    let model = &loaded.model;
    let cfg = &model.config;
    let graph = Graph::new(GraphShape { n_layers: cfg.n_layers, n_heads: cfg.n_heads })?;
    let examples = tasks::load_split(&crate::tasks_cmd::default_dir(), args.task, args.split)?;
    let prepared = tasks::prepare(&examples, &loaded.tokenizer, cfg, &PrepareOptions::default())?.pairs;
    let pairs = crate::compare::equal_length_pairs(prepared, args.pairs, args.split.name())?;
    let len = pairs[0].clean.len();
    println!(
        "{} ({}): {} {} {} pairs of {len} tokens, one batch; {} edges; τ {}",
        args.model,
        model_dir.display(),
        pairs.len(),
        args.task.name(),
        args.split.name(),
        graph.n_edges(),
        taus.iter().map(|(t, p)| format!("{t:e} (= {}·10^{})", p.base, p.exp)).collect::<Vec<_>>().join(", ")
    );

    let job = json!({
        "model_dir": model_dir,
        "pairs": pairs.iter().map(|p| json!({"clean": p.clean, "counterfactual": p.counterfactual, "correct": p.correct, "incorrect": p.incorrect})).collect::<Vec<_>>(),
        "taus": taus.iter().map(|(_, p)| json!({"base": p.base, "exp": p.exp})).collect::<Vec<_>>(),
    });
    let job_path = out_dir.join("job.json");
    transformer::checkpoint::write_atomic(&job_path, serde_json::to_string(&job)?.as_bytes())?;

    // The peer first: it gives the order.
    let peer_result = match peer {
        Some(name) => {
            let python = crate::compare::peer_python()?;
            let script = crate::workspace().join("xtask").join("peers").join("acdc_peer.py");
            let out = out_dir.join(format!("{name}.json"));
            eprintln!("running the auto-circuit ACDC peer ({}), PYTHONHASHSEED={}", script.display(), args.hash_seed);
            let status = Command::new(&python)
                .arg(&script)
                .arg(&job_path)
                .arg(&out)
                .env("PYTHONHASHSEED", args.hash_seed.to_string())
                .status()
                .with_context(|| format!("running {}", script.display()))?;
            ensure!(status.success(), "the auto-circuit peer failed ({status}); its output is above");
            let result = read_peer(&out)?;
            ensure!(result.runs.len() == taus.len(), "{}: {} runs for {} τ", out.display(), result.runs.len(), taus.len());
            for (run, (tau, _)) in result.runs.iter().zip(&taus) {
                // JSON floats may come back one ulp off; anything more is a different τ.
                ensure!((run.tau - tau).abs() <= 4.0 * f64::EPSILON * tau.abs(), "the peer ran τ = {:e}, circuitbench {tau:e}", run.tau);
            }
            Some(result)
        }
        None => None,
    };
    let order = match &peer_result {
        Some(result) => {
            let order = result
                .edge_order
                .iter()
                .map(|name| graph.parse_edge_name(name).with_context(|| format!("the peer's edge `{name}`")))
                .collect::<Result<Vec<_>>>()?;
            ensure!(order.len() == graph.n_edges(), "the peer's order has {} edges, the graph {}", order.len(), graph.n_edges());
            AcdcOrder::Replay(order)
        }
        None => AcdcOrder::Reference,
    };

    let setup = AcdcSetup::new(model, &graph, &pairs, &Ablation::Counterfactual, metric, Positions::Suffix)?;
    // Beside the peer, its settings (auto-circuit drops no disconnected node); alone, the method's.
    let options = |tau: f64| AcdcOptions { skip_disconnected: peer.is_none(), order: order.clone(), ..AcdcOptions::new(tau, true, args.replicas) };
    // One untimed warm-up run (first-touch allocation is no run's cost), unless a run is long
    // enough not to need one.
    if !args.no_warm_up {
        let _ = setup.run(model, &options(taus[0].0))?;
    }

    if let Some(result) = &peer_result {
        println!("autocircuit   {} ({} threads), PYTHONHASHSEED={}", result.system, result.threads.map_or("?".into(), |t| t.to_string()), args.hash_seed);
    }
    println!(
        "circuitbench  circuitbench {} ({}), suffix-only passes, {} replicas per pass at most, order {}, metric {metric}",
        env!("CARGO_PKG_VERSION"),
        std::any::type_name::<B>(),
        args.replicas,
        if peer_result.is_some() { "replayed from auto-circuit, no node skipped" } else { "ACDC's reference, disconnected nodes' inputs dropped untested" }
    );
    println!(
        "{:>9} {:>14} {:>14} {:>7} {:>12} {:>12} {:>9} {:>7} {:>13}",
        "tau", "circuitbench s", "autocircuit s", "ratio", "cb edges", "ac edges", "identical", "passes", "replicas/pass"
    );
    let mut rows = Vec::new();
    let mut differing_taus = Vec::new();
    for (i, &(tau, _)) in taus.iter().enumerate() {
        let run = setup.run(model, &options(tau))?;
        let ours = kept_names(&graph, &run.circuit)?;
        let replicas_per_pass = run.replicas as f64 / run.passes.max(1) as f64;
        let theirs = peer_result.as_ref().map(|r| &r.runs[i]);
        let (their_seconds, their_edges, identical, differing) = match theirs {
            Some(theirs) => {
                let set: std::collections::BTreeSet<String> = theirs.circuit.iter().cloned().collect();
                ensure!(set.len() == theirs.circuit.len(), "the peer's circuit at τ {tau:e} lists an edge twice");
                for name in &set {
                    graph.parse_edge_name(name).with_context(|| format!("the peer's circuit edge `{name}`"))?;
                }
                let differing: Vec<String> =
                    ours.symmetric_difference(&set).map(|name| if ours.contains(name) { format!("+{name}") } else { format!("-{name}") }).collect();
                (Some(theirs.seconds), Some(set.len()), Some(differing.is_empty()), differing)
            }
            None => (None, None, None, Vec::new()),
        };
        let ratio = their_seconds.map(|s| s / run.seconds);
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!(
            "{tau:>9.1e} {:>14.2} {:>14} {:>7} {:>12} {:>12} {:>9} {:>7} {:>13.1}",
            run.seconds,
            dash(their_seconds.map(|s| format!("{s:.2}"))),
            dash(ratio.map(|r| format!("{r:.1}x"))),
            ours.len(),
            dash(their_edges.map(|n| n.to_string())),
            dash(identical.map(|b| if b { "yes".to_string() } else { "NO".to_string() })),
            run.passes,
            replicas_per_pass
        );
        if identical == Some(false) {
            println!("          differing edges (+ only circuitbench keeps, - only auto-circuit keeps): {}", differing.join(" "));
            differing_taus.push(format!("{tau:e} ({} edges)", differing.len()));
        }
        let mut row = tables::Row::new();
        row.insert("tau".into(), json!(tau));
        row.insert("circuitbench_seconds".into(), json!(run.seconds));
        row.insert("autocircuit_seconds".into(), their_seconds.map_or(Value::Null, |s| json!(s)));
        row.insert("ratio".into(), ratio.map_or(Value::Null, |r| json!(r)));
        row.insert("circuitbench_edges".into(), json!(ours.len()));
        row.insert("autocircuit_edges".into(), their_edges.map_or(Value::Null, |n| json!(n)));
        row.insert("identical".into(), identical.map_or(Value::Null, |b| json!(b)));
        row.insert("differing_edges".into(), json!(differing.join(" ")));
        row.insert("passes".into(), json!(run.passes));
        row.insert("replicas_per_pass".into(), json!(replicas_per_pass));
        rows.push(row);
    }
    println!("ratio: auto-circuit seconds / circuitbench seconds (each τ timed standalone, model loading and the clean and counterfactual passes excluded).");
    let columns = [
        "tau",
        "circuitbench_seconds",
        "autocircuit_seconds",
        "ratio",
        "circuitbench_edges",
        "autocircuit_edges",
        "identical",
        "differing_edges",
        "passes",
        "replicas_per_pass",
    ];
    let csv = out_dir.join("acdc.csv");
    tables::write_csv(&csv, &columns, &rows)?;
    println!("wrote {}", csv.display());
    ensure!(differing_taus.is_empty(), "the circuits differ at τ {}", differing_taus.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use tasks::PreparedPair;

    use super::*;

    #[test]
    fn taus_decompose_exactly() {
        assert_eq!(Tau::of(1e-3), Tau { base: 1.0, exp: -3 });
        assert_eq!(Tau::of(1e-2), Tau { base: 1.0, exp: -2 });
        assert_eq!(Tau::of(5e-4), Tau { base: 5.0, exp: -4 });
        for tau in [1e-3, 1e-2, 5e-4, 3.3e-3, 0.0, 2.5, 1e-7, 0.1 + 0.2] {
            assert_eq!(Tau::of(tau).value(), tau, "{tau:e}");
        }
    }

    #[test]
    fn pairs_of_one_length_clean_and_counterfactual() {
        let pair =
            |len: usize, cf: usize, tag: u32| PreparedPair { clean: vec![tag; len], counterfactual: vec![tag + 1; cf], correct: 1, incorrect: 2, read: None };
        let all = vec![pair(5, 5, 0), pair(7, 7, 1), pair(7, 8, 2), pair(7, 7, 3), pair(5, 5, 4), pair(7, 7, 5)];
        let chosen = crate::compare::equal_length_pairs(all, 2, "validation").unwrap();
        assert_eq!(chosen.iter().map(|p| p.clean[0]).collect::<Vec<_>>(), vec![1, 3]);
    }
}
