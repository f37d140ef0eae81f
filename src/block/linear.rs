//! The affine map y = x·W + b of every projection, the MLP and the readout, as one op with its
//! own backward: dL/dx = g·Wᵀ, dL/dW = xᵀ·g and dL/db = Σ_rows g (g = dL/dy, rows = every
//! leading index of x).
//!
//! Burn composes it from a reshape, a matmul, a broadcast add and reshapes back, and its matmul's
//! backward lays out both transposes and copies every fresh output once more to align it (burn-flex
//! allocates through a byte vector): at dk_vs_dmodel's shapes, a third of a training step was
//! Burn's linear and matmul nodes (perf, `bench --train`), half of it outside the products. Here
//! it is one autodiff node.
//!
//! - On flex (f32): each product is one `gemm` call that reads Wᵀ and xᵀ through strides, so
//!   nothing is transposed or copied.
//! - Elsewhere: the same equations composed from Burn's ops ([`reference_forward`],
//!   [`reference_backward`]).
//!
//! A `Linear` without a bias is run with b = 0, a tensor that carries no gradient.

// As in `fused`: the op must be implemented for the deprecated ndarray backend that
// `--backend ndarray` still offers.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, Cube, Dispatch, Flex, NdArray, TensorMetadata, backend_extension,
};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::DType;

use crate::block::flash::View;
use crate::block::fused::{flex_f32, flex_tensor};

/// The op as every backend offers it. Call it through [`linear`] or [`forward`].
#[backend_extension(Flex, NdArray, Cube, Remote: cfg(feature = "remote"), Autodiff)]
pub trait FusedLinear: Backend {
    /// y `[.., d_out]` from x `[.., d_in]`, W `[d_in, d_out]` and b `[d_out]`.
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Which gradients the backward computes: those of x, W and b, as the graph needs them.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub x: bool,
    pub weight: bool,
    pub bias: bool,
}

/// `(dL/dx, dL/dW, dL/db)`, each where it was wanted.
pub type Grads<T> = (Option<T>, Option<T>, Option<T>);

/// [`Grads`] as a backend's tensors.
pub type LinearGrads<B> = Grads<FloatTensor<B>>;

/// The forward and backward a backend provides; the defaults are the composed reference, flex
/// overrides both.
pub trait LinearKernels: Backend {
    fn linear_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference_forward::<Self>(x, weight, bias)
    }

    fn linear_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        wanted: Wanted,
    ) -> LinearGrads<Self> {
        reference_backward::<Self>(x, weight, dy, wanted)
    }
}

impl LinearKernels for NdArray {}
impl LinearKernels for Cube {}
#[cfg(feature = "remote")]
impl LinearKernels for burn::backend::Remote {}

macro_rules! untracked {
    ($($backend:ty),*) => {$(
        impl FusedLinear for $backend {
            fn fused_linear(
                x: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                bias: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                Self::linear_forward(x, weight, bias)
            }
        }
    )*};
}
untracked!(Flex, NdArray, Cube);
#[cfg(feature = "remote")]
untracked!(burn::backend::Remote);

#[derive(Debug)]
struct LinearBackward;

impl<B: LinearKernels> Backward<B, 3> for LinearBackward {
    /// x and W.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, weight) = ops.state;
        let wanted = Wanted {
            x: node_x.is_some(),
            weight: node_weight.is_some(),
            bias: node_bias.is_some(),
        };
        let (dx, d_weight, d_bias) = B::linear_backward(x, weight, dy, wanted);
        for (node, grad) in [(node_x, dx), (node_weight, d_weight), (node_bias, d_bias)] {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: LinearKernels, C: CheckpointStrategy> FusedLinear for Autodiff<B, C> {
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match LinearBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.primitive().clone(), weight.primitive().clone());
                let y = B::linear_forward(x.clone(), weight.clone(), bias.into_primitive());
                prep.finish((x, weight), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::linear_forward(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }
}

/// x·W + b on any [`Device`] for x `[.., d_in]`, W `[d_in, d_out]` and b `[d_out]`, with
/// gradients for all three on an autodiff device.
pub fn linear<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedLinear>::fused_linear(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// `layer` applied to `x` through the op: Burn's module holds the weights (so checkpoints keep
/// their form), the op computes.
pub fn forward<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let weight = layer.weight.val();
    let bias = match &layer.bias {
        Some(bias) => bias.val(),
        None => Tensor::zeros([weight.dims()[1]], &weight.device()),
    };
    linear(x, weight, bias)
}

/// `x`'s shape as rows: `(rows, d_in)`, rows the product of its leading dimensions.
fn rows_of(x: &Shape) -> (usize, usize) {
    let d_in = x[x.num_dims() - 1];
    (x.num_elements() / d_in.max(1), d_in)
}

/// `x`'s shape with its last dimension set to `last`.
fn with_last(x: &Shape, last: usize) -> Shape {
    let mut shape = x.clone();
    let rank = shape.num_dims();
    shape[rank - 1] = last;
    shape
}

/// The forward composed from tensor ops: x as `[rows, d_in]`, one matmul, the bias broadcast.
pub fn reference_forward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> FloatTensor<B> {
    let shape = x.shape();
    let (rows, d_in) = rows_of(&shape);
    let d_out = weight.shape()[1];
    let x = B::float_reshape(x, Shape::new([rows, d_in])); // [rows, d_in]
    let y = B::float_matmul(x, weight); // [rows, d_out]
    let y = B::float_add(y, B::float_reshape(bias, Shape::new([1, d_out]))); // [rows, d_out]
    B::float_reshape(y, with_last(&shape, d_out)) // [.., d_out]
}

/// The backward composed from tensor ops: the module doc's equations.
pub fn reference_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    dy: FloatTensor<B>,
    wanted: Wanted,
) -> LinearGrads<B> {
    let shape = x.shape();
    let (rows, d_in) = rows_of(&shape);
    let d_out = weight.shape()[1];
    let dy = B::float_reshape(dy, Shape::new([rows, d_out])); // [rows, d_out]
    let dx = wanted.x.then(|| {
        let dx = B::float_matmul(dy.clone(), B::float_transpose(weight)); // [rows, d_in]
        B::float_reshape(dx, shape.clone()) // [.., d_in]
    });
    let d_weight = wanted.weight.then(|| {
        let x = B::float_reshape(x, Shape::new([rows, d_in])); // [rows, d_in]
        B::float_matmul(B::float_transpose(x), dy.clone()) // [d_in, d_out]
    });
    let d_bias = wanted.bias.then(|| {
        B::float_reshape(B::float_sum_dim(dy, 0), Shape::new([d_out])) // [d_out]
    });
    (dx, d_weight, d_bias)
}

impl LinearKernels for Flex {
    fn linear_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if [&x, &weight, &bias].iter().any(|t| t.dtype() != DType::F32) {
            return reference_forward::<Self>(x, weight, bias);
        }
        let [x, weight, bias] = [x, weight, bias].map(|t| t.to_contiguous());
        let shape = x.shape();
        let (rows, d_in) = rows_of(&shape);
        let d_out = weight.shape()[1];
        let y = forward_rows(
            (rows, d_in, d_out),
            flex_f32(&x),
            flex_f32(&weight),
            flex_f32(&bias),
        );
        flex_tensor(y, with_last(&shape, d_out))
    }

    fn linear_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        wanted: Wanted,
    ) -> LinearGrads<Self> {
        if [&x, &weight, &dy].iter().any(|t| t.dtype() != DType::F32) {
            return reference_backward::<Self>(x, weight, dy, wanted);
        }
        let [x, weight, dy] = [x, weight, dy].map(|t| t.to_contiguous());
        let shape = x.shape();
        let (rows, d_in) = rows_of(&shape);
        let d_out = weight.shape()[1];
        let (dx, d_weight, d_bias) = backward_rows(
            (rows, d_in, d_out),
            [flex_f32(&x), flex_f32(&weight), flex_f32(&dy)],
            wanted,
        );
        (
            dx.map(|dx| flex_tensor(dx, shape.clone())),
            d_weight.map(|dw| flex_tensor(dw, [d_in, d_out])),
            d_bias.map(|db| flex_tensor(db, [d_out])),
        )
    }
}

/// dst `[m, n]` (row-major) = (dst if `accumulate`, else 0) + a `[m, k]`·b `[k, n]`, by `gemm`
/// (which picks its AVX-512, AVX2 or portable kernels per process), on one thread as flex's own
/// matmuls run: splitting the rows over rayon's two threads from 2²¹ multiply-adds on made
/// dk_vs_dmodel's steps slower, not faster (about 1.6×, `bench --train`). Bounds are checked
/// here, so the unsafe call only sees valid ranges.
fn product((m, n, k): (usize, usize, usize), dst: &mut [f32], accumulate: bool, a: View, b: View) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= m * n, "linear: product output out of bounds");
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    a.check(m, k, "linear: left operand");
    b.check(k, n, "linear: right operand");
    // SAFETY: every index gemm reads or writes lies inside the slices (checked just above), and
    // `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// y `[rows, d_out]` = x `[rows, d_in]`·W `[d_in, d_out]` + b, all row-major.
pub fn forward_rows(
    (rows, d_in, d_out): (usize, usize, usize),
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    assert!(
        x.len() == rows * d_in && weight.len() == d_in * d_out && bias.len() == d_out,
        "linear: x, W and b disagree in size"
    );
    let mut y = Vec::with_capacity(rows * d_out); // [rows, d_out]
    for _ in 0..rows {
        y.extend_from_slice(bias);
    }
    let (x, weight) = (View::rows(x, d_in), View::rows(weight, d_out));
    product((rows, d_out, d_in), &mut y, true, x, weight);
    y
}

/// `(dx [rows, d_in], dW [d_in, d_out], db [d_out])`, each where wanted, from `[x, W, dy]`.
pub fn backward_rows(
    (rows, d_in, d_out): (usize, usize, usize),
    [x, weight, dy]: [&[f32]; 3],
    wanted: Wanted,
) -> Grads<Vec<f32>> {
    assert!(
        x.len() == rows * d_in && weight.len() == d_in * d_out && dy.len() == rows * d_out,
        "linear backward: x, W and dy disagree in size"
    );
    let dy_rows = View::rows(dy, d_out);
    let dx = wanted.x.then(|| {
        let mut dx = vec![0.0; rows * d_in];
        let weight_t = View::transposed(weight, d_out); // [d_out, d_in]
        product((rows, d_in, d_out), &mut dx, false, dy_rows, weight_t);
        dx
    });
    let d_weight = wanted.weight.then(|| {
        let mut dw = vec![0.0; d_in * d_out];
        let x_t = View::transposed(x, d_in); // [d_in, rows]
        product((d_in, d_out, rows), &mut dw, false, x_t, dy_rows);
        dw
    });
    let d_bias = wanted.bias.then(|| {
        let mut db = vec![0.0; d_out];
        for row in dy.chunks_exact(d_out.max(1)) {
            for (sum, &g) in db.iter_mut().zip(row) {
                *sum += g;
            }
        }
        db
    });
    (dx, d_weight, d_bias)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::util::rng::HostRng::new(seed);
        (0..len).map(|_| rng.normal() as f32).collect()
    }

    fn close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: sizes differ");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what}[{i}] = {g}, want {w}"
            );
        }
    }

    #[test]
    fn matches_the_textbook_at_every_shape() {
        for (rows, d_in, d_out) in [
            (1, 1, 1),
            (7, 5, 3),
            (0, 3, 2),
            (9, 16, 64),
            (37, 65, 17),
            (288, 128, 130),
            (301, 129, 67),
        ] {
            let (x, w, b, dy) = (
                draw(rows * d_in, 1),
                draw(d_in * d_out, 2),
                draw(d_out, 3),
                draw(rows * d_out, 4),
            );
            let at = |m: &[f32], r: usize, c: usize, width: usize| m[r * width + c] as f64;
            let mut y_want = vec![0.0; rows * d_out];
            let mut dx_want = vec![0.0; rows * d_in];
            let mut dw_want = vec![0.0; d_in * d_out];
            let mut db_want = vec![0.0; d_out];
            for r in 0..rows {
                for o in 0..d_out {
                    let mut sum = b[o] as f64;
                    for i in 0..d_in {
                        sum += at(&x, r, i, d_in) * at(&w, i, o, d_out);
                        dx_want[r * d_in + i] += at(&dy, r, o, d_out) * at(&w, i, o, d_out);
                        dw_want[i * d_out + o] += at(&x, r, i, d_in) * at(&dy, r, o, d_out);
                    }
                    y_want[r * d_out + o] = sum;
                    db_want[o] += at(&dy, r, o, d_out);
                }
            }
            let shape = (rows, d_in, d_out);
            let what = |name: &str| format!("{name} at {shape:?}");
            close(&forward_rows(shape, &x, &w, &b), &y_want, &what("y"));
            let all = Wanted {
                x: true,
                weight: true,
                bias: true,
            };
            let (dx, dw, db) = backward_rows(shape, [&x, &w, &dy], all);
            close(&dx.unwrap(), &dx_want, &what("dx"));
            close(&dw.unwrap(), &dw_want, &what("dW"));
            close(&db.unwrap(), &db_want, &what("db"));
        }
    }

    #[test]
    fn only_the_wanted_gradients_are_computed() {
        let weight_only = Wanted {
            x: false,
            weight: true,
            bias: false,
        };
        let (x, w, dy) = ([1.0; 6], [1.0; 12], [1.0; 8]);
        let (dx, dw, db) = backward_rows((2, 3, 4), [&x, &w, &dy], weight_only);
        assert!(dx.is_none() && db.is_none());
        assert_eq!(dw.unwrap(), vec![2.0; 12]);
    }
}
