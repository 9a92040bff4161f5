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
        transformer::config::MlpKind::GeluTanh => layer.extend([(tokens, d, cfg.d_mlp), (tokens, cfg.d_mlp, d)]),
        transformer::config::MlpKind::SwiGlu => {
            layer.extend([(tokens, d, cfg.d_mlp), (tokens, d, cfg.d_mlp), (tokens, cfg.d_mlp, d)])
        }
    }
    let mut all: Vec<_> = (0..cfg.n_layers).flat_map(|_| layer.clone()).collect();
    all.push((readouts, d, cfg.vocab_size));
    all
}

/// GFLOP/s of plain burn matmuls over `shapes` (operands pre-made, so only the products are timed).
fn matmul_gflops<B: Backend>(shapes: &[(usize, usize, usize)], reps: usize, device: &B::Device) -> f64 {
    let operands: Vec<(Tensor<B, 2>, Tensor<B, 2>)> = shapes
        .iter()
        .map(|&(m, k, n)| {
            (
                Tensor::random([m, k], Distribution::Normal(0.0, 1.0), device),
                Tensor::random([k, n], Distribution::Normal(0.0, 1.0), device),
            )
        })
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
    let prompt = "When Mary and John went to the store, John gave a drink to Mary. Then they walked home together, talking about the weather and the news of the day.";
    let base = loaded.tokenizer.encode(prompt)?;
    anyhow::ensure!(!base.is_empty(), "benchmark prompt tokenizes to nothing");
    let seq: Vec<u32> = base.iter().copied().cycle().take(args.seq).collect();

    println!("model {}  seq {}  device {:?}  cpu threads {}", args.model, args.seq, args.device, rayon_threads());
    println!("{:>6} {:>10} {:>12} {:>14} {:>16} {:>8}", "batch", "ms", "tokens/s", "fwd GFLOP/s", "matmul GFLOP/s", "ratio");
    for &b in &args.batch {
        let batch = Batch::<B>::new(&vec![seq.clone(); b], &cfg, device)?;
        let t = median_time(args.reps, || {
            let _ = loaded.model.forward(&batch, &Readout::LastToken).into_data();
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
