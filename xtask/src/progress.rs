//! Progress bars on a terminal, plain lines otherwise (CI logs, pipes): indicatif draws nothing
//! when stderr is not a terminal, so messages are then printed directly, and loops of batches get
//! a paced line on stderr (`BatchLog` decides which batches) with the time spent and an estimate
//! of the time left, for the loop and, in a sweep, for the run.
//!
//! Everything that decides or formats a line takes times as durations since an origin the caller
//! keeps (`Instant::elapsed`), so the decisions are pure and tested without a clock.

use std::fmt;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use bench::BatchProgress;
use bench::cell::Phase;
use indicatif::{ProgressBar, ProgressStyle};

/// A batch that reaches a milestone (a new tenth of its loop, or a new phase) gets a line only
/// when the loop's last line is at least this old.
pub const MIN_GAP: Duration = Duration::from_secs(5);

/// A loop whose last line (or start) is this old gets a line at its next batch, milestone or not.
pub const MAX_GAP: Duration = Duration::from_secs(60);

/// Whether stderr is a terminal, where progress is drawn as bars.
pub fn terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A bar of `len` steps with a prefix, hidden when stderr is not a terminal.
pub fn bar(len: u64, prefix: &str, unit: &str) -> ProgressBar {
    if !terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template = format!("{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{elapsed}} (ETA {{eta}}) {{msg}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("a valid template").progress_chars("=> "));
    bar.set_prefix(prefix.to_string());
    bar
}

/// Prints a line above the bar, or plainly when there is no bar.
pub fn line(bar: &ProgressBar, message: String) {
    if bar.is_hidden() {
        println!("{message}");
    } else {
        bar.println(message);
    }
}

/// The tenths of a loop of `total` batches that `done` batches complete (0 to 10).
fn tenths(done: usize, total: usize) -> usize {
    (done.min(total) * 10).checked_div(total).unwrap_or(0)
}

/// Whether a batch gets a line, `since_line` after the loop's last line (or its start): after
/// `MAX_GAP` of silence, or at a milestone when the last line is at least `MIN_GAP` old.
pub fn due(since_line: Duration, milestone: bool) -> bool {
    since_line >= MAX_GAP || (milestone && since_line >= MIN_GAP)
}

/// The time `remaining` batches take at the mean time of `done` batches that took `spent`; none
/// before the first batch.
pub fn eta(spent: Duration, done: usize, remaining: usize) -> Option<Duration> {
    (done > 0).then(|| spent.mul_f64(remaining as f64 / done as f64))
}

/// The time left in a sweep: what is left of the running cell (`cell_left`, after `cell_elapsed`)
/// plus `after` more cells to compute, each taking the mean wall time of the cells `finished` so
/// far in this run or, before any has, the running cell's own projection (elapsed plus left).
/// Cells differ (methods, models), so this is a rough guide that firms up as cells finish.
pub fn run_eta(cell_elapsed: Duration, cell_left: Option<Duration>, finished: &[Duration], after: usize) -> Option<Duration> {
    let left = cell_left?;
    let per_cell = match finished.len() {
        0 => cell_elapsed + left,
        n => finished.iter().sum::<Duration>() / n as u32,
    };
    Some(left + per_cell.mul_f64(after as f64))
}

/// A duration as `12s`, `4m05s` or `1h02m`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// The time a loop (or a run) has taken and the estimate of the time it has left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Time since the loop started.
    pub elapsed: Duration,
    /// Time left, when there is a measurement to estimate it from.
    pub left: Option<Duration>,
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let left = self.left.map_or_else(|| "?".to_string(), clock);
        write!(f, "{} elapsed, ETA {left}", clock(self.elapsed))
    }
}

/// A paced line: `    LABEL: PHASE DONE/TOTAL batches; cell ESTIMATE; run ESTIMATE` in a sweep,
/// `    LABEL: PHASE DONE/TOTAL batches; ESTIMATE` for one command's loop.
pub fn batch_line(label: &str, phase: Phase, done: usize, total: usize, cell: Estimate, run: Option<Estimate>) -> String {
    let head = format!("    {label}: {} {done}/{total} batches", phase.name());
    match run {
        Some(run) => format!("{head}; cell {cell}; run {run}"),
        None => format!("{head}; {cell}"),
    }
}

/// Follows one loop of batches (a cell, or a command's discovery or evaluation) and says which
/// batches get a line. The estimate of the time left extrapolates the running phase's mean batch
/// time, measured from the phase's start (the loop's start, or the previous phase's last batch),
/// over every batch left: during discovery, evaluation batches are taken to cost what discovery
/// batches do; once evaluation runs, its own batches are the measure.
#[derive(Debug, Clone)]
pub struct BatchLog {
    /// When the loop started.
    start: Duration,
    /// The phase of the last batch, none before the first.
    phase: Option<Phase>,
    /// When the running phase started, and the batches done by then.
    phase_start: (Duration, usize),
    /// When the last batch finished, and the batches done by then.
    previous: (Duration, usize),
    /// When the last line was printed (the loop's start before any), and the batches done by then.
    line: (Duration, usize),
}

impl BatchLog {
    /// A loop that starts at `start`.
    pub fn new(start: Duration) -> Self {
        Self { start, phase: None, phase_start: (start, 0), previous: (start, 0), line: (start, 0) }
    }

    /// Records that batch `done` of `total`, of `phase`, finished at `now`; returns the loop's
    /// estimate when the batch gets a line (never for the loop's last batch: what follows it
    /// says the loop is done).
    pub fn batch(&mut self, now: Duration, phase: Phase, done: usize, total: usize) -> Option<Estimate> {
        let new_phase = self.phase != Some(phase);
        if new_phase {
            self.phase_start = if self.phase.is_none() { (self.start, 0) } else { self.previous };
            self.phase = Some(phase);
        }
        self.previous = (now, done);
        let milestone = new_phase || tenths(done, total) > tenths(self.line.1, total);
        if done >= total || !due(now.saturating_sub(self.line.0), milestone) {
            return None;
        }
        self.line = (now, done);
        let (phase_time, phase_done) = self.phase_start;
        Some(Estimate { elapsed: now.saturating_sub(self.start), left: eta(now.saturating_sub(phase_time), done.saturating_sub(phase_done), total - done) })
    }
}

/// The running cell of a sweep, as `SweepLog` follows it.
#[derive(Debug, Clone)]
struct RunningCell {
    /// The cell's `model|task|method`.
    key: String,
    /// Its batches.
    log: BatchLog,
    /// Cells still to compute, this one included.
    to_compute: usize,
}

/// A sweep's paced lines: a `BatchLog` for the running cell, and the wall time of each cell
/// computed so far, from which the run's time left is estimated (`run_eta`). Times are durations
/// since the run started.
#[derive(Debug, Clone, Default)]
pub struct SweepLog {
    /// The cell being computed.
    cell: Option<RunningCell>,
    /// Wall time of each cell computed in this run (stored cells reused take none).
    finished: Vec<Duration>,
}

impl SweepLog {
    /// Cell `key` starts computing at `now`, with `to_compute` cells left to compute, itself included.
    pub fn cell(&mut self, now: Duration, key: &str, to_compute: usize) {
        self.cell = Some(RunningCell { key: key.to_string(), log: BatchLog::new(now), to_compute });
    }

    /// A batch of the running cell finished at `now`: its line, when it gets one.
    pub fn batch(&mut self, now: Duration, p: BatchProgress) -> Option<String> {
        let cell = self.cell.as_mut()?;
        let estimate = cell.log.batch(now, p.phase, p.done, p.total)?;
        let run = Estimate { elapsed: now, left: run_eta(estimate.elapsed, estimate.left, &self.finished, cell.to_compute.saturating_sub(1)) };
        Some(batch_line(&cell.key, p.phase, p.done, p.total, estimate, Some(run)))
    }

    /// The running cell finished at `now`: the run's estimate after it.
    pub fn finished(&mut self, now: Duration) -> Option<Estimate> {
        let cell = self.cell.take()?;
        let wall = now.saturating_sub(cell.log.start);
        self.finished.push(wall);
        Some(Estimate { elapsed: now, left: run_eta(wall, Some(Duration::ZERO), &self.finished, cell.to_compute.saturating_sub(1)) })
    }
}

/// One command's loop of batches: a bar on a terminal, paced lines on stderr otherwise.
pub struct Batches {
    /// The bar (hidden off a terminal).
    bar: ProgressBar,
    /// Which batches get a line off a terminal.
    log: BatchLog,
    /// When the loop started.
    origin: Instant,
    /// What the lines and the bar are labelled with.
    label: String,
}

impl Batches {
    /// A loop labelled `label`, starting now.
    pub fn new(label: &str) -> Self {
        Self { bar: bar(0, label, "batches"), log: BatchLog::new(Duration::ZERO), origin: Instant::now(), label: label.to_string() }
    }

    /// Batch `done` of `total`, of `phase`, is done.
    pub fn batch(&mut self, phase: Phase, done: usize, total: usize) {
        if self.bar.is_hidden() {
            if let Some(estimate) = self.log.batch(self.origin.elapsed(), phase, done, total) {
                eprintln!("{}", batch_line(&self.label, phase, done, total, estimate, None));
            }
        } else {
            self.bar.set_length(total as u64);
            self.bar.set_position(done as u64);
        }
    }

    /// The loop is over: the bar is cleared.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// The batches of a loop of `total` batches, each `each` seconds, that get a line.
    fn lines(total: usize, each: f64) -> Vec<(usize, Estimate)> {
        let mut log = BatchLog::new(Duration::ZERO);
        (1..=total).filter_map(|done| log.batch(secs(each * done as f64), Phase::Discovery, done, total).map(|e| (done, e))).collect()
    }

    #[test]
    fn durations_read_as_seconds_minutes_or_hours() {
        assert_eq!(clock(secs(0.4)), "0s");
        assert_eq!(clock(secs(59.9)), "59s");
        assert_eq!(clock(secs(65.0)), "1m05s");
        assert_eq!(clock(secs(3599.0)), "59m59s");
        assert_eq!(clock(secs(3600.0 + 2.0 * 60.0 + 30.0)), "1h02m");
        assert_eq!(clock(secs(26.0 * 3600.0)), "26h00m");
    }

    #[test]
    fn lines_are_due_at_milestones_after_the_minimum_gap_or_after_the_maximum_gap() {
        assert!(!due(secs(4.9), true));
        assert!(due(MIN_GAP, true));
        assert!(!due(secs(59.0), false));
        assert!(due(MAX_GAP, false));
    }

    #[test]
    fn the_time_left_extrapolates_the_mean_batch() {
        assert_eq!(eta(secs(10.0), 0, 5), None);
        assert_eq!(eta(secs(10.0), 2, 6), Some(secs(30.0)));
        assert_eq!(eta(secs(10.0), 4, 0), Some(Duration::ZERO));
    }

    #[test]
    fn a_slow_four_batch_cell_gets_a_line_per_batch_but_the_last() {
        let got = lines(4, 30.0);
        assert_eq!(got.iter().map(|(done, _)| *done).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(got[0].1, Estimate { elapsed: secs(30.0), left: Some(secs(90.0)) });
        assert_eq!(got[2].1, Estimate { elapsed: secs(90.0), left: Some(secs(30.0)) });
    }

    #[test]
    fn a_fast_loop_prints_nothing_and_a_long_one_a_bounded_number_of_lines() {
        assert!(lines(4, 0.5).is_empty(), "a loop done in seconds needs no line");
        // 10,000 batches of 0.1 s: the tenths (at least MIN_GAP apart) and one line a minute.
        let got = lines(10_000, 0.1);
        assert!((10..=30).contains(&got.len()), "{} lines", got.len());
        let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].1.elapsed - w[0].1.elapsed).collect();
        assert!(gaps.iter().all(|&g| g >= MIN_GAP && g <= MAX_GAP + secs(0.1)), "{gaps:?}");
        // A silent minute is broken at the next batch, milestone or not: a 1,000-batch loop of
        // 6 s batches prints at least one line per 100-batch tenth and one a minute within it.
        let got = lines(1000, 6.0);
        assert!(got.len() >= 99, "{} lines", got.len());
    }

    #[test]
    fn the_estimate_follows_the_running_phase() {
        let mut log = BatchLog::new(secs(100.0));
        // Two discovery batches of 10 s each, then four evaluation batches of 2 s each.
        assert_eq!(log.batch(secs(110.0), Phase::Discovery, 1, 6), Some(Estimate { elapsed: secs(10.0), left: Some(secs(50.0)) }));
        assert_eq!(log.batch(secs(120.0), Phase::Discovery, 2, 6), Some(Estimate { elapsed: secs(20.0), left: Some(secs(40.0)) }));
        // The new phase is a milestone, but the last line is only 2 s old.
        assert_eq!(log.batch(secs(122.0), Phase::Evaluation, 3, 6), None);
        assert_eq!(log.batch(secs(124.0), Phase::Evaluation, 4, 6), None);
        // Evaluation's own 2 s batches measure the two left.
        assert_eq!(log.batch(secs(126.0), Phase::Evaluation, 5, 6), Some(Estimate { elapsed: secs(26.0), left: Some(secs(2.0)) }));
        assert_eq!(log.batch(secs(128.0), Phase::Evaluation, 6, 6), None);
    }

    #[test]
    fn the_run_estimate_uses_the_cells_finished_or_else_the_running_one() {
        // No cell finished: two more cells like this one (10 s + 30 s).
        assert_eq!(run_eta(secs(10.0), Some(secs(30.0)), &[], 2), Some(secs(30.0 + 80.0)));
        // Finished cells of 20 s and 40 s: 30 s per cell to come.
        assert_eq!(run_eta(secs(10.0), Some(secs(5.0)), &[secs(20.0), secs(40.0)], 3), Some(secs(5.0 + 90.0)));
        assert_eq!(run_eta(secs(10.0), Some(secs(5.0)), &[secs(20.0)], 0), Some(secs(5.0)));
        assert_eq!(run_eta(secs(10.0), None, &[secs(20.0)], 3), None);
    }

    #[test]
    fn a_sweep_log_names_the_cell_and_estimates_the_run() {
        let mut log = SweepLog::default();
        assert_eq!(log.batch(secs(1.0), BatchProgress { phase: Phase::Discovery, done: 1, total: 2 }), None, "no cell running");
        log.cell(secs(0.0), "m|ioi|eap", 3);
        let line = log.batch(secs(30.0), BatchProgress { phase: Phase::Discovery, done: 1, total: 4 }).unwrap();
        // The cell: 30 s per batch, 3 left. The run: this cell's 2 min, then two more like it.
        assert_eq!(line, "    m|ioi|eap: discovery 1/4 batches; cell 30s elapsed, ETA 1m30s; run 30s elapsed, ETA 5m30s");
        let after = log.finished(secs(100.0)).unwrap();
        assert_eq!(after, Estimate { elapsed: secs(100.0), left: Some(secs(200.0)) });
        assert_eq!(after.to_string(), "1m40s elapsed, ETA 3m20s");
        log.cell(secs(110.0), "m|ioi|gim", 2);
        let line = log.batch(secs(130.0), BatchProgress { phase: Phase::Evaluation, done: 1, total: 2 }).unwrap();
        // The cell: 20 s per batch, 1 left. The run: 20 s, then one cell at the finished one's 100 s.
        assert_eq!(line, "    m|ioi|gim: evaluation 1/2 batches; cell 20s elapsed, ETA 20s; run 2m10s elapsed, ETA 2m00s");
        assert_eq!(
            batch_line("eap", Phase::Discovery, 1, 3, Estimate { elapsed: secs(5.0), left: None }, None),
            "    eap: discovery 1/3 batches; 5s elapsed, ETA ?"
        );
    }
}
