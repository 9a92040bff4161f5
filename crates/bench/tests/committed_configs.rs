//! The committed tracks parse, and the real-model cells run at the sample sizes the README
//! promises: the default track's SmolLM2 cells on at least 64 discovery and 64 evaluation pairs
//! (eap-ig-activations on at least 8), the real track's on at least 200 and 200.

use bench::Config;

fn config(name: &str) -> Config {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs").join(format!("{name}.toml"));
    Config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_committed_track_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".toml").map(str::to_string)).collect();
    names.sort();
    assert!(names.iter().any(|n| n == "real") && names.iter().any(|n| n == "circuit"), "{names:?}");
    for name in names {
        assert!(!config(&name).cells.is_empty(), "{name} has cells");
    }
}

#[test]
fn real_model_cells_run_at_meaningful_sample_sizes() {
    let smollm2 = |c: &Config| c.cells.iter().filter(|cell| cell.model == "smollm2-135m").cloned().collect::<Vec<_>>();
    let default_track = smollm2(&config("circuit"));
    assert!(default_track.len() >= 7, "every method on SmolLM2");
    for cell in &default_track {
        let discovery = if cell.method == "eap-ig-activations" { 8 } else { 64 };
        assert!(cell.discovery_examples >= discovery && cell.evaluation_examples >= 64, "{cell:?}");
    }
    let real = smollm2(&config("real"));
    assert!(real.len() >= 6, "the real track runs SmolLM2 with every method but eap-ig-activations");
    assert!(real.iter().all(|cell| cell.discovery_examples >= 200 && cell.evaluation_examples >= 200), "{real:?}");
}
