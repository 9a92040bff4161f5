//! Named f32 tensors read from checkpoint files, whatever their on-disk format.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::LoadError;

/// A source of named tensors, dequantised to row-major f32 (PyTorch's [out, in] order for matrices).
pub trait TensorStore {
    /// The tensor and its row-major shape.
    fn tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), LoadError>;
    /// Whether the tensor exists (e.g. an untied `lm_head.weight`).
    fn contains(&self, name: &str) -> bool;
    /// The file to name in errors about `name`.
    fn file_of(&self, name: &str) -> PathBuf;

    /// The tensor, checked to have exactly `shape` and only finite values.
    fn tensor_shaped(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let (found, data) = self.tensor(name)?;
        if found != shape {
            return Err(LoadError::WrongShape { file: self.file_of(name), name: name.into(), expected: shape.to_vec(), found });
        }
        if let Some(index) = data.iter().position(|v| !v.is_finite()) {
            return Err(LoadError::NonFiniteTensor { file: self.file_of(name), name: name.into(), index, value: data[index], len: data.len() });
        }
        Ok(data)
    }
}

/// One or more memory-mapped `.safetensors` shards of a Hugging Face checkpoint.
pub struct SafetensorsStore {
    shards: Vec<(PathBuf, Mmap)>,
    /// Tensor name → index into `shards`.
    index: HashMap<String, usize>,
}

fn map_file(path: &Path) -> Result<Mmap, LoadError> {
    let file = File::open(path).map_err(|e| LoadError::io(path, e))?;
    // SAFETY: the mapping is read-only and the checkpoint is not modified while we hold it.
    unsafe { Mmap::map(&file) }.map_err(|e| LoadError::io(path, e))
}

impl SafetensorsStore {
    /// Opens `model.safetensors` or, when present, the shards listed by `model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self, LoadError> {
        let index_path = dir.join("model.safetensors.index.json");
        if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| LoadError::io(&index_path, e))?;
            let json: serde_json::Value = serde_json::from_str(&text).map_err(|source| LoadError::Json { path: index_path.clone(), source })?;
            let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| LoadError::ConfigField {
                path: index_path.clone(),
                field: "weight_map".into(),
                message: "missing or not an object".into(),
            })?;
            let mut files: Vec<String> = Vec::new();
            let mut wanted = Vec::with_capacity(map.len());
            for (name, file) in map {
                let file = file.as_str().ok_or_else(|| LoadError::ConfigField {
                    path: index_path.clone(),
                    field: format!("weight_map.{name}"),
                    message: "not a string".into(),
                })?;
                let shard = files.iter().position(|f| f == file).unwrap_or_else(|| {
                    files.push(file.to_string());
                    files.len() - 1
                });
                wanted.push((name.clone(), shard));
            }
            let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
            let store = Self::open_files(&paths)?;
            for (name, shard) in wanted {
                if store.index.get(&name) != Some(&shard) {
                    return Err(LoadError::MissingTensor { file: paths[shard].clone(), name });
                }
            }
            Ok(store)
        } else {
            Self::open_files(&[dir.join("model.safetensors")])
        }
    }

    /// Opens the given shards and indexes their tensors; a truncated or corrupt header is an error.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self, LoadError> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let mmap = map_file(path)?;
            let tensors = SafeTensors::deserialize(&mmap).map_err(|e| LoadError::Safetensors { file: path.clone(), message: e.to_string() })?;
            for name in tensors.names() {
                index.insert(name.to_string(), i);
            }
            shards.push((path.clone(), mmap));
        }
        Ok(Self { shards, index })
    }
}

impl TensorStore for SafetensorsStore {
    fn tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), LoadError> {
        let &shard = self.index.get(name).ok_or_else(|| LoadError::MissingTensor { file: self.file_of(name), name: name.into() })?;
        let (path, mmap) = &self.shards[shard];
        let corrupt = |e: safetensors::SafeTensorError| LoadError::Safetensors { file: path.clone(), message: e.to_string() };
        let tensors = SafeTensors::deserialize(mmap).map_err(corrupt)?;
        let view = tensors.tensor(name).map_err(corrupt)?;
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => {
                return Err(LoadError::UnsupportedTensorType { file: path.clone(), name: name.into(), dtype: format!("{other:?}") });
            }
        };
        Ok((view.shape().to_vec(), data))
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn file_of(&self, name: &str) -> PathBuf {
        match self.index.get(name) {
            Some(&i) => self.shards[i].0.clone(),
            None if self.shards.len() == 1 => self.shards[0].0.clone(),
            None => self.shards.first().map(|s| s.0.parent().unwrap_or(&s.0).to_path_buf()).unwrap_or_default(),
        }
    }
}

impl TensorStore for gguf::GgufFile {
    fn tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), LoadError> {
        Ok(self.tensor_f32(name)?)
    }

    fn contains(&self, name: &str) -> bool {
        self.tensor(name).is_some()
    }

    fn file_of(&self, _name: &str) -> PathBuf {
        self.path().to_path_buf()
    }
}
