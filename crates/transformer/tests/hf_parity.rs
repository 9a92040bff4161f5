//! The Rust forward pass against Python transformers on tiny random GPT-2, Llama and Qwen2
//! checkpoints (fixtures made once by `tests/fixtures/make_hf_fixtures.py`, float64 reference).

mod common;

use common::*;
use transformer::{Batch, Readout};

/// f32 forward vs float64 reference on random weights of scale ~0.2 and logits of scale ~1.
const TOL: f32 = 1e-4;

fn check_all_positions(dir: &str, expected_dir: &str) {
    let model = load_fixture(dir);
    let exp = expected(expected_dir);
    let device = Default::default();
    for (seq, want) in exp["batch"].as_array().unwrap().iter().zip(exp["logits"].as_array().unwrap()) {
        let seq = ids(seq);
        let batch = Batch::new(std::slice::from_ref(&seq), &model.model.config, &device).unwrap();
        let got = values(model.model.forward(&batch, &Readout::All));
        let diff = max_abs_diff(&got, &flat(want));
        assert!(diff < TOL, "{dir}: sequence {seq:?} differs from transformers by {diff}");
    }
}

#[test]
fn gpt2_matches_transformers_at_every_position() {
    check_all_positions("gpt2-tiny", "gpt2-tiny");
}

#[test]
fn llama_matches_transformers_at_every_position() {
    check_all_positions("llama-tiny", "llama-tiny");
}

#[test]
fn qwen2_matches_transformers_at_every_position() {
    check_all_positions("qwen2-tiny", "qwen2-tiny");
}

#[test]
fn sharded_checkpoint_loads_like_the_single_file() {
    check_all_positions("llama-tiny-sharded", "llama-tiny");
}

#[test]
fn tokenizer_json_gives_the_python_ids() {
    for dir in ["gpt2-tiny", "llama-tiny", "qwen2-tiny"] {
        let model = load_fixture(dir);
        let exp = expected(dir);
        assert_eq!(model.tokenizer.encode(exp["text"].as_str().unwrap()).unwrap(), ids(&exp["text_ids"]), "{dir}");
    }
}

#[test]
fn padded_batch_matches_one_prompt_at_a_time() {
    for dir in ["gpt2-tiny", "llama-tiny", "qwen2-tiny"] {
        let model = load_fixture(dir);
        let exp = expected(dir);
        let seqs: Vec<Vec<u32>> = exp["batch"].as_array().unwrap().iter().map(ids).collect();
        let (single, batched) = single_and_batched(&model, &seqs);
        let diff = max_abs_diff(&single, &batched);
        assert!(diff < 1e-4, "{dir}: batched vs single differ by {diff}");
        let python = flat(&exp["last_logits_batched_padded"]);
        assert!(max_abs_diff(&batched, &python) < TOL, "{dir}: padded batch differs from transformers");
    }
}

#[test]
fn readout_at_positions_picks_those_positions() {
    let model = load_fixture("llama-tiny");
    let exp = expected("llama-tiny");
    let seqs: Vec<Vec<u32>> = exp["batch"].as_array().unwrap().iter().map(ids).collect();
    let device = Default::default();
    let batch = Batch::new(&seqs, &model.model.config, &device).unwrap();
    let got = values(model.model.forward(&batch, &Readout::At(vec![1, 0, 2])));
    let want: Vec<f32> = [(0, 1), (1, 0), (2, 2)].iter().flat_map(|&(s, p)| flat(&exp["logits"][s][p])).collect();
    assert!(max_abs_diff(&got, &want) < TOL);
}

#[test]
fn batches_that_do_not_fit_the_model_are_errors() {
    use transformer::BatchError;
    let gpt2 = load_fixture("gpt2-tiny").model.config; // vocab 96, 32 learned positions
    let device = Default::default();
    let batch = |seqs: &[Vec<u32>]| Batch::<B>::new(seqs, &gpt2, &device).map(|_| ());
    assert_eq!(batch(&[]), Err(BatchError::Empty));
    assert_eq!(batch(&[vec![1, 2], vec![]]), Err(BatchError::EmptySequence { index: 1 }));
    assert_eq!(batch(&[vec![1, 96]]), Err(BatchError::TokenOutOfVocabulary { index: 0, token: 96, vocab_size: 96 }));
    assert_eq!(batch(&[vec![1; 33]]), Err(BatchError::TooLong { index: 0, len: 33, max_positions: 32 }));
    assert_eq!(batch(&[vec![1; 32]]), Ok(()));
    let message = batch(&[vec![3, 500]]).unwrap_err().to_string();
    assert!(message.contains("500") && message.contains("vocabulary"), "{message}");
}
