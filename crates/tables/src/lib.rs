//! Tabular files for circuitbench, the one crate that depends on polars: every other crate sees rows
//! as JSON objects, so polars' large dependency tree and fast-moving API stay behind this boundary.
//!
//! Reading parquet files (MIB's hub datasets) into rows and writing rows to parquet (tests and
//! fixtures in MIB's schema); writing and reading the benchmark's CSV reports. A row is a [`Row`]: strings, integers, floats, booleans and nulls
//! map to their JSON counterparts, lists to arrays and structs to objects, recursively.

#![warn(missing_docs)]

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde_json::{Map, Number, Value};

/// One table row: column name → value.
pub type Row = Map<String, Value>;

/// Why a table could not be read or written; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file could not be opened or created.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file read or written.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// Polars rejected the file (not parquet, corrupt, truncated) or the data written to it.
    #[error("{}: {message}", path.display())]
    Polars {
        /// The file read or written.
        path: PathBuf,
        /// Polars' error.
        message: String,
    },
    /// A column's type has no JSON counterpart here (dates, binary, decimals, ...).
    #[error("{}: column `{column}` has unsupported type {dtype}", path.display())]
    UnsupportedType {
        /// The file read or written.
        path: PathBuf,
        /// The column's name.
        column: String,
        /// The column's polars type.
        dtype: String,
    },
    /// Rows to write disagree on a column's kind (e.g. a string in one row, an object in another).
    #[error("{}: column `{column}` mixes {first} and {other} values", path.display())]
    MixedKinds {
        /// The file read or written.
        path: PathBuf,
        /// The column's name.
        column: String,
        /// The kind of value seen first.
        first: &'static str,
        /// The conflicting kind seen later.
        other: &'static str,
    },
}

/// Reads every row of a parquet file.
pub fn read_parquet(path: &Path) -> Result<Vec<Row>, TableError> {
    let file = File::open(path).map_err(|source| TableError::Io { path: path.into(), source })?;
    let frame = ParquetReader::new(file).finish().map_err(|e| polars_err(path, e))?;
    rows_of(path, &frame)
}

/// Writes rows to a parquet file, inferring each column's type from its values (integers stay
/// integers unless a float appears, objects become structs, arrays lists). Column order follows
/// the first appearance of each key.
pub fn write_parquet(path: &Path, rows: &[Row]) -> Result<(), TableError> {
    let mut names: Vec<&str> = Vec::new();
    for row in rows {
        for key in row.keys() {
            if !names.contains(&key.as_str()) {
                names.push(key);
            }
        }
    }
    let mut frame = frame_of(path, &names, rows)?;
    let file = File::create(path).map_err(|source| TableError::Io { path: path.into(), source })?;
    ParquetWriter::new(file).finish(&mut frame).map_err(|e| polars_err(path, e))?;
    Ok(())
}

/// Rows as a frame with the given columns, in that order (absent values are nulls).
fn frame_of(path: &Path, columns: &[&str], rows: &[Row]) -> Result<DataFrame, TableError> {
    let columns = columns
        .iter()
        .map(|name| {
            let values: Vec<&Value> = rows.iter().map(|row| row.get(*name).unwrap_or(&Value::Null)).collect();
            values_series(name, &values).map(Column::from).map_err(|e| e.at(path))
        })
        .collect::<Result<Vec<_>, _>>()?;
    DataFrame::new(rows.len(), columns).map_err(|e| polars_err(path, e))
}

/// Writes rows as CSV with a header of `columns` (in that order), atomically: to a temporary file
/// beside `path`, then renamed, so a reader never sees half a table.
pub fn write_csv(path: &Path, columns: &[&str], rows: &[Row]) -> Result<(), TableError> {
    let mut frame = frame_of(path, columns, rows)?;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = temp_path(path, &host_name(), std::process::id(), COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let file = File::create(&tmp).map_err(|source| TableError::Io { path: tmp.clone(), source })?;
    let written = CsvWriter::new(file).finish(&mut frame).map_err(|e| polars_err(path, e));
    let renamed = written.and_then(|()| std::fs::rename(&tmp, path).map_err(|source| TableError::Io { path: path.into(), source }));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

/// This machine's name for temporary files: `/etc/hostname`, else `$HOSTNAME`, else `localhost`,
/// with anything but letters, digits, `-` and `.` as `_`.
fn host_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".into());
    host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// The temporary file a write of `path` goes through, beside it: `.{name}.{host}.{pid}.{n}.tmp`,
/// so writers in other processes, on other hosts or in other threads never share one.
fn temp_path(path: &Path, host: &str, pid: u32, n: u64) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{host}.{pid}.{n}.tmp"))
}

/// Reads every row of a CSV file with a header, inferring column types.
pub fn read_csv(path: &Path) -> Result<Vec<Row>, TableError> {
    let frame = CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.into()))
        .and_then(|reader| reader.finish())
        .map_err(|e| polars_err(path, e))?;
    rows_of(path, &frame)
}

/// A frame's rows as JSON objects.
fn rows_of(path: &Path, frame: &DataFrame) -> Result<Vec<Row>, TableError> {
    let mut rows = vec![Row::new(); frame.height()];
    for column in frame.columns() {
        let series = column.as_materialized_series();
        let values = series_values(series, series.name().as_str()).map_err(|e| e.at(path))?;
        for (row, value) in rows.iter_mut().zip(values) {
            row.insert(series.name().to_string(), value);
        }
    }
    Ok(rows)
}

fn polars_err(path: &Path, error: PolarsError) -> TableError {
    TableError::Polars { path: path.into(), message: error.to_string() }
}

/// A conversion failure before the file it concerns is known.
enum ColumnError {
    Polars(PolarsError),
    Unsupported { column: String, dtype: String },
    Mixed { column: String, first: &'static str, other: &'static str },
}

impl ColumnError {
    fn at(self, path: &Path) -> TableError {
        match self {
            ColumnError::Polars(e) => polars_err(path, e),
            ColumnError::Unsupported { column, dtype } => TableError::UnsupportedType { path: path.into(), column, dtype },
            ColumnError::Mixed { column, first, other } => TableError::MixedKinds { path: path.into(), column, first, other },
        }
    }
}

impl From<PolarsError> for ColumnError {
    fn from(e: PolarsError) -> Self {
        ColumnError::Polars(e)
    }
}

/// The values of a series as JSON, one per row; `column` is the dotted path used in errors.
fn series_values(series: &Series, column: &str) -> Result<Vec<Value>, ColumnError> {
    let values = match series.dtype() {
        DataType::Null => vec![Value::Null; series.len()],
        DataType::Boolean => series.bool()?.iter().map(|v| v.map_or(Value::Null, Value::Bool)).collect(),
        DataType::String => series.str()?.iter().map(|v| v.map_or(Value::Null, |s| Value::String(s.to_string()))).collect(),
        dtype if dtype.is_integer() => {
            if matches!(dtype, DataType::UInt64) {
                series.u64()?.iter().map(|v| v.map_or(Value::Null, |n| Value::Number(n.into()))).collect()
            } else {
                let cast = series.cast(&DataType::Int64)?;
                cast.i64()?.iter().map(|v| v.map_or(Value::Null, |n| Value::Number(n.into()))).collect()
            }
        }
        dtype if dtype.is_float() => {
            let cast = series.cast(&DataType::Float64)?;
            cast.f64()?.iter().map(|v| v.and_then(Number::from_f64).map_or(Value::Null, Value::Number)).collect()
        }
        DataType::List(_) => {
            let list = series.list()?;
            (0..list.len())
                .map(|i| match list.get_as_series(i) {
                    None => Ok(Value::Null),
                    Some(inner) => Ok(Value::Array(series_values(&inner, column)?)),
                })
                .collect::<Result<_, ColumnError>>()?
        }
        DataType::Struct(_) => {
            let chunked = series.struct_()?;
            let fields = chunked.fields_as_series();
            let field_values = fields.iter().map(|f| series_values(f, &format!("{column}.{}", f.name()))).collect::<Result<Vec<_>, _>>()?;
            let valid = series.is_not_null();
            (0..series.len())
                .map(|i| {
                    if valid.get(i) != Some(true) {
                        return Value::Null;
                    }
                    let object = fields.iter().zip(&field_values).map(|(f, values)| (f.name().to_string(), values[i].clone())).collect();
                    Value::Object(object)
                })
                .collect()
        }
        other => return Err(ColumnError::Unsupported { column: column.into(), dtype: other.to_string() }),
    };
    Ok(values)
}

/// The JSON kind of a non-null value, for type inference and error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A series named `name` holding `values` (one per row), typed by the values' common kind.
fn values_series(name: &str, values: &[&Value]) -> Result<Series, ColumnError> {
    let name = PlSmallStr::from(name);
    let mut common: Option<&'static str> = None;
    for value in values.iter().filter(|v| !v.is_null()) {
        let k = kind(value);
        common = match (common, k) {
            (None, k) => Some(k),
            (Some(a), b) if a == b => Some(a),
            (Some("integer"), "float") | (Some("float"), "integer") => Some("float"),
            (Some(first), other) => return Err(ColumnError::Mixed { column: name.to_string(), first, other }),
        };
    }
    let series = match common {
        None => Series::full_null(name, values.len(), &DataType::Null),
        Some("boolean") => Series::new(name, values.iter().map(|v| v.as_bool()).collect::<Vec<_>>()),
        Some("integer") => Series::new(name, values.iter().map(|v| v.as_i64()).collect::<Vec<_>>()),
        Some("float") => Series::new(name, values.iter().map(|v| v.as_f64()).collect::<Vec<_>>()),
        Some("string") => Series::new(name, values.iter().map(|v| v.as_str()).collect::<Vec<_>>()),
        Some("array") => {
            // One inner series for every row's items, so all rows share its type; each row is a slice.
            let items: Vec<&Value> = values.iter().filter_map(|v| v.as_array()).flat_map(|items| items.iter()).collect();
            let inner = values_series(name.as_str(), &items)?;
            let mut offset = 0;
            let rows = values.iter().map(|v| {
                let items = v.as_array()?;
                let row = inner.slice(offset as i64, items.len());
                offset += items.len();
                Some(row)
            });
            let mut list: ListChunked = rows.collect();
            list.rename(name);
            list.into_series()
        }
        _ => {
            let mut keys: Vec<&str> = Vec::new();
            for value in values {
                if let Value::Object(object) = value {
                    for key in object.keys() {
                        if !keys.contains(&key.as_str()) {
                            keys.push(key);
                        }
                    }
                }
            }
            let fields = keys
                .iter()
                .map(|key| {
                    let column: Vec<&Value> = values.iter().map(|v| v.get(*key).unwrap_or(&Value::Null)).collect();
                    values_series(key, &column)
                })
                .collect::<Result<Vec<_>, _>>()?;
            // The outer validity as an arrow bitmap, taken from a boolean column of the same rows.
            let valid: Vec<bool> = values.iter().map(|v| !v.is_null()).collect();
            let valid = BooleanChunked::new(PlSmallStr::EMPTY, &valid);
            let valid = valid.rechunk();
            let validity = valid.downcast_iter().next().map(|array| array.values().clone());
            StructChunked::from_series(name, values.len(), fields.iter())?.with_outer_validity(validity).into_series()
        }
    };
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn temporary_names_differ_by_pid_host_and_write() {
        let path = Path::new("/r/run/summary.csv");
        let a = temp_path(path, "h1", 10, 0);
        assert_eq!(a, Path::new("/r/run/.summary.csv.h1.10.0.tmp"), "hidden, beside the file");
        assert_ne!(a, temp_path(path, "h1", 11, 0));
        assert_ne!(a, temp_path(path, "h2", 10, 0));
        assert_ne!(a, temp_path(path, "h1", 10, 1));
        assert!(!host_name().is_empty() && !host_name().contains('/'));
    }

    fn rows(value: Value) -> Vec<Row> {
        value.as_array().unwrap().iter().map(|v| v.as_object().unwrap().clone()).collect()
    }

    #[test]
    fn nested_rows_round_trip_through_parquet() {
        let dir = std::env::temp_dir().join(format!("tables-roundtrip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rows.parquet");
        let written = rows(json!([
            {"prompt": "a", "n": 1, "x": 0.5, "ok": true,
             "cf": {"prompt": "b", "label": 3, "choices": {"label": ["A", "B"], "text": ["x", "y"]}},
             "tags": ["p", "q"]},
            {"prompt": "c", "n": null, "x": 2, "ok": false, "cf": null, "tags": []},
        ]));
        write_parquet(&path, &written).unwrap();
        let read = read_parquet(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0]["cf"], json!({"prompt": "b", "label": 3, "choices": {"label": ["A", "B"], "text": ["x", "y"]}}));
        assert_eq!(read[0]["tags"], json!(["p", "q"]));
        assert_eq!(read[0]["x"], json!(0.5));
        assert_eq!(read[1]["x"], json!(2.0));
        assert_eq!(read[1]["n"], Value::Null);
        assert_eq!(read[1]["cf"], Value::Null);
        assert_eq!(read[1]["tags"], json!([]));
        assert_eq!(read[1]["ok"], json!(false));
    }

    #[test]
    fn not_parquet_and_missing_files_name_the_file() {
        let dir = std::env::temp_dir().join(format!("tables-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.parquet");
        std::fs::write(&path, "not a parquet file").unwrap();
        let err = read_parquet(&path).unwrap_err().to_string();
        assert!(err.contains("bad.parquet"), "{err}");
        let missing = dir.join("missing.parquet");
        let err = read_parquet(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.parquet"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mixed_kinds_are_refused() {
        let path = std::env::temp_dir().join("tables-mixed-never-written.parquet");
        let err = write_parquet(&path, &rows(json!([{"a": "x"}, {"a": {"b": 1}}]))).unwrap_err();
        assert!(matches!(err, TableError::MixedKinds { ref column, .. } if column == "a"), "{err}");
    }
}
