//! llama.cpp stores Q/K rows permuted so that rotary pairs are adjacent (2i, 2i+1); the model must
//! give the same logits from such rows with the interleaved layout as from Hugging Face rows with
//! rotate-half.

mod common;

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use common::*;
use transformer::config::{PositionEncoding, RopeLayout};
use transformer::layers::Linear;
use transformer::{Batch, Readout};

/// llama.cpp's permutation of one projection's output columns: within each head, new column
/// 2i + j takes old column j·(d_head/2) + i.
fn permute_columns(linear: &mut Linear<B>, d_head: usize) {
    let w = linear.weight.val();
    let [d_in, d_out] = w.dims();
    let data = values(w);
    let half = d_head / 2;
    let source = |col: usize| {
        let (head, within) = (col / d_head, col % d_head);
        head * d_head + (within % 2) * half + within / 2
    };
    let permuted: Vec<f32> = (0..d_in).flat_map(|r| (0..d_out).map(move |c| (r, c))).map(|(r, c)| data[r * d_out + source(c)]).collect();
    let device = Default::default();
    linear.weight = Param::from_tensor(Tensor::from_data(TensorData::new(permuted, [d_in, d_out]), &device));
    if let Some(bias) = &linear.bias {
        let b = values(bias.val());
        let permuted: Vec<f32> = (0..d_out).map(|c| b[source(c)]).collect();
        linear.bias = Some(Param::from_tensor(Tensor::from_data(TensorData::new(permuted, [d_out]), &device)));
    }
}

fn check(dir: &str) {
    let reference = load_fixture(dir);
    let mut permuted = load_fixture(dir);
    let d_head = permuted.model.config.d_head;
    for block in &mut permuted.model.blocks {
        permute_columns(&mut block.attn.q, d_head);
        permute_columns(&mut block.attn.k, d_head);
    }
    let PositionEncoding::Rope { layout, .. } = &mut permuted.model.config.positions else {
        panic!("{dir} uses rotary positions");
    };
    assert_eq!(*layout, RopeLayout::HalfSplit);
    *layout = RopeLayout::Interleaved;

    let seqs: Vec<Vec<u32>> = expected(dir)["batch"].as_array().unwrap().iter().map(ids).collect();
    let batch = Batch::new(&seqs, &reference.model.config, &Default::default()).unwrap();
    let want = values(reference.model.forward(&batch, &Readout::All));
    let got = values(permuted.model.forward(&batch, &Readout::All));
    let diff = max_abs_diff(&want, &got);
    assert!(diff < 1e-5, "{dir}: interleaved layout on permuted rows differs by {diff}");

    // And the permutation matters: with the wrong layout the logits change.
    permuted.model.config.positions = reference.model.config.positions;
    let wrong = values(permuted.model.forward(&batch, &Readout::All));
    assert!(max_abs_diff(&want, &wrong) > 1e-3, "{dir}: layout had no effect");
}

#[test]
fn interleaved_rope_on_llama_cpp_rows_equals_rotate_half() {
    check("llama-tiny");
}

#[test]
fn interleaved_rope_with_qkv_biases() {
    check("qwen2-tiny");
}
