//! circuitbench's own dataset files: one [`Example`] per line of JSON, written atomically.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Record, TaskError};
use crate::example::{Example, Split, TaskKind};
use crate::record::Fields;

/// The file holding one task's split under a datasets directory: `<dir>/<task>/<split>.jsonl`.
pub fn split_path(dir: &Path, task: TaskKind, split: Split) -> PathBuf {
    dir.join(task.name()).join(format!("{}.jsonl", split.name()))
}

/// Reads a JSONL file of examples. Blank lines are skipped; a line that is not valid UTF-8 or not
/// a JSON object, or that lacks a required field, is an error naming the file, the line and the
/// field; an id used twice is an error naming both lines. Lines end in `\n` or `\r\n`.
pub fn read_jsonl(path: &Path) -> Result<Vec<Example>, TaskError> {
    let file = File::open(path).map_err(|e| TaskError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut examples = Vec::new();
    let mut lines_of_ids: HashMap<String, usize> = HashMap::new();
    let mut bytes = Vec::new();
    // Read as bytes, line by line, so that invalid UTF-8 is reported with its line number.
    for i in 0.. {
        bytes.clear();
        if reader.read_until(b'\n', &mut bytes).map_err(|e| TaskError::io(path, e))? == 0 {
            break;
        }
        let at = Record::Line(i + 1);
        let line = std::str::from_utf8(&bytes).map_err(|source| TaskError::NotUtf8 { path: path.into(), at, source })?;
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let malformed = |message: String| TaskError::Malformed { path: path.into(), at, message };
        let value: Value = serde_json::from_str(line).map_err(|e| malformed(e.to_string()))?;
        let object = value.as_object().ok_or_else(|| malformed("not a JSON object".into()))?;
        let fields = Fields::new(object, path, at);
        let id = fields.str("id")?;
        if let Some(&first) = lines_of_ids.get(id) {
            return Err(TaskError::DuplicateId { path: path.into(), id: id.into(), first, line: i + 1 });
        }
        lines_of_ids.insert(id.into(), i + 1);
        examples.push(Example {
            id: id.into(),
            clean: fields.str("clean")?.into(),
            counterfactual: fields.str("counterfactual")?.into(),
            abc_counterfactual: fields.opt_str("abc_counterfactual")?.map(String::from),
            correct: fields.str("correct")?.into(),
            incorrect: fields.str("incorrect")?.into(),
            metadata: fields.object("metadata")?,
        });
    }
    Ok(examples)
}

/// Reads `<dir>/<task>/<split>.jsonl`.
pub fn load_split(dir: &Path, task: TaskKind, split: Split) -> Result<Vec<Example>, TaskError> {
    read_jsonl(&split_path(dir, task, split))
}

/// Writes examples one per line, through a temporary file renamed into place, so a reader never
/// sees a half-written file and an interrupted run leaves the old file intact.
pub fn write_jsonl(path: &Path, examples: &[Example]) -> Result<(), TaskError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| TaskError::io(parent, e))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut out = BufWriter::new(File::create(&tmp)?);
        for example in examples {
            serde_json::to_writer(&mut out, example)?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    if let Err(e) = write() {
        // Best effort: the temporary file is garbage either way, and the write error is what matters.
        let _ = std::fs::remove_file(&tmp);
        return Err(TaskError::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| TaskError::io(path, e))
}
