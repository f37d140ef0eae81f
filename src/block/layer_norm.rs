//! Layer normalisation (Ba, Kiros & Hinton 2016), y = x̂·γ + β with x̂ = (x − μ)/√(σ² + ε), μ and
//! σ² the mean and the (biased) variance of each row's last dimension, as one op with its own
//! backward.
//!
//! Burn composes it from nine tensor ops (two means, a subtraction, a product, a square root, a
//! division, a reshape and the affine), so under autodiff a training step records and replays
//! each of them; at dk_vs_dmodel's shapes that is most of a step's cost, not the arithmetic. Here
//! it is one node, and the backward is the closed form (g = dL/dy, ĝ = g·γ, means over the row):
//!
//! - dL/dx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) / √(σ² + ε),
//! - dL/dγ = Σ_rows g·x̂ and dL/dβ = Σ_rows g.
//!
//! On flex (f32) the forward and backward are one pass over the rows each, vectorised at the
//! CPU's [`Simd`] level. Every other backend runs the same equations composed from Burn's ops
//! ([`reference_forward`], [`reference_backward`]).

// As in `fused`: the op must be implemented for the deprecated ndarray backend that
// `--backend ndarray` still offers.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, Cube, Dispatch, Flex, NdArray, Scalar, TensorMetadata, backend_extension,
};
use burn::nn::LayerNorm;
use burn::prelude::*;
use burn::tensor::DType;

use crate::block::flash::Simd;
use crate::block::fused::{flex_f32, flex_tensor};

/// The ε every layer norm of the lab uses: Burn's `LayerNormConfig` default, written down so that
/// the modules and the op agree.
pub const EPSILON: f64 = 1e-5;

/// The op as every backend offers it. Call it through [`layer_norm`] or [`forward`].
#[backend_extension(Flex, NdArray, Cube, Remote: cfg(feature = "remote"), Autodiff)]
pub trait FusedLayerNorm: Backend {
    /// y `[.., d]` from x `[.., d]`, γ `[d]` and β `[d]`.
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f32,
    ) -> FloatTensor<Self>;
}

/// The forward that keeps x̂ and 1/√(σ² + ε), and the backward that uses them: what a backend
/// provides. The defaults are the composed reference; flex overrides both.
pub trait LayerNormKernels: Backend {
    /// `(y [.., d], x̂ [.., d], 1/√(σ² + ε) [.., 1])`.
    fn layer_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        reference_forward::<Self>(x, gamma, beta, epsilon)
    }

    /// `(dx [.., d], dγ [d], dβ [d])`.
    fn layer_norm_backward(
        x_hat: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        reference_backward::<Self>(x_hat, rstd, gamma, dy)
    }
}

impl LayerNormKernels for NdArray {}
impl LayerNormKernels for Cube {}
#[cfg(feature = "remote")]
impl LayerNormKernels for burn::backend::Remote {}

macro_rules! untracked {
    ($($backend:ty),*) => {$(
        impl FusedLayerNorm for $backend {
            fn fused_layer_norm(
                x: FloatTensor<Self>,
                gamma: FloatTensor<Self>,
                beta: FloatTensor<Self>,
                epsilon: f32,
            ) -> FloatTensor<Self> {
                Self::layer_norm_forward(x, gamma, beta, epsilon).0
            }
        }
    )*};
}
untracked!(Flex, NdArray, Cube);
#[cfg(feature = "remote")]
untracked!(burn::backend::Remote);

/// x̂, 1/√(σ² + ε) and γ: what the backward needs.
#[derive(Debug, Clone)]
struct Saved<B: Backend> {
    x_hat: FloatTensor<B>,
    rstd: FloatTensor<B>,
    gamma: FloatTensor<B>,
}

#[derive(Debug)]
struct LayerNormBackward;

impl<B: LayerNormKernels> Backward<B, 3> for LayerNormBackward {
    type State = Saved<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let (dx, d_gamma, d_beta) = B::layer_norm_backward(s.x_hat, s.rstd, s.gamma, dy);
        for (node, grad) in [(node_x, dx), (node_gamma, d_gamma), (node_beta, d_beta)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: LayerNormKernels, C: CheckpointStrategy> FusedLayerNorm for Autodiff<B, C> {
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f32,
    ) -> FloatTensor<Self> {
        match LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let gamma = gamma.primitive().clone();
                let (y, x_hat, rstd) = B::layer_norm_forward(
                    x.primitive().clone(),
                    gamma.clone(),
                    beta.primitive().clone(),
                    epsilon,
                );
                prep.finish(Saved { x_hat, rstd, gamma }, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(
                B::layer_norm_forward(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                )
                .0,
            ),
        }
    }
}

/// Layer norm of `x: [.., d]` over its last dimension on any [`Device`], with gradients for x, γ
/// and β on an autodiff device.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedLayerNorm>::fused_layer_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon as f32,
    ))
}

/// `norm` applied to `x` through the op: Burn's module holds the weights (so checkpoints keep
/// their form), the op computes. `norm` must have been built with ε = [`EPSILON`]; one without β
/// gets β = 0.
pub fn forward<const D: usize>(norm: &LayerNorm, x: Tensor<D>) -> Tensor<D> {
    let gamma = norm.gamma.val();
    let beta = match &norm.beta {
        Some(beta) => beta.val(),
        None => gamma.zeros_like(),
    };
    layer_norm(x, gamma, beta, EPSILON)
}

/// The forward composed from tensor ops, in Burn's own order (x̂ = (x − μ)/√(σ² + ε), a division).
pub fn reference_forward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f32,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let last = x.shape().num_dims() - 1;
    let row = row_shape(&x.shape());
    let mean = B::float_mean_dim(x.clone(), last); // [.., 1]
    let centered = B::float_sub(x, mean); // [.., d]
    let var = B::float_mean_dim(B::float_mul(centered.clone(), centered.clone()), last); // [.., 1]
    let denom = B::float_sqrt(B::float_add_scalar(var, Scalar::Float(epsilon as f64))); // [.., 1]
    let x_hat = B::float_div(centered, denom.clone()); // [.., d]
    let scaled = B::float_mul(x_hat.clone(), B::float_reshape(gamma, row.clone()));
    let y = B::float_add(scaled, B::float_reshape(beta, row)); // [.., d]
    (y, x_hat, B::float_recip(denom))
}

/// The backward composed from tensor ops: the module doc's equations.
pub fn reference_backward<B: Backend>(
    x_hat: FloatTensor<B>,
    rstd: FloatTensor<B>,
    gamma: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let shape = x_hat.shape();
    let last = shape.num_dims() - 1;
    let d = shape[last];
    let rows = Shape::new([shape.num_elements() / d.max(1), d]);
    let g_hat = B::float_mul(dy.clone(), B::float_reshape(gamma, row_shape(&shape))); // [.., d]
    let mean_g = B::float_mean_dim(g_hat.clone(), last); // [.., 1]
    let mean_gx = B::float_mean_dim(B::float_mul(g_hat.clone(), x_hat.clone()), last); // [.., 1]
    let dx = B::float_sub(
        B::float_sub(g_hat, mean_g),
        B::float_mul(x_hat.clone(), mean_gx),
    );
    let dx = B::float_mul(dx, rstd); // [.., d]
    let column_sums = |t: FloatTensor<B>| {
        let t = B::float_sum_dim(B::float_reshape(t, rows.clone()), 0); // [1, d]
        B::float_reshape(t, Shape::new([d])) // [d]
    };
    let d_gamma = column_sums(B::float_mul(dy.clone(), x_hat));
    let d_beta = column_sums(dy);
    (dx, d_gamma, d_beta)
}

/// `[1, …, 1, d]` for a tensor of `shape` `[.., d]`: γ and β broadcast to it.
fn row_shape(shape: &Shape) -> Shape {
    let rank = shape.num_dims();
    Shape::from(
        (0..rank)
            .map(|i| if i + 1 == rank { shape[i] } else { 1 })
            .collect::<Vec<_>>(),
    )
}

impl LayerNormKernels for Flex {
    fn layer_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if [&x, &gamma, &beta].iter().any(|t| t.dtype() != DType::F32) {
            return reference_forward::<Self>(x, gamma, beta, epsilon);
        }
        let [x, gamma, beta] = [x, gamma, beta].map(|t| t.to_contiguous());
        let shape = x.shape();
        let n = shape.num_elements();
        let d = shape[shape.num_dims() - 1];
        let (mut y, mut x_hat, mut rstd) = (vec![0.0; n], vec![0.0; n], vec![0.0; n / d.max(1)]);
        forward_rows(
            Simd::detected(),
            Rows {
                x: flex_f32(&x),
                gamma: flex_f32(&gamma),
                beta: flex_f32(&beta),
                epsilon,
            },
            &mut y,
            &mut x_hat,
            &mut rstd,
        );
        let mut stats = shape.clone();
        let last = stats.num_dims() - 1;
        stats[last] = 1;
        (
            flex_tensor(y, shape.clone()),
            flex_tensor(x_hat, shape),
            flex_tensor(rstd, stats),
        )
    }

    fn layer_norm_backward(
        x_hat: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let all_f32 = [&x_hat, &rstd, &gamma, &dy]
            .iter()
            .all(|t| t.dtype() == DType::F32);
        if !all_f32 || x_hat.shape() != dy.shape() {
            return reference_backward::<Self>(x_hat, rstd, gamma, dy);
        }
        let [x_hat, rstd, gamma, dy] = [x_hat, rstd, gamma, dy].map(|t| t.to_contiguous());
        let shape = x_hat.shape();
        let d = shape[shape.num_dims() - 1];
        let mut dx = vec![0.0; shape.num_elements()];
        let (mut d_gamma, mut d_beta) = (vec![0.0; d], vec![0.0; d]);
        backward_rows(
            Simd::detected(),
            [&x_hat, &rstd, &gamma, &dy].map(flex_f32),
            &mut dx,
            &mut d_gamma,
            &mut d_beta,
        );
        (
            flex_tensor(dx, shape),
            flex_tensor(d_gamma, [d]),
            flex_tensor(d_beta, [d]),
        )
    }
}

/// The forward's inputs: rows of x (`[rows·d]`, row-major), γ and β (`[d]`) and ε.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub x: &'a [f32],
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub epsilon: f32,
}

/// Σ_j f(a_j, b_j) in `LANES` lanes, so that the sum vectorises (a single running float sum is
/// a chain the compiler may not reorder).
#[inline(always)]
fn lane_sum<const LANES: usize>(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(&x, &y)| f(x, y))
        .sum::<f32>();
    for (a, b) in a_chunks.zip(b_chunks) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(a).zip(b) {
            *lane += f(x, y);
        }
    }
    lanes.iter().sum::<f32>() + rest
}

#[inline(always)]
fn forward_generic<const LANES: usize>(
    rows: Rows,
    y: &mut [f32],
    x_hat: &mut [f32],
    rstd: &mut [f32],
) {
    let d = rows.gamma.len();
    let per_row = rows
        .x
        .chunks_exact(d)
        .zip(y.chunks_exact_mut(d))
        .zip(x_hat.chunks_exact_mut(d))
        .zip(rstd.iter_mut());
    for (((x, y), x_hat), rstd) in per_row {
        let mean = lane_sum::<LANES>(x, x, |v, _| v) / d as f32;
        let var = lane_sum::<LANES>(x, x, |v, _| (v - mean) * (v - mean)) / d as f32;
        let denom = (var + rows.epsilon).sqrt();
        for (h, &v) in x_hat.iter_mut().zip(x) {
            *h = (v - mean) / denom;
        }
        for ((y, &h), (&g, &b)) in y
            .iter_mut()
            .zip(x_hat.iter())
            .zip(rows.gamma.iter().zip(rows.beta))
        {
            *y = h * g + b;
        }
        *rstd = 1.0 / denom;
    }
}

#[inline(always)]
fn backward_generic<const LANES: usize>(
    [x_hat, rstd, gamma, dy]: [&[f32]; 4],
    dx: &mut [f32],
    d_gamma: &mut [f32],
    d_beta: &mut [f32],
) {
    let d = gamma.len();
    let per_row = x_hat
        .chunks_exact(d)
        .zip(dy.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
        .zip(rstd);
    for (((x_hat, dy), dx), &rstd) in per_row {
        // ĝ = g·γ, written into dx first and turned into dL/dx in place.
        for ((g_hat, &g), &w) in dx.iter_mut().zip(dy).zip(gamma) {
            *g_hat = g * w;
        }
        let mean_g = lane_sum::<LANES>(dx, dx, |g, _| g) / d as f32;
        let mean_gx = lane_sum::<LANES>(dx, x_hat, |g, h| g * h) / d as f32;
        for (g_hat, &h) in dx.iter_mut().zip(x_hat) {
            *g_hat = (*g_hat - mean_g - h * mean_gx) * rstd;
        }
        for (((dw, db), &g), &h) in d_gamma.iter_mut().zip(d_beta.iter_mut()).zip(dy).zip(x_hat) {
            *dw += g * h;
            *db += g;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The two passes compiled for AVX2 + FMA (8 lanes) and for AVX-512F (16 lanes), as
    //! `flash`'s loops are.
    use super::{Rows, backward_generic, forward_generic};

    macro_rules! passes {
        ($features:literal, $lanes:literal, $forward:ident, $backward:ident) => {
            #[target_feature(enable = $features)]
            pub fn $forward(rows: Rows, y: &mut [f32], x_hat: &mut [f32], rstd: &mut [f32]) {
                forward_generic::<$lanes>(rows, y, x_hat, rstd)
            }

            #[target_feature(enable = $features)]
            pub fn $backward(
                inputs: [&[f32]; 4],
                dx: &mut [f32],
                d_gamma: &mut [f32],
                d_beta: &mut [f32],
            ) {
                backward_generic::<$lanes>(inputs, dx, d_gamma, d_beta)
            }
        };
    }

    passes!("avx2,fma", 8, forward_avx2, backward_avx2);
    passes!("avx512f,avx2,fma", 16, forward_avx512, backward_avx512);
}

/// The forward over every row at `simd`: y, x̂ (`[rows·d]`) and 1/√(σ² + ε) (`[rows]`).
pub fn forward_rows(simd: Simd, rows: Rows, y: &mut [f32], x_hat: &mut [f32], rstd: &mut [f32]) {
    let d = rows.gamma.len();
    assert!(
        d > 0 && rows.beta.len() == d,
        "layer norm: γ and β must have d > 0 entries"
    );
    assert!(
        rows.x.len() == rstd.len() * d && y.len() == rows.x.len() && x_hat.len() == rows.x.len(),
        "layer norm: x, y, x̂ and the row statistics disagree in size"
    );
    assert!(simd.runs_here(), "{simd} does not run on this CPU");
    match simd {
        // SAFETY: checked just above that the CPU has the level's features.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::forward_avx512(rows, y, x_hat, rstd) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::forward_avx2(rows, y, x_hat, rstd) },
        _ => forward_generic::<8>(rows, y, x_hat, rstd),
    }
}

/// The backward over every row at `simd` from `[x̂, 1/√(σ² + ε), γ, dy]`: dx is written, dγ and dβ
/// are added to.
pub fn backward_rows(
    simd: Simd,
    inputs: [&[f32]; 4],
    dx: &mut [f32],
    d_gamma: &mut [f32],
    d_beta: &mut [f32],
) {
    let [x_hat, rstd, gamma, dy] = inputs;
    let d = gamma.len();
    assert!(
        d > 0 && d_gamma.len() == d && d_beta.len() == d,
        "layer norm backward: γ, dγ and dβ must have d > 0 entries"
    );
    assert!(
        x_hat.len() == rstd.len() * d && dy.len() == x_hat.len() && dx.len() == x_hat.len(),
        "layer norm backward: x̂, dy, dx and the row statistics disagree in size"
    );
    assert!(simd.runs_here(), "{simd} does not run on this CPU");
    match simd {
        // SAFETY: as in `forward_rows`.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::backward_avx512(inputs, dx, d_gamma, d_beta) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::backward_avx2(inputs, dx, d_gamma, d_beta) },
        _ => backward_generic::<8>(inputs, dx, d_gamma, d_beta),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forward and backward in f64, straight from the formulas: (y, dx, dγ, dβ).
    fn textbook(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        dy: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let d = gamma.len();
        let (mut y, mut dx) = (Vec::new(), Vec::new());
        let (mut d_gamma, mut d_beta) = (vec![0.0; d], vec![0.0; d]);
        for (x, dy) in x.chunks(d).zip(dy.chunks(d)) {
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            let rstd = 1.0 / (var + EPSILON).sqrt();
            let h: Vec<f64> = x.iter().map(|&v| (v as f64 - mean) * rstd).collect();
            let g: Vec<f64> = (0..d).map(|j| dy[j] as f64 * gamma[j] as f64).collect();
            let mean_g = g.iter().sum::<f64>() / d as f64;
            let mean_gx = (0..d).map(|j| g[j] * h[j]).sum::<f64>() / d as f64;
            for j in 0..d {
                y.push(h[j] * gamma[j] as f64 + beta[j] as f64);
                dx.push((g[j] - mean_g - h[j] * mean_gx) * rstd);
                d_gamma[j] += dy[j] as f64 * h[j];
                d_beta[j] += dy[j] as f64;
            }
        }
        (y, dx, d_gamma, d_beta)
    }

    fn draw(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::util::rng::HostRng::new(seed);
        (0..len).map(|_| rng.normal() as f32).collect()
    }

    fn close(got: &[f32], want: &[f64], what: &str, simd: Simd) {
        assert_eq!(got.len(), want.len(), "{simd}: {what} has the wrong length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 2e-5 * (1.0 + w.abs()),
                "{simd}: {what}[{i}] = {g}, want {w}"
            );
        }
    }

    #[test]
    fn matches_the_textbook_at_every_width_and_simd_level() {
        for d in [1, 3, 8, 17, 64, 128, 130] {
            let rows = 7;
            // An offset and a spread far from 0 and 1, so that centring and scaling both matter.
            let x: Vec<f32> = draw(rows * d, 1).iter().map(|v| 3.0 + 5.0 * v).collect();
            let (gamma, beta, dy) = (draw(d, 2), draw(d, 3), draw(rows * d, 4));
            let (y_want, dx_want, dg_want, db_want) = textbook(&x, &gamma, &beta, &dy);
            for simd in Simd::available() {
                let (mut y, mut x_hat, mut rstd) =
                    (vec![0.0; rows * d], vec![0.0; rows * d], vec![0.0; rows]);
                let inputs = Rows {
                    x: &x,
                    gamma: &gamma,
                    beta: &beta,
                    epsilon: EPSILON as f32,
                };
                forward_rows(simd, inputs, &mut y, &mut x_hat, &mut rstd);
                let (mut dx, mut dg, mut db) = (vec![0.0; rows * d], vec![0.0; d], vec![0.0; d]);
                backward_rows(
                    simd,
                    [&x_hat, &rstd, &gamma, &dy],
                    &mut dx,
                    &mut dg,
                    &mut db,
                );
                close(&y, &y_want, &format!("y at d = {d}"), simd);
                close(&dx, &dx_want, &format!("dx at d = {d}"), simd);
                close(&dg, &dg_want, &format!("dγ at d = {d}"), simd);
                close(&db, &db_want, &format!("dβ at d = {d}"), simd);
            }
        }
    }

    #[test]
    fn a_constant_row_normalises_to_beta_and_a_nan_spreads_over_its_row_only() {
        let d = 4;
        let x = [2.0, 2.0, 2.0, 2.0, 1.0, f32::NAN, 0.0, 1.0];
        let (gamma, beta) = ([1.0, 2.0, 3.0, 4.0], [0.5, -0.5, 0.25, 0.0]);
        let (mut y, mut x_hat, mut rstd) = (vec![0.0; 8], vec![0.0; 8], vec![0.0; 2]);
        let inputs = Rows {
            x: &x,
            gamma: &gamma,
            beta: &beta,
            epsilon: EPSILON as f32,
        };
        forward_rows(Simd::detected(), inputs, &mut y, &mut x_hat, &mut rstd);
        assert_eq!(&y[..d], &beta);
        assert!(y[d..].iter().all(|v| v.is_nan()));
    }
}
