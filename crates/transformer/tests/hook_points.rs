//! The hook points inside a node (each MLP's hidden layer, each layer's attention pattern) are
//! what the forward pass computes with, and two hooks composed as a pair see every value in turn.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use transformer::layers::Mlp;
use transformer::{AttentionInput, Batch, Hooks, LoadedModel, NoHooks, Readout, Trace};

fn fixture_batch(dir: &str) -> Vec<Vec<u32>> {
    expected(dir)["batch"].as_array().unwrap().iter().map(ids).collect()
}

/// A fixture model with its (right-padded, lengths 7, 5, 3) batch.
fn model_and_batch(dir: &str) -> (LoadedModel<B>, Batch<B>) {
    let model = load_fixture(dir);
    let batch = Batch::new(&fixture_batch(dir), &model.model.config, &Default::default()).unwrap();
    (model, batch)
}

fn traced(model: &LoadedModel<B>, batch: &Batch<B>) -> (Vec<f32>, Trace<B>) {
    let mut trace = Trace::new(model.model.config.n_heads);
    let logits = values(model.model.forward_with(batch, &Readout::All, &mut trace));
    (logits, trace)
}

/// Whether `query` may attend to `key` in a row of real length `len`.
fn allowed(query: usize, key: usize, len: usize) -> bool {
    key <= query && key < len
}

/// The recorded hidden layer, multiplied through the down projection by hand, is the MLP output;
/// and it is the activation of the normed MLP input (after GELU or the gated product).
fn check_hidden_layer(dir: &str, gated: bool) {
    let (model, batch) = model_and_batch(dir);
    let m = &model.model;
    let (_, trace) = traced(&model, &batch);
    let (b, t) = (batch.size(), batch.max_len());
    assert_eq!(trace.mlp_hidden.len(), m.config.n_layers);
    for (layer, block) in m.blocks.iter().enumerate() {
        let hidden = trace.mlp_hidden[layer].clone();
        assert_eq!(hidden.dims(), [b, t, m.config.d_mlp]);

        let down = block.mlp.down();
        let mut by_hand = hidden.clone().matmul(down.weight.val().unsqueeze());
        if let Some(bias) = &down.bias {
            by_hand = by_hand + bias.val().unsqueeze();
        }
        let diff = max_abs_diff(&values(by_hand), &values(trace.mlps[layer].clone()));
        assert!(diff < 1e-5, "{dir} layer {layer}: hidden @ W_down + b differs from the MLP output by {diff}");

        let x = block.mlp_norm.forward(trace.mlp_inputs[layer].clone(), &transformer::GradientRules::IDENTITY);
        let activation = match &block.mlp {
            Mlp::Gelu(mlp) => {
                assert!(!gated);
                transformer::layers::gelu_tanh(mlp.fc_in.forward(x))
            }
            Mlp::Gated(mlp) => {
                assert!(gated);
                transformer::layers::silu(mlp.gate.forward(x.clone())) * mlp.up.forward(x)
            }
            Mlp::Relu(_) => panic!("{dir} is a GPT-2 or Llama fixture"),
        };
        let diff = max_abs_diff(&values(activation), &values(hidden));
        assert!(diff < 1e-6, "{dir} layer {layer}: the hidden point is not the activation (off by {diff})");
    }
}

#[test]
fn gpt2_hidden_layer_through_the_down_projection_is_the_mlp_output() {
    check_hidden_layer("gpt2-tiny", false);
}

#[test]
fn llama_hidden_layer_through_the_down_projection_is_the_mlp_output() {
    check_hidden_layer("llama-tiny", true);
}

/// Replaces layer `layer`'s MLP hidden activations with zeros.
struct ZeroHidden(usize);

impl Hooks<B> for ZeroHidden {
    fn mlp_hidden(&mut self, layer: usize, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        if layer == self.0 { hidden.zeros_like() } else { hidden }
    }
}

/// With the hidden layer zeroed the MLP outputs its bias (GPT-2) or zero (Llama, no bias), and the
/// logits change.
fn check_zeroed_hidden_layer(dir: &str) {
    let (model, batch) = model_and_batch(dir);
    let m = &model.model;
    let (b, t, d) = (batch.size(), batch.max_len(), m.config.d_model);
    let plain = values(m.forward(&batch, &Readout::All));
    for layer in 0..m.config.n_layers {
        let mut trace = Trace::new(m.config.n_heads);
        let logits = values(m.forward_with(&batch, &Readout::All, &mut (ZeroHidden(layer), &mut trace)));
        let hidden = values(trace.mlp_hidden[layer].clone());
        assert!(hidden.iter().all(|&h| h == 0.0), "{dir} layer {layer}: the trace after the zeroing hook records zeros");
        let want = match &m.blocks[layer].mlp.down().bias {
            Some(bias) => values(bias.val().unsqueeze::<3>().expand([b, t, d])),
            None => vec![0.0; b * t * d],
        };
        assert_eq!(want.iter().any(|&w| w != 0.0), m.blocks[layer].mlp.down().bias.is_some(), "GPT-2's MLP bias is not zero");
        let diff = max_abs_diff(&values(trace.mlps[layer].clone()), &want);
        assert!(diff < 1e-6, "{dir} layer {layer}: the MLP output with a zero hidden layer is not its bias (off by {diff})");
        let changed = max_abs_diff(&logits, &plain);
        assert!(changed > 1e-3, "{dir} layer {layer}: zeroing the hidden layer leaves the logits alone ({changed})");
    }
}

#[test]
fn gpt2_zero_hidden_layer_leaves_the_mlp_bias() {
    check_zeroed_hidden_layer("gpt2-tiny");
}

#[test]
fn llama_zero_hidden_layer_leaves_zero() {
    check_zeroed_hidden_layer("llama-tiny");
}

/// Recorded patterns have one row per query, summing to 1 over the allowed keys, 0 elsewhere.
fn check_patterns(dir: &str) {
    let (model, batch) = model_and_batch(dir);
    let cfg = &model.model.config;
    let (_, trace) = traced(&model, &batch);
    let (b, h, t) = (batch.size(), cfg.n_heads, batch.max_len());
    assert_eq!(trace.attention_patterns.len(), cfg.n_layers);
    for (layer, pattern) in trace.attention_patterns.iter().enumerate() {
        assert_eq!(pattern.dims(), [b, h, t, t]);
        let p = values(pattern.clone());
        for row in 0..b {
            let len = batch.lengths[row];
            for head in 0..h {
                for query in 0..t {
                    let at = |key: usize| p[((row * h + head) * t + query) * t + key];
                    let sum: f32 = (0..t).map(at).sum();
                    assert!((sum - 1.0).abs() < 1e-5, "{dir} layer {layer} row {row} head {head} query {query}: sums to {sum}");
                    for key in 0..t {
                        if allowed(query, key, len) {
                            assert!(at(key) > 0.0, "{dir} layer {layer}: allowed key {key} of query {query} gets no weight");
                        } else {
                            assert_eq!(at(key), 0.0, "{dir} layer {layer} row {row}: masked key {key} of query {query} gets weight");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn gpt2_patterns_are_distributions_over_allowed_keys() {
    check_patterns("gpt2-tiny");
}

#[test]
fn llama_patterns_are_distributions_over_allowed_keys() {
    check_patterns("llama-tiny");
}

/// Replaces layer `layer`'s pattern with `pattern`.
struct ReplacePattern {
    layer: usize,
    pattern: Tensor<B, 4>,
}

impl Hooks<B> for ReplacePattern {
    fn attention_pattern(&mut self, layer: usize, pattern: Tensor<B, 4>) -> Tensor<B, 4> {
        if layer == self.layer { self.pattern.clone() } else { pattern }
    }
}

/// Records every layer's pattern on the plain (shared-input) path.
struct RecordPatterns(Vec<Tensor<B, 4>>);

impl Hooks<B> for RecordPatterns {
    fn attention_pattern(&mut self, _layer: usize, pattern: Tensor<B, 4>) -> Tensor<B, 4> {
        self.0.push(pattern.clone());
        pattern
    }
}

/// Equal weight on every allowed key: [b, h, t, t].
fn uniform_pattern(batch: &Batch<B>, n_heads: usize) -> Tensor<B, 4> {
    let (b, t) = (batch.size(), batch.max_len());
    let mut p = Vec::with_capacity(b * n_heads * t * t);
    for &len in &batch.lengths {
        for _ in 0..n_heads {
            for query in 0..t {
                let n = (0..t).filter(|&key| allowed(query, key, len)).count() as f32;
                p.extend((0..t).map(|key| if allowed(query, key, len) { 1.0 / n } else { 0.0 }));
            }
        }
    }
    Tensor::from_data(TensorData::new(p, [b, n_heads, t, t]), &Default::default())
}

/// A layer's pattern fed back from an earlier pass leaves the logits bit-identical; a uniform
/// pattern makes each head's output the mean of its values over the allowed keys, through W_O, as
/// computed here from the head's v input, and gives different, finite logits.
fn check_replaced_pattern(dir: &str) {
    let (model, batch) = model_and_batch(dir);
    let m = &model.model;
    let cfg = &m.config;
    let (b, h, t, d, dh) = (batch.size(), cfg.n_heads, batch.max_len(), cfg.d_model, cfg.d_head);
    let mut recorded = RecordPatterns(Vec::new());
    let plain = values(m.forward_with(&batch, &Readout::All, &mut recorded));
    assert_eq!(plain, values(m.forward(&batch, &Readout::All)), "recording patterns changes no logit");
    for layer in 0..cfg.n_layers {
        let mut same = ReplacePattern { layer, pattern: recorded.0[layer].clone() };
        let fed_back = values(m.forward_with(&batch, &Readout::All, &mut same));
        assert_eq!(fed_back, plain, "{dir} layer {layer}: feeding the pattern back changes the logits");

        let mut uniform = ReplacePattern { layer, pattern: uniform_pattern(&batch, h) };
        let mut after = Trace::new(h);
        let logits = values(m.forward_with(&batch, &Readout::All, &mut (&mut uniform, &mut after)));
        assert!(logits.iter().all(|x| x.is_finite()), "{dir} layer {layer}: uniform pattern gives non-finite logits");
        let changed = max_abs_diff(&logits, &plain);
        assert!(changed > 1e-3, "{dir} layer {layer}: a uniform pattern leaves the logits alone ({changed})");
        assert_eq!(values(after.attention_patterns[layer].clone()), values(uniform.pattern.clone()));

        // By hand: v of query head h from its (per-head) v input, through its KV head's weights.
        let attn = &m.blocks[layer].attn;
        let AttentionInput::PerHead { v: v_in, .. } = &after.attention_inputs[layer] else { panic!("the trace reads per head") };
        let group = h / attn.n_kv_heads;
        let w_o = attn.o.weight.val();
        let heads = after.heads[layer].clone(); // [b, t, h, d]
        for head in 0..h {
            let kv = head / group;
            let x: Tensor<B, 3> = v_in.clone().slice([head..head + 1, 0..b, 0..t, 0..d]).squeeze_dim(0);
            let x = m.blocks[layer].attn_norm.forward(x, &transformer::GradientRules::IDENTITY);
            let w_v = attn.v.weight.val().slice([0..d, kv * dh..(kv + 1) * dh]);
            let mut v = x.matmul(w_v.unsqueeze());
            if let Some(bias) = &attn.v.bias {
                v = v + bias.val().narrow(0, kv * dh, dh).unsqueeze();
            }
            let p: Tensor<B, 3> = uniform.pattern.clone().slice([0..b, head..head + 1, 0..t, 0..t]).squeeze_dim(1);
            let out = p.matmul(v).matmul(w_o.clone().slice([head * dh..(head + 1) * dh, 0..d]).unsqueeze());
            let got: Tensor<B, 3> = heads.clone().slice([0..b, 0..t, head..head + 1, 0..d]).squeeze_dim(2);
            let diff = max_abs_diff(&values(out), &values(got));
            assert!(diff < 1e-5, "{dir} layer {layer} head {head}: output under a uniform pattern off by {diff}");
        }
    }
}

#[test]
fn gpt2_replaced_pattern_is_what_multiplies_v() {
    check_replaced_pattern("gpt2-tiny");
}

#[test]
fn llama_replaced_pattern_is_what_multiplies_v() {
    check_replaced_pattern("llama-tiny");
}

/// Passes everything through but asks for per-head outputs.
struct WantsHeads;

impl Hooks<B> for WantsHeads {
    fn wants_head_outputs(&self) -> bool {
        true
    }
}

#[test]
fn composed_pass_through_hooks_give_the_plain_logits_bit_for_bit() {
    for dir in ["gpt2-tiny", "llama-tiny"] {
        let (model, batch) = model_and_batch(dir);
        let m = &model.model;
        let plain = values(m.forward(&batch, &Readout::All));
        let pair = values(m.forward_with(&batch, &Readout::All, &mut (NoHooks, NoHooks)));
        assert_eq!(pair, plain, "{dir}: (NoHooks, NoHooks)");
        let nested = values(m.forward_with(&batch, &Readout::All, &mut ((NoHooks, &mut NoHooks), NoHooks)));
        assert_eq!(nested, plain, "{dir}: nested pairs");
        // Per-head outputs when either hook wants them, and only then: the fused output
        // projection and the per-head sum round differently.
        let heads = values(m.forward_with(&batch, &Readout::All, &mut WantsHeads));
        assert_ne!(heads, plain, "{dir}: the per-head path should round differently from the fused one");
        for (what, logits) in [
            ("(WantsHeads, NoHooks)", values(m.forward_with(&batch, &Readout::All, &mut (WantsHeads, NoHooks)))),
            ("(NoHooks, WantsHeads)", values(m.forward_with(&batch, &Readout::All, &mut (NoHooks, WantsHeads)))),
        ] {
            assert_eq!(logits, heads, "{dir}: {what}");
        }
    }
}

/// Doubles MLP 0's output and adds `delta` · (coordinate index) to head 1's q copy of layer 1 (per
/// head; not a constant, which LayerNorm would remove), the kind of change a patcher makes.
struct Patcher {
    n_heads: usize,
    delta: f32,
}

impl Hooks<B> for Patcher {
    fn attention_input(&mut self, layer: usize, resid: Tensor<B, 3>) -> AttentionInput<B> {
        if layer != 1 {
            return AttentionInput::Shared(resid);
        }
        let AttentionInput::PerHead { q, k, v } = AttentionInput::per_head(&resid, self.n_heads) else { unreachable!() };
        let [h, b, t, d] = q.dims();
        let shift: Vec<f32> = (0..h * b * t * d).map(|i| if i / (b * t * d) == 1 { self.delta * (i % d) as f32 } else { 0.0 }).collect();
        AttentionInput::PerHead { q: q + Tensor::from_data(TensorData::new(shift, [h, b, t, d]), &resid.device()), k, v }
    }

    fn mlp_output(&mut self, layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        if layer == 0 { out * 2.0 } else { out }
    }
}

/// A trace placed after a patcher records the patched values, one placed before it the values
/// the patcher was given; either way the rest of the pass runs on the patched values.
#[test]
fn a_composed_trace_records_values_as_seen_at_its_place() {
    let (model, batch) = model_and_batch("gpt2-tiny");
    let m = &model.model;
    let (b, h, t, d) = (batch.size(), m.config.n_heads, batch.max_len(), m.config.d_model);
    let (_, plain) = traced(&model, &batch);
    let delta = 0.1;

    let mut patcher = Patcher { n_heads: h, delta };
    let mut after = Trace::new(h);
    let patched = values(m.forward_with(&batch, &Readout::All, &mut (&mut patcher, &mut after)));
    let alone = values(m.forward_with(&batch, &Readout::All, &mut Patcher { n_heads: h, delta }));
    let diff = max_abs_diff(&patched, &alone);
    assert!(diff < 1e-5, "a trace beside the patcher changes its logits by {diff}");
    assert!(max_abs_diff(&alone, &values(m.forward(&batch, &Readout::All))) > 1e-3, "the patcher changes the logits");

    // MLP 0 recorded doubled, and MLP 1 reads the doubled output.
    let doubled = values(plain.mlps[0].clone() * 2.0);
    assert!(max_abs_diff(&values(after.mlps[0].clone()), &doubled) < 1e-6);
    let resid_1 = values(after.mlp_inputs[0].clone() + after.mlps[0].clone());
    let AttentionInput::PerHead { q, k, .. } = &after.attention_inputs[1] else { panic!("layer 1 reads per head") };
    let k_0 = values(k.clone().slice([0..1, 0..b, 0..t, 0..d]));
    assert!(max_abs_diff(&k_0, &resid_1) < 1e-5, "layer 1's inputs build on the doubled MLP 0");
    // Layer 1's q copies recorded as patched: head 1 shifted, head 0 not.
    let q_head = |head: usize| values(q.clone().slice([head..head + 1, 0..b, 0..t, 0..d]));
    assert!(max_abs_diff(&q_head(0), &resid_1) < 1e-5);
    let shifted: Vec<f32> = resid_1.iter().enumerate().map(|(i, x)| x + delta * (i % d) as f32).collect();
    assert!(max_abs_diff(&q_head(1), &shifted) < 1e-5, "the trace after the patcher records the shifted q copy");

    // Placed first, the trace records MLP 0 as the model produced it, yet the pass is patched.
    let mut before = Trace::new(h);
    let patched_first = values(m.forward_with(&batch, &Readout::All, &mut (&mut before, Patcher { n_heads: h, delta })));
    assert!(max_abs_diff(&values(before.mlps[0].clone()), &values(plain.mlps[0].clone())) < 1e-6, "the first hook sees the unpatched output");
    let resid_1_before = values(before.mlp_inputs[0].clone() + before.mlps[0].clone() * 2.0);
    assert!(max_abs_diff(&resid_1_before, &resid_1) < 1e-5, "the pass after the first hook runs on the doubled MLP 0");
    // The patcher's attention input is never asked for after a trace (which reads per head): only
    // MLP 0 is patched, so the logits differ from the fully patched pass.
    let AttentionInput::PerHead { q, .. } = &before.attention_inputs[1] else { panic!("layer 1 reads per head") };
    assert!(max_abs_diff(&values(q.clone().slice([1..2, 0..b, 0..t, 0..d])), &resid_1) < 1e-5);
    let diff = max_abs_diff(&patched_first, &patched);
    assert!(diff > 1e-3, "the q patch changes the logits by only {diff}");
}
