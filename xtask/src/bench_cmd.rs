//! `cargo xtask bench --track T` runs a sweep config (`configs/<T>.toml`, or `--config FILE`) with
//! progress bars and writes its reports under `results/<name>/`; `cargo xtask regress` compares a
//! run with a baseline run and fails when a number moved.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use bench::{Config, Event, SweepPaths};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;

use crate::progress::{self, SweepLog, line};

/// Options of `bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// A config under configs/: `circuit` (the default track), `quick` (CI) or `mib`.
    #[arg(long, default_value = "circuit")]
    track: String,
    /// A config file, instead of a track.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where runs are written (default: the workspace's results/).
    #[arg(long)]
    results: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = crate::Device::Cpu)]
    pub device: crate::Device,
}

/// Runs the sweep and prints where its reports are.
pub fn run<B: Backend>(device: &B::Device, args: &BenchArgs) -> Result<()> {
    let config_path = args.config.clone().unwrap_or_else(|| crate::workspace().join("configs").join(format!("{}.toml", args.track)));
    let config = Config::load(&config_path)?;
    let paths = SweepPaths {
        config: config_path,
        results: args.results.clone().unwrap_or_else(|| crate::workspace().join("results")),
        tasks: crate::tasks_cmd::default_dir(),
    };
    let backend = format!("{:?}", args.device).to_lowercase();
    let cells = progress::bar(config.cells.len() as u64, &config.name, "cells");
    let mut batches = progress::bar(0, "  batches", "batches");
    // Off a terminal the bars draw nothing: paced batch lines and the run's estimate instead.
    let started = Instant::now();
    let mut log = (!progress::terminal()).then(SweepLog::default);
    let dir = bench::run_sweep::<Autodiff<B>>(&config, &paths, &backend, device, &mut |event| match event {
        Event::Cell { index, total, key, skipped, to_compute } => {
            cells.set_position(index as u64);
            if skipped {
                line(&cells, format!("[{}/{total}] {key}: stored result reused", index + 1));
            } else {
                line(&cells, format!("[{}/{total}] {key}", index + 1));
                batches = progress::bar(0, "  batches", "batches");
                if let Some(log) = &mut log {
                    log.cell(started.elapsed(), &key, to_compute);
                }
            }
        }
        Event::Batch(p) => {
            batches.set_length(p.total as u64);
            batches.set_position(p.done as u64);
            if let Some(text) = log.as_mut().and_then(|log| log.batch(started.elapsed(), p)) {
                eprintln!("{text}");
            }
        }
        Event::Finished { key, cpr, cmd, cpr_interval, cmd_interval, seconds, short } => {
            batches.finish_and_clear();
            let run = log.as_mut().and_then(|log| log.finished(started.elapsed())).map(|run| format!("; run {run}")).unwrap_or_default();
            let (cpr_interval, cmd_interval) = (crate::eval::interval_text(cpr_interval), crate::eval::interval_text(cmd_interval));
            line(&cells, format!("    {key}: CPR {cpr:.3}{cpr_interval}, CMD {cmd:.3}{cmd_interval} ({seconds:.1} s){run}"));
            for split in short {
                line(&cells, format!("    {key}: {split}"));
            }
        }
        Event::Recomputing { key, reason } => line(&cells, format!("    {key}: stored result unusable, recomputing ({reason})")),
    })?;
    cells.finish_and_clear();
    let truth = if dir.join("ground-truth.csv").is_file() { ", ground-truth.csv" } else { "" };
    println!("reports in {}: curves.csv, summary.csv, cpr.csv, cmd.csv{truth}, manifest.json, plots/", dir.display());
    Ok(())
}

/// Options of `regress`.
#[derive(clap::Args)]
pub struct RegressArgs {
    /// The baseline run directory.
    #[arg(long)]
    baseline: PathBuf,
    /// The run to check (default: results/quick).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Largest absolute change allowed in CPR, CMD, mean faithfulness and each curve point.
    #[arg(long, default_value_t = 0.02)]
    tolerance: f64,
}

/// Compares and exits non-zero when anything moved.
pub fn regress(args: &RegressArgs) -> Result<()> {
    let run = args.run.clone().unwrap_or_else(|| crate::workspace().join("results").join("quick"));
    let comparison = bench::regress::compare(&args.baseline, &run, args.tolerance)?;
    println!("{}", bench::regress::render(&comparison, args.tolerance));
    if !comparison.moved.is_empty() {
        bail!(
            "{} of {} numbers moved beyond the tolerance {} ({} outside the baseline's 95% interval)",
            comparison.moved.len(),
            comparison.compared,
            args.tolerance,
            comparison.outside_interval()
        );
    }
    Ok(())
}
