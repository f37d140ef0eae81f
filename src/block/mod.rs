//! The attention block and its parts: [`attention`] (projections, heads, forward, outputs) built
//! from the scaling rule ([`scale`]), the softmax over a chosen axis ([`softmax`]), the masks
//! ([`mask`]), the positional encodings ([`positional`]), Scalable-Softmax's per-row factor
//! ([`ssmax`]), the gate on each head's output ([`gate`]) and linear attention's kernel in place
//! of the softmax ([`kernel`]). This is what the claims are about.
//! Where the math allows, the block runs its softmax and weighted sum as one op ([`fused`], with
//! flex's kernels in [`flash`]). The rest of a transformer block runs on ops of the same kind, one
//! autodiff node each with its own backward: the affine maps ([`linear`]), the MLP's activation
//! ([`gelu`]) and the layer norm ([`layer_norm`]).
//!
//! May use: util.

pub mod attention;
pub mod flash;
pub mod fused;
pub mod gate;
pub mod gelu;
pub mod kernel;
pub mod layer_norm;
pub mod linear;
pub mod mask;
pub mod positional;
pub mod scale;
pub mod softmax;
pub mod ssmax;
#[cfg(target_arch = "x86_64")]
pub mod tile_product;
