//! The task metric of MIB: m = logit(correct) − logit(incorrect) at the last real token.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// m for every row of last-token logits [rows, vocab], where rows are `replicas` copies of the
/// pairs whose (correct, incorrect) tokens are `answers`; read on the device, only 2 values per row
/// come back.
pub fn logit_differences<B: Backend>(logits: Tensor<B, 2>, answers: &[(u32, u32)], replicas: usize) -> Vec<f32> {
    let rows = answers.len() * replicas;
    let idx: Vec<i64> = (0..replicas).flat_map(|_| answers.iter().flat_map(|&(c, i)| [c as i64, i as i64])).collect();
    let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(idx, [rows, 2]), &logits.device());
    let picked: Vec<f32> = logits.gather(1, idx).into_data().to_vec().expect("logits are f32");
    picked.chunks(2).map(|p| p[0] - p[1]).collect()
}
