//! Deterministic generators for circuitbench's own datasets, whose output is committed under
//! `tasks/`. A task's examples come from one seeded stream, deduplicated on the clean prompt and
//! then cut into train, validation and test, so the splits never share an example.

mod arithmetic;
mod ioi;
mod mcqa;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crate::error::TaskError;
use crate::example::{Example, Split, TaskKind};
use crate::jsonl::{split_path, write_jsonl};
use crate::rng::Rng;

/// Bumped whenever a change to the generators changes their output for a given seed; recorded in
/// `tasks/README.md` and in every example's metadata (`generator_version`).
pub const GENERATOR_VERSION: u32 = 1;

/// The seed the committed datasets were generated with.
pub const DEFAULT_SEED: u64 = 20_250_101;

/// How many examples each split of a task gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitSizes {
    /// Discovery examples.
    pub train: usize,
    /// Default evaluation examples.
    pub validation: usize,
    /// Held-out examples.
    pub test: usize,
}

impl SplitSizes {
    /// The size of one split.
    pub fn get(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train,
            Split::Validation => self.validation,
            Split::Test => self.test,
        }
    }

    /// All splits together.
    pub fn total(&self) -> usize {
        self.train + self.validation + self.test
    }
}

/// The committed sizes: enough pairs for attribution (train) and for evaluation on validation and
/// test, while keeping the files a few MB in all.
pub fn default_sizes(task: TaskKind) -> SplitSizes {
    match task {
        TaskKind::Ioi => SplitSizes { train: 2000, validation: 500, test: 500 },
        TaskKind::ArithmeticAddition | TaskKind::ArithmeticSubtraction => SplitSizes { train: 2000, validation: 500, test: 500 },
        TaskKind::Mcqa => SplitSizes { train: 1000, validation: 300, test: 300 },
    }
}

/// A task's generated examples by split.
pub type Generated = BTreeMap<Split, Vec<Example>>;

/// The endless stream of examples a task's generator draws for `seed`, duplicates included; the
/// committed splits are its first distinct examples for [`DEFAULT_SEED`], and task models train on
/// the stream of another seed (minus anything in validation or test).
pub fn stream(task: TaskKind, seed: u64) -> impl Iterator<Item = Example> {
    // Each task draws from its own stream, so adding a task never changes another's data.
    let salt = match task {
        TaskKind::Ioi => 0x10,
        TaskKind::ArithmeticAddition => 0x20,
        TaskKind::ArithmeticSubtraction => 0x30,
        TaskKind::Mcqa => 0x40,
    };
    let mut rng = Rng::new(seed ^ (salt << 56));
    let draw: fn(&mut Rng) -> Example = match task {
        TaskKind::Ioi => ioi::draw,
        TaskKind::ArithmeticAddition => arithmetic::draw_addition,
        TaskKind::ArithmeticSubtraction => arithmetic::draw_subtraction,
        TaskKind::Mcqa => mcqa::draw,
    };
    std::iter::repeat_with(move || draw(&mut rng))
}

/// Generates a task's splits for `seed`: the same seed always gives the same examples.
pub fn generate(task: TaskKind, seed: u64, sizes: SplitSizes) -> Result<Generated, TaskError> {
    let mut draws = stream(task, seed);
    let wanted = sizes.total();
    let mut seen = HashSet::with_capacity(wanted);
    let mut pool = Vec::with_capacity(wanted);
    // The pools are far larger than the sizes asked for; the cap only guards against a size that
    // exceeds the number of distinct prompts a generator can make.
    for _ in 0..wanted.saturating_mul(50) {
        if pool.len() == wanted {
            break;
        }
        let example = draws.next().expect("the stream is endless");
        if seen.insert(example.clean.clone()) {
            pool.push(example);
        }
    }
    if pool.len() < wanted {
        return Err(TaskError::TooFewDistinct { task, wanted, found: pool.len() });
    }
    let mut rest = pool.into_iter();
    let mut out = Generated::new();
    for split in Split::ALL {
        let examples = rest
            .by_ref()
            .take(sizes.get(split))
            .enumerate()
            .map(|(i, mut example)| {
                example.id = format!("{task}-{split}-{i:05}");
                example.metadata.insert("generator_version".into(), GENERATOR_VERSION.into());
                example
            })
            .collect();
        out.insert(split, examples);
    }
    Ok(out)
}

/// Generates every task with its default sizes and writes `<dir>/<task>/<split>.jsonl`, each file
/// atomically. Returns the files written with their example counts.
pub fn write_all(dir: &Path, seed: u64) -> Result<Vec<(std::path::PathBuf, usize)>, TaskError> {
    let mut written = Vec::new();
    for task in TaskKind::ALL {
        for (split, examples) in generate(task, seed, default_sizes(task))? {
            let path = split_path(dir, task, split);
            write_jsonl(&path, &examples)?;
            written.push((path, examples.len()));
        }
    }
    Ok(written)
}
