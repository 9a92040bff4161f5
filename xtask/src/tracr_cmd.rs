//! `cargo xtask tracr`: compiles the RASP programs of `xtask/tracr/export.py` with tracr (in a
//! virtual environment this command creates from `xtask/tracr/requirements.txt`), writes each
//! model, its samples and its dataset under `models/tracr-<name>/`, then computes every model's
//! true edges from what was written (`groundtruth::write_all`). The committed files are this
//! command's output, so tests and CI need no Python.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use clap::Args;

/// Arguments of `cargo xtask tracr`.
#[derive(Args)]
pub struct TracrArgs {
    /// Programs to compile, comma-separated (default: the script's six).
    #[arg(long)]
    programs: Option<String>,
    /// Where the model directories go (default: the workspace's models/).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Compiles, exports and derives the true edges.
pub fn run(args: &TracrArgs) -> Result<()> {
    let dir = crate::workspace().join("xtask").join("tracr");
    let python = crate::compare::venv_python("tracr-venv", &dir.join("requirements.txt"), "tracr")?;
    let out = args.out.clone().unwrap_or_else(|| crate::workspace().join("models"));
    let mut cmd = Command::new(&python);
    cmd.arg(dir.join("export.py")).arg("--out-dir").arg(&out);
    if let Some(programs) = &args.programs {
        cmd.arg("--programs").arg(programs);
    }
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed ({status})");
    for path in groundtruth::write_all(&out)? {
        println!("{}", path.display());
    }
    Ok(())
}
