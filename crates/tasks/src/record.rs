//! Typed access to the fields of one JSON record (a JSONL line or a parquet row), so that every
//! missing or mistyped field is reported with the file, the record and the dotted field path.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Record, TaskError};

/// One record and where it came from.
pub(crate) struct Fields<'a> {
    object: &'a Map<String, Value>,
    path: &'a Path,
    at: Record,
}

impl<'a> Fields<'a> {
    /// Wraps `object`, read from `path` at `at`.
    pub(crate) fn new(object: &'a Map<String, Value>, path: &'a Path, at: Record) -> Self {
        Self { object, path, at }
    }

    /// The value at a dotted path (`s2_io_flip_counterfactual.prompt`), `None` when absent or null.
    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        let mut parts = field.split('.');
        let mut value = self.object.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        (!value.is_null()).then_some(value)
    }

    /// A required value.
    pub(crate) fn value(&self, field: &str) -> Result<&'a Value, TaskError> {
        self.get(field).ok_or_else(|| TaskError::MissingField { path: self.path.into(), at: self.at, field: field.into() })
    }

    /// A required string.
    pub(crate) fn str(&self, field: &str) -> Result<&'a str, TaskError> {
        let value = self.value(field)?;
        value.as_str().ok_or_else(|| self.bad(field, format!("expected a string, found {value}")))
    }

    /// An optional string (absent or null gives `None`).
    pub(crate) fn opt_str(&self, field: &str) -> Result<Option<&'a str>, TaskError> {
        match self.get(field) {
            None => Ok(None),
            Some(value) => value.as_str().map(Some).ok_or_else(|| self.bad(field, format!("expected a string, found {value}"))),
        }
    }

    /// A required string or integer, as text (MIB stores some labels as either).
    pub(crate) fn text(&self, field: &str) -> Result<String, TaskError> {
        match self.value(field)? {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            other => Err(self.bad(field, format!("expected a string or an integer, found {other}"))),
        }
    }

    /// A required non-negative integer.
    pub(crate) fn index(&self, field: &str) -> Result<usize, TaskError> {
        let value = self.value(field)?;
        value.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| self.bad(field, format!("expected a non-negative integer, found {value}")))
    }

    /// Element `index` of a required list, as text.
    pub(crate) fn list_text(&self, field: &str, index: usize) -> Result<String, TaskError> {
        let value = self.value(field)?;
        let list = value.as_array().ok_or_else(|| self.bad(field, format!("expected a list, found {value}")))?;
        match list.get(index) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            Some(other) => Err(self.bad(field, format!("element {index} is {other}, not a string or an integer"))),
            None => Err(self.bad(field, format!("index {index} is outside the list of {}", list.len()))),
        }
    }

    /// An optional object (absent or null gives an empty map).
    pub(crate) fn object(&self, field: &str) -> Result<Map<String, Value>, TaskError> {
        match self.get(field) {
            None => Ok(Map::new()),
            Some(Value::Object(map)) => Ok(map.clone()),
            Some(other) => Err(self.bad(field, format!("expected an object, found {other}"))),
        }
    }

    fn bad(&self, field: &str, message: String) -> TaskError {
        TaskError::BadField { path: self.path.into(), at: self.at, field: field.into(), message }
    }
}
