//! GGUF metadata values and their parsing.

use crate::GgufError;
use crate::cursor::Cursor;

/// Deepest array nesting accepted, so a crafted file cannot exhaust the stack.
pub const MAX_ARRAY_DEPTH: usize = 16;

/// One metadata value, typed exactly as stored so callers can tell `u32` from `i32` when it matters.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    /// Type 0, `uint8`.
    U8(u8),
    /// Type 1, `int8`.
    I8(i8),
    /// Type 2, `uint16`.
    U16(u16),
    /// Type 3, `int16`.
    I16(i16),
    /// Type 4, `uint32`.
    U32(u32),
    /// Type 5, `int32`.
    I32(i32),
    /// Type 6, `float32`.
    F32(f32),
    /// Type 7, `bool`, one byte.
    Bool(bool),
    /// Type 8, `string`: UTF-8 text (names, templates, the tokenizer model).
    String(String),
    /// Type 9, `array`: a typed list.
    Array(MetadataArray),
    /// Type 10, `uint64`.
    U64(u64),
    /// Type 11, `int64`.
    I64(i64),
    /// Type 12, `float64`.
    F64(f64),
}

/// A metadata array, stored as one typed vector so large arrays (vocabularies) are compact and
/// can be borrowed as plain slices.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataArray {
    /// Elements of type 0, `uint8`.
    U8(Vec<u8>),
    /// Elements of type 1, `int8`.
    I8(Vec<i8>),
    /// Elements of type 2, `uint16`.
    U16(Vec<u16>),
    /// Elements of type 3, `int16`.
    I16(Vec<i16>),
    /// Elements of type 4, `uint32`.
    U32(Vec<u32>),
    /// Elements of type 5, `int32`.
    I32(Vec<i32>),
    /// Elements of type 6, `float32`.
    F32(Vec<f32>),
    /// Elements of type 7, `bool`.
    Bool(Vec<bool>),
    /// Elements of type 8, `string` (vocabularies, merges).
    String(Vec<String>),
    /// Elements that are arrays themselves, nested at most [`MAX_ARRAY_DEPTH`] deep.
    Array(Vec<MetadataArray>),
    /// Elements of type 10, `uint64`.
    U64(Vec<u64>),
    /// Elements of type 11, `int64`.
    I64(Vec<i64>),
    /// Elements of type 12, `float64`.
    F64(Vec<f64>),
}

macro_rules! scalar_accessors {
    ($($name:ident => $variant:ident: $ty:ty),* $(,)?) => {$(
        #[doc = concat!("The value if it is stored as `", stringify!($ty), "` (no conversions), for typed look-ups.")]
        pub fn $name(&self) -> Option<$ty> {
            match self {
                Self::$variant(value) => Some(*value),
                _ => None,
            }
        }
    )*};
}

macro_rules! array_accessors {
    ($($name:ident => $variant:ident: $ty:ty),* $(,)?) => {$(
        #[doc = concat!("The elements if this is an array of `", stringify!($ty), "`, borrowed without copying.")]
        pub fn $name(&self) -> Option<&[$ty]> {
            match self {
                Self::Array(MetadataArray::$variant(values)) => Some(values),
                _ => None,
            }
        }
    )*};
}

impl MetadataValue {
    scalar_accessors! {
        as_u8 => U8: u8, as_i8 => I8: i8, as_u16 => U16: u16, as_i16 => I16: i16,
        as_u32 => U32: u32, as_i32 => I32: i32, as_u64 => U64: u64, as_i64 => I64: i64,
        as_f32 => F32: f32, as_f64 => F64: f64, as_bool => Bool: bool,
    }

    array_accessors! {
        as_str_array => String: String, as_i32_array => I32: i32,
        as_u32_array => U32: u32, as_f32_array => F32: f32,
    }

    /// The string if this is a string value, for names and tokenizer settings.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(value) => Some(value),
            _ => None,
        }
    }

    /// The array of any element type, for nested arrays and element types without a shortcut.
    pub fn as_array(&self) -> Option<&MetadataArray> {
        match self {
            Self::Array(array) => Some(array),
            _ => None,
        }
    }

    /// The stored type, e.g. `u32` or `array<string>`, for error messages.
    pub fn type_name(&self) -> String {
        let scalar = match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::F32(_) => "f32",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F64(_) => "f64",
            Self::Array(array) => return format!("array<{}>", array.element_type_name()),
        };
        scalar.to_owned()
    }
}

impl MetadataArray {
    /// The element type, e.g. `string`, or `array` for nested arrays, for error messages.
    pub fn element_type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::F32(_) => "f32",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Array(_) => "array",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F64(_) => "f64",
        }
    }
}

/// The value type ids of the GGUF format.
#[derive(Clone, Copy)]
enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    fn read(cur: &mut Cursor<'_>, key: &str) -> Result<Self, GgufError> {
        Ok(match cur.u32()? {
            0 => Self::U8,
            1 => Self::I8,
            2 => Self::U16,
            3 => Self::I16,
            4 => Self::U32,
            5 => Self::I32,
            6 => Self::F32,
            7 => Self::Bool,
            8 => Self::String,
            9 => Self::Array,
            10 => Self::U64,
            11 => Self::I64,
            12 => Self::F64,
            type_id => {
                return Err(GgufError::UnknownValueType { path: cur.path().to_path_buf(), key: key.to_owned(), type_id });
            }
        })
    }
}

/// Reads one typed value (type id, then payload) belonging to `key`.
pub(crate) fn read_value(cur: &mut Cursor<'_>, key: &str) -> Result<MetadataValue, GgufError> {
    Ok(match ValueType::read(cur, key)? {
        ValueType::U8 => MetadataValue::U8(cur.u8()?),
        ValueType::I8 => MetadataValue::I8(cur.i8()?),
        ValueType::U16 => MetadataValue::U16(cur.u16()?),
        ValueType::I16 => MetadataValue::I16(cur.i16()?),
        ValueType::U32 => MetadataValue::U32(cur.u32()?),
        ValueType::I32 => MetadataValue::I32(cur.i32()?),
        ValueType::F32 => MetadataValue::F32(cur.f32()?),
        ValueType::Bool => MetadataValue::Bool(cur.bool()?),
        ValueType::String => MetadataValue::String(cur.string()?),
        ValueType::Array => MetadataValue::Array(read_array(cur, key, 1)?),
        ValueType::U64 => MetadataValue::U64(cur.u64()?),
        ValueType::I64 => MetadataValue::I64(cur.i64()?),
        ValueType::F64 => MetadataValue::F64(cur.f64()?),
    })
}

/// Reads an array body (element type, u64 count, elements); `depth` is 1 for a top-level array.
fn read_array(cur: &mut Cursor<'_>, key: &str, depth: usize) -> Result<MetadataArray, GgufError> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::ArrayTooDeep { path: cur.path().to_path_buf(), key: key.to_owned(), max_depth: MAX_ARRAY_DEPTH });
    }
    let element_type = ValueType::read(cur, key)?;
    let n = cur.len()?;
    Ok(match element_type {
        ValueType::U8 => MetadataArray::U8(cur.repeat(n, Cursor::u8)?),
        ValueType::I8 => MetadataArray::I8(cur.repeat(n, Cursor::i8)?),
        ValueType::U16 => MetadataArray::U16(cur.repeat(n, Cursor::u16)?),
        ValueType::I16 => MetadataArray::I16(cur.repeat(n, Cursor::i16)?),
        ValueType::U32 => MetadataArray::U32(cur.repeat(n, Cursor::u32)?),
        ValueType::I32 => MetadataArray::I32(cur.repeat(n, Cursor::i32)?),
        ValueType::F32 => MetadataArray::F32(cur.repeat(n, Cursor::f32)?),
        ValueType::Bool => MetadataArray::Bool(cur.repeat(n, Cursor::bool)?),
        ValueType::String => MetadataArray::String(cur.repeat(n, Cursor::string)?),
        ValueType::Array => MetadataArray::Array(cur.repeat(n, |cur| read_array(cur, key, depth + 1))?),
        ValueType::U64 => MetadataArray::U64(cur.repeat(n, Cursor::u64)?),
        ValueType::I64 => MetadataArray::I64(cur.repeat(n, Cursor::i64)?),
        ValueType::F64 => MetadataArray::F64(cur.repeat(n, Cursor::f64)?),
    })
}
