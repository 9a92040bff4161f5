//! A pass over a batch carrying its prefix's keys and values computes the same logits, and the
//! same activations at the positions it computes, as the full pass.

mod common;

use common::*;
use transformer::{Batch, LoadedModel, PrefixError, Readout, Trace};

/// Right-padded rows of lengths 7, 5 and 4.
fn rows() -> Vec<Vec<u32>> {
    vec![vec![3, 17, 42, 8, 5, 61, 9], vec![3, 29, 4, 60, 2], vec![3, 70, 71, 72]]
}

fn batch(model: &LoadedModel<B>) -> Batch<B> {
    Batch::new(&rows(), &model.model.config, &Default::default()).unwrap()
}

fn traced(model: &LoadedModel<B>, batch: &Batch<B>, readout: &Readout) -> (Vec<f32>, Trace<B>) {
    let mut trace = Trace::new(model.model.config.n_heads);
    let logits = values(model.model.forward_with(batch, readout, &mut trace));
    (logits, trace)
}

/// Whether the values of a suffix pass at each row's computed positions (left-aligned, `n` per
/// row) equal the full pass's [rows, t, width] at the same absolute positions, within 1e-5.
fn same_at_computed_positions(full: &[f32], suffix: &[f32], t: usize, n: usize, starts: &[usize], width: usize) -> bool {
    rows().iter().zip(starts).enumerate().all(|(row, (r, &s))| {
        (0..r.len() - s).all(|q| {
            let want = &full[(row * t + s + q) * width..(row * t + s + q + 1) * width];
            let got = &suffix[(row * n + q) * width..(row * n + q + 1) * width];
            max_abs_diff(want, got) < 1e-5
        })
    })
}

fn check(dir: &str) {
    let model = load_fixture(dir);
    let full = batch(&model);
    let (t, d) = (full.max_len(), model.model.config.d_model);
    let heads = model.model.config.n_heads;
    // Rows of lengths 7, 5, 4: one start for all, a start per row, a row computed whole.
    for starts in [vec![1, 1, 1], vec![3, 3, 3], vec![2, 4, 3], vec![5, 1, 0]] {
        let cached = full.clone().with_prefix(model.model.prefix_cache(&full, &starts)).unwrap();
        assert_eq!(cached.starts(), Some(&starts[..]));
        let n = rows().iter().zip(&starts).map(|(r, s)| r.len() - s).max().unwrap();
        for readout in [Readout::ReadPosition, Readout::At(vec![6, 4, 3])] {
            let (want, full_trace) = traced(&model, &full, &readout);
            let (got, trace) = traced(&model, &cached, &readout);
            let diff = max_abs_diff(&want, &got);
            assert!(diff < 1e-5, "{dir}, starts {starts:?}, {readout:?}: logits differ by {diff}");
            // Hooks see each row's computed positions only, with the full pass's values there.
            let n_layers = model.model.config.n_layers;
            for layer in 0..n_layers {
                let same = |a: &burn::tensor::Tensor<B, 3>, b: &burn::tensor::Tensor<B, 3>| {
                    same_at_computed_positions(&values(a.clone()), &values(b.clone()), t, n, &starts, d)
                };
                assert!(same(&full_trace.mlp_inputs[layer], &trace.mlp_inputs[layer]), "{dir}, {starts:?}: mlp input {layer}");
                let heads_same =
                    same_at_computed_positions(&values(full_trace.heads[layer].clone()), &values(trace.heads[layer].clone()), t, n, &starts, heads * d);
                assert!(heads_same, "{dir}, {starts:?}: heads of layer {layer}");
                if layer + 1 < n_layers {
                    assert!(same(&full_trace.mlps[layer], &trace.mlps[layer]), "{dir}, {starts:?}: mlp {layer}");
                }
            }
            // The last MLP runs at the readout positions alone; elsewhere nothing reads it.
            let positions: Vec<usize> = match &readout {
                Readout::At(p) => p.clone(),
                _ => rows().iter().map(|r| r.len() - 1).collect(),
            };
            let (got_last, want_last) = (values(trace.mlps[n_layers - 1].clone()), values(full_trace.mlps[n_layers - 1].clone()));
            for (row, (&p, &s)) in positions.iter().zip(&starts).enumerate() {
                for q in 0..n {
                    let got = &got_last[(row * n + q) * d..(row * n + q + 1) * d];
                    if s + q == p {
                        let want = &want_last[(row * t + p) * d..(row * t + p + 1) * d];
                        assert!(max_abs_diff(got, want) < 1e-5, "{dir}: the last MLP at the readout position");
                    } else {
                        assert!(got.iter().all(|&x| x == 0.0), "{dir}: the last MLP is zero where nothing reads it");
                    }
                }
            }
        }
    }
}

#[test]
fn gpt2_suffix_passes_match_the_full_pass() {
    check("gpt2-tiny");
}

#[test]
fn llama_suffix_passes_match_the_full_pass() {
    check("llama-tiny");
}

#[test]
fn qwen2_suffix_passes_match_the_full_pass() {
    check("qwen2-tiny");
}

#[test]
fn repeated_batches_carry_their_prefix() {
    let model = load_fixture("llama-tiny");
    let full = batch(&model);
    let cached = full.clone().with_prefix(model.model.prefix_cache(&full, &[2, 4, 1])).unwrap();
    let want = values(model.model.forward(&full.repeat(3), &Readout::ReadPosition));
    let got = values(model.model.forward(&cached.repeat(3), &Readout::ReadPosition));
    assert_eq!(cached.repeat(3).size(), 9);
    assert!(max_abs_diff(&want, &got) < 1e-5);
}

#[test]
fn a_prefix_that_does_not_fit_the_batch_is_refused() {
    let model = load_fixture("gpt2-tiny");
    let full = batch(&model);
    let other = Batch::new(&rows()[..2], &model.model.config, &Default::default()).unwrap();
    let err = other.with_prefix(model.model.prefix_cache(&full, &[2, 2, 2])).unwrap_err();
    assert_eq!(err, PrefixError::Rows { cached: 3, rows: 2 });
    // Row 2 has 4 tokens, read at its last: a prefix of 4 leaves it nothing to compute.
    let err = full.clone().with_prefix(model.model.prefix_cache(&full, &[1, 1, 4])).unwrap_err();
    assert_eq!(err, PrefixError::ReadWithinPrefix { index: 2, read: 3, start: 4 });
    assert!(err.to_string().contains("row 2 is read at position 3, inside its cached prefix of 4"), "{err}");
    // Read at position 1, row 0 cannot skip two positions.
    let early = full.clone().reading_at(&[1, 3, 3]).unwrap();
    let err = early.with_prefix(model.model.prefix_cache(&full, &[2, 1, 1])).unwrap_err();
    assert_eq!(err, PrefixError::ReadWithinPrefix { index: 0, read: 1, start: 2 });
    // The other way round: a batch skipping its prefix cannot be read inside it.
    let skipping = full.clone().with_prefix(model.model.prefix_cache(&full, &[2, 1, 1])).unwrap();
    let err = skipping.reading_at(&[1, 3, 3]).unwrap_err();
    assert_eq!(err, transformer::BatchError::ReadWithinPrefix { index: 0, read: 1, start: 2 });
}
