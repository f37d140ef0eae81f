//! Fused scaled-dot-product attention: softmax(c·Q·Kᵀ, masked)·V as one op with its own backward,
//! through Burn's backend extension, so the autodiff graph keeps q, k, v, the output and the row
//! log-sum-exp (n·d per head) instead of the [n_q, n_k] scores, weights and their gradients.
//!
//! - On flex (f32) the forward and backward are the flash kernels of [`crate::block::flash`].
//! - On ndarray, wgpu/cuda (Burn's `Cube`) and Burn's `Remote`, both are composed from Burn's tensor
//!   ops ([`reference_forward`], [`reference_backward`]): the same equations, not the same memory.
//! - Under autodiff, on every backend, the backward is the hand-written one
//!   (FlashAttention, Dao et al. 2022, §3.1 and appendix B.2), not Burn's differentiation of the
//!   composed forward.
//!
//! The op covers the row softmax only, with a scale c that folds in the temperature, a causal mask
//! (key j hidden from query i when j > i), a key-padding mask `[batch, n_k]`, n_q ≠ n_k and
//! d_k ≠ d_v.
//!
//! It also covers the off-by-one softmax (softmax1, Miller 2023): the +1 in its denominator is one
//! more term, exp(0), in the running sum, the term of a phantom key with score 0 and value 0. The
//! term is the same for every key tile, so it is added once after the last one, by
//! [`off_by_one`]: ℓ' = ℓ + e^{−m}, that is lse' = softplus(lse) and o' = o·σ(lse). The backward
//! is the standard one fed lse' and o': P' = exp(S − lse') are the off-by-one weights, and the
//! phantom key's dP is dO·0 = 0, so D_i = Σ_j P'_ij·dP_ij = dO_i·o'_i still holds.
//!
//! Every backend keeps one contract for what a query cannot see:
//! - a row with no visible key (fully masked, or every visible score −∞) outputs 0, its lse is
//!   +∞ and its gradients are 0, whatever the hidden keys hold, NaN included;
//! - a padding key contributes nothing to any row, whatever its k and v hold.
//!
//! A NaN in a visible score or value still reaches the row's output, so the training loop's
//! divergence guard sees it. A non-finite value in a key that the causal mask hides from earlier
//! rows also reaches every later row (which see it); which earlier rows turn NaN then differs
//! between backends (flex skips whole tiles), and the loss is NaN on all of them.

// Burn deprecates its ndarray backend, but `--backend ndarray` is still offered, so the op must
// be implemented for it: an extension called on a backend it does not list panics.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{BoolTensor, FloatTensor};
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Cube, Dispatch, ExtensionType, Flex, NdArray, Scalar,
    TensorMetadata, backend_extension,
};
use burn::prelude::*;
use burn::tensor::DType;

use crate::block::flash;

/// The key-padding mask handed to the op: `[batch, n_k]`, true where a key is padding.
#[derive(ExtensionType, Clone, Debug)]
pub enum KeyPadding<B: Backend> {
    None,
    Keys(BoolTensor<B>),
}

impl<B: Backend> KeyPadding<B> {
    fn into_option(self) -> Option<BoolTensor<B>> {
        match self {
            KeyPadding::None => None,
            KeyPadding::Keys(mask) => Some(mask),
        }
    }
}

/// The op as every backend offers it. Call it through [`attention`].
#[backend_extension(Flex, NdArray, Cube, Remote: cfg(feature = "remote"), Autodiff)]
pub trait FusedAttention: Backend {
    /// `(o [batch, heads, n_q, d_v], lse [batch, heads, n_q, 1])` from q
    /// `[batch, heads, n_q, d_k]`, k `[batch, heads, n_k, d_k]` and v `[batch, heads, n_k, d_v]`.
    /// Only o carries gradients.
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        #[extension_type] padding: KeyPadding<Self>,
        scale: f32,
        causal: bool,
        off_by_one: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// The forward that keeps the row log-sum-exp, and the backward that uses it: what a backend
/// provides for the op. The defaults are the composed reference; flex overrides both.
pub trait AttentionKernels: Backend {
    /// `(o [batch, heads, n_q, d_v], lse [batch, heads, n_q, 1])`.
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        padding: Option<BoolTensor<Self>>,
        scale: f32,
        causal: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        reference_forward::<Self>(q, k, v, padding, scale, causal)
    }

    /// `(dq, dk, dv)` from the forward's inputs, output and lse and the output's gradient.
    #[allow(clippy::too_many_arguments)] // the saved state of the equations
    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        o: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
        padding: Option<BoolTensor<Self>>,
        scale: f32,
        causal: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        reference_backward::<Self>(q, k, v, o, lse, d_o, padding, scale, causal)
    }
}

impl AttentionKernels for NdArray {}
impl AttentionKernels for Cube {}
#[cfg(feature = "remote")]
impl AttentionKernels for burn::backend::Remote {}

macro_rules! forward_only {
    ($($backend:ty),*) => {$(
        impl FusedAttention for $backend {
            fn fused_attention(
                q: FloatTensor<Self>,
                k: FloatTensor<Self>,
                v: FloatTensor<Self>,
                padding: KeyPadding<Self>,
                scale: f32,
                causal: bool,
                off_by_one: bool,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                let (o, lse) = Self::attention_forward(q, k, v, padding.into_option(), scale, causal);
                off_by_one_if::<Self>(o, lse, off_by_one)
            }
        }
    )*};
}
forward_only!(Flex, NdArray, Cube);
#[cfg(feature = "remote")]
forward_only!(burn::backend::Remote);

/// The fused op on any [`Device`]: `[batch, heads, n_q, d_v]`, with gradients for q, k and v on
/// an autodiff device. `scale` multiplies the scores (1 / (divisor·τ)); `padding` is
/// `[batch, n_k]`, true where a key is padding; `off_by_one` adds 1 to every row's denominator.
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    padding: Option<Tensor<2, Bool>>,
    scale: f64,
    causal: bool,
    off_by_one: bool,
) -> Tensor<4> {
    attention_with_lse(q, k, v, padding, scale, causal, off_by_one).0
}

/// [`attention`] and the row log-sum-exp the kernel kept for its backward,
/// lse_i = log Σ_j exp(c·q_i·k_j) over the keys query i sees (log(1 + Σ_j …) with
/// `off_by_one`): `[batch, heads, n_q, 1]`, +∞ for a row with no visible key (so that every
/// exp(s − lse) of it is 0). The lse carries no gradient; it is here so that tests can hold the
/// kernel's own state to a reference.
pub fn attention_with_lse(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    padding: Option<Tensor<2, Bool>>,
    scale: f64,
    causal: bool,
    off_by_one: bool,
) -> (Tensor<4>, Tensor<4>) {
    let padding = match padding {
        Some(mask) => KeyPadding::Keys(mask.into_dispatch()),
        None => KeyPadding::None,
    };
    let (o, lse) = <Dispatch as FusedAttention>::fused_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        padding,
        scale as f32,
        causal,
        off_by_one,
    );
    (Tensor::from_dispatch(o), Tensor::from_dispatch(lse))
}

/// The off-by-one softmax from the standard forward's `(o, lse)`: the phantom key's exp(0) added
/// to the row sum, lse' = log(1 + e^lse) = softplus(lse) and o' = o·e^lse / (1 + e^lse) =
/// o·σ(lse). Both are written with e^{−|lse|} only, so nothing overflows: softplus(x) =
/// max(x, 0) + ln(1 + e^{−|x|}) and σ(x) = exp(−softplus(−x)). A row with no visible key
/// (lse = +∞) keeps o = 0 and lse = +∞.
pub fn off_by_one<B: Backend>(
    o: FloatTensor<B>,
    lse: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let tail = B::float_log1p(B::float_exp(B::float_neg(B::float_abs(lse.clone())))); // [batch, heads, n_q, 1]
    let softplus = B::float_add(
        B::float_clamp_min(lse.clone(), Scalar::Float(0.0)),
        tail.clone(),
    );
    let softplus_neg = B::float_add(
        B::float_clamp_min(B::float_neg(lse), Scalar::Float(0.0)),
        tail,
    );
    let sigmoid = B::float_exp(B::float_neg(softplus_neg)); // [batch, heads, n_q, 1]
    let shape = o.shape();
    let o = B::float_mul(o, B::float_expand(sigmoid, shape)); // [batch, heads, n_q, d_v]
    (o, softplus)
}

fn off_by_one_if<B: Backend>(
    o: FloatTensor<B>,
    lse: FloatTensor<B>,
    on: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    if on {
        off_by_one::<B>(o, lse)
    } else {
        (o, lse)
    }
}

/// What the backward needs: the inputs, the output and its row log-sum-exp, and the masks.
#[derive(Debug, Clone)]
struct Saved<B: Backend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    o: FloatTensor<B>,
    lse: FloatTensor<B>,
    padding: Option<BoolTensor<B>>,
    scale: f32,
    causal: bool,
}

#[derive(Debug)]
struct FusedBackward;

impl<B: AttentionKernels> Backward<B, 3> for FusedBackward {
    type State = Saved<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_q, node_k, node_v] = ops.parents;
        let d_o = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let (dq, dk, dv) =
            B::attention_backward(s.q, s.k, s.v, s.o, s.lse, d_o, s.padding, s.scale, s.causal);
        for (node, grad) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: AttentionKernels, C: CheckpointStrategy> FusedAttention for Autodiff<B, C> {
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        padding: KeyPadding<Self>,
        scale: f32,
        causal: bool,
        off_by_one: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let padding: Option<BoolTensor<B>> = padding.into_option();
        match FusedBackward
            .prepare::<C>([q.node(), k.node(), v.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (q, k, v) = (
                    q.primitive().clone(),
                    k.primitive().clone(),
                    v.primitive().clone(),
                );
                let (o, lse) = B::attention_forward(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    padding.clone(),
                    scale,
                    causal,
                );
                // The backward needs no flag: it is the standard one, fed o' and lse'.
                let (o, lse) = off_by_one_if::<B>(o, lse, off_by_one);
                let saved = Saved {
                    q,
                    k,
                    v,
                    o: o.clone(),
                    lse: lse.clone(),
                    padding,
                    scale,
                    causal,
                };
                (prep.finish(saved, o), Self::from_inner(lse))
            }
            OpsKind::UnTracked(prep) => {
                let (o, lse) = B::attention_forward(
                    q.into_primitive(),
                    k.into_primitive(),
                    v.into_primitive(),
                    padding,
                    scale,
                    causal,
                );
                let (o, lse) = off_by_one_if::<B>(o, lse, off_by_one);
                (prep.finish(o), Self::from_inner(lse))
            }
        }
    }
}

impl AttentionKernels for Flex {
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        padding: Option<BoolTensor<Self>>,
        scale: f32,
        causal: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let Some(dims) = flex_dims(&q, &k, &v, &padding) else {
            return reference_forward::<Self>(q, k, v, padding, scale, causal);
        };
        let (q, k, v) = (q.to_contiguous(), k.to_contiguous(), v.to_contiguous());
        let padding = padding.map(|p| p.to_contiguous());
        let masks = flash::Masks {
            causal,
            padding: padding.as_ref().map(flex_bools),
        };
        let (o, lse) = flash::forward(
            flash::Simd::detected(),
            flex_f32(&q),
            flex_f32(&k),
            flex_f32(&v),
            dims,
            scale,
            masks,
        );
        let (b, h, n_q) = (dims.batch, dims.heads, dims.n_q);
        (
            flex_tensor(o, [b, h, n_q, dims.d_v]),
            flex_tensor(lse, [b, h, n_q, 1]),
        )
    }

    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        o: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
        padding: Option<BoolTensor<Self>>,
        scale: f32,
        causal: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let all_f32 = [&o, &lse, &d_o].iter().all(|t| t.dtype() == DType::F32);
        let dims = flex_dims(&q, &k, &v, &padding).filter(|_| all_f32);
        let Some(dims) = dims else {
            return reference_backward::<Self>(q, k, v, o, lse, d_o, padding, scale, causal);
        };
        let [q, k, v, o, lse, d_o] = [q, k, v, o, lse, d_o].map(|t| t.to_contiguous());
        let padding = padding.map(|p| p.to_contiguous());
        let masks = flash::Masks {
            causal,
            padding: padding.as_ref().map(flex_bools),
        };
        let (dq, dk, dv) = flash::backward(
            flash::Simd::detected(),
            flex_f32(&q),
            flex_f32(&k),
            flex_f32(&v),
            flex_f32(&o),
            flex_f32(&lse),
            flex_f32(&d_o),
            dims,
            scale,
            masks,
        );
        let shape = |t: &FloatTensor<Self>| t.shape();
        (
            flex_tensor(dq, shape(&q)),
            flex_tensor(dk, shape(&k)),
            flex_tensor(dv, shape(&v)),
        )
    }
}

/// The kernels' shapes, or `None` where they do not apply (a dtype other than f32, or booleans
/// stored in a form other than bytes): the reference runs then.
fn flex_dims(
    q: &FloatTensor<Flex>,
    k: &FloatTensor<Flex>,
    v: &FloatTensor<Flex>,
    padding: &Option<BoolTensor<Flex>>,
) -> Option<flash::Dims> {
    if [q, k, v].iter().any(|t| t.dtype() != DType::F32) {
        return None;
    }
    let byte_bools = padding.as_ref().is_none_or(|p| {
        matches!(
            p.dtype(),
            DType::Bool(burn::tensor::BoolStore::Native | burn::tensor::BoolStore::U8)
        )
    });
    if !byte_bools {
        return None;
    }
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    Some(flash::Dims {
        batch: qs[0],
        heads: qs[1],
        n_q: qs[2],
        n_k: ks[2],
        d_k: qs[3],
        d_v: vs[3],
    })
}

pub(crate) fn flex_f32(t: &FloatTensor<Flex>) -> &[f32] {
    t.as_slice::<f32>()
        .expect("a contiguous f32 flex tensor reads as a slice")
}

fn flex_bools(t: &BoolTensor<Flex>) -> &[u8] {
    let (start, end) = t
        .layout()
        .contiguous_offsets()
        .expect("a contiguous flex tensor has one span");
    &t.storage::<u8>()[start..end]
}

pub(crate) fn flex_tensor(data: Vec<f32>, shape: impl Into<Shape>) -> FloatTensor<Flex> {
    burn::backend::flex::FlexTensor::from_data(TensorData::new(data, shape.into()))
}

/// The reference's masks: `[batch, heads, n_q, n_k]`, true where key j is hidden from query i,
/// and the padding alone as `[batch, 1, n_k, 1]` (to zero the keys and values of padding keys);
/// `None` where nothing is hidden.
struct ReferenceMasks<B: Backend> {
    hidden: Option<BoolTensor<B>>,
    padded_keys: Option<BoolTensor<B>>,
}

fn reference_masks<B: Backend>(
    [batch, heads, n_q, n_k]: [usize; 4],
    padding: Option<BoolTensor<B>>,
    causal: bool,
    device: &B::Device,
) -> ReferenceMasks<B> {
    let full = Shape::new([batch, heads, n_q, n_k]);
    let causal = causal.then(|| {
        // Built as floats and compared, so that the booleans come out in the store this device
        // uses (bytes on flex, words on some wgpu adapters), which host bools would not.
        let hidden: Vec<f32> = (0..n_q)
            .flat_map(|i| (0..n_k).map(move |j| if j > i { 1.0 } else { 0.0 }))
            .collect();
        let hidden = B::float_from_data(TensorData::new(hidden, [1, 1, n_q, n_k]), device);
        let bools = burn::backend::get_device_settings::<B>(device).bool_dtype;
        let mask = B::float_greater_elem(hidden, Scalar::Float(0.5), bools); // [1, 1, n_q, n_k]
        B::bool_expand(mask, full.clone()) // [batch, heads, n_q, n_k]
    });
    let padded_keys = padding
        .as_ref()
        .map(|pad| B::bool_reshape(pad.clone(), Shape::new([batch, 1, n_k, 1]))); // [batch, 1, n_k, 1]
    let padding = padding.map(|pad| {
        let pad = B::bool_reshape(pad, Shape::new([batch, 1, 1, n_k])); // [batch, 1, 1, n_k]
        B::bool_expand(pad, full.clone()) // [batch, heads, n_q, n_k]
    });
    let hidden = match (causal, padding) {
        (Some(c), Some(p)) => Some(B::bool_or(c, p)),
        (c, p) => c.or(p),
    };
    ReferenceMasks {
        hidden,
        padded_keys,
    }
}

/// A finite stand-in for −∞ in the reference, as in the decomposed path's softmax.
const MASKED: f64 = -1.0e30;

fn fill<B: Backend>(t: FloatTensor<B>, mask: &Option<BoolTensor<B>>, value: f64) -> FloatTensor<B> {
    match mask {
        Some(mask) => {
            let mask = B::bool_expand(mask.clone(), t.shape());
            B::float_mask_fill(t, mask, Scalar::Float(value))
        }
        None => t,
    }
}

/// The forward composed from tensor ops. Hidden scores are −1e30 rather than −∞, so that a fully
/// masked row has a finite maximum; so does a row whose visible scores are all −∞ (its maximum
/// is raised to −1e30). Such a row sums to ℓ = 0 once its hidden entries are zeroed: ℓ is
/// clamped to 1 there (every other row has ℓ ≥ 1, from its maximum), and its output is set to 0
/// and its lse to +∞, as on flex, whatever its hidden keys hold.
pub fn reference_forward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    padding: Option<BoolTensor<B>>,
    scale: f32,
    causal: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (qs, ks) = (q.shape(), k.shape());
    let dims = [qs[0], qs[1], qs[2], ks[2]];
    let device = q.device();
    let masks = reference_masks::<B>(dims, padding, causal, &device);
    let bools = burn::backend::get_device_settings::<B>(&device).bool_dtype;
    // A padding key's weight is exactly 0, but 0·NaN is NaN: its k and v are read as 0.
    let k = fill::<B>(k, &masks.padded_keys, 0.0); // [batch, heads, n_k, d_k]
    let v = fill::<B>(v, &masks.padded_keys, 0.0); // [batch, heads, n_k, d_v]
    let scores = B::float_mul_scalar(
        B::float_matmul(q, B::float_transpose(k)), // [batch, heads, n_q, n_k]
        Scalar::Float(scale as f64),
    );
    let scores = fill::<B>(scores, &masks.hidden, MASKED);
    let max = B::float_max_dim(scores.clone(), 3); // [batch, heads, n_q, 1]
    let no_finite_max = B::float_equal_elem(max.clone(), Scalar::Float(f64::NEG_INFINITY), bools);
    let max = B::float_mask_fill(max, no_finite_max, Scalar::Float(MASKED));
    let shifted = B::float_sub(scores, B::float_expand(max.clone(), Shape::new(dims)));
    let weights = fill::<B>(B::float_exp(shifted), &masks.hidden, 0.0); // [batch, heads, n_q, n_k]
    let sum = B::float_sum_dim(weights.clone(), 3); // [batch, heads, n_q, 1]
    let empty = Some(B::float_equal_elem(sum.clone(), Scalar::Float(0.0), bools));
    let sum = B::float_clamp_min(sum, Scalar::Float(1.0));
    let lse = fill::<B>(
        B::float_add(max, B::float_log(sum.clone())),
        &empty,
        f64::INFINITY,
    );
    let weights = B::float_div(weights, B::float_expand(sum, Shape::new(dims)));
    let o = B::float_matmul(weights, v); // [batch, heads, n_q, d_v]
    (fill::<B>(o, &empty, 0.0), lse)
}

/// The backward composed from tensor ops: P from lse, then the equations of the module doc, with
/// the keys and values of padding keys read as 0 and dQ zeroed in a row that sees no key
/// (lse = +∞). Its dS is P·(…) with P = 0 already, so no [n_q, n_k] fill is spent on it: with
/// padding keys clean, only a key the causal mask hides could hold a NaN there, and later rows see
/// that key, so its gradient is NaN anyway.
#[allow(clippy::too_many_arguments)] // the saved state of the equations
pub fn reference_backward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    o: FloatTensor<B>,
    lse: FloatTensor<B>,
    d_o: FloatTensor<B>,
    padding: Option<BoolTensor<B>>,
    scale: f32,
    causal: bool,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let (qs, ks) = (q.shape(), k.shape());
    let dims = [qs[0], qs[1], qs[2], ks[2]];
    let device = q.device();
    let c = Scalar::Float(scale as f64);
    let masks = reference_masks::<B>(dims, padding, causal, &device);
    let bools = burn::backend::get_device_settings::<B>(&device).bool_dtype;
    let empty = Some(B::float_equal_elem(
        lse.clone(),
        Scalar::Float(f64::INFINITY),
        bools,
    )); // [batch, heads, n_q, 1]
    let k = fill::<B>(k, &masks.padded_keys, 0.0); // [batch, heads, n_k, d_k]
    let v = fill::<B>(v, &masks.padded_keys, 0.0); // [batch, heads, n_k, d_v]
    let scores = B::float_mul_scalar(
        B::float_matmul(q.clone(), B::float_transpose(k.clone())), // [batch, heads, n_q, n_k]
        c,
    );
    let scores = fill::<B>(scores, &masks.hidden, MASKED);
    let p = B::float_exp(B::float_sub(scores, B::float_expand(lse, Shape::new(dims)))); // [batch, heads, n_q, n_k]
    let p = fill::<B>(p, &masks.hidden, 0.0);
    let dv = B::float_matmul(B::float_transpose(p.clone()), d_o.clone()); // [batch, heads, n_k, d_v]
    let dp = B::float_matmul(d_o.clone(), B::float_transpose(v)); // [batch, heads, n_q, n_k]
    let d_row = B::float_sum_dim(B::float_mul(d_o, o), 3); // [batch, heads, n_q, 1]
    let ds = B::float_mul(
        p,
        B::float_sub(dp, B::float_expand(d_row, Shape::new(dims))),
    );
    let ds = B::float_mul_scalar(ds, c); // [batch, heads, n_q, n_k]
    // 0·NaN is NaN: a row that sees no key gets dQ = 0 whatever the keys it cannot see hold.
    let dq = fill::<B>(B::float_matmul(ds.clone(), k), &empty, 0.0); // [batch, heads, n_q, d_k]
    let dk = B::float_matmul(B::float_transpose(ds), q); // [batch, heads, n_k, d_k]
    (dq, dk, dv)
}
