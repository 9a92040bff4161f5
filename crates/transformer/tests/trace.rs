//! The traced forward exposes every MIB node, and each destination slot's input is exactly the sum
//! of the upstream node outputs plus the constant terms (positional embedding, b_O) — the additivity
//! that edge patching relies on.

mod common;

use burn::tensor::Tensor;
use common::*;
use transformer::{AttentionInput, Batch, LoadedModel, Readout, Trace};

/// Checks the residual decomposition of every slot and that per-head inputs change no logit.
fn check_decomposition(model: &LoadedModel<B>, seqs: &[Vec<u32>], tol: f32) -> f32 {
    let device = Default::default();
    let m = &model.model;
    let batch = Batch::new(seqs, &m.config, &device).unwrap();
    let mut trace = Trace::new(m.config.n_heads);
    let traced = values(m.forward_with(&batch, &Readout::All, &mut trace));
    let plain = values(m.forward(&batch, &Readout::All));
    let path_diff = max_abs_diff(&traced, &plain);
    assert!(path_diff < 1e-4, "per-head q/k/v path changes logits by {path_diff}");

    let (b, t, d) = (seqs.len(), batch.max_len(), m.config.d_model);
    assert_eq!(trace.heads.len(), m.config.n_layers);
    assert_eq!(trace.mlps.len(), m.config.n_layers);

    // Running sum of node outputs plus constants, built independently of the model's residual.
    let mut sum: Tensor<B, 3> = trace.input.clone().expect("input node traced");
    if let Some(pos) = &m.position_embedding {
        sum = sum + pos.val().slice([0..t, 0..d]).unsqueeze();
    }
    let mut worst = 0.0f32;
    let mut compare = |what: String, got: Tensor<B, 3>, want: &Tensor<B, 3>| {
        let diff = max_abs_diff(&values(got), &values(want.clone()));
        worst = worst.max(diff);
        assert!(diff < tol, "{what}: residual differs from the sum of upstream nodes by {diff}");
    };
    for layer in 0..m.config.n_layers {
        let AttentionInput::PerHead { q, k, v } = &trace.attention_inputs[layer] else {
            panic!("trace asks for per-head inputs");
        };
        for (slot, copies) in [("q", q), ("k", k), ("v", v)] {
            assert_eq!(copies.dims(), [m.config.n_heads, b, t, d]);
            for h in 0..m.config.n_heads {
                let copy: Tensor<B, 3> = copies.clone().slice([h..h + 1, 0..b, 0..t, 0..d]).squeeze_dim(0);
                compare(format!("a{layer}.h{h}<{slot}>"), copy, &sum);
            }
        }
        let heads = trace.heads[layer].clone();
        assert_eq!(heads.dims(), [b, t, m.config.n_heads, d]);
        sum = sum + heads.sum_dim(2).squeeze_dim(2);
        if let Some(b_o) = &m.blocks[layer].attn.o.bias {
            sum = sum + b_o.val().unsqueeze();
        }
        compare(format!("m{layer}"), trace.mlp_inputs[layer].clone(), &sum);
        sum = sum + trace.mlps[layer].clone();
    }
    compare("logits".into(), trace.final_input.clone().unwrap(), &sum);
    worst
}

fn fixture_batch(dir: &str) -> Vec<Vec<u32>> {
    expected(dir)["batch"].as_array().unwrap().iter().map(ids).collect()
}

#[test]
fn gpt2_slots_are_sums_of_upstream_nodes_plus_constants() {
    check_decomposition(&load_fixture("gpt2-tiny"), &fixture_batch("gpt2-tiny"), 1e-4);
}

#[test]
fn llama_slots_are_sums_of_upstream_nodes() {
    check_decomposition(&load_fixture("llama-tiny"), &fixture_batch("llama-tiny"), 1e-4);
}

#[test]
fn qwen2_slots_are_sums_of_upstream_nodes() {
    check_decomposition(&load_fixture("qwen2-tiny"), &fixture_batch("qwen2-tiny"), 1e-4);
}

#[test]
fn smollm2_slots_are_sums_of_upstream_nodes() {
    let model = transformer::load_model::<B>("smollm2-135m", &Default::default()).unwrap();
    let seqs = vec![
        model.tokenizer.encode("When Mary and John went to the store, John gave a drink to").unwrap(),
        model.tokenizer.encode("The capital of France is").unwrap(),
    ];
    let worst = check_decomposition(&model, &seqs, 1e-4);
    eprintln!("SmolLM2 worst decomposition error: {worst:e}");
}
