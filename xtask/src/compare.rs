//! `cargo xtask perf compare`: the same attribution and evaluation work done by circuitbench and by
//! two PyTorch peers on this machine, in one run, with wall time per stage, the ratios, and a check
//! that every system computed the same numbers (a speed-up that changes the scores is no speed-up).
//!
//! The peers live in `xtask/peers/` and are installed by this command into a virtual environment
//! under the user's cache (`~/.cache/circuitbench/peers-venv`, from PyPI, pinned in
//! `xtask/peers/requirements.txt`; about 6 GB, since torch's PyPI wheel brings the CUDA runtime): (a) MIB's own stack — TransformerLens with the EAP-IG flags,
//! loops written the way the EAP-IG library runs them; (b) a lean script on Hugging Face
//! transformers with plain hooks. They read one job file (token ids, the circuits to evaluate) and
//! write one result file; the protocol is in `xtask/peers/README.md`.
//!
//! Stages, each timed standalone as a user would run it (its own clean and counterfactual passes
//! included, model loading excluded): EAP, EAP-IG-inputs, GIM, and the evaluation of ten circuits
//! (MIB's ten budgets, chosen by circuitbench's EAP scores, signed) plus m(N) and m(∅). All pairs
//! form one batch of prompts of equal length, so no system pads.
//!
//! circuitbench runs every stage twice: with suffix-only passes (the default: each pair from its
//! first differing token on, the `circuitbench` column every ratio is taken against) and with
//! full passes (`circuitbench-full`, every position, as the peers compute; its ratio is what the
//! suffix passes save, and its agreement column that they change no number).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use evaluator::circuit::MIB_FRACTIONS;
use evaluator::{EvalOptions, Selection, evaluate_circuits, top_n};
use graph::{EdgeMatrix, Graph};
use patching::{Metric, Positions};
use serde_json::{Value, json};
use tasks::PreparedPair;
use transformer::{LocalModel, ModelConfig, ModelSpec, Transformer};

/// Options of the side-by-side comparison.
#[derive(clap::Args)]
pub struct CompareArgs {
    /// Model (a GGUF model: the peers load the same file through transformers' GGUF reader).
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// IOI pairs from the train split, all of one prompt length (one batch).
    #[arg(long, default_value_t = 16)]
    pairs: usize,
    /// Integrated-gradient steps of EAP-IG-inputs.
    #[arg(long, default_value_t = 5)]
    ig_steps: usize,
    /// Peers to run beside circuitbench (`--peers none` runs circuitbench alone).
    #[arg(long, value_delimiter = ',', default_values = ["transformerlens", "hf"])]
    peers: Vec<String>,
    /// Where the job, the peers' results and `compare.csv` go.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = crate::Device::Cpu)]
    pub device: crate::Device,
}

/// The stages every system runs, in order.
const STAGES: [&str; 4] = ["eap", "eap-ig-inputs", "gim", "evaluation"];

/// Largest relative L2 difference between two systems' edge scores (over real edges) still
/// counted as agreement: f32 accumulation in a different order moves scores by ~1e-5.
const SCORE_TOLERANCE: f64 = 1e-3;
/// Largest absolute difference in m (logit units) still counted as agreement.
const M_TOLERANCE: f64 = 1e-3;

/// What one system measured on one stage.
#[derive(Debug, Clone, Default)]
struct StageResult {
    seconds: f64,
    /// Edge scores (attribution stages).
    scores: Option<EdgeMatrix<f32>>,
    /// Mean m over the pairs: clean model, empty circuit, then each circuit (evaluation).
    m: Option<Vec<f64>>,
    /// FLOPs the stage needs at the least (model matmuls and edge-score contractions).
    flops: Option<f64>,
}

/// One system's results, stage by stage.
struct SystemResult {
    /// Short key used in column names (`circuitbench`, `transformerlens`, `hf`).
    name: String,
    /// What the system reports about itself (versions, threads).
    description: String,
    stages: Vec<(String, StageResult)>,
}

impl SystemResult {
    fn stage(&self, name: &str) -> Option<&StageResult> {
        self.stages.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }
}

/// The first `n` pairs of the most common prompt length among those whose clean and
/// counterfactual prompts are equally long (so nothing is padded); `split` names the pairs' split
/// in the error.
pub(crate) fn equal_length_pairs(all: Vec<PreparedPair>, n: usize, split: &str) -> Result<Vec<PreparedPair>> {
    let even: Vec<PreparedPair> = all.into_iter().filter(|p| p.clean.len() == p.counterfactual.len()).collect();
    let mut counts = std::collections::BTreeMap::<usize, usize>::new();
    for p in &even {
        *counts.entry(p.clean.len()).or_default() += 1;
    }
    let (&len, &count) = counts
        .iter()
        .max_by_key(|&(len, count)| (*count, std::cmp::Reverse(*len)))
        .context("no prepared pairs with clean and counterfactual prompts of one length")?;
    ensure!(count >= n, "only {count} {split} pairs share a prompt length ({len} tokens); asked for {n}");
    Ok(even.into_iter().filter(|p| p.clean.len() == len).take(n).collect())
}

/// Median GFLOP/s of a large plain f32 matmul: the machine's attainable matmul throughput.
fn peak_matmul_gflops<B: Backend>(device: &B::Device) -> f64 {
    use burn::tensor::{Distribution, Tensor};
    let (m, k, n) = (1024, 1024, 1024);
    let a = Tensor::<B, 2>::random([m, k], Distribution::Normal(0.0, 1.0), device);
    let b = Tensor::<B, 2>::random([k, n], Distribution::Normal(0.0, 1.0), device);
    let _ = a.clone().matmul(b.clone()).into_data();
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let _ = a.clone().matmul(b.clone()).into_data();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    2.0 * (m * k * n) as f64 / times[2] / 1e9
}

/// Least FLOPs of attributing one batch: `fwd` forward and `bwd` backward passes (a backward costs
/// two forwards) over `computed` positions of prompts of `len` tokens, plus one Δ·∇ contraction
/// over every edge (gradients of several passes add up before it, since Δ is the same).
#[allow(clippy::too_many_arguments)]
fn attribution_flops(cfg: &ModelConfig, graph: &Graph, pairs: usize, computed: usize, len: usize, fwd: usize, bwd: usize) -> f64 {
    let tokens = pairs * computed;
    let forward = cfg.forward_flops(tokens, len, pairs);
    let contraction = 2.0 * graph.n_edges() as f64 * (tokens * cfg.d_model) as f64;
    (fwd + 2 * bwd) as f64 * forward + contraction
}

/// Runs the four stages in circuitbench, its passes computing `positions`; returns the results
/// and the circuits evaluated.
fn run_circuitbench<B: Backend>(
    device: &B::Device,
    model: &Transformer<Autodiff<B>>,
    graph: &Graph,
    pairs: &[PreparedPair],
    ig_steps: usize,
    positions: Positions,
) -> Result<(SystemResult, Vec<EdgeMatrix<bool>>)> {
    use attribution::{Discovery, Method, run_method};
    let cfg = &model.config;
    let graph = *graph;
    let inner = model.valid();
    let len = pairs[0].clean.len();
    // Positions a pass skips: the pairs are of one length, so a pass is as long as the longest
    // suffix, from the earliest first difference.
    let clean: Vec<Vec<u32>> = pairs.iter().map(|p| p.clean.clone()).collect();
    let counterfactual: Vec<Vec<u32>> = pairs.iter().map(|p| p.counterfactual.clone()).collect();
    let skipped = positions.starts(&clean, &counterfactual).into_iter().min().unwrap_or(0);
    // One untimed forward pass first, as the peers do: first-touch allocation is not a stage's
    // cost. Like theirs (their only forward is the instrumented one), it takes the path the stages
    // take, with every head's output formed and recorded, not the plain model's fused one.
    let _ = patching::record_nodes(&inner, &transformer::Batch::new(&clean, cfg, device)?).1.into_data();
    let mut stages = Vec::new();
    let mut eap_scores = None;
    for name in ["eap", "eap-ig-inputs", "gim"] {
        let method = Method::parse(name, ig_steps, 0)?;
        let start = Instant::now();
        let ablation = patching::Ablation::Counterfactual;
        let discovery = Discovery {
            model,
            graph: &graph,
            pairs,
            ablation: &ablation,
            metric: method.default_metric(),
            batch_size: pairs.len(),
            edges_per_pass: attribution::exact::EDGES_PER_PASS,
            fractions: &MIB_FRACTIONS,
            positions,
        };
        let scores = crate::scores_of(name, run_method(&method, &discovery, &mut |_| {})?)?;
        let seconds = start.elapsed().as_secs_f64();
        let flops = attribution_flops(cfg, &graph, pairs.len(), len - skipped, len, scores.passes.forward, scores.passes.backward);
        if name == "eap" {
            eap_scores = Some(scores.values.clone());
        }
        stages.push((name.to_string(), StageResult { seconds, scores: Some(scores.values), m: None, flops: Some(flops) }));
    }
    let eap_scores = eap_scores.expect("eap ran first");
    let circuits: Vec<EdgeMatrix<bool>> = MIB_FRACTIONS.iter().map(|&f| top_n(&graph, &eap_scores, graph.edge_budget(f), Selection::Signed).edges).collect();
    let refs: Vec<&EdgeMatrix<bool>> = circuits.iter().collect();
    let start = Instant::now();
    let ablation = patching::Ablation::Counterfactual;
    let options = EvalOptions { batch_size: pairs.len(), masks_per_pass: 1, metric: Metric::LogitDifference, positions };
    let result = evaluate_circuits(&inner, &graph, pairs, &refs, &ablation, options, &mut |_, _| {})?;
    let seconds = start.elapsed().as_secs_f64();
    let means: Vec<f64> = [result.m_full, result.m_empty].into_iter().chain(result.m_circuits).collect();
    stages.push(("evaluation".into(), StageResult { seconds, scores: None, m: Some(means), flops: None }));
    let (name, passes) = match positions {
        Positions::Suffix => ("circuitbench".to_string(), format!("suffix-only passes from position {skipped} of {len}")),
        other => (format!("circuitbench-{}", other.name()), format!("{} passes", other.name())),
    };
    let description = format!("circuitbench {} (burn {}, {}), {passes}", env!("CARGO_PKG_VERSION"), "0.21.0", std::any::type_name::<B>());
    Ok((SystemResult { name, description, stages }, circuits))
}

/// The peers' virtual environment, created and filled from `xtask/peers/requirements.txt` when
/// missing or when the requirements changed since it was filled (a stamp file holds their hash).
pub(crate) fn peer_python() -> Result<PathBuf> {
    venv_python("peers-venv", &crate::workspace().join("xtask").join("peers").join("requirements.txt"), "the PyTorch peers")
}

/// The python of virtual environment `name` under the cache, created and filled from
/// `requirements` when missing or when they changed since it was filled (a stamp file holds
/// their hash); `what` names its contents in the one line printed while installing.
pub(crate) fn venv_python(name: &str, requirements: &Path, what: &str) -> Result<PathBuf> {
    let wanted = transformer::fetch::file_sha256(requirements).with_context(|| format!("reading {}", requirements.display()))?;
    let venv = transformer::fetch::cache_dir().join(name);
    let python = venv.join("bin").join("python");
    let stamp = venv.join("circuitbench-requirements.sha256");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wanted) && python.exists() {
        return Ok(python);
    }
    let run = |cmd: &mut Command| -> Result<()> {
        let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
        ensure!(status.success(), "{cmd:?} failed ({status})");
        Ok(())
    };
    eprintln!("installing {what} into {} (first run only)", venv.display());
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "-r"]).arg(requirements))?;
    std::fs::write(&stamp, &wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}

/// The job file every peer reads: the model file, the pairs' token ids and the circuits.
fn job_json(gguf: &Path, graph: &Graph, pairs: &[PreparedPair], ig_steps: usize, circuits: &[EdgeMatrix<bool>]) -> Value {
    // Row-major (forward index, then backward index), the order the peers index their masks in.
    let edges = |mask: &EdgeMatrix<bool>| -> Vec<[usize; 2]> {
        let mut on: Vec<[usize; 2]> = mask.edge_values().filter(|(_, on)| **on).map(|((f, b), _)| [f, b]).collect();
        on.sort_unstable();
        on
    };
    json!({
        "gguf": gguf,
        "n_layers": graph.shape().n_layers,
        "n_heads": graph.shape().n_heads,
        "pairs": pairs.iter().map(|p| json!({"clean": p.clean, "counterfactual": p.counterfactual, "correct": p.correct, "incorrect": p.incorrect})).collect::<Vec<_>>(),
        "ig_steps": ig_steps,
        "stages": STAGES,
        "circuits": circuits.iter().map(edges).collect::<Vec<_>>(),
    })
}

/// Runs one peer script on the job and reads its result file.
fn run_peer(python: &Path, graph: &Graph, peer: &str, job: &Path, out_dir: &Path) -> Result<SystemResult> {
    let script = match peer {
        "transformerlens" => "transformerlens_peer.py",
        "hf" => "hf_peer.py",
        other => bail!("unknown peer `{other}` (known: transformerlens, hf)"),
    };
    let script = crate::workspace().join("xtask").join("peers").join(script);
    let out = out_dir.join(format!("{peer}.json"));
    eprintln!("running the {peer} peer ({})", script.display());
    let status = Command::new(python).arg(&script).arg(job).arg(&out).status().with_context(|| format!("running {}", script.display()))?;
    ensure!(status.success(), "the {peer} peer failed ({status}); its output is above");
    let text = std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let value: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", out.display()))?;
    let field = |v: &Value, key: &str| -> Result<Value> { v.get(key).cloned().with_context(|| format!("{}: no `{key}`", out.display())) };
    let floats = |v: &Value, what: &str| -> Result<Vec<f64>> {
        v.as_array()
            .with_context(|| format!("{}: `{what}` is not a list", out.display()))?
            .iter()
            .map(|x| x.as_f64().with_context(|| format!("{}: `{what}` holds a non-number", out.display())))
            .collect()
    };
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let stages_json = field(&value, "stages")?;
    let mut stages = Vec::new();
    for name in STAGES {
        let stage = field(&stages_json, name)?;
        let seconds = field(&stage, "seconds")?.as_f64().with_context(|| format!("{}: {name}.seconds is not a number", out.display()))?;
        let mut result = StageResult { seconds, ..Default::default() };
        if name == "evaluation" {
            let mut m = vec![mean(floats(&field(&stage, "m_clean")?, "m_clean")?), mean(floats(&field(&stage, "m_empty")?, "m_empty")?)];
            for circuit in field(&stage, "m")?.as_array().with_context(|| format!("{}: evaluation.m is not a list", out.display()))? {
                m.push(mean(floats(circuit, "m")?));
            }
            result.m = Some(m);
        } else {
            let scores = floats(&field(&stage, "scores")?, "scores")?.into_iter().map(|x| x as f32).collect();
            result.scores = Some(EdgeMatrix::from_vec(*graph, scores).with_context(|| format!("{}: {name}.scores", out.display()))?);
        }
        stages.push((name.to_string(), result));
    }
    let description = value.get("system").and_then(Value::as_str).unwrap_or(peer).to_string();
    Ok(SystemResult { name: peer.to_string(), description, stages })
}

/// ‖a − b‖ / ‖b‖ over the graph's real edges.
fn relative_l2(a: &EdgeMatrix<f32>, b: &EdgeMatrix<f32>) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (edge, &x) in a.edge_values() {
        let (x, y) = (x as f64, b[edge] as f64);
        diff += (x - y).powi(2);
        norm += y * y;
    }
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// How far `other` is from circuitbench on a stage: relative L2 of scores, or max |Δm|.
fn disagreement(ours: &StageResult, other: &StageResult) -> Result<(f64, bool)> {
    match (&ours.scores, &other.scores, &ours.m, &other.m) {
        (Some(a), Some(b), _, _) => {
            ensure!(a.graph() == b.graph(), "score matrices are of different graphs");
            let d = relative_l2(b, a);
            Ok((d, d <= SCORE_TOLERANCE))
        }
        (_, _, Some(a), Some(b)) => {
            ensure!(a.len() == b.len(), "different numbers of evaluated circuits ({} vs {})", a.len(), b.len());
            let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            Ok((d, d <= M_TOLERANCE))
        }
        _ => bail!("a stage produced neither scores nor m values"),
    }
}

/// Runs the comparison, prints the table and writes `compare.csv` (and the job and peer results)
/// under `--out` (default `results/perf`).
pub fn compare<B: Backend>(device: &B::Device, args: &CompareArgs) -> Result<()> {
    let gguf = match ModelSpec::parse(&args.model)?.materialise()? {
        LocalModel::Gguf(path) => path,
        LocalModel::Dir(_) | LocalModel::Random(_) => bail!("{}: the peers load GGUF files; give a GGUF model", args.model),
    };
    let out_dir = args.out.clone().unwrap_or_else(|| crate::workspace().join("results").join("perf"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let loaded = transformer::load_model::<Autodiff<B>>(&args.model, device)?;
    let cfg = &loaded.model.config;
    let graph = Graph::new(graph::GraphShape { n_layers: cfg.n_layers, n_heads: cfg.n_heads })?;
    let examples = tasks::load_split(&crate::tasks_cmd::default_dir(), tasks::TaskKind::Ioi, tasks::Split::Train)?;
    let prepared = tasks::prepare(&examples, &loaded.tokenizer, cfg, &tasks::PrepareOptions::default())?.pairs;
    let pairs = equal_length_pairs(prepared, args.pairs, "train")?;
    let len = pairs[0].clean.len();
    let peak = peak_matmul_gflops::<B>(device);
    println!("{}: {} IOI pairs of {len} tokens, one batch; plain f32 matmul peak {peak:.1} GFLOP/s", args.model, pairs.len());

    let (ours, circuits) = run_circuitbench::<B>(device, &loaded.model, &graph, &pairs, args.ig_steps, Positions::Suffix)?;
    // The same work with every position computed, as the peers do: the saving of suffix passes,
    // and a check that it changes no number (its agreement column).
    let (full, _) = run_circuitbench::<B>(device, &loaded.model, &graph, &pairs, args.ig_steps, Positions::Full)?;
    drop(loaded);
    let job = out_dir.join("job.json");
    let job_text = serde_json::to_string(&job_json(&gguf, &graph, &pairs, args.ig_steps, &circuits))?;
    transformer::checkpoint::write_atomic(&job, job_text.as_bytes())?;

    let peers: Vec<&str> = args.peers.iter().map(String::as_str).filter(|p| *p != "none").collect();
    let mut systems = vec![ours, full];
    if !peers.is_empty() {
        let python = peer_python()?;
        for peer in peers {
            systems.push(run_peer(&python, &graph, peer, &job, &out_dir)?);
        }
    }

    for system in &systems {
        println!("{:<16} {}", system.name, system.description);
    }
    let ours = &systems[0];
    let mut header = format!("{:<14} {:>14}", "stage", "circuitbench s");
    for other in &systems[1..] {
        header += &format!(" {:>16} {:>8} {:>11}", format!("{} s", other.name), "ratio", "agreement");
    }
    header += &format!(" {:>10}", "matmul %");
    println!("{header}");
    let mut rows = Vec::new();
    for stage in STAGES {
        let mine = ours.stage(stage).expect("circuitbench runs every stage");
        let mut line = format!("{stage:<14} {:>14.2}", mine.seconds);
        let mut row = serde_json::Map::new();
        row.insert("stage".into(), json!(stage));
        row.insert("circuitbench_seconds".into(), json!(mine.seconds));
        for other in &systems[1..] {
            let theirs = other.stage(stage).with_context(|| format!("{} did not report {stage}", other.name))?;
            let (d, ok) = disagreement(mine, theirs)?;
            let ratio = theirs.seconds / mine.seconds;
            line += &format!(" {:>16.2} {:>7.1}x {:>10.1e}{}", theirs.seconds, ratio, d, if ok { " " } else { "!" });
            let key = &other.name;
            row.insert(format!("{key}_seconds"), json!(theirs.seconds));
            row.insert(format!("{key}_ratio"), json!(ratio));
            row.insert(format!("{key}_disagreement"), json!(d));
            row.insert(format!("{key}_agrees"), json!(ok));
        }
        let fraction = mine.flops.map(|f| 100.0 * f / mine.seconds / 1e9 / peak);
        line += &match fraction {
            Some(p) => format!(" {p:>9.0}%"),
            None => format!(" {:>10}", "-"),
        };
        row.insert("matmul_peak_percent".into(), fraction.map_or(Value::Null, |p| json!(p)));
        println!("{line}");
        rows.push(row);
    }
    println!(
        "agreement: relative L2 of scores over real edges (≤ {SCORE_TOLERANCE:.0e}), or max |Δm| of the evaluation (≤ {M_TOLERANCE:.0e}); \
         '!' marks a disagreement. matmul %: the stage's least FLOPs (model matmuls, Δ·∇ over every edge) per second, \
         as a share of the plain matmul peak."
    );
    let mut columns: Vec<String> = rows[0].keys().cloned().collect();
    columns.sort_by_key(|c| (c != "stage", c.clone()));
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    let csv = out_dir.join("compare.csv");
    tables::write_csv(&csv, &columns, &rows)?;
    println!("wrote {}", csv.display());
    let disagreements: Vec<String> = rows
        .iter()
        .flat_map(|row| row.iter().filter(|(k, v)| k.ends_with("_agrees") && **v == json!(false)).map(move |(k, _)| format!("{} {}", row["stage"], k)))
        .collect();
    ensure!(disagreements.is_empty(), "systems disagree: {}", disagreements.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(len: usize, tag: u32) -> PreparedPair {
        PreparedPair { clean: vec![tag; len], counterfactual: vec![tag + 1; len], correct: 1, incorrect: 2, read: None }
    }

    #[test]
    fn pairs_of_the_most_common_length_in_order() {
        let all = vec![pair(5, 0), pair(7, 1), pair(7, 2), pair(5, 3), pair(7, 4)];
        let chosen = equal_length_pairs(all.clone(), 2, "train").unwrap();
        assert_eq!(chosen.iter().map(|p| p.clean[0]).collect::<Vec<_>>(), vec![1, 2]);
        let err = equal_length_pairs(all, 4, "train").unwrap_err().to_string();
        assert!(err.contains("only 3 train pairs share a prompt length (7 tokens)"), "{err}");
    }

    #[test]
    fn disagreement_is_measured_on_real_edges_only() {
        let graph = Graph::new(graph::GraphShape { n_layers: 1, n_heads: 1 }).unwrap();
        let ours = EdgeMatrix::from_fn(graph, |f, b| (f * graph.n_bwd() + b) as f32 + 1.0);
        let mut theirs = ours.clone();
        // A cell that is not an edge (the MLP feeding its own layer's head) may differ freely.
        let cells = (0..graph.n_fwd()).flat_map(|f| (0..graph.n_bwd()).map(move |b| (f, b)));
        let non_edge = cells.clone().find(|&(f, b)| !graph.is_edge(f, b)).unwrap();
        theirs[non_edge] += 100.0;
        let stage = |s: EdgeMatrix<f32>| StageResult { scores: Some(s), ..Default::default() };
        assert_eq!(disagreement(&stage(ours.clone()), &stage(theirs.clone())).unwrap(), (0.0, true));
        let edge = graph.edges().next().unwrap();
        theirs[edge] += 10.0;
        let (d, ok) = disagreement(&stage(ours), &stage(theirs)).unwrap();
        assert!(d > SCORE_TOLERANCE && !ok, "a moved edge score is a disagreement ({d})");
    }

    #[test]
    fn evaluation_disagreement_is_the_largest_m_difference() {
        let stage = |m: Vec<f64>| StageResult { m: Some(m), ..Default::default() };
        let (d, ok) = disagreement(&stage(vec![1.0, -2.0, 0.5]), &stage(vec![1.0, -2.0005, 0.5])).unwrap();
        assert!((d - 5e-4).abs() < 1e-12 && ok);
        assert!(disagreement(&stage(vec![1.0]), &stage(vec![1.0, 2.0])).is_err());
    }
}
