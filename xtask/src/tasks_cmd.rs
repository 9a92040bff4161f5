//! `cargo xtask tasks generate | check`: write the committed datasets, and measure whether a model
//! does each task (accuracy and logit differences on clean and counterfactual prompts).

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use clap::{Args, Subcommand};
use tasks::{BosPolicy, CounterfactualKind, PrepareOptions, Prepared, Split, TaskKind};
use transformer::{Batch, Readout, Transformer};

use crate::Device;

/// The two `tasks` subcommands.
#[derive(Subcommand)]
pub enum TasksCommand {
    /// Generate every task's splits and write tasks/<task>/<split>.jsonl (atomically).
    Generate(GenerateArgs),
    /// Per task and split: examples kept and dropped, clean accuracy, mean logit differences on
    /// clean and counterfactual prompts, and whether the model does the task.
    Check(CheckArgs),
}

/// Options of `tasks generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// Generator seed; the committed files use the default.
    #[arg(long, default_value_t = tasks::DEFAULT_SEED)]
    seed: u64,
    /// Datasets directory (default: the workspace's tasks/).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Options of `tasks check`.
#[derive(Args)]
pub struct CheckArgs {
    /// A known name, `task:<name>`, a local directory, a config.json, a .gguf file or a hub
    /// repository id (default: each task's own task model, `task:<task>`).
    #[arg(long)]
    model: Option<String>,
    /// One task (default: all).
    #[arg(long)]
    task: Option<TaskKind>,
    /// One split (default: all).
    #[arg(long)]
    split: Option<Split>,
    /// Examples read from the start of each split (0: all).
    #[arg(long, default_value_t = 100)]
    examples: usize,
    /// BOS handling: `model` prepends the model's BOS token where it defines one (MIB), `none` never.
    #[arg(long, value_enum, default_value_t = Bos::Model)]
    bos: Bos,
    /// Counterfactual prompts: `default` (s2_io_flip for IOI) or `abc` (IOI only).
    #[arg(long, default_value = "default")]
    counterfactual: CounterfactualKind,
    /// Keep pairs whose prompts contain the tokenizer's unknown token (a word outside a word-level
    /// vocabulary) instead of dropping them as `unknown-prompt-token`; answers with one are always dropped.
    #[arg(long)]
    keep_unknown_prompt_tokens: bool,
    /// Pairs per forward batch (each batch runs clean and counterfactual prompts together).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Datasets directory (default: the workspace's tasks/).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where the forward passes run.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
}

/// `--bos` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Bos {
    /// The model's BOS token where it defines one (MIB).
    Model,
    /// No BOS token.
    None,
}

/// Runs a `tasks` subcommand.
pub fn run(command: TasksCommand) -> Result<()> {
    match command {
        TasksCommand::Generate(args) => generate(&args),
        TasksCommand::Check(args) => crate::on_device!(args.device, check(&args)),
    }
}

/// The committed datasets directory, `<workspace>/tasks`.
pub fn default_dir() -> PathBuf {
    crate::workspace().join("tasks")
}

/// The first `n` examples of one split of `task` in `dir` (all of them when `n` is 0), saying so
/// on stderr when the split holds fewer than asked for.
pub fn first_examples(dir: &std::path::Path, task: TaskKind, split: Split, n: usize) -> Result<Vec<tasks::Example>> {
    let mut examples = tasks::load_split(dir, task, split)?;
    if n > examples.len() {
        eprintln!("{}/{}: {n} examples asked for, the split holds {}", task.name(), split.name(), examples.len());
    }
    if n > 0 {
        examples.truncate(n);
    }
    Ok(examples)
}

fn generate(args: &GenerateArgs) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    for (path, count) in tasks::generate::write_all(&dir, args.seed)? {
        println!("{:>6}  {}", count, path.display());
    }
    Ok(())
}

/// Below this, |m(N) − m(∅)| is treated as zero: faithfulness would divide by noise.
const NEAR_ZERO_GAP: f64 = 0.1;
/// "Does the task": clean accuracy at least this ...
const MIN_ACCURACY: f64 = 0.8;
/// ... and the clean-minus-counterfactual logit difference at least this.
const MIN_GAP: f64 = 1.0;

/// What one task and split measured.
struct Measured {
    accuracy: f64,
    mean_clean: f64,
    mean_counterfactual: f64,
}

fn check<B: Backend>(device: &B::Device, args: &CheckArgs) -> Result<()> {
    anyhow::ensure!(args.batch > 0, "--batch must be positive");
    let tasks = args.task.map_or(TaskKind::ALL.to_vec(), |t| vec![t]);
    match &args.model {
        Some(model) => check_model::<B>(device, args, model, &tasks),
        None => tasks.iter().try_for_each(|&task| check_model::<B>(device, args, &format!("task:{task}"), &[task])),
    }
}

/// The check table of one model on `tasks`.
fn check_model<B: Backend>(device: &B::Device, args: &CheckArgs, model: &str, tasks: &[TaskKind]) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    let loaded = transformer::load_model::<B>(model, device)?;
    let options = PrepareOptions {
        bos: match args.bos {
            Bos::Model => BosPolicy::Model,
            Bos::None => BosPolicy::Never,
        },
        counterfactual: args.counterfactual,
        drop_context_mismatch: false,
        keep_unknown_prompt_tokens: args.keep_unknown_prompt_tokens,
        keep_duplicate_pairs: false,
    };
    let bos = match options.bos {
        BosPolicy::Never => "none".to_string(),
        BosPolicy::Model => match loaded.model.config.bos_token_id {
            Some(id) => format!("{:?} (id {id})", loaded.tokenizer.decode(&[id])?),
            None => "none (the model defines no BOS token)".to_string(),
        },
    };
    let per_split = if args.examples == 0 { "all".to_string() } else { args.examples.to_string() };
    let counterfactual = args.counterfactual.name();
    println!("model {model}, BOS {bos}, counterfactual {counterfactual}, examples per split {per_split}");
    println!();
    println!("| task | split | kept | dropped | clean acc. | mean m clean | mean m cf | m(N) − m(∅) | does the task? |");
    println!("|---|---|---:|---|---:|---:|---:|---:|---|");
    let mut notes = Vec::new();
    for &task in tasks {
        for split in args.split.map_or(Split::ALL.to_vec(), |s| vec![s]) {
            let examples = first_examples(&dir, task, split, args.examples)?;
            let prepared = tasks::prepare(&examples, &loaded.tokenizer, &loaded.model.config, &options)?;
            if prepared.context_mismatches > 0 {
                notes.push(format!(
                    "{task}/{split}: {} kept pairs have an answer that tokenizes differently after its prompt \
                     than alone (scored as tokenized alone, as MIB does)",
                    prepared.context_mismatches
                ));
            }
            if prepared.unknown_prompt_tokens > 0 {
                notes.push(format!(
                    "{task}/{split}: {} kept pairs have the tokenizer's unknown token in a prompt (kept by \
                     --keep-unknown-prompt-tokens)",
                    prepared.unknown_prompt_tokens
                ));
            }
            if prepared.prefixed > 0 {
                notes.push(format!(
                    "{task}/{split}: {} pairs scored by the first-differing-token rule with the shared answer \
                     prefix appended",
                    prepared.prefixed
                ));
            }
            let row = match measure(&loaded.model, &prepared, args.batch, device).with_context(|| format!("model {model}, {task}/{split}"))? {
                None => format!("| {task} | {split} | 0 | {} | – | – | – | – | no pairs kept |", prepared.dropped),
                Some(m) => {
                    let gap = m.mean_clean - m.mean_counterfactual;
                    format!(
                        "| {task} | {split} | {} | {} | {:.0}% | {} | {} | {} | {} |",
                        prepared.pairs.len(),
                        prepared.dropped,
                        100.0 * m.accuracy,
                        signed(m.mean_clean),
                        signed(m.mean_counterfactual),
                        signed(gap),
                        verdict(&m)
                    )
                }
            };
            println!("{row}");
        }
    }
    if !notes.is_empty() {
        println!();
        for note in notes {
            println!("note: {note}");
        }
    }
    println!();
    Ok(())
}

/// A logit difference with its sign and two decimals ("+0.00", never "-0.00").
fn signed(x: f64) -> String {
    format!("{:+.2}", if x.abs() < 0.005 { 0.0 } else { x })
}

/// "yes", or "no" with the reason; and a warning when m(N) − m(∅), the denominator of
/// faithfulness, is near zero or negative, so that no later ratio divides by it silently.
fn verdict(m: &Measured) -> String {
    let gap = m.mean_clean - m.mean_counterfactual;
    let mut verdict = if m.accuracy >= MIN_ACCURACY && gap >= MIN_GAP {
        "yes".to_string()
    } else if m.accuracy < MIN_ACCURACY {
        format!("no: accuracy below {:.0}%", 100.0 * MIN_ACCURACY)
    } else {
        format!("no: m(N) − m(∅) below {MIN_GAP}")
    };
    if gap.abs() < NEAR_ZERO_GAP {
        verdict.push_str("; faithfulness undefined (m(N) − m(∅) ≈ 0)");
    } else if gap < 0.0 {
        verdict.push_str("; faithfulness meaningless (m(N) − m(∅) < 0)");
    }
    verdict
}

/// Clean accuracy and mean logit differences over the prepared pairs (`None` when there are none);
/// logits that are not finite are an error naming the pair, never a NaN in the table.
fn measure<B: Backend>(model: &Transformer<B>, prepared: &Prepared, batch: usize, device: &B::Device) -> Result<Option<Measured>> {
    if prepared.pairs.is_empty() {
        return Ok(None);
    }
    let (mut correct, mut sum_clean, mut sum_cf) = (0usize, 0f64, 0f64);
    let pairs_per_batch = batch;
    for (index, chunk) in prepared.pairs.chunks(pairs_per_batch).enumerate() {
        // Clean prompts in the first rows, counterfactual prompts after them.
        let sequences: Vec<Vec<u32>> = chunk.iter().map(|p| p.clean.clone()).chain(chunk.iter().map(|p| p.counterfactual.clone())).collect();
        let batch = Batch::new(&sequences, &model.config, device)?;
        let logits: Vec<f32> = model.forward(&batch, &Readout::ReadPosition).into_data().to_vec().map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?;
        let vocab = model.config.vocab_size;
        for (row, values) in logits.chunks(vocab).enumerate() {
            let (pair, prompt) = (index * pairs_per_batch + row % chunk.len(), if row < chunk.len() { "clean" } else { "counterfactual" });
            transformer::ensure_finite(values, || format!("pair {pair} (of the kept pairs), {prompt} prompt: last-position logits"))?;
        }
        let m = |row: usize, pair: &tasks::PreparedPair| -> f64 {
            f64::from(logits[row * vocab + pair.correct as usize]) - f64::from(logits[row * vocab + pair.incorrect as usize])
        };
        for (i, pair) in chunk.iter().enumerate() {
            let clean = m(i, pair);
            correct += usize::from(clean > 0.0);
            sum_clean += clean;
            sum_cf += m(chunk.len() + i, pair);
        }
    }
    let n = prepared.pairs.len() as f64;
    Ok(Some(Measured { accuracy: correct as f64 / n, mean_clean: sum_clean / n, mean_counterfactual: sum_cf / n }))
}
