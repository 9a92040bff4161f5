//! Compares the reader with the fixtures written by `tests/fixtures/make_gguf_fixtures.py`,
//! whose expectations come from the `gguf` Python package (an independent implementation).

use std::collections::BTreeSet;
use std::path::PathBuf;

use gguf::{GgufFile, MetadataArray, MetadataValue};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("tiny_expected.json")).expect("read expected json");
    serde_json::from_str(&text).expect("parse expected json")
}

fn open(name: &str) -> GgufFile {
    GgufFile::open(fixture(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a u64"))
}

fn i64_of(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("{v} is not an i64"))
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| f64_of(x) as f32).collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().expect("array").iter().map(|x| u64_of(x) as usize).collect()
}

#[test]
fn layout_matches_the_python_reader() {
    let expected = expected();
    for (file_name, layout) in expected["files"].as_object().expect("files") {
        let file = open(file_name);
        assert_eq!(file.version(), 3);
        assert_eq!(file.alignment() as u64, u64_of(&layout["alignment"]), "{file_name}");
        assert_eq!(file.data_offset() as u64, u64_of(&layout["data_offset"]), "{file_name}");
        assert_eq!(file.tensors().len() as u64, u64_of(&layout["tensor_count"]), "{file_name}");
        // The Python reader also lists the three header fields as pseudo-keys.
        assert_eq!(file.metadata_entries().count() as u64 + 3, u64_of(&layout["kv_count"]));
        for (name, absolute) in layout["tensor_data_offsets"].as_object().expect("offsets") {
            let info = file.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(file.data_offset() as u64 + info.offset(), u64_of(absolute), "{name}");
        }
    }
    assert_eq!(open("tiny_align64.gguf").get_u32("general.alignment").unwrap(), 64);
    assert!(open("tiny.gguf").metadata("general.alignment").is_none());
}

#[test]
fn metadata_of_every_type_round_trips() {
    let expected = expected();
    let file = open("tiny.gguf");
    let entries = expected["metadata"].as_object().expect("metadata");
    let keys: BTreeSet<&str> = file.metadata_entries().map(|(k, _)| k).collect();
    assert_eq!(keys, entries.keys().map(String::as_str).collect());

    for (key, entry) in entries {
        let value = file.metadata(key).expect("key listed above");
        let v = &entry["value"];
        match entry["type"].as_str().expect("type tag") {
            "u8" => assert_eq!(value.as_u8().map(u64::from), Some(u64_of(v))),
            "i8" => assert_eq!(value.as_i8().map(i64::from), Some(i64_of(v))),
            "u16" => assert_eq!(value.as_u16().map(u64::from), Some(u64_of(v))),
            "i16" => assert_eq!(value.as_i16().map(i64::from), Some(i64_of(v))),
            "u32" => assert_eq!(file.get_u32(key).map(u64::from).unwrap(), u64_of(v)),
            "i32" => assert_eq!(file.get_i32(key).map(i64::from).unwrap(), i64_of(v)),
            "u64" => assert_eq!(file.get_u64(key).unwrap(), u64_of(v)),
            "i64" => assert_eq!(value.as_i64(), Some(i64_of(v))),
            "f32" => assert_eq!(file.get_f32(key).unwrap(), f64_of(v) as f32),
            "f64" => assert_eq!(value.as_f64(), Some(f64_of(v))),
            "bool" => assert_eq!(file.get_bool(key).unwrap(), v.as_bool().expect("bool")),
            "string" => assert_eq!(file.get_str(key).unwrap(), v.as_str().expect("string")),
            "string_array" => {
                let want: Vec<&str> = v.as_array().expect("array").iter().map(|s| s.as_str().unwrap()).collect();
                assert_eq!(file.get_str_array(key).unwrap(), want);
            }
            "i32_array" => {
                let want: Vec<i64> = v.as_array().unwrap().iter().map(i64_of).collect();
                let got: Vec<i64> = file.get_i32_array(key).unwrap().iter().map(|&x| i64::from(x)).collect();
                assert_eq!(got, want);
            }
            "u32_array" => {
                let want: Vec<u64> = v.as_array().unwrap().iter().map(u64_of).collect();
                let got: Vec<u64> = file.get_u32_array(key).unwrap().iter().map(|&x| u64::from(x)).collect();
                assert_eq!(got, want);
            }
            "f32_array" => assert_eq!(file.get_f32_array(key).unwrap(), f32s(v)),
            "nested_i32_array" => {
                let want: Vec<MetadataArray> = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|inner| MetadataArray::I32(inner.as_array().unwrap().iter().map(|x| i64_of(x) as i32).collect()))
                    .collect();
                assert_eq!(value, &MetadataValue::Array(MetadataArray::Array(want)));
                assert_eq!(value.type_name(), "array<array>");
            }
            other => panic!("unknown type tag {other} for {key}"),
        }
    }
}

#[test]
fn tensors_dequantise_exactly_like_the_python_package() {
    let expected = expected();
    let file = open("tiny.gguf");
    let tensors = expected["tensors"].as_object().expect("tensors");
    let names: BTreeSet<&str> = file.tensor_names().collect();
    assert_eq!(names, tensors.keys().map(String::as_str).collect());

    for (name, entry) in tensors {
        let info = file.tensor(name).expect("listed above");
        assert_eq!(info.ggml_type().to_string(), entry["ggml_type"].as_str().unwrap(), "{name}");
        assert_eq!(u64::from(info.ggml_type().id()), u64_of(&entry["ggml_type_id"]), "{name}");
        assert_eq!(info.dims(), usizes(&entry["dims"]), "{name}");
        assert_eq!(info.shape(), usizes(&entry["shape"]), "{name}");
        let Some(values) = entry.get("values") else {
            continue;
        };
        let (shape, got) = file.tensor_f32(name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shape, info.shape(), "{name}");
        let want = f32s(values);
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{name}[{i}]: got {g}, expected {w}");
        }
    }
}

#[test]
fn both_alignments_decode_the_same_data() {
    let (a, b) = (open("tiny.gguf"), open("tiny_align64.gguf"));
    assert_ne!(a.data_offset(), b.data_offset());
    for name in a.tensor_names().filter(|n| *n != "t.q5_0") {
        assert_eq!(a.tensor_f32(name).unwrap(), b.tensor_f32(name).unwrap(), "{name}");
    }
}
