//! Planting a known circuit in a trained task model (a simplified SIIT, as InterpBench trains
//! its models): every training step runs the batch with each component outside the planted set
//! reading another prompt's output of that component — row i gets row i+1's (the batch rolled by
//! one) — so only the planted heads and MLPs can carry the answer, and the model learns to
//! ignore the rest. Whatever the rest computes, the model's output does not depend on it: the
//! true circuit is the planted set by construction, which exact patching then checks.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use transformer::Hooks;

/// The components that may carry the task: everything else is resampled while training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planted {
    /// (layer, query head) of each planted head.
    pub heads: Vec<(usize, usize)>,
    /// Layers whose MLP is planted.
    pub mlps: Vec<usize>,
}

impl Planted {
    /// `a{l}.h{h}` and `m{l}` names of the planted components, in layer order.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<(usize, usize, String)> = self.heads.iter().map(|&(l, h)| (l, h, format!("a{l}.h{h}"))).collect();
        names.extend(self.mlps.iter().map(|&l| (l, usize::MAX, format!("m{l}"))));
        names.sort();
        names.into_iter().map(|(_, _, n)| n).collect()
    }
}

/// The hook of a planted run: non-planted head and MLP outputs replaced by the next row's.
pub struct Resample<'a, B: Backend> {
    planted: &'a Planted,
    /// Row i reads row `roll[i]` = (i + 1) mod rows.
    roll: Tensor<B, 1, Int>,
}

impl<'a, B: Backend> Resample<'a, B> {
    /// The hook for a batch of `rows` rows on `device`.
    pub fn new(planted: &'a Planted, rows: usize, device: &B::Device) -> Self {
        let roll: Vec<i64> = (0..rows).map(|i| ((i + 1) % rows) as i64).collect();
        Self { planted, roll: Tensor::from_data(TensorData::new(roll, [rows]), device) }
    }
}

impl<B: Backend> Hooks<B> for Resample<'_, B> {
    fn wants_head_outputs(&self) -> bool {
        true
    }

    fn head_outputs(&mut self, layer: usize, heads: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, n_heads, _] = heads.dims();
        let keep: Vec<f32> = (0..n_heads).map(|h| if self.planted.heads.contains(&(layer, h)) { 1.0 } else { 0.0 }).collect();
        let keep = Tensor::<B, 1>::from_data(TensorData::new(keep, [n_heads]), &heads.device()).reshape([1, 1, n_heads, 1]);
        let other = heads.clone().select(0, self.roll.clone());
        heads * keep.clone() + other * (keep.neg() + 1.0)
    }

    fn mlp_output(&mut self, layer: usize, out: Tensor<B, 3>) -> Tensor<B, 3> {
        if self.planted.mlps.contains(&layer) { out } else { out.select(0, self.roll.clone()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transformer::CpuBackend;

    #[test]
    fn only_non_planted_outputs_read_the_next_row() {
        let planted = Planted { heads: vec![(0, 1)], mlps: vec![1] };
        let device = Default::default();
        let mut hook = Resample::<CpuBackend>::new(&planted, 3, &device);
        // Three rows, one position, two heads, one dimension: row r's head h holds 10r + h.
        let heads = Tensor::<CpuBackend, 4>::from_data(TensorData::new(vec![0.0f32, 1.0, 10.0, 11.0, 20.0, 21.0], [3, 1, 2, 1]), &device);
        let out: Vec<f32> = hook.head_outputs(0, heads.clone()).into_data().to_vec().unwrap();
        assert_eq!(out, [10.0, 1.0, 20.0, 11.0, 0.0, 21.0], "head 0 reads the next row, planted head 1 its own");
        let all: Vec<f32> = hook.head_outputs(1, heads).into_data().to_vec().unwrap();
        assert_eq!(all, [10.0, 11.0, 20.0, 21.0, 0.0, 1.0], "no head of layer 1 is planted");
        let mlp = Tensor::<CpuBackend, 3>::from_data(TensorData::new(vec![0.0f32, 1.0, 2.0], [3, 1, 1]), &device);
        assert_eq!(hook.mlp_output(0, mlp.clone()).into_data().to_vec::<f32>().unwrap(), [1.0, 2.0, 0.0]);
        assert_eq!(hook.mlp_output(1, mlp).into_data().to_vec::<f32>().unwrap(), [0.0, 1.0, 2.0]);
        assert_eq!(planted.names(), ["a0.h1", "m1"]);
    }
}
