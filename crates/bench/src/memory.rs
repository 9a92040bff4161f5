//! Peak resident memory of this process, reset per measured unit (Linux's VmHWM and clear_refs).

/// Peak resident memory since the last reset, in MiB (Linux; None elsewhere).
pub fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak to the current resident size (Linux ≥ 4.0; a no-op elsewhere). Memory the
/// allocator keeps from earlier work still counts, so a peak is an upper bound for one unit.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// GPU memory in use, sampled by `nvidia-smi` every 100 ms while a unit of work runs. The driver
/// sees the backend's memory pool, not the tensors alive in it, so the peak is an upper bound.
pub struct GpuMemorySampler {
    child: std::process::Child,
    reader: std::thread::JoinHandle<Option<f64>>,
}

impl GpuMemorySampler {
    /// Starts sampling GPU 0, or None when `nvidia-smi` cannot be run (no NVIDIA driver).
    pub fn start() -> Option<Self> {
        use std::io::BufRead;
        let mut child = std::process::Command::new("nvidia-smi")
            .args(["--id=0", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "100"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let stdout = child.stdout.take()?;
        let reader = std::thread::spawn(move || {
            std::io::BufReader::new(stdout).lines().map_while(Result::ok).filter_map(|l| l.trim().parse::<f64>().ok()).reduce(f64::max)
        });
        Some(Self { child, reader })
    }

    /// Stops sampling and returns the largest value seen, in MiB (None if no sample arrived).
    pub fn peak_mib(mut self) -> Option<f64> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reader.join().ok().flatten()
    }
}
