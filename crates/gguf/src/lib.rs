//! A small reader for GGUF v3 (and v2) model files, so models shipped as GGUF — SmolLM2's
//! Q4_1 file — load without a C dependency: metadata, the tensor directory, and dequantisation of
//! F32, F16, BF16, Q8_0, Q4_0 and Q4_1 tensors to f32.
//!
//! Every malformed input is reported as a [`GgufError`] that names the file; nothing read from the
//! file is indexed or unwrapped unchecked.

#![warn(missing_docs)]

mod cursor;
mod metadata;
mod tensor;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use cursor::Cursor;
pub use metadata::{MAX_ARRAY_DEPTH, MetadataArray, MetadataValue};
pub use tensor::{GgmlType, MAX_DIMS, TensorInfo};

/// Alignment of the data section and tensor offsets when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;

const MAGIC: [u8; 4] = *b"GGUF";
const ALIGNMENT_KEY: &str = "general.alignment";

/// Everything that can go wrong reading a GGUF file; each message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or memory-mapped.
    #[error("{}: cannot read GGUF file: {source}", .path.display())]
    Io {
        /// The file being read.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },

    /// The file does not start with `GGUF`, so it is not a GGUF file.
    #[error("{}: not a GGUF file: starts with \"{}\", expected \"GGUF\"", .path.display(), .found.escape_ascii())]
    BadMagic {
        /// The file being read.
        path: PathBuf,
        /// The first four bytes.
        found: [u8; 4],
    },

    /// A format version this reader does not handle (only little-endian v2 and v3 are).
    #[error("{}: unsupported GGUF version {version} (this reader handles little-endian versions 2 and 3)", .path.display())]
    UnsupportedVersion {
        /// The file being read.
        path: PathBuf,
        /// The version field read.
        version: u32,
    },

    /// The file ends inside the header, metadata or tensor directory.
    #[error("{}: file is truncated in the {section}: {needed} bytes needed at offset {offset}, but the file is {len} bytes long", .path.display())]
    Truncated {
        /// The file being read.
        path: PathBuf,
        /// Which part of the file was being read (header, metadata, tensor directory).
        section: &'static str,
        /// Where the read starts, from the file's start.
        offset: usize,
        /// Bytes the read needs.
        needed: u64,
        /// The file's length in bytes.
        len: usize,
    },

    /// A metadata value (or array element) has a type id outside the GGUF specification.
    #[error("{}: metadata key `{key}` has unknown value type id {type_id}", .path.display())]
    UnknownValueType {
        /// The file being read.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// The type id read.
        type_id: u32,
    },

    /// A key or string value is not valid UTF-8.
    #[error("{}: string in the {section} at offset {offset} is not valid UTF-8", .path.display())]
    InvalidUtf8 {
        /// The file being read.
        path: PathBuf,
        /// Which part of the file was being read (header, metadata, tensor directory).
        section: &'static str,
        /// Where the string's bytes start, from the file's start.
        offset: usize,
    },

    /// Arrays nested deeper than [`MAX_ARRAY_DEPTH`], refused to bound recursion.
    #[error("{}: metadata key `{key}` nests arrays deeper than {max_depth} levels", .path.display())]
    ArrayTooDeep {
        /// The file being read.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// The nesting limit.
        max_depth: usize,
    },

    /// The same metadata key appears twice, so look-ups would be ambiguous.
    #[error("{}: metadata key `{key}` appears more than once", .path.display())]
    DuplicateKey {
        /// The file being read.
        path: PathBuf,
        /// The metadata key.
        key: String,
    },

    /// `general.alignment` is zero or not a power of two.
    #[error("{}: `general.alignment` is {alignment}, expected a non-zero power of two", .path.display())]
    InvalidAlignment {
        /// The file being read.
        path: PathBuf,
        /// The value read.
        alignment: u32,
    },

    /// A tensor directory entry is inconsistent (too many dimensions, overflow, misaligned offset).
    #[error("{}: tensor `{tensor}` has an invalid directory entry: {reason}", .path.display())]
    InvalidTensorInfo {
        /// The file being read.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is inconsistent.
        reason: String,
    },

    /// The same tensor name appears twice, so look-ups would be ambiguous.
    #[error("{}: tensor `{tensor}` appears more than once", .path.display())]
    DuplicateTensor {
        /// The file being read.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
    },

    /// No tensor of that name is in the file.
    #[error("{}: no tensor named `{tensor}`", .path.display())]
    MissingTensor {
        /// The file being read.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
    },

    /// No metadata value of that key is in the file.
    #[error("{}: no metadata key `{key}`", .path.display())]
    MissingKey {
        /// The file being read.
        path: PathBuf,
        /// The metadata key.
        key: String,
    },

    /// The metadata value exists but is stored with another type than the caller asked for.
    #[error("{}: metadata key `{key}` is {found}, expected {expected}", .path.display())]
    WrongMetadataType {
        /// The file being read.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// The type asked for.
        expected: &'static str,
        /// The type stored.
        found: String,
    },

    /// The tensor's ggml type is one this reader cannot dequantise.
    #[error("{}: tensor `{tensor}` has ggml type {ggml_type} (id {}), which this reader cannot dequantise (it handles F32, F16, BF16, Q8_0, Q4_0, Q4_1)", .path.display(), .ggml_type.id())]
    UnsupportedTensorType {
        /// The file being read.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The tensor's ggml type.
        ggml_type: GgmlType,
    },

    /// The tensor's rows are not whole blocks of its quantisation format.
    #[error("{}: tensor `{tensor}` has rows of {row_len} elements, not a multiple of the {ggml_type} block size {block_len}", .path.display())]
    RowNotBlockAligned {
        /// The file being read.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The tensor's ggml type.
        ggml_type: GgmlType,
        /// Elements per row (the first dimension).
        row_len: usize,
        /// Elements per block of that type.
        block_len: usize,
    },

    /// The tensor's data would extend past the end of the file (checked before reading).
    #[error("{}: data of tensor `{tensor}` ({size} bytes at offset {offset}) runs past the end of the file ({len} bytes)", .path.display())]
    TensorDataOutOfBounds {
        /// The file being read.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Where the data starts, from the file's start.
        offset: u64,
        /// Bytes the data takes.
        size: u64,
        /// The file's length in bytes.
        len: usize,
    },
}

/// An open, memory-mapped GGUF file: parsed metadata and tensor directory, with tensor data
/// decoded on demand so only the tensors asked for are materialised.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    metadata: BTreeMap<String, MetadataValue>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: usize,
    data_offset: usize,
}

impl GgufFile {
    /// Maps the file and parses its header, metadata and tensor directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io_error = |source| GgufError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io_error)?;
        // SAFETY: the map is read-only. As with any memory-mapped reader, the file must not be
        // truncated or rewritten by another process while this `GgufFile` is alive.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io_error)?;

        let mut cur = Cursor::new(&path, &mmap);
        let found = cur.array::<4>()?;
        if found != MAGIC {
            return Err(GgufError::BadMagic { path, found });
        }
        let version = cur.u32()?;
        if !matches!(version, 2 | 3) {
            return Err(GgufError::UnsupportedVersion { path, version });
        }
        let tensor_count = cur.len()?;
        let kv_count = cur.len()?;

        cur.section = "metadata";
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = cur.string()?;
            let value = metadata::read_value(&mut cur, &key)?;
            if metadata.contains_key(&key) {
                return Err(GgufError::DuplicateKey { path, key });
            }
            metadata.insert(key, value);
        }
        let alignment = match metadata.get(ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some(MetadataValue::U32(a)) if a.is_power_of_two() => *a as usize,
            Some(MetadataValue::U32(a)) => {
                return Err(GgufError::InvalidAlignment { path, alignment: *a });
            }
            Some(other) => {
                return Err(GgufError::WrongMetadataType { path, key: ALIGNMENT_KEY.to_owned(), expected: "u32", found: other.type_name() });
            }
        };

        cur.section = "tensor directory";
        let tensors = cur.repeat(tensor_count, |cur| TensorInfo::read(cur, alignment))?;
        let mut tensor_index = HashMap::with_capacity(tensors.len());
        for (i, info) in tensors.iter().enumerate() {
            if tensor_index.insert(info.name().to_owned(), i).is_some() {
                return Err(GgufError::DuplicateTensor { path, tensor: info.name().to_owned() });
            }
        }
        // The position is at most the file length and the alignment at most 2^31, so this cannot
        // overflow. It may lie past the end of a file without tensor data; reads check for that.
        let data_offset = cur.position().next_multiple_of(alignment);

        Ok(Self { path, mmap, version, metadata, tensors, tensor_index, alignment, data_offset })
    }

    /// The path the file was opened from, as named in errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and tensor offsets (`general.alignment`, default 32).
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Absolute file offset where tensor data starts; tensor offsets are relative to it.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// The value stored under `key`, of whatever type.
    pub fn metadata(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.get(key)
    }

    /// All metadata entries, sorted by key, for listing or dumping a file.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.metadata.iter().map(|(key, value)| (key.as_str(), value))
    }

    /// Looks `key` up and converts it with `convert`, naming the key and types on failure.
    fn get_as<'a, T>(&'a self, key: &str, expected: &'static str, convert: impl FnOnce(&'a MetadataValue) -> Option<T>) -> Result<T, GgufError> {
        let value = self.metadata(key).ok_or_else(|| GgufError::MissingKey { path: self.path.clone(), key: key.to_owned() })?;
        convert(value).ok_or_else(|| GgufError::WrongMetadataType { path: self.path.clone(), key: key.to_owned(), expected, found: value.type_name() })
    }

    /// A required `u32` value, such as `llama.block_count`.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.get_as(key, "u32", MetadataValue::as_u32)
    }

    /// A required `u64` value.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get_as(key, "u64", MetadataValue::as_u64)
    }

    /// A required `i32` value.
    pub fn get_i32(&self, key: &str) -> Result<i32, GgufError> {
        self.get_as(key, "i32", MetadataValue::as_i32)
    }

    /// A required `f32` value, such as `llama.rope.freq_base`.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.get_as(key, "f32", MetadataValue::as_f32)
    }

    /// A required `bool` value, such as `tokenizer.ggml.add_bos_token`.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.get_as(key, "bool", MetadataValue::as_bool)
    }

    /// A required string value, such as `general.architecture`.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get_as(key, "string", MetadataValue::as_str)
    }

    /// A required array of strings, such as `tokenizer.ggml.tokens`.
    pub fn get_str_array(&self, key: &str) -> Result<&[String], GgufError> {
        self.get_as(key, "array<string>", MetadataValue::as_str_array)
    }

    /// A required array of `i32`, such as `tokenizer.ggml.token_type`.
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32], GgufError> {
        self.get_as(key, "array<i32>", MetadataValue::as_i32_array)
    }

    /// A required array of `u32`.
    pub fn get_u32_array(&self, key: &str) -> Result<&[u32], GgufError> {
        self.get_as(key, "array<u32>", MetadataValue::as_u32_array)
    }

    /// A required array of `f32`, such as `tokenizer.ggml.scores`.
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32], GgufError> {
        self.get_as(key, "array<f32>", MetadataValue::as_f32_array)
    }

    /// The tensor directory in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Tensor names in file order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(TensorInfo::name)
    }

    /// The directory entry of the tensor called `name`, if any.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// Decodes the tensor called `name` to f32, returning its row-major shape and its values in
    /// row-major order.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), GgufError> {
        let info = self.tensor(name).ok_or_else(|| GgufError::MissingTensor { path: self.path.clone(), tensor: name.to_owned() })?;
        let ggml_type = info.ggml_type();
        let unsupported = || GgufError::UnsupportedTensorType { path: self.path.clone(), tensor: name.to_owned(), ggml_type };
        let (block_len, block_bytes) = ggml_type.block_layout().ok_or_else(unsupported)?;
        let row_len = info.dims().first().copied().unwrap_or(1);
        if row_len % block_len != 0 {
            return Err(GgufError::RowNotBlockAligned { path: self.path.clone(), tensor: name.to_owned(), ggml_type, row_len, block_len });
        }
        let size = (info.n_elements() / block_len).checked_mul(block_bytes);
        let start = usize::try_from(info.offset()).ok().and_then(|offset| offset.checked_add(self.data_offset));
        let bytes =
            start.zip(size).and_then(|(start, size)| self.mmap.get(start..start.checked_add(size)?)).ok_or_else(|| GgufError::TensorDataOutOfBounds {
                path: self.path.clone(),
                tensor: name.to_owned(),
                offset: (self.data_offset as u64).saturating_add(info.offset()),
                size: ((info.n_elements() / block_len) as u64).saturating_mul(block_bytes as u64),
                len: self.mmap.len(),
            })?;
        let values = tensor::dequantise(ggml_type, bytes).ok_or_else(unsupported)?;
        Ok((info.shape(), values))
    }
}
