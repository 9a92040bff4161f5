//! `random:<shape>` models: a real model's shape with fast random weights and the IOI task model's
//! tokenizer, loadable wherever a model name is accepted.

use burn::module::Module;
use transformer::{CpuBackend, ModelSpec, load_model};

#[test]
fn random_gpt2_has_gpt2_smalls_parameters_and_encodes_ioi_prompts() {
    let loaded = load_model::<CpuBackend>("random:gpt2", &Default::default()).unwrap();
    assert_eq!(loaded.model.num_params(), 124_439_808);
    let ids = loaded.tokenizer.encode("When Mary and John went to the store, John gave a drink to").unwrap();
    assert!(ids.len() > 10 && ids.iter().all(|&id| (id as usize) < loaded.model.config.vocab_size));
    // Weights are seeded: two loads give the same model.
    let again = load_model::<CpuBackend>("random:gpt2", &Default::default()).unwrap();
    let (a, b) = (loaded.model.token_embedding.val().into_data(), again.model.token_embedding.val().into_data());
    assert_eq!(a, b);
}

#[test]
fn unknown_random_shapes_list_the_known_ones() {
    let err = ModelSpec::parse("random:gpt-5").unwrap_err().to_string();
    assert!(err.contains("random:gpt-5") && err.contains("random:gpt2") && err.contains("random:qwen2.5-0.5b"), "{err}");
}
