//! Bounds-checked little-endian reads over the mapped file.

use std::path::Path;

use crate::GgufError;

/// Reads the header, metadata and tensor directory so that every malformed length or count
/// becomes a [`GgufError`] naming the file, never a panic.
pub(crate) struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
    /// The part of the file being read, named in truncation and UTF-8 errors.
    pub(crate) section: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(path: &'a Path, bytes: &'a [u8]) -> Self {
        Self { path, bytes, pos: 0, section: "header" }
    }

    pub(crate) fn path(&self) -> &'a Path {
        self.path
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn truncated(&self, needed: u64) -> GgufError {
        GgufError::Truncated { path: self.path.to_path_buf(), section: self.section, offset: self.pos, needed, len: self.bytes.len() }
    }

    /// Takes the next `n` bytes, or fails without moving if fewer are left.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], GgufError> {
        let taken = self.pos.checked_add(n).and_then(|end| self.bytes.get(self.pos..end)).ok_or_else(|| self.truncated(n as u64))?;
        self.pos += n;
        Ok(taken)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| self.truncated(N as u64))
    }

    pub(crate) fn u8(&mut self) -> Result<u8, GgufError> {
        self.array().map(u8::from_le_bytes)
    }

    pub(crate) fn i8(&mut self) -> Result<i8, GgufError> {
        self.array().map(i8::from_le_bytes)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, GgufError> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, GgufError> {
        self.array().map(i16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, GgufError> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn i32(&mut self) -> Result<i32, GgufError> {
        self.array().map(i32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, GgufError> {
        self.array().map(u64::from_le_bytes)
    }

    pub(crate) fn i64(&mut self) -> Result<i64, GgufError> {
        self.array().map(i64::from_le_bytes)
    }

    pub(crate) fn f32(&mut self) -> Result<f32, GgufError> {
        self.array().map(f32::from_le_bytes)
    }

    pub(crate) fn f64(&mut self) -> Result<f64, GgufError> {
        self.array().map(f64::from_le_bytes)
    }

    /// GGUF booleans are one byte; any non-zero byte reads as `true`, as in llama.cpp.
    pub(crate) fn bool(&mut self) -> Result<bool, GgufError> {
        self.u8().map(|b| b != 0)
    }

    /// A u64 length or count; one that does not fit in `usize` cannot fit in the file either.
    pub(crate) fn len(&mut self) -> Result<usize, GgufError> {
        let len = self.u64()?;
        usize::try_from(len).map_err(|_| self.truncated(len))
    }

    /// A GGUF string: u64 byte length, then UTF-8 bytes without a terminator.
    pub(crate) fn string(&mut self) -> Result<String, GgufError> {
        let len = self.len()?;
        let start = self.pos;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| GgufError::InvalidUtf8 {
            path: self.path.to_path_buf(),
            section: self.section,
            offset: start,
        })
    }

    /// Reads `n` items with `read`. Every item takes at least one byte of the file, so the
    /// reservation is capped by the bytes left and a corrupt count fails on truncation instead of
    /// allocating huge vectors.
    pub(crate) fn repeat<T>(&mut self, n: usize, mut read: impl FnMut(&mut Self) -> Result<T, GgufError>) -> Result<Vec<T>, GgufError> {
        let cap = self.remaining() / size_of::<T>().max(1);
        let mut items = Vec::with_capacity(n.min(cap));
        for _ in 0..n {
            items.push(read(self)?);
        }
        Ok(items)
    }
}
