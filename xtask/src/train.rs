//! `cargo xtask train --task T [--seed S]`: trains a task model with its shipped recipe and writes
//! it to `models/<task>` (or `--out`), printing loss and accuracy as it goes.

use std::path::PathBuf;

use anyhow::Result;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;

use crate::progress::{self, line};
use taskmodels::{Progress, TrainOptions};
use tasks::TaskKind;

/// Options of `train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    #[arg(long)]
    task: TaskKind,
    #[arg(long, default_value_t = taskmodels::DEFAULT_SEED)]
    seed: u64,
    /// Model directory to write (default: the shipped `models/<task>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Optimiser steps (default: the recipe's).
    #[arg(long)]
    steps: Option<usize>,
    /// Prompts per step (default: the recipe's).
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate (default: the recipe's).
    #[arg(long)]
    lr: Option<f64>,
    /// Layers (default: the recipe's).
    #[arg(long)]
    layers: Option<usize>,
    /// `gpt2` or `llama` style (default: the recipe's).
    #[arg(long)]
    style: Option<String>,
    /// Weight of the next-token loss inside prompts (default: the recipe's).
    #[arg(long)]
    lm_weight: Option<f64>,
    /// Train the task's planted-circuit model instead (`models/<task>-planted`: its recipe's
    /// planted heads and MLPs carry the task, every other one is resampled while training).
    #[arg(long)]
    planted: bool,
    /// Datasets directory (default: the workspace's tasks/).
    #[arg(long)]
    tasks_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = crate::Device::Cpu)]
    pub device: crate::Device,
}

/// Trains and prints the run's report. The overrides make a variant of the shipped recipe, for
/// experiments; the shipped models use the recipe as it is.
pub fn run<B: Backend>(device: &B::Device, args: &TrainArgs) -> Result<()> {
    let mut recipe = match args.planted {
        true => {
            taskmodels::planted_recipe(args.task).ok_or_else(|| anyhow::anyhow!("--planted: {} has no planted-circuit recipe (ioi has)", args.task.name()))?
        }
        false => taskmodels::recipe(args.task),
    };
    recipe.steps = args.steps.unwrap_or(recipe.steps);
    recipe.batch_size = args.batch.unwrap_or(recipe.batch_size);
    recipe.learning_rate = args.lr.unwrap_or(recipe.learning_rate);
    recipe.n_layers = args.layers.unwrap_or(recipe.n_layers);
    recipe.lm_weight = args.lm_weight.unwrap_or(recipe.lm_weight);
    recipe.style = match args.style.as_deref() {
        None => recipe.style,
        Some("gpt2") => taskmodels::Style::Gpt2,
        Some("llama") => taskmodels::Style::Llama,
        Some(other) => anyhow::bail!("--style: `{other}` is neither gpt2 nor llama"),
    };
    let options = TrainOptions {
        task: args.task,
        recipe,
        seed: args.seed,
        tasks_dir: args.tasks_dir.clone().unwrap_or_else(crate::tasks_cmd::default_dir),
        out_dir: args.out.clone().unwrap_or_else(|| {
            let name = if args.planted { format!("{}-planted", args.task.name()) } else { args.task.name().to_string() };
            transformer::load::task_models_dir().join(name)
        }),
    };
    let bar = progress::bar(options.recipe.steps as u64, args.task.name(), "steps");
    // A plain line every tenth of the run, so logs without a terminal still show progress.
    let every = (options.recipe.steps / 10).max(1);
    let (mut loss_sum, mut acc_sum, mut n) = (0.0, 0.0, 0usize);
    let report = taskmodels::train::<Autodiff<B>>(&options, device, &mut |event| match event {
        Progress::Prepared { prompts, vocab } => line(&bar, format!("{}: {prompts} training prompts, vocabulary {vocab}", args.task)),
        Progress::Step { step, steps, loss, accuracy } => {
            (loss_sum, acc_sum, n) = (loss_sum + loss, acc_sum + accuracy, n + 1);
            bar.set_position(step as u64);
            bar.set_message(format!("loss {loss:.3}"));
            if step % every == 0 || step == steps {
                line(&bar, format!("step {step:>5}/{steps}: loss {:.4}, batch accuracy {:.3}", loss_sum / n as f64, acc_sum / n as f64));
                (loss_sum, acc_sum, n) = (0.0, 0.0, 0);
            }
        }
    })?;
    bar.finish_and_clear();
    let v = report.validation;
    println!(
        "{}: {} parameters, {:.0} s; loss {:.3} → {:.3}; validation ({} pairs): top-1 {:.3}, pairwise {:.3}, mean logit diff {:.2}",
        args.task, report.parameters, report.seconds, report.first_loss, report.last_loss, v.pairs, v.top1, v.pairwise, v.mean_logit_diff
    );
    println!("wrote {}", options.out_dir.display());
    Ok(())
}
