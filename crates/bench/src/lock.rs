//! One sweep per results directory at a time: `run_sweep` holds an exclusive lock file, created
//! with `create_new` and holding `host pid`, for the whole run and removes it when done. A second
//! process gets an error naming the lock file and its holder; a lock left by a process that died
//! on this host is taken over. (A lock from another host cannot be checked: it is removed by hand.)

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::BenchError;

/// The lock file's name inside the run directory.
pub const LOCK_FILE: &str = ".sweep.lock";

/// The host name a lock records (and temporary file names carry).
pub use transformer::checkpoint::host_name;

/// Whether process `pid` of this host is running; true where it cannot be told (no `/proc`).
fn alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// A held lock on a run directory; dropping it removes the lock file.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `dir` (which must exist), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<Self, BenchError> {
        let path = dir.join(LOCK_FILE);
        let me = format!("{} {}\n", host_name(), std::process::id());
        // Twice at most: once more after removing a stale lock.
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(me.as_bytes()).map_err(|source| BenchError::Io { path: path.clone(), source })?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let mut parts = holder.split_whitespace();
                    let (host, pid) = (parts.next().unwrap_or(""), parts.next().and_then(|p| p.parse::<u32>().ok()));
                    match pid {
                        Some(pid) if host == host_name() && !alive(pid) => {
                            // Stale: its process died. Removed only if it is still the same lock.
                            if std::fs::read_to_string(&path).is_ok_and(|now| now == holder) {
                                let _ = std::fs::remove_file(&path);
                            }
                        }
                        _ => {
                            let holder =
                                if holder.trim().is_empty() { "an unknown process (the file is empty)".to_string() } else { holder.trim().to_string() };
                            return Err(BenchError::Locked { path, holder });
                        }
                    }
                }
                Err(source) => return Err(BenchError::Io { path, source }),
            }
        }
        let holder = std::fs::read_to_string(&path).unwrap_or_default().trim().to_string();
        Err(BenchError::Locked { path, holder })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
