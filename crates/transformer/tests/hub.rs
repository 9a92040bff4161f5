//! Hugging Face hub checkpoints: where the cache is, offline mode, and loading a snapshot from a
//! fake cache laid out as `huggingface_hub` writes it. No test touches the network or the process
//! environment.

mod common;

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use transformer::hub::{HubOptions, snapshot_dir};
use transformer::{Batch, LoadError, LocalModel, Readout};

const REPO: &str = "test-org/tiny-llama";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Options read from exactly these variables.
fn options_from(vars: &[(&str, &str)]) -> HubOptions {
    HubOptions::from_vars(|key| vars.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string()))
}

#[test]
fn cache_location_prefers_hf_hub_cache_then_hf_home_then_home() {
    let all = [("HF_HUB_CACHE", "/cache/hub"), ("HF_HOME", "/hf-home"), ("HOME", "/home/me")];
    assert_eq!(options_from(&all).cache, PathBuf::from("/cache/hub"));
    assert_eq!(options_from(&all[1..]).cache, PathBuf::from("/hf-home/hub"));
    assert_eq!(options_from(&all[2..]).cache, PathBuf::from("/home/me/.cache/huggingface/hub"));
}

#[test]
fn endpoint_comes_from_hf_endpoint() {
    assert_eq!(options_from(&[("HF_ENDPOINT", "https://mirror.example")]).endpoint.as_deref(), Some("https://mirror.example"));
    assert_eq!(options_from(&[]).endpoint, None);
}

#[test]
fn hf_hub_offline_accepts_the_usual_true_values() {
    for value in ["1", "true", "ON", "yes"] {
        assert!(options_from(&[("HF_HUB_OFFLINE", value)]).offline, "HF_HUB_OFFLINE={value}");
    }
    for value in ["0", "false", "off", ""] {
        assert!(!options_from(&[("HF_HUB_OFFLINE", value)]).offline, "HF_HUB_OFFLINE={value}");
    }
    assert!(!options_from(&[]).offline);
}

/// An empty hub cache in its own temporary directory, removed when dropped.
struct FakeCache {
    root: PathBuf,
}

impl FakeCache {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("circuitbench-hub-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        Self { root }
    }

    fn offline(&self) -> HubOptions {
        HubOptions { cache: self.root.clone(), offline: true, endpoint: None }
    }

    /// Stores the files of fixture `name`, except `left_out`, as the `main` snapshot of [`REPO`]
    /// (`models--org--name/refs/main` holding the commit, `snapshots/<commit>/` the files) and
    /// returns the snapshot directory.
    fn add_snapshot(&self, name: &str, left_out: &[&str]) -> PathBuf {
        let repo_dir = self.root.join(format!("models--{}", REPO.replace('/', "--")));
        let snapshot = repo_dir.join("snapshots").join(COMMIT);
        fs::create_dir_all(&snapshot).unwrap();
        fs::create_dir_all(repo_dir.join("refs")).unwrap();
        fs::write(repo_dir.join("refs/main"), COMMIT).unwrap();
        for entry in fs::read_dir(fixture(name)).unwrap() {
            let entry = entry.unwrap();
            if !left_out.iter().any(|f| entry.file_name() == *f) {
                fs::copy(entry.path(), snapshot.join(entry.file_name())).unwrap();
            }
        }
        snapshot
    }
}

impl Drop for FakeCache {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Loads the snapshot `snapshot_dir` finds offline and checks it against llama-tiny's logits.
fn check_offline_snapshot_loads(fixture_name: &str) {
    let cache = FakeCache::new();
    let snapshot = cache.add_snapshot(fixture_name, &[]);
    let dir = snapshot_dir(REPO, &cache.offline()).unwrap_or_else(|e| panic!("{fixture_name}: {e}"));
    assert_eq!(dir, snapshot);

    let model = LocalModel::Dir(dir).load::<B>(&Default::default()).unwrap();
    let exp = expected("llama-tiny");
    let seq = ids(&exp["text_ids"]);
    let batch = Batch::new(std::slice::from_ref(&seq), &model.model.config, &Default::default()).unwrap();
    let diff = max_abs_diff(&values(model.model.forward(&batch, &Readout::All)), &flat(&exp["text_logits"]));
    assert!(diff < 1e-4, "{fixture_name} from the hub cache differs from transformers by {diff}");
}

#[test]
fn offline_cached_snapshot_loads() {
    check_offline_snapshot_loads("llama-tiny");
}

#[test]
fn offline_cached_sharded_snapshot_loads() {
    check_offline_snapshot_loads("llama-tiny-sharded");
}

#[test]
fn offline_empty_cache_fails_at_once_without_the_network() {
    let cache = FakeCache::new();
    let start = Instant::now();
    let err = snapshot_dir(REPO, &cache.offline()).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert!(matches!(&err, LoadError::Hub { repo, .. } if repo == REPO), "{err:?}");
    let message = err.to_string();
    for part in [REPO, "config.json", "not in the local cache", "HF_HUB_OFFLINE is set"] {
        assert!(message.contains(part), "{message:?} does not mention {part:?}");
    }
}

#[test]
fn offline_cache_missing_one_file_names_it() {
    let cases = [("llama-tiny", "tokenizer.json"), ("llama-tiny", "model.safetensors"), ("llama-tiny-sharded", "model-00002-of-00003.safetensors")];
    for (fixture_name, missing) in cases {
        let cache = FakeCache::new();
        cache.add_snapshot(fixture_name, &[missing]);
        let err = snapshot_dir(REPO, &cache.offline()).unwrap_err();
        assert!(matches!(err, LoadError::Hub { .. }), "{fixture_name} without {missing}: {err:?}");
        let message = err.to_string();
        assert!(message.contains(&format!("{missing} is not in the local cache")), "{fixture_name} without {missing}: {message:?}");
    }
}
