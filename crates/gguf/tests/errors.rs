//! Malformed and mismatched input: each failure must be the right `GgufError` variant, name the
//! file and the key or tensor, and never panic.

use std::path::{Path, PathBuf};

use gguf::{GgmlType, GgufError, GgufFile, MAX_ARRAY_DEPTH};

fn fixture_bytes() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny.gguf");
    std::fs::read(path).expect("read fixture")
}

/// Writes `bytes` to a fresh file under this test binary's temp dir and returns its path.
fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gguf-errors");
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

fn open_err(name: &str, bytes: &[u8]) -> (PathBuf, GgufError) {
    let path = write_temp(name, bytes);
    let err = GgufFile::open(&path).expect_err("malformed file must not open");
    (path, err)
}

fn assert_names(err: &GgufError, parts: &[&str]) {
    let message = err.to_string();
    for part in parts {
        assert!(message.contains(part), "`{message}` does not mention `{part}`");
    }
}

/// Byte offset of the first metadata key's length; the fixture's first key is `general.architecture`.
const FIRST_KEY: usize = 24;

/// A minimal GGUF v3 file built by hand, for inputs the Python writer refuses to produce.
#[derive(Default)]
struct Builder {
    kv_count: u64,
    tensor_count: u64,
    body: Vec<u8>,
}

impl Builder {
    fn string(&mut self, s: &str) -> &mut Self {
        self.body.extend((s.len() as u64).to_le_bytes());
        self.body.extend(s.as_bytes());
        self
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.body.extend(v.to_le_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.body.extend(v.to_le_bytes());
        self
    }

    /// Starts a key-value pair; the caller appends the value (type id and payload).
    fn key(&mut self, key: &str) -> &mut Self {
        self.kv_count += 1;
        self.string(key)
    }

    fn tensor(&mut self, name: &str, dims: &[u64], ggml_type: u32, offset: u64) -> &mut Self {
        self.tensor_count += 1;
        self.string(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ggml_type).u64(offset)
    }

    fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(self.tensor_count.to_le_bytes());
        out.extend(self.kv_count.to_le_bytes());
        out.extend(&self.body);
        out
    }
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gguf-errors/does-not-exist.gguf");
    let err = GgufFile::open(&path).expect_err("missing file");
    assert!(matches!(err, GgufError::Io { .. }), "{err:?}");
    assert_names(&err, &[&path.display().to_string()]);
}

#[test]
fn empty_file_is_truncated_in_the_header() {
    let (path, err) = open_err("empty.gguf", &[]);
    assert!(matches!(err, GgufError::Truncated { section: "header", len: 0, .. }), "{err:?}");
    assert_names(&err, &[&path.display().to_string(), "header"]);
}

#[test]
fn bad_magic_is_rejected() {
    let mut bytes = fixture_bytes();
    bytes[..4].copy_from_slice(b"GGML");
    let (path, err) = open_err("bad-magic.gguf", &bytes);
    assert!(matches!(err, GgufError::BadMagic { found, .. } if &found == b"GGML"), "{err:?}");
    assert_names(&err, &[&path.display().to_string(), "GGML"]);
}

#[test]
fn unsupported_version_is_rejected() {
    let mut bytes = fixture_bytes();
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    let (path, err) = open_err("version-1.gguf", &bytes);
    assert!(matches!(err, GgufError::UnsupportedVersion { version: 1, .. }), "{err:?}");
    assert_names(&err, &[&path.display().to_string(), "version 1"]);
}

#[test]
fn version_2_is_read_like_version_3() {
    let mut bytes = fixture_bytes();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let file = GgufFile::open(write_temp("version-2.gguf", &bytes)).expect("v2 opens");
    assert_eq!(file.version(), 2);
    assert_eq!(file.get_str("general.architecture").unwrap(), "llama");
}

#[test]
fn every_truncation_fails_cleanly() {
    let bytes = fixture_bytes();
    let whole = GgufFile::open(write_temp("whole.gguf", &bytes)).expect("fixture opens");
    let path = write_temp("truncated.gguf", &bytes);
    let shown = path.display().to_string();
    let handle = std::fs::OpenOptions::new().write(true).open(&path).expect("reopen");
    // Shrinking one file in place is far cheaper than rewriting thousands of files.
    for len in (0..bytes.len()).rev() {
        handle.set_len(len as u64).expect("truncate");
        match GgufFile::open(&path) {
            Err(err @ GgufError::Truncated { .. }) => {
                assert!(len < whole.data_offset(), "len {len}: {err}");
                assert_names(&err, &[&shown]);
            }
            Err(err) => panic!("len {len}: unexpected {err}"),
            Ok(file) => {
                // Only the padding before the data section may be missing.
                assert!(len + whole.alignment() > whole.data_offset(), "opened with {len} bytes");
                for name in file.tensor_names() {
                    match file.tensor_f32(name) {
                        Ok(decoded) => assert_eq!(decoded, whole.tensor_f32(name).unwrap()),
                        Err(GgufError::UnsupportedTensorType { .. }) => {}
                        Err(err @ GgufError::TensorDataOutOfBounds { .. }) => {
                            assert_names(&err, &[&shown, name]);
                        }
                        Err(err) => panic!("len {len}: unexpected {err}"),
                    }
                }
            }
        }
    }
}

#[test]
fn truncated_tensor_data_names_the_tensor() {
    let bytes = fixture_bytes();
    let whole = GgufFile::open(write_temp("whole-q4_1.gguf", &bytes)).expect("fixture opens");
    let cut = whole.data_offset() + whole.tensor("t.q4_1").expect("fixture tensor").offset() as usize;
    let path = write_temp("cut-data.gguf", &bytes[..cut + 10]);
    let file = GgufFile::open(&path).expect("directory is intact");
    let err = file.tensor_f32("t.q4_1").expect_err("t.q4_1 is cut");
    assert!(matches!(&err, GgufError::TensorDataOutOfBounds { tensor, .. } if tensor == "t.q4_1"));
    assert_names(&err, &[&path.display().to_string(), "t.q4_1", "past the end"]);
    assert!(file.tensor_f32("t.f32").is_ok(), "earlier tensors stay readable");
}

#[test]
fn truncated_metadata_reports_the_section() {
    let bytes = fixture_bytes();
    let (_, err) = open_err("cut-metadata.gguf", &bytes[..FIRST_KEY + 12]);
    assert!(matches!(err, GgufError::Truncated { section: "metadata", .. }), "{err:?}");
}

#[test]
fn huge_counts_and_lengths_fail_without_allocating() {
    let bytes = fixture_bytes();
    for (offset, what) in [(16, "kv count"), (8, "tensor count"), (FIRST_KEY, "key length")] {
        let mut bad = bytes.clone();
        bad[offset..offset + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        let (_, err) = open_err("huge.gguf", &bad);
        assert!(matches!(err, GgufError::Truncated { .. }), "{what}: {err:?}");
    }
}

#[test]
fn unknown_value_type_names_the_key() {
    let mut bytes = fixture_bytes();
    let key = "general.architecture";
    let type_at = FIRST_KEY + 8 + key.len();
    assert_eq!(&bytes[FIRST_KEY + 8..type_at], key.as_bytes());
    bytes[type_at..type_at + 4].copy_from_slice(&13u32.to_le_bytes());
    let (path, err) = open_err("unknown-type.gguf", &bytes);
    assert!(matches!(&err, GgufError::UnknownValueType { type_id: 13, key: k, .. } if k == key));
    assert_names(&err, &[&path.display().to_string(), key, "13"]);
}

#[test]
fn invalid_utf8_key_is_rejected() {
    let mut bytes = fixture_bytes();
    bytes[FIRST_KEY + 8] = 0xff;
    let (path, err) = open_err("bad-utf8.gguf", &bytes);
    assert!(matches!(err, GgufError::InvalidUtf8 { section: "metadata", offset: 32, .. }), "{err:?}");
    assert_names(&err, &[&path.display().to_string(), "UTF-8"]);
}

#[test]
fn missing_tensor_and_key_are_named() {
    let path = write_temp("lookups.gguf", &fixture_bytes());
    let file = GgufFile::open(&path).expect("fixture opens");
    let shown = path.display().to_string();

    let err = file.tensor_f32("blk.0.nope.weight").expect_err("no such tensor");
    assert!(matches!(&err, GgufError::MissingTensor { tensor, .. } if tensor == "blk.0.nope.weight"));
    assert_names(&err, &[&shown, "blk.0.nope.weight"]);

    let err = file.get_u32("llama.block_count").expect_err("no such key");
    assert!(matches!(&err, GgufError::MissingKey { key, .. } if key == "llama.block_count"));
    assert_names(&err, &[&shown, "llama.block_count"]);
}

#[test]
fn wrong_metadata_type_names_key_and_both_types() {
    let file = GgufFile::open(write_temp("types.gguf", &fixture_bytes())).expect("opens");
    let err = file.get_u32("test.i32").expect_err("stored as i32");
    assert!(matches!(
        &err,
        GgufError::WrongMetadataType { key, expected: "u32", found, .. } if key == "test.i32" && found == "i32"
    ));
    assert_names(&err, &["test.i32", "u32", "i32"]);

    let err = file.get_str_array("test.i32_array").expect_err("array of i32");
    assert_names(&err, &["test.i32_array", "array<string>", "array<i32>"]);
    assert!(file.get_f32("test.str_array").is_err());
}

#[test]
fn unsupported_tensor_type_names_tensor_and_type() {
    let path = write_temp("unsupported.gguf", &fixture_bytes());
    let file = GgufFile::open(&path).expect("opens");
    let err = file.tensor_f32("t.q5_0").expect_err("Q5_0 is not decoded");
    assert!(matches!(
        &err,
        GgufError::UnsupportedTensorType { tensor, ggml_type: GgmlType::Q5_0, .. } if tensor == "t.q5_0"
    ));
    assert_names(&err, &[&path.display().to_string(), "t.q5_0", "Q5_0", "id 6"]);
}

#[test]
fn unknown_ggml_type_opens_but_does_not_decode() {
    let bytes = Builder::default().tensor("weird", &[32], 1000, 0).build();
    let path = write_temp("unknown-ggml.gguf", &bytes);
    let file = GgufFile::open(&path).expect("unknown types are kept");
    assert_eq!(file.tensor("weird").unwrap().ggml_type(), GgmlType::Unknown(1000));
    let err = file.tensor_f32("weird").expect_err("cannot decode");
    assert!(matches!(err, GgufError::UnsupportedTensorType { ggml_type: GgmlType::Unknown(1000), .. }));
}

#[test]
fn rows_must_be_whole_blocks() {
    let mut builder = Builder::default();
    builder.tensor("odd", &[16, 4], 8, 0);
    let mut bytes = builder.build();
    bytes.resize(bytes.len().next_multiple_of(32) + 4 * 34, 0);
    let file = GgufFile::open(write_temp("odd-rows.gguf", &bytes)).expect("opens");
    let err = file.tensor_f32("odd").expect_err("16 is not a multiple of 32");
    assert!(matches!(err, GgufError::RowNotBlockAligned { row_len: 16, block_len: 32, .. }));
    assert_names(&err, &["odd", "Q8_0", "16", "32"]);
}

#[test]
fn deeply_nested_arrays_are_refused() {
    let mut builder = Builder::default();
    builder.key("deep").u32(9);
    for _ in 0..=MAX_ARRAY_DEPTH {
        builder.u32(9).u64(1);
    }
    let (_, err) = open_err("deep.gguf", &builder.build());
    assert!(matches!(&err, GgufError::ArrayTooDeep { key, .. } if key == "deep"), "{err:?}");
}

#[test]
fn alignment_must_be_a_u32_power_of_two() {
    let mut builder = Builder::default();
    builder.key("general.alignment").u32(4).u32(48);
    let (_, err) = open_err("align-48.gguf", &builder.build());
    assert!(matches!(err, GgufError::InvalidAlignment { alignment: 48, .. }), "{err:?}");

    let mut builder = Builder::default();
    builder.key("general.alignment").u32(8).string("32");
    let (_, err) = open_err("align-string.gguf", &builder.build());
    assert!(matches!(err, GgufError::WrongMetadataType { expected: "u32", .. }), "{err:?}");
}

#[test]
fn duplicate_keys_and_tensors_are_refused() {
    let mut builder = Builder::default();
    builder.key("a").u32(4).u32(1).key("a").u32(4).u32(2);
    let (_, err) = open_err("dup-key.gguf", &builder.build());
    assert!(matches!(&err, GgufError::DuplicateKey { key, .. } if key == "a"), "{err:?}");

    let mut builder = Builder::default();
    builder.tensor("t", &[1], 0, 0).tensor("t", &[1], 0, 32);
    let (_, err) = open_err("dup-tensor.gguf", &builder.build());
    assert!(matches!(&err, GgufError::DuplicateTensor { tensor, .. } if tensor == "t"), "{err:?}");
}

#[test]
fn inconsistent_tensor_entries_are_refused() {
    let cases: [(&str, &[u64], u64, &str); 3] = [
        ("five-dims", &[1, 1, 1, 1, 1], 0, "5 dimensions"),
        ("overflow", &[u64::MAX, 2], 0, "overflows"),
        ("misaligned", &[4], 4, "not a multiple of the alignment"),
    ];
    for (name, dims, offset, reason) in cases {
        let bytes = Builder::default().tensor(name, dims, 0, offset).build();
        let (_, err) = open_err("bad-tensor.gguf", &bytes);
        assert!(matches!(&err, GgufError::InvalidTensorInfo { tensor, .. } if tensor == name));
        assert_names(&err, &[name, reason]);
    }
}
