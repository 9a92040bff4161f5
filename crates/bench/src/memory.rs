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
