//! Matrix products that read burn-ndarray's operands in place.
//!
//! burn-ndarray's matmul first reshapes each operand to three dimensions, and its reshape makes
//! every array that is not in row-major order contiguous, element by element: a transposed weight,
//! a slice of rows, a permuted view. matrixmultiply (and BLAS) take strides, so on the CPU backend
//! these products hand ndarray the views instead, and on burn's autodiff over it [`matmul`] is an
//! operation of its own whose backward does the same: autodiff's own matmul backward multiplies by
//! the transpose of the other operand, which burn-ndarray copied for every weight of every layer in
//! every backward pass. On any other backend each product is burn's matmul.

use std::any::Any;

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary};
use burn::tensor::backend::{Backend, BackendTypes};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_ndarray::NdArrayTensor;
use ndarray::{Array2, ArrayView2, Axis, Ix2, Ix3, linalg::general_mat_mul, s};

use crate::CpuBackend;

/// The primitive float tensor of autodiff over the CPU backend (the type the tests and the
/// attribution methods run on).
type AutodiffPrimitive = <Autodiff<CpuBackend> as BackendTypes>::FloatTensorPrimitive;

/// The tensor's primitive as a concrete type `P`, when it is one (a shared handle, no copy).
fn primitive_as<P: Clone + 'static, B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<P> {
    let primitive = t.clone().into_primitive().tensor();
    (&primitive as &dyn Any).downcast_ref::<P>().cloned()
}

/// A concrete primitive back as a tensor of `B` (which it is, as the caller downcast it from one).
fn tensor_from<P: 'static, B: Backend, const D: usize>(primitive: P) -> Tensor<B, D> {
    let boxed: Box<dyn Any> = Box::new(primitive);
    let primitive = *boxed.downcast::<B::FloatTensorPrimitive>().expect("the operands were this backend's");
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// burn-ndarray's f32 array as a 2-D view, if it is one.
fn view2(t: &NdArrayTensor) -> Option<ArrayView2<'_, f32>> {
    match t {
        NdArrayTensor::F32(a) => a.view().into_dimensionality::<Ix2>().ok(),
        _ => None,
    }
}

/// `op(a) @ op(b)` on views, op = transpose where asked; a fresh row-major array.
fn view_product(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, transpose_a: bool, transpose_b: bool) -> NdArrayTensor {
    let a = if transpose_a { a.reversed_axes() } else { a };
    let b = if transpose_b { b.reversed_axes() } else { b };
    let mut out = Array2::<f32>::zeros((a.nrows(), b.ncols()));
    general_mat_mul(1.0, &a, &b, 0.0, &mut out);
    NdArrayTensor::from(out.into_dyn().into_shared())
}

/// `a @ b` for [m, k] × [k, n]; see the module docs. Used for every linear map and the unembedding.
pub fn matmul<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 2> {
    if let (Some(pa), Some(pb)) = (primitive_as::<NdArrayTensor, B, 2>(&a), primitive_as::<NdArrayTensor, B, 2>(&b))
        && let (Some(va), Some(vb)) = (view2(&pa), view2(&pb))
    {
        return tensor_from(view_product(va, vb, false, false));
    }
    if let (Some(pa), Some(pb)) = (primitive_as::<AutodiffPrimitive, B, 2>(&a), primitive_as::<AutodiffPrimitive, B, 2>(&b))
        && view2(&pa.primitive).is_some()
        && view2(&pb.primitive).is_some()
    {
        return tensor_from(autodiff_matmul(pa, pb));
    }
    a.matmul(b)
}

/// Backward of [`matmul`] on autodiff over burn-ndarray: ∂a = g bᵀ and ∂b = aᵀ g, on views.
#[derive(Debug)]
struct ViewMatmul;

impl Backward<CpuBackend, 2> for ViewMatmul {
    /// The operands each gradient needs: a (for ∂b) and b (for ∂a), kept only when needed.
    type State = (Option<NodeId>, Option<NodeId>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let (a, b) = ops.state;
        let a = a.map(|id| checkpointer.retrieve_node_output::<NdArrayTensor>(id));
        let b = b.map(|id| checkpointer.retrieve_node_output::<NdArrayTensor>(id));
        fn f32_view(t: &NdArrayTensor) -> ArrayView2<'_, f32> {
            view2(t).expect("matmul's operands and gradient are 2-D f32")
        }
        binary::<CpuBackend, _, _>(
            ops.parents,
            ops.node,
            grads,
            |g| view_product(f32_view(&g), f32_view(b.as_ref().expect("b is kept when a is tracked")), false, true),
            |g| view_product(f32_view(a.as_ref().expect("a is kept when b is tracked")), f32_view(&g), true, false),
        );
    }
}

/// [`matmul`] as an autodiff operation over burn-ndarray (the pattern of burn's own matmul).
fn autodiff_matmul(a: AutodiffPrimitive, b: AutodiffPrimitive) -> AutodiffPrimitive {
    let product = |a: &NdArrayTensor, b: &NdArrayTensor| view_product(view2(a).expect("2-D f32"), view2(b).expect("2-D f32"), false, false);
    let (a_tracked, b_tracked) = (a.is_tracked(), b.is_tracked());
    match ViewMatmul.prepare::<NoCheckpointing>([a.node.clone(), b.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let a_state = b_tracked.then(|| prep.checkpoint(&a));
            let b_state = a_tracked.then(|| prep.checkpoint(&b));
            prep.finish((a_state, b_state), product(&a.primitive, &b.primitive))
        }
        OpsKind::UnTracked(prep) => prep.finish(product(&a.primitive, &b.primitive)),
    }
}

/// `a[..rows] @ bᵀ` as row-major f32 values [rows, b's rows]: the gradient methods' δ·∇
/// contraction, where burn-ndarray would copy the row range of `a` and make `bᵀ` contiguous —
/// hundreds of MB per batch (a third of an EAP run).
pub fn rows_times_transposed<B: Backend>(a: &Tensor<B, 2>, rows: usize, b: &Tensor<B, 2>) -> Vec<f32> {
    if let (Some(pa), Some(pb)) = (primitive_as::<NdArrayTensor, B, 2>(a), primitive_as::<NdArrayTensor, B, 2>(b))
        && let (Some(va), Some(vb)) = (view2(&pa), view2(&pb))
    {
        let product = view_product(va.slice_move(s![..rows, ..]), vb, false, true);
        return view2(&product).expect("a 2-D product").iter().copied().collect();
    }
    let width = a.dims()[1];
    a.clone().slice([0..rows, 0..width]).matmul(b.clone().transpose()).into_data().to_vec().expect("f32 products")
}

/// `w @ x[:, rows]` per batch entry: w [batch, m, rows.len()], x [batch, n, width] with `rows`
/// ascending → [batch, m, width]: the patching engine's per-group product, a fifth of an
/// evaluation pass. On burn-ndarray a leading run 0..k of rows is read through a view and any other
/// set gathered once (burn's slice and select copy the rows, and its batched matmul copies them
/// again, as they share the buffer's storage).
pub fn selected_rows_product<B: Backend>(w: Tensor<B, 3>, x: &Tensor<B, 3>, rows: &[usize]) -> Tensor<B, 3> {
    let leading = rows.iter().enumerate().all(|(i, &u)| i == u);
    if let (Some(NdArrayTensor::F32(sw)), Some(NdArrayTensor::F32(sx))) = (primitive_as::<NdArrayTensor, B, 3>(&w), primitive_as::<NdArrayTensor, B, 3>(x)) {
        let vw = sw.view().into_dimensionality::<Ix3>().expect("3-D tensors have 3-D views");
        let vx = sx.view().into_dimensionality::<Ix3>().expect("3-D tensors have 3-D views");
        let (batch, m, _) = vw.dim();
        let mut out = ndarray::Array3::<f32>::zeros((batch, m, vx.dim().2));
        for r in 0..batch {
            let (wr, xr) = (vw.index_axis(Axis(0), r), vx.index_axis(Axis(0), r));
            let mut or = out.index_axis_mut(Axis(0), r);
            if m == 1 {
                // One destination (an MLP's input, the logits'): a sum of scaled rows reads each
                // row once, where a GEMM would pack them all and pad the single row to a tile.
                let mut acc = or.row_mut(0);
                for (j, &u) in rows.iter().enumerate() {
                    let weight = wr[[0, j]];
                    if weight != 0.0 {
                        acc.scaled_add(weight, &xr.row(u));
                    }
                }
            } else if leading {
                general_mat_mul(1.0, &wr, &xr.slice(s![..rows.len(), ..]), 0.0, &mut or);
            } else {
                general_mat_mul(1.0, &wr, &xr.select(Axis(0), rows), 0.0, &mut or);
            }
        }
        return tensor_from(NdArrayTensor::from(out.into_dyn().into_shared()));
    }
    let [batch, _, width] = x.dims();
    let selected = if leading {
        x.clone().slice([0..batch, 0..rows.len(), 0..width])
    } else {
        let index: Vec<i64> = rows.iter().map(|&u| u as i64).collect();
        x.clone().select(1, Tensor::<B, 1, burn::tensor::Int>::from_data(TensorData::new(index, [rows.len()]), &x.device()))
    };
    w.matmul(selected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type AD = Autodiff<CpuBackend>;

    fn random<B: Backend, const D: usize>(shape: [usize; D]) -> Tensor<B, D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().expect("f32 tensor")
    }

    fn assert_close(ours: &[f32], expected: &[f32], what: &str) {
        assert_eq!(ours.len(), expected.len(), "{what}: lengths");
        for (i, (a, b)) in ours.iter().zip(expected).enumerate() {
            assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{what}, entry {i}: {a} vs {b}");
        }
    }

    #[test]
    fn matmul_on_views_matches_burns_for_transposed_and_sliced_operands() {
        let a = random::<CpuBackend, 2>([9, 7]);
        let w = random::<CpuBackend, 2>([5, 7]);
        let cases = [
            (a.clone(), w.clone().transpose()),
            (a.clone().transpose().slice([0..7, 2..8]).transpose(), w.clone().transpose()),
            (a.clone().slice([1..5, 0..7]), w.clone().transpose().slice([0..7, 1..4])),
        ];
        for (i, (x, y)) in cases.into_iter().enumerate() {
            let expected = values(x.clone().matmul(y.clone()));
            assert_close(&values(matmul(x.clone(), y.clone())), &expected, &format!("case {i} on burn-ndarray"));
            // The same product through the autodiff operation.
            let on_autodiff = matmul(Tensor::<AD, 2>::from_inner(x), Tensor::<AD, 2>::from_inner(y));
            assert_close(&values(on_autodiff), &expected, &format!("case {i} on autodiff"));
        }
    }

    #[test]
    fn matmul_gradients_match_burns_on_both_operands() {
        let (a0, b0) = (random::<CpuBackend, 2>([6, 4]), random::<CpuBackend, 2>([3, 4]));
        let upstream = random::<CpuBackend, 2>([6, 3]);
        // Loss Σ upstream ⊙ (a @ bᵀ): bᵀ is a transposed view, as for a tied unembedding.
        let run = |product: fn(Tensor<AD, 2>, Tensor<AD, 2>) -> Tensor<AD, 2>| {
            let a = Tensor::<AD, 2>::from_inner(a0.clone()).require_grad();
            let b = Tensor::<AD, 2>::from_inner(b0.clone()).require_grad();
            let loss = (product(a.clone(), b.clone().transpose()) * Tensor::from_inner(upstream.clone())).sum();
            let grads = loss.backward();
            (values(a.grad(&grads).expect("a's gradient")), values(b.grad(&grads).expect("b's gradient")))
        };
        let (ours_a, ours_b) = run(matmul);
        let (burn_a, burn_b) = run(|a, b| a.matmul(b));
        assert_close(&ours_a, &burn_a, "∂a");
        assert_close(&ours_b, &burn_b, "∂b");
    }

    #[test]
    fn matmul_with_one_operand_frozen_gives_the_other_its_gradient() {
        let (x0, w0) = (random::<CpuBackend, 2>([5, 8]), random::<CpuBackend, 2>([8, 3]));
        let x = Tensor::<AD, 2>::from_inner(x0.clone()).require_grad();
        let grads = matmul(x.clone(), Tensor::<AD, 2>::from_inner(w0.clone())).sum().backward();
        // ∂/∂x Σ (x w) = 1 wᵀ: each row is w's row sums.
        let row_sums = values(w0.sum_dim(1).reshape([1, 8]).expand([5, 8]));
        assert_close(&values(x.grad(&grads).expect("x's gradient")), &row_sums, "∂x");
    }

    #[test]
    fn rows_times_transposed_on_views_matches_burns_matmul() {
        let (a, b) = (random::<CpuBackend, 2>([7, 33]), random::<CpuBackend, 2>([5, 33]));
        let expected = values(a.clone().slice([0..4, 0..33]).matmul(b.clone().transpose()));
        // The autodiff backend's tensors take burn's matmul here.
        let (ad_a, ad_b) = (Tensor::<AD, 2>::from_inner(a.clone()), Tensor::<AD, 2>::from_inner(b.clone()));
        assert_close(&rows_times_transposed(&a, 4, &b), &expected, "on views");
        assert_close(&rows_times_transposed(&ad_a, 4, &ad_b), &expected, "through burn");
    }

    #[test]
    fn selected_rows_product_on_views_matches_burns_matmul() {
        let device = Default::default();
        let (w, x) = (random::<CpuBackend, 3>([2, 3, 4]), random::<CpuBackend, 3>([2, 9, 17]));
        for (w, rows) in [(w.clone(), vec![0, 1, 2, 3]), (w.clone(), vec![1, 4, 5, 8]), (w.slice([0..2, 0..1, 0..4]), vec![1, 4, 5, 8])] {
            let index =
                Tensor::<CpuBackend, 1, burn::tensor::Int>::from_data(TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [4]), &device);
            let expected = values(w.clone().matmul(x.clone().select(1, index)));
            let (ad_w, ad_x) = (Tensor::<AD, 3>::from_inner(w.clone()), Tensor::<AD, 3>::from_inner(x.clone()));
            assert_close(&values(selected_rows_product(w.clone(), &x, &rows)), &expected, &format!("{} destinations, rows {rows:?}, on views", w.dims()[1]));
            assert_close(&values(selected_rows_product(ad_w, &ad_x, &rows)), &expected, &format!("{} destinations, rows {rows:?}, through burn", w.dims()[1]));
        }
    }
}
