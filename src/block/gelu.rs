//! GELU(x) = x·Φ(x) = ½·x·(1 + erf(x/√2)) (Hendrycks & Gimpel 2016, "Gaussian Error Linear
//! Units"), the MLP's activation, as one op whose flex forward and backward are vectorised.
//!
//! Burn's flex GELU calls libm's scalar `erff` once per element in the forward and again in the
//! backward, with a scalar `expf` there too: 10–13 % of a training step at dk_vs_dmodel's shapes
//! (perf, `bench --train`). Here both are element-wise loops the compiler vectorises at the CPU's
//! [`Simd`] level, with erf in [`erf`] and e^x in [`flash::exp`].
//!
//! - On flex (f32): those loops. They use no fused multiply-add, so every level gives the same
//!   bits.
//! - On ndarray, wgpu/cuda and remote: Burn's own `gelu` forward, and the exact derivative below
//!   composed from tensor ops ([`reference_input_grad`]).
//! - Under autodiff, on every backend: dGELU/dx = Φ(x) + x·φ(x), φ(x) = e^{−x²/2}/√(2π), from
//!   the saved input.

// As in `fused`: the op must be implemented for the deprecated ndarray backend that
// `--backend ndarray` still offers.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, Cube, Dispatch, Flex, NdArray, Scalar, TensorMetadata, backend_extension,
};
use burn::prelude::*;
use burn::tensor::DType;

use crate::block::flash::{self, Simd};
use crate::block::fused::{flex_f32, flex_tensor};

/// The op as every backend offers it. Call it through [`gelu`].
#[backend_extension(Flex, NdArray, Cube, Remote: cfg(feature = "remote"), Autodiff)]
pub trait FusedGelu: Backend {
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The forward and the backward a backend provides; the defaults are Burn's forward and
/// [`reference_input_grad`].
pub trait GeluKernels: Backend {
    fn gelu_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }

    /// dL/dx from x and dL/dy.
    fn gelu_input_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        reference_input_grad::<Self>(x, grad)
    }
}

/// dL/dx = g·(Φ(x) + x·φ(x)) composed from tensor ops. Not Burn's default `gelu_backward`, which
/// ndarray and wgpu inherit: that is the derivative of the tanh approximation of GELU, about
/// 3·10⁻⁴ off the exact one (the claims test caught it).
pub fn reference_input_grad<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let half = Scalar::Float(0.5);
    let scaled = B::float_mul_scalar(x.clone(), Scalar::Float(std::f64::consts::FRAC_1_SQRT_2));
    let cdf = B::float_mul_scalar(
        B::float_add_scalar(B::float_erf(scaled), Scalar::Float(1.0)),
        half,
    );
    let square = B::float_mul(x.clone(), x.clone());
    let gauss = B::float_exp(B::float_mul_scalar(square, Scalar::Float(-0.5)));
    // 1/√(2π)
    let pdf = B::float_mul_scalar(gauss, Scalar::Float(0.398_942_280_401_432_7));
    let slope = B::float_add(cdf, B::float_mul(x, pdf));
    B::float_mul(grad, slope)
}

impl GeluKernels for NdArray {}
impl GeluKernels for Cube {}
#[cfg(feature = "remote")]
impl GeluKernels for burn::backend::Remote {}

impl GeluKernels for Flex {
    fn gelu_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if x.dtype() != DType::F32 {
            return Self::gelu(x);
        }
        let x = x.to_contiguous();
        let mut y = vec![0.0; x.shape().num_elements()];
        forward(Simd::detected(), flex_f32(&x), &mut y);
        flex_tensor(y, x.shape())
    }

    fn gelu_input_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if x.dtype() != DType::F32 || grad.dtype() != DType::F32 || x.shape() != grad.shape() {
            return reference_input_grad::<Self>(x, grad);
        }
        let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
        let mut dx = vec![0.0; x.shape().num_elements()];
        backward(Simd::detected(), flex_f32(&x), flex_f32(&grad), &mut dx);
        flex_tensor(dx, x.shape())
    }
}

macro_rules! untracked {
    ($($backend:ty),*) => {$(
        impl FusedGelu for $backend {
            fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
                Self::gelu_forward(x)
            }
        }
    )*};
}
untracked!(Flex, NdArray, Cube);
#[cfg(feature = "remote")]
untracked!(burn::backend::Remote);

#[derive(Debug)]
struct GeluBackward;

impl<B: GeluKernels> Backward<B, 1> for GeluBackward {
    /// The input x.
    type State = FloatTensor<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            grads.register::<B>(node.id, B::gelu_input_grad(ops.state, grad));
        }
    }
}

impl<B: GeluKernels, C: CheckpointStrategy> FusedGelu for Autodiff<B, C> {
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.primitive().clone();
                prep.finish(x.clone(), B::gelu_forward(x))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gelu_forward(x.into_primitive())),
        }
    }
}

/// GELU on any [`Device`], element-wise, with its gradient on an autodiff device.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedGelu>::fused_gelu(x.into_dispatch()))
}

/// erf(a) within 2 ulp (the unit test's bound over [−6, 6]), branch-free so that a loop of it
/// vectorises. The coefficients are Norbert Juffa's published single-precision minimax fits: an
/// odd polynomial in a for |a| ≤ 0.9277, and 1 − e^{p(|a|)} with the sign of a above, where
/// erf(a) rounds to ±1 from |a| ≈ 3.9 on. Both are evaluated and one is kept. NaN stays NaN.
#[inline(always)]
pub fn erf(a: f32) -> f32 {
    let t = a.abs();
    let s = a * a;
    let mut p = -1.728_534_7e-5_f32 * t + 3.831_971_3e-4;
    let u = -3.883_964_4e-3_f32 * t + 2.425_462_2e-2;
    p = p * s + u;
    p = p * t - 1.067_778_8e-1;
    p = p * t - 6.348_467e-1;
    p = p * t - 1.287_175_1e-1;
    p = p * t - t;
    let tail = (1.0 - flash::exp(p)).copysign(a);
    let mut q = -5.967_617e-4_f32;
    q = q * s + 4.991_194_2e-3;
    q = q * s - 2.676_813_5e-2;
    q = q * s + 1.128_199_3e-1;
    q = q * s - 3.761_253_4e-1;
    q = q * s + 1.283_791_7e-1;
    let near = q * a + a;
    if t > 0.927_734_4 { tail } else { near }
}

/// erf in f64, the reference [`erf`] and the op are held to (here and in the claims tests):
/// Abramowitz & Stegun 7.1.5's series below 3, then 7.1.14's continued fraction for erfc,
/// accurate far below f32's precision.
pub fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    let value = if a < 3.0 {
        // erf(x) = 2/√π · Σ (−1)^n x^(2n+1) / (n!·(2n+1))
        let (mut term, mut sum, mut n) = (a, a, 0.0);
        while term.abs() > 1e-18 * sum.abs() {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc(x) = e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …)))))
        let mut fraction = a;
        for k in (1..60).rev() {
            fraction = a + (k as f64 / 2.0) / fraction;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / fraction
    };
    value.copysign(x)
}

/// Φ(x) = ½·(1 + erf(x/√2)), the standard normal's CDF.
#[inline(always)]
fn cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// y ← x·Φ(x).
#[inline(always)]
fn forward_generic(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x * cdf(x);
    }
}

/// dx ← g·(Φ(x) + x·φ(x)).
#[inline(always)]
fn backward_generic(x: &[f32], grad: &[f32], dx: &mut [f32]) {
    // 1/√(2π)
    const INV_SQRT_TAU: f32 = 0.398_942_3;
    for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(grad) {
        let pdf = INV_SQRT_TAU * flash::exp(-0.5 * x * x);
        *dx = g * (cdf(x) + x * pdf);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The two loops compiled for AVX2 + FMA and for AVX-512F, as `flash`'s are.
    use super::{backward_generic, forward_generic};

    macro_rules! loops {
        ($features:literal, $forward:ident, $backward:ident) => {
            #[target_feature(enable = $features)]
            pub fn $forward(x: &[f32], y: &mut [f32]) {
                forward_generic(x, y)
            }

            #[target_feature(enable = $features)]
            pub fn $backward(x: &[f32], grad: &[f32], dx: &mut [f32]) {
                backward_generic(x, grad, dx)
            }
        };
    }

    loops!("avx2,fma", forward_avx2, backward_avx2);
    loops!("avx512f,avx2,fma", forward_avx512, backward_avx512);
}

/// y ← GELU(x) at `simd`.
pub fn forward(simd: Simd, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "GELU: input and output differ in length");
    assert!(simd.runs_here(), "{simd} does not run on this CPU");
    match simd {
        // SAFETY: checked just above that the CPU has the level's features.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::forward_avx512(x, y) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::forward_avx2(x, y) },
        _ => forward_generic(x, y),
    }
}

/// dx ← grad·GELU'(x) at `simd`.
pub fn backward(simd: Simd, x: &[f32], grad: &[f32], dx: &mut [f32]) {
    assert!(
        x.len() == grad.len() && x.len() == dx.len(),
        "GELU backward: x, grad and dx differ in length"
    );
    assert!(simd.runs_here(), "{simd} does not run on this CPU");
    match simd {
        // SAFETY: as in `forward`.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::backward_avx512(x, grad, dx) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::backward_avx2(x, grad, dx) },
        _ => backward_generic(x, grad, dx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(got: f32, want: f64) -> f64 {
        let spacing = (want.abs() as f32).max(f32::MIN_POSITIVE);
        let spacing = (f32::from_bits(spacing.to_bits() + 1) - spacing) as f64;
        (got as f64 - want).abs() / spacing
    }

    #[test]
    fn erf_is_within_two_ulp_and_keeps_its_limits() {
        let mut worst = (0.0, 0.0f32);
        for i in -12_000..=12_000 {
            let x = i as f32 * 5e-4;
            let error = ulps(erf(x), erf_f64(x as f64));
            if error > worst.0 {
                worst = (error, x);
            }
        }
        assert!(worst.0 < 2.0, "erf is {} ulp off at {}", worst.0, worst.1);
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert_eq!(erf(f32::NEG_INFINITY), -1.0);
        assert_eq!(erf(-10.0), -1.0);
        assert!(erf(f32::NAN).is_nan());
    }

    #[test]
    fn gelu_and_its_gradient_match_the_formula_in_f64_at_every_simd_level() {
        let x: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.02).collect();
        let grad: Vec<f32> = (0..x.len()).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
        for simd in Simd::available() {
            let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            forward(simd, &x, &mut y);
            backward(simd, &x, &grad, &mut dx);
            for i in 0..x.len() {
                let (xi, gi) = (x[i] as f64, grad[i] as f64);
                let phi = 0.5 * (1.0 + erf_f64(xi / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * xi * xi).exp() / (2.0 * std::f64::consts::PI).sqrt();
                let (y_want, dx_want) = (xi * phi, gi * (phi + xi * pdf));
                assert!(
                    (y[i] as f64 - y_want).abs() <= 1e-6 * (1.0 + y_want.abs()),
                    "{simd}: GELU({xi}) = {}, want {y_want}",
                    y[i]
                );
                assert!(
                    (dx[i] as f64 - dx_want).abs() <= 1e-6 * (1.0 + dx_want.abs()),
                    "{simd}: GELU'({xi})·{gi} = {}, want {dx_want}",
                    dx[i]
                );
            }
            // No fused multiply-adds: every level computes the same bits.
            match &first {
                None => first = Some((y, dx)),
                Some((y0, dx0)) => {
                    assert!(y.iter().zip(y0).all(|(a, b)| a.to_bits() == b.to_bits()));
                    assert!(dx.iter().zip(dx0).all(|(a, b)| a.to_bits() == b.to_bits()));
                }
            }
        }
    }

    #[test]
    fn a_nan_stays_nan_and_the_tails_are_exact() {
        let x = [f32::NAN, f32::NEG_INFINITY, -30.0, 30.0, f32::INFINITY];
        let (mut y, mut dx) = ([0.0; 5], [0.0; 5]);
        forward(Simd::detected(), &x, &mut y);
        backward(Simd::detected(), &x, &[1.0; 5], &mut dx);
        assert!(y[0].is_nan() && dx[0].is_nan());
        assert_eq!(&y[2..4], &[0.0, 30.0]);
        assert_eq!(&dx[2..4], &[0.0, 1.0]);
    }
}
