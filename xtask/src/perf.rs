//! `cargo xtask perf forward`: forward-pass throughput beside the plain matmul throughput of the
//! same shapes, so later speed targets can be stated as ratios of what this machine can do.

use std::time::{Duration, Instant};

use anyhow::Result;
use burn::tensor::{Distribution, Tensor, backend::Backend};
use transformer::{Batch, ModelConfig, Readout};

/// Options of the forward benchmark.
#[derive(clap::Args)]
pub struct ForwardArgs {
    /// Model to run.
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    batch: Vec<usize>,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 32)]
    seq: usize,
    /// Timed repetitions per row (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    #[arg(long, value_enum, default_value_t = crate::Device::Cpu)]
    pub device: crate::Device,
}

/// Median wall time of `reps` runs of `f` after one warm-up run.
fn median_time(reps: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..reps.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// The weight matmuls of one forward pass as (m, k, n) shapes, per layer then the unembedding.
fn matmul_shapes(cfg: &ModelConfig, tokens: usize, readouts: usize) -> Vec<(usize, usize, usize)> {
    let d = cfg.d_model;
    let q = cfg.n_heads * cfg.d_head;
    let kv = cfg.n_kv_heads * cfg.d_head;
    let mut layer = vec![(tokens, d, q), (tokens, d, kv), (tokens, d, kv), (tokens, q, d)];
    match cfg.mlp {
        transformer::config::MlpKind::GeluTanh | transformer::config::MlpKind::Relu => layer.extend([(tokens, d, cfg.d_mlp), (tokens, cfg.d_mlp, d)]),
        transformer::config::MlpKind::SwiGlu => layer.extend([(tokens, d, cfg.d_mlp), (tokens, d, cfg.d_mlp), (tokens, cfg.d_mlp, d)]),
    }
    let mut all: Vec<_> = (0..cfg.n_layers).flat_map(|_| layer.clone()).collect();
    all.push((readouts, d, cfg.vocab_size));
    all
}

/// GFLOP/s of plain burn matmuls over `shapes` (operands pre-made, so only the products are timed).
fn matmul_gflops<B: Backend>(shapes: &[(usize, usize, usize)], reps: usize, device: &B::Device) -> f64 {
    let operands: Vec<(Tensor<B, 2>, Tensor<B, 2>)> = shapes
        .iter()
        .map(|&(m, k, n)| (Tensor::random([m, k], Distribution::Normal(0.0, 1.0), device), Tensor::random([k, n], Distribution::Normal(0.0, 1.0), device)))
        .collect();
    let flops: f64 = shapes.iter().map(|&(m, k, n)| 2.0 * (m * k * n) as f64).sum();
    let t = median_time(reps, || {
        for (a, b) in &operands {
            let _ = a.clone().matmul(b.clone()).into_data();
        }
    });
    flops / t.as_secs_f64() / 1e9
}

/// Prints one row per batch size: tokens/s, forward GFLOP/s, plain-matmul GFLOP/s and their ratio.
pub fn forward<B: Backend>(device: &B::Device, args: &ForwardArgs) -> Result<()> {
    let loaded = transformer::load_model::<B>(&args.model, device)?;
    let cfg = loaded.model.config.clone();
    let prompt =
        "When Mary and John went to the store, John gave a drink to Mary. Then they walked home together, talking about the weather and the news of the day.";
    let base = loaded.tokenizer.encode(prompt)?;
    anyhow::ensure!(!base.is_empty(), "benchmark prompt tokenizes to nothing");
    let seq: Vec<u32> = base.iter().copied().cycle().take(args.seq).collect();

    println!("model {}  seq {}  device {:?}  cpu threads {}", args.model, args.seq, args.device, rayon_threads());
    println!("{:>6} {:>10} {:>12} {:>14} {:>16} {:>8}", "batch", "ms", "tokens/s", "fwd GFLOP/s", "matmul GFLOP/s", "ratio");
    for &b in &args.batch {
        let batch = Batch::<B>::new(&vec![seq.clone(); b], &cfg, device)?;
        let t = median_time(args.reps, || {
            let _ = loaded.model.forward(&batch, &Readout::ReadPosition).into_data();
        });
        let tokens = b * args.seq;
        let gflops = cfg.forward_flops(tokens, args.seq, b) / t.as_secs_f64() / 1e9;
        let plain = matmul_gflops::<B>(&matmul_shapes(&cfg, tokens, b), args.reps, device);
        println!(
            "{:>6} {:>10.1} {:>12.0} {:>14.1} {:>16.1} {:>7.0}%",
            b,
            t.as_secs_f64() * 1e3,
            tokens as f64 / t.as_secs_f64(),
            gflops,
            plain,
            100.0 * gflops / plain
        );
    }
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Options of the method comparison.
#[derive(clap::Args)]
pub struct MethodsArgs {
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    #[arg(long, default_value = "ioi")]
    task: tasks::TaskKind,
    /// Discovery pairs from the train split.
    #[arg(long, default_value_t = 16)]
    examples: usize,
    /// Edges sampled (seeded) for the Spearman comparison with exact patching.
    #[arg(long, default_value_t = 300)]
    sample_edges: usize,
    /// Methods to compare (default: all but exact, which is the reference).
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, value_enum, default_value_t = crate::Device::Cpu)]
    pub device: crate::Device,
}

/// Spearman rank correlation (average ranks for ties).
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// Runs each method on the same discovery pairs and prints wall time, passes, peak memory and the
/// Spearman correlation of its scores with exact patching on a seeded sample of edges.
pub fn methods<B: Backend>(device: &B::Device, args: &MethodsArgs) -> Result<()> {
    use attribution::{Discovery, METHOD_NAMES, Method, fit_ablation, run_method};
    use burn::backend::Autodiff;
    use rand::{SeedableRng, seq::index::sample};

    let loaded = transformer::load_model::<Autodiff<B>>(&args.model, device)?;
    let cfg = loaded.model.config.clone();
    let graph = graph::Graph::new(graph::GraphShape { n_layers: cfg.n_layers, n_heads: cfg.n_heads })?;
    let examples = crate::tasks_cmd::first_examples(&crate::tasks_cmd::default_dir(), args.task, tasks::Split::Train, args.examples)?;
    let pairs = tasks::prepare(&examples, &loaded.tokenizer, &cfg, &tasks::PrepareOptions::default())?.pairs;
    let all: Vec<(usize, usize)> = graph.edges().collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let sampled: Vec<(usize, usize)> = sample(&mut rng, all.len(), args.sample_edges.min(all.len())).into_iter().map(|i| all[i]).collect();
    let ablation = fit_ablation(patching::AblationKind::Counterfactual, &loaded.model, &pairs, args.batch, patching::Metric::LogitDifference)?;
    let run = |name: &str, method: &Method| -> Result<attribution::EdgeScores> {
        let discovery = Discovery {
            model: &loaded.model,
            graph: &graph,
            pairs: &pairs,
            ablation: &ablation,
            metric: method.default_metric(),
            batch_size: args.batch,
            edges_per_pass: attribution::exact::EDGES_PER_PASS,
            fractions: &evaluator::MIB_FRACTIONS,
            positions: patching::Positions::Suffix,
        };
        crate::scores_of(name, run_method(method, &discovery, &mut |_| {})?)
    };

    let start = Instant::now();
    let exact = run("exact", &Method::Exact { edges: Some(sampled.clone()) })?;
    println!("{} {} pairs, exact on {} sampled edges: {:.1} s", args.model, pairs.len(), sampled.len(), start.elapsed().as_secs_f64());
    let at = |s: &attribution::EdgeScores| -> Vec<f64> { sampled.iter().map(|&edge| s.values[edge] as f64).collect() };
    let reference = at(&exact);

    let names: Vec<String> =
        if args.methods.is_empty() { METHOD_NAMES.iter().filter(|&&m| m != "exact").map(|m| m.to_string()).collect() } else { args.methods.clone() };
    println!("{:<20} {:>9} {:>6} {:>6} {:>10} {:>10}", "method", "seconds", "fwd", "bwd", "peak MiB", "spearman");
    for name in names {
        let method = Method::parse(&name, 5, 0)?;
        bench::memory::reset_peak();
        let start = Instant::now();
        let scores = run(&name, &method)?;
        let secs = start.elapsed().as_secs_f64();
        let peak = bench::memory::peak_mib().map_or("?".into(), |p| format!("{p:.0}"));
        println!(
            "{:<20} {:>9.1} {:>6} {:>6} {:>10} {:>10.3}",
            name,
            secs,
            scores.passes.forward,
            scores.passes.backward,
            peak,
            spearman(&at(&scores), &reference)
        );
    }
    Ok(())
}

/// Options of the suffix-pass benchmark.
#[derive(clap::Args)]
pub struct PrefixArgs {
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    #[arg(long, default_value = "ioi")]
    task: tasks::TaskKind,
    /// Pairs from the train split.
    #[arg(long, default_value_t = 64)]
    examples: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Timed repetitions per row (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[arg(long, value_enum, default_value_t = crate::Device::Cpu)]
    pub device: crate::Device,
}

/// Positions the passes over `pairs` compute, in batches of `batch`, under `positions` (rows ×
/// the batch's longest computed row).
fn computed_positions(pairs: &[tasks::PreparedPair], batch: usize, positions: patching::Positions) -> usize {
    pairs
        .chunks(batch.max(1))
        .map(|chunk| {
            let tasks::PairBatch { clean, counterfactual, .. } = tasks::PairBatch::of(chunk);
            let starts = positions.starts(&clean, &counterfactual);
            chunk.len() * clean.iter().zip(&starts).map(|(c, s)| c.len() - s).max().unwrap_or(0)
        })
        .sum()
}

/// Times EAP and an evaluation (EAP's top-n circuits at MIB's budgets, signed) on the same pairs
/// with full passes and with suffix passes laid out three ways: each batch padded to its earliest
/// first difference (pairs in their order, or grouped by first difference: sorted before
/// batching), or each pair from its own first difference (the default); prints where the pairs
/// first differ and the share of positions each computes.
pub fn prefix<B: Backend>(device: &B::Device, args: &PrefixArgs) -> Result<()> {
    use attribution::{Discovery, Method, run_method};
    use burn::backend::Autodiff;
    use burn::module::AutodiffModule;
    use patching::{Ablation, Positions};

    let loaded = transformer::load_model::<Autodiff<B>>(&args.model, device)?;
    let cfg = loaded.model.config.clone();
    let graph = graph::Graph::new(graph::GraphShape { n_layers: cfg.n_layers, n_heads: cfg.n_heads })?;
    let examples = crate::tasks_cmd::first_examples(&crate::tasks_cmd::default_dir(), args.task, tasks::Split::Train, args.examples)?;
    let pairs = tasks::prepare(&examples, &loaded.tokenizer, &cfg, &tasks::PrepareOptions::default())?.pairs;
    anyhow::ensure!(!pairs.is_empty(), "no pairs of {} prepared for {}", args.task, args.model);
    let first_difference = |p: &tasks::PreparedPair| patching::shared_prefix(std::slice::from_ref(&p.clean), std::slice::from_ref(&p.counterfactual));
    let mut grouped = pairs.clone();
    grouped.sort_by_key(first_difference);
    let mut by_suffix = pairs.clone();
    by_suffix.sort_by_key(|p| p.clean.len() - first_difference(p));
    let mut firsts: Vec<usize> = pairs.iter().map(first_difference).collect();
    firsts.sort_unstable();
    let lengths: Vec<usize> = pairs.iter().map(|p| p.clean.len()).collect();
    println!(
        "{} on {}: {} pairs of {}..{} tokens, batches of {}; first difference at {}..{} (median {})",
        args.model,
        args.task,
        pairs.len(),
        lengths.iter().min().unwrap_or(&0),
        lengths.iter().max().unwrap_or(&0),
        args.batch,
        firsts[0],
        firsts[firsts.len() - 1],
        firsts[firsts.len() / 2]
    );
    let inner = loaded.model.valid();
    let ablation = Ablation::Counterfactual;
    let eap = Method::parse("eap", 1, 0)?;
    let run_eap = |pairs: &[tasks::PreparedPair], positions: Positions| -> Result<attribution::EdgeScores> {
        let discovery = Discovery {
            model: &loaded.model,
            graph: &graph,
            pairs,
            ablation: &ablation,
            metric: eap.default_metric(),
            batch_size: args.batch,
            edges_per_pass: attribution::exact::EDGES_PER_PASS,
            fractions: &evaluator::MIB_FRACTIONS,
            positions,
        };
        crate::scores_of("eap", run_method(&eap, &discovery, &mut |_| {})?)
    };
    let scores = run_eap(&pairs, Positions::Full)?.values;
    let circuits: Vec<graph::EdgeMatrix<bool>> =
        evaluator::MIB_FRACTIONS.iter().map(|&f| evaluator::top_n(&graph, &scores, graph.edge_budget(f), evaluator::Selection::Signed).edges).collect();
    let refs: Vec<&graph::EdgeMatrix<bool>> = circuits.iter().collect();
    let evaluate = |pairs: &[tasks::PreparedPair], positions: Positions| -> Result<()> {
        let options = evaluator::EvalOptions { batch_size: args.batch, positions, ..evaluator::EvalOptions::default() };
        evaluator::evaluate_circuits(&inner, &graph, pairs, &refs, &ablation, options, &mut |_, _| {})?;
        Ok(())
    };
    let full_positions = computed_positions(&pairs, args.batch, Positions::Full);
    println!("{:<36} {:>10} {:>8} {:>14} {:>8}", "passes", "positions", "EAP s", "evaluation s", "speed-up");
    let mut baseline = None;
    for (label, order, positions) in [
        ("full", &pairs, Positions::Full),
        ("batch-suffix (padded to the batch's)", &pairs, Positions::BatchSuffix),
        ("batch-suffix, grouped by start", &grouped, Positions::BatchSuffix),
        ("suffix (each pair's own start)", &pairs, Positions::Suffix),
        ("suffix, grouped by suffix length", &by_suffix, Positions::Suffix),
    ] {
        let mut failed = None;
        let eap_time = median_time(args.reps, || {
            if let Err(e) = run_eap(order, positions) {
                failed = Some(e);
            }
        });
        let eval_time = median_time(args.reps, || {
            if let Err(e) = evaluate(order, positions) {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let total = (eap_time + eval_time).as_secs_f64();
        let speedup = baseline.get_or_insert(total).to_owned() / total;
        let share = 100.0 * computed_positions(order, args.batch, positions) as f64 / full_positions as f64;
        println!("{label:<36} {share:>9.0}% {:>8.2} {:>14.2} {speedup:>7.2}x", eap_time.as_secs_f64(), eval_time.as_secs_f64());
    }
    Ok(())
}

/// Options of the mask-learning step benchmark.
#[derive(clap::Args)]
pub struct MasksArgs {
    #[arg(long, default_value = "task:ioi")]
    model: String,
    #[arg(long, default_value = "ioi")]
    task: tasks::TaskKind,
    /// Pairs in the one batch every step runs on.
    #[arg(long, default_value_t = 16)]
    pairs: usize,
    /// Steps timed per method (after one untimed).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long, value_enum, default_value_t = crate::Device::Cpu)]
    pub device: crate::Device,
}

/// One step of each mask-learning method against a plain forward and backward (weights taking
/// gradients, as in training) on the same rows: seconds per step and the ratio. PGB-CT's
/// evaluation of the binarised mask at the end of each epoch (one forward per batch) is left out:
/// it is not part of a step.
pub fn masks<B: Backend>(device: &B::Device, args: &MasksArgs) -> Result<()> {
    use attribution::learned::{Granularity, MaskSettings, learn_masks};
    use attribution::pgbct::Objective;
    use attribution::{Discovery, edge_pruning, pgbct, ugs};
    use burn::backend::Autodiff;

    let loaded = transformer::load_model::<Autodiff<B>>(&args.model, device)?;
    let cfg = loaded.model.config.clone();
    let graph = graph::Graph::new(graph::GraphShape { n_layers: cfg.n_layers, n_heads: cfg.n_heads })?;
    let examples = crate::tasks_cmd::first_examples(&crate::tasks_cmd::default_dir(), args.task, tasks::Split::Train, args.pairs)?;
    let pairs = tasks::prepare(&examples, &loaded.tokenizer, &cfg, &tasks::PrepareOptions::default())?.pairs;
    anyhow::ensure!(!pairs.is_empty(), "no pairs of {} fit {}", args.task.name(), args.model);
    let ablation = patching::Ablation::Counterfactual;
    let discovery = Discovery {
        model: &loaded.model,
        graph: &graph,
        pairs: &pairs,
        ablation: &ablation,
        metric: patching::Metric::Kl,
        batch_size: pairs.len(),
        edges_per_pass: attribution::exact::EDGES_PER_PASS,
        fractions: &[],
        positions: patching::Positions::Suffix,
    };
    // A plain training-style step on `copies` copies of the clean batch (suffix-free: the whole prompt).
    let tasks::PairBatch { clean, answers, reads, .. } = tasks::PairBatch::of(&pairs);
    let batch = Batch::new(&clean, &cfg, device)?.reading_at(&reads)?;
    let plain = |copies: usize| -> f64 {
        let rows = batch.repeat(copies);
        let answers: Vec<(u32, u32)> = (0..copies).flat_map(|_| answers.iter().copied()).collect();
        let mut seconds = 0.0;
        for step in 0..=args.steps {
            let start = Instant::now();
            let logits = loaded.model.forward(&rows, &Readout::ReadPosition).squeeze_dim::<2>(1);
            let _ = patching::Metric::LogitDifference.loss(logits.clone(), &answers, &logits.detach()).backward();
            if step > 0 {
                seconds += start.elapsed().as_secs_f64();
            }
        }
        seconds / args.steps as f64
    };
    // Per step: (setup + 1 + steps) − (setup + 1), over steps.
    let step_seconds = |settings: MaskSettings| -> Result<f64> {
        let timed = |steps: usize| -> Result<f64> {
            let start = Instant::now();
            learn_masks(&discovery, &MaskSettings { steps, binarised_epochs: false, ..settings.clone() }, &mut |_| {})?;
            Ok(start.elapsed().as_secs_f64())
        };
        Ok((timed(1 + args.steps)? - timed(1)?) / args.steps as f64)
    };
    let methods = [
        ("edge-pruning", edge_pruning::settings(1, 0.5, 0)),
        ("ugs", ugs::settings(&discovery, 1, 0)),
        ("pgb-ct", pgbct::settings(Objective::Impact, 1, 1, 0)),
        ("pgb-ct-preserve", pgbct::settings(Objective::Preservation, 1, 1, 0)),
    ];
    println!("{} {}: {} pairs in one batch, {} edges; {} timed steps each", args.model, args.task.name(), pairs.len(), graph.n_edges(), args.steps);
    println!("{:<16} {:>5} {:>12} {:>14} {:>7}", "method", "rows", "step (s)", "plain f+b (s)", "ratio");
    for (name, settings) in methods {
        let copies = match settings.granularity {
            Granularity::PerBatch { samples } | Granularity::PerExample { samples } => samples,
        };
        let step = step_seconds(settings)?;
        let reference = plain(copies);
        println!("{name:<16} {:>5} {step:>12.4} {reference:>14.4} {:>6.2}×", copies * pairs.len(), step / reference);
    }
    Ok(())
}
