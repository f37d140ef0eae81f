//! The CPU kernels behind the fused attention op: a flash forward that keeps the row log-sum-exp,
//! and a tiled backward that recomputes the weights from it. Plain `f32` slices in, plain vectors
//! out, so they know nothing of Burn; [`crate::block::fused`] feeds them flex's tensors.
//!
//! For one head, with c the scale (1 / (divisor·τ)) and M the mask (true = hidden):
//! - forward (FlashAttention, Dao et al. 2022; FlashAttention-2, Dao 2023): S = c·Q·Kᵀ with
//!   S_ij = −∞ where M_ij, lse_i = log Σ_j exp(S_ij), O = exp(S − lse)·V, computed one key tile at
//!   a time with a running maximum m_i, running sum ℓ_i and a rescaled O_i, so that no [n_q, n_k]
//!   matrix is ever held: memory O(n·d) per head.
//! - backward, given dO: D_i = dO_i·O_i, then per tile P = exp(c·Q·Kᵀ − lse), dV += Pᵀ·dO,
//!   dP = dO·Vᵀ, dS = P ⊙ (dP − D), dQ += c·dS·K, dK += c·dSᵀ·Q.
//!
//! A row with no visible key (fully masked, or every visible score −∞) has lse = +∞, so every P_ij
//! is exp(−∞) = 0; its output and dQ are set to 0, never NaN, whatever its hidden keys hold. The
//! keys and values of padding keys are read as 0, so a NaN in a key no row sees reaches nothing
//! (the contract of [`crate::block::fused`]). A NaN in a row's visible scores
//! still makes that row NaN, so the training loop's divergence guard sees it. Tiles above a causal
//! diagonal and tiles of padding only are skipped.
//!
//! The tile products are our own AVX-512 register blocks ([`crate::block::tile_product`]) where
//! the CPU has AVX-512F and the `gemm` crate's (the one flex's matmul uses) elsewhere; Kᵀ and Vᵀ
//! are laid out once per key tile so that both read their right-hand side row by row. The work
//! is split over rayon's pool by (batch·head, query block) in the forward and (batch·head, group
//! of key tiles) in the backward, each group with its own dQ accumulator, so no two threads write
//! one value.

use rayon::prelude::*;

/// Query rows per block. Measured with `bench` and the kernels alone (b = 4, d = 64, 2 cores with
/// AVX-512): 128 × 128 tiles took 10–20 % less time than 64 × 64 at n = 128…2048, since each
/// `gemm` call packs and dispatches once for twice the rows; 256 rows or keys gained nothing more.
/// Checked again with our own AVX-512 products, which pack nothing per call: 64 × 64 came within
/// the machine's noise of 128 × 128 and 256 × 256 was slower, so 128 stays.
pub const BLOCK_Q: usize = 128;
/// Keys per tile.
pub const BLOCK_K: usize = 128;
/// Below this many multiply-adds (batch·heads·n_q·n_k·(d_k + d_v)) one thread does the whole call.
/// Measured in `bench` on 2 cores: with the pool at n = 64 and 128 (b = 4, d = 64: 2M and 8M)
/// the block's forward+backward took 1.4× the decomposed path's, serially 0.8×; rayon's idle
/// workers spin between calls and take the core from the flex ops around the kernel.
pub const SERIAL_WORK: usize = 1 << 24;

/// The shapes of one call: q `[batch, heads, n_q, d_k]`, k `[batch, heads, n_k, d_k]`,
/// v `[batch, heads, n_k, d_v]`, all contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub batch: usize,
    pub heads: usize,
    pub n_q: usize,
    pub n_k: usize,
    pub d_k: usize,
    pub d_v: usize,
}

impl Dims {
    /// Multiply-adds of one call, batch·heads·n_q·n_k·(d_k + d_v): at or above [`SERIAL_WORK`] the
    /// call runs on rayon's pool.
    pub fn work(&self) -> usize {
        self.batch * self.heads * self.n_q * self.n_k * (self.d_k + self.d_v)
    }
}

/// What hides key j from query i: the causal rule (j > i) and a key-padding mask `[batch, n_k]`
/// (nonzero = padding), as flex stores booleans.
#[derive(Debug, Clone, Copy)]
pub struct Masks<'a> {
    pub causal: bool,
    pub padding: Option<&'a [u8]>,
}

/// How much of a (query block, key tile) pair the masks hide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cover {
    /// Every entry: skip the tile.
    All,
    /// Some entries: mask them one by one.
    Some,
    None,
}

impl Masks<'_> {
    /// Rows `rows` of batch `b` against keys `keys`.
    fn cover(
        &self,
        b: usize,
        n_k: usize,
        rows: std::ops::Range<usize>,
        keys: std::ops::Range<usize>,
    ) -> Cover {
        // Causal: key j is hidden from every row when j > the block's last row.
        if self.causal && keys.start > rows.end - 1 {
            return Cover::All;
        }
        let causal_cuts = self.causal && keys.end - 1 > rows.start;
        let padded = self.padding.map(|pad| {
            let flags = &pad[b * n_k + keys.start..b * n_k + keys.end];
            (flags.iter().all(|&f| f != 0), flags.iter().any(|&f| f != 0))
        });
        match padded {
            Some((true, _)) => Cover::All,
            Some((_, true)) => Cover::Some,
            _ if causal_cuts => Cover::Some,
            _ => Cover::None,
        }
    }

    /// Sets the hidden entries of `scores` (query row `i`, keys from `j0`) to −∞.
    fn hide(&self, b: usize, n_k: usize, i: usize, j0: usize, scores: &mut [f32]) {
        for (t, s) in scores.iter_mut().enumerate() {
            let j = j0 + t;
            let padded = self.padding.is_some_and(|pad| pad[b * n_k + j] != 0);
            if (self.causal && j > i) || padded {
                *s = f32::NEG_INFINITY;
            }
        }
    }
}

/// A row-major or transposed view of a matrix inside a slice: element (r, c) is
/// `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl<'a> View<'a> {
    pub(crate) fn rows(data: &'a [f32], width: usize) -> Self {
        Self {
            data,
            rs: width,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix of row width `width`.
    pub(crate) fn transposed(data: &'a [f32], width: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: width,
        }
    }

    /// Panics, naming `what`, unless a `rows` × `cols` matrix lies inside the slice.
    pub(crate) fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(last < self.data.len(), "{what} out of bounds");
        }
    }
}

/// dst[m×n] = (dst if `accumulate`, else 0) + beta · lhs[m×k] · rhs[k×n], with dst row-major of
/// row width `dst_rs` and rhs row-major (the callers lay Kᵀ and Vᵀ out with [`transpose_into`]).
/// At [`Simd::Avx512`] the product is [`crate::block::tile_product`]'s, at the other levels
/// `gemm`'s. Bounds are checked here, so the unsafe calls below only see valid ranges.
#[allow(clippy::too_many_arguments)] // a tile product: three matrices, their sizes and the level
fn matmul(
    simd: Simd,
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
    beta: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_rs + n <= dst.len(),
        "flash: dst out of bounds"
    );
    assert_eq!(rhs.cs, 1, "flash: rhs must be row-major");
    lhs.check(m, k, "flash: lhs");
    rhs.check(k, n, "flash: rhs");
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                dst[row * dst_rs..row * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx512 {
        // SAFETY: the level is checked at the kernels' entry (`runs_here`); every index the
        // product reads or writes lies inside the slices (checked just above, rhs row-major so
        // its 64-column panels are its rows' spans), and `dst` is borrowed mutably, so it
        // aliases neither input.
        unsafe {
            crate::block::tile_product::product(
                (m, n, k),
                lhs.data.as_ptr(),
                (lhs.rs, lhs.cs),
                rhs.data.as_ptr(),
                (rhs.rs, 64),
                dst.as_mut_ptr(),
                dst_rs,
                accumulate,
                beta,
            );
        }
        return;
    }
    // Off x86-64 every level's products are gemm's, and `simd` is read nowhere else.
    let _ = simd;
    // SAFETY: every index gemm reads or writes lies inside the slices (checked just above), and
    // `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `dst[c·rows + r] = src[r·width + c]`: the transpose `[width, rows]` of a row-major tile
/// `[rows, width]` (a key tile's Kᵀ or Vᵀ), so that the products read it row by row. Laid out
/// once per tile, it is reused by every query block that meets the tile.
fn transpose_into(dst: &mut [f32], src: &[f32], rows: usize, width: usize) {
    assert_eq!(
        src.len(),
        rows * width,
        "flash: tile to transpose has the wrong size"
    );
    for (r, row) in src.chunks_exact(width.max(1)).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            dst[c * rows + r] = x;
        }
    }
}

/// e^x to about 2 ulp, written without branches so that a row of it vectorises: Cody–Waite range
/// reduction x = n·ln2 + r and Cephes' degree-6 polynomial for e^r (the form of Cephes `expf`).
/// e^−∞ is exactly 0 (so are arguments below −87.3, where e^x < 2⁻¹²⁶), and NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOW: f32 = -87.336_55;
    const HIGH: f32 = 88.0;
    // 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let clamped = x.clamp(LOW, HIGH); // NaN stays NaN
    let shifted = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    let n_bits = shifted.to_bits() as i32 - 0x4B40_0000;
    let two_n = f32::from_bits(((n_bits + 127) << 23) as u32);
    let e = e_r * two_n;
    if x < LOW {
        0.0
    } else if x > HIGH {
        f32::INFINITY
    } else {
        e
    }
}

/// The larger of two, NaN if either is NaN (so that a NaN score reaches the output).
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() { b } else { a }
}

/// row[j] ← e^(row[j] − shift); returns the sum. The exponentials are a plain map and the sum
/// runs in `LANES` lanes, since a single running float sum is a chain the compiler may not reorder
/// (and so would not vectorise, exponentials included).
#[inline(always)]
fn exp_shifted_generic<const LANES: usize>(row: &mut [f32], shift: f32) -> f32 {
    for x in row.iter_mut() {
        *x = exp(*x - shift);
    }
    let mut lanes = [0.0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// The largest entry of `row` (−∞ for an empty one), NaN if any is NaN; in `LANES` lanes.
#[inline(always)]
fn row_max_generic<const LANES: usize>(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = nan_max(*lane, x);
        }
    }
    let rest = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| nan_max(m, x));
    lanes.iter().fold(rest, |m, &x| nan_max(m, x))
}

/// dS ← P ⊙ (dP − D)·c, in place in `dp`.
#[inline(always)]
fn score_grad_generic(p: &[f32], dp: &mut [f32], d: f32, scale: f32) {
    for (g, &w) in dp.iter_mut().zip(p) {
        *g = w * (*g - d) * scale;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The element-wise loops compiled for AVX2 + FMA (8 lanes) and for AVX-512F (16 lanes):
    //! the same Rust, vectorised by the compiler under each target feature. Callers check the
    //! CPU first ([`super::Simd::detected`]).
    use super::{exp_shifted_generic, row_max_generic, score_grad_generic};

    /// The three loops under one set of target features, at `$lanes` lanes.
    macro_rules! loops {
        ($features:literal, $lanes:literal, $exp:ident, $max:ident, $grad:ident) => {
            #[target_feature(enable = $features)]
            pub fn $exp(row: &mut [f32], shift: f32) -> f32 {
                exp_shifted_generic::<$lanes>(row, shift)
            }

            #[target_feature(enable = $features)]
            pub fn $max(row: &[f32]) -> f32 {
                row_max_generic::<$lanes>(row)
            }

            #[target_feature(enable = $features)]
            pub fn $grad(p: &[f32], dp: &mut [f32], d: f32, scale: f32) {
                score_grad_generic(p, dp, d, scale)
            }
        };
    }

    loops!(
        "avx2,fma",
        8,
        exp_shifted_avx2,
        row_max_avx2,
        score_grad_avx2
    );
    loops!(
        "avx512f,avx2,fma",
        16,
        exp_shifted_avx512,
        row_max_avx512,
        score_grad_avx512
    );
}

/// Which vector code runs the kernels' element-wise loops (exponentials, row maxima, dS) and
/// their tile products: at [`Simd::Avx512`] the products are [`crate::block::tile_product`]'s,
/// at the other levels `gemm`'s, which picks its own kernels per process (AVX-512 where the CPU
/// has AVX-512F, since our `gemm` dependency enables `x86-v4`; AVX2 + FMA or portable below).
///
/// [`forward`] and [`backward`] take the level: the op passes [`Simd::detected`], and a test
/// runs every level this CPU offers, not only the best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    /// Plain Rust, whatever the compiler's baseline target gives (SSE2 on x86-64).
    Scalar,
    /// 8 lanes: AVX2 and FMA.
    Avx2,
    /// 16 lanes: AVX-512F.
    Avx512,
}

impl std::fmt::Display for Simd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Simd::Scalar => "scalar",
            Simd::Avx2 => "AVX2 + FMA, 8 lanes",
            Simd::Avx512 => "AVX-512F, 16 lanes",
        })
    }
}

impl Simd {
    /// The widest level this CPU runs, capped by `ATTENTION_LAB_SIMD` (`scalar`, `avx2` or
    /// `avx512`) when it is set, so that one binary can time or compare the levels. An unknown
    /// value is said once on stderr and ignored.
    pub fn detected() -> Simd {
        static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(|| {
            let cap = std::env::var("ATTENTION_LAB_SIMD").ok();
            match Simd::capped(&Simd::available(), cap.as_deref()) {
                Ok(level) => level,
                Err(unknown) => {
                    eprintln!(
                        "warning: ATTENTION_LAB_SIMD={unknown:?} is not scalar, avx2 or avx512; ignored"
                    );
                    Simd::capped(&Simd::available(), None).unwrap_or(Simd::Scalar)
                }
            }
        })
    }

    /// The widest of `available` at or below `cap` (none: no cap); `Err` with the value when
    /// `cap` names no level.
    fn capped(available: &[Simd], cap: Option<&str>) -> Result<Simd, String> {
        let cap = match cap.map(str::trim) {
            None | Some("") => Simd::Avx512,
            Some("scalar") => Simd::Scalar,
            Some("avx2") => Simd::Avx2,
            Some("avx512") => Simd::Avx512,
            Some(other) => return Err(other.to_string()),
        };
        Ok(available
            .iter()
            .copied()
            .filter(|&l| l <= cap)
            .max()
            .unwrap_or(Simd::Scalar))
    }

    /// Every level this CPU runs, narrowest first; [`Simd::Scalar`] always.
    pub fn available() -> Vec<Simd> {
        let mut levels = vec![Simd::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                levels.push(Simd::Avx2);
                if is_x86_feature_detected!("avx512f") {
                    levels.push(Simd::Avx512);
                }
            }
        }
        levels
    }

    /// Whether this CPU runs `self`: the check every unsafe call below relies on. Each level
    /// implies the narrower ones ([`Simd::available`] lists a prefix), so it is a comparison with
    /// the widest, found once, not a feature probe per kernel call.
    pub(crate) fn runs_here(self) -> bool {
        static WIDEST: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        self <= *WIDEST.get_or_init(|| Simd::available().into_iter().max().unwrap_or(Simd::Scalar))
    }

    fn exp_shifted(self, row: &mut [f32], shift: f32) -> f32 {
        match self {
            // SAFETY: a level other than Scalar is only built by `detected`/`available`, or
            // checked by `runs_here` at the kernels' entry, so the CPU has its features.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { x86::exp_shifted_avx512(row, shift) },
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { x86::exp_shifted_avx2(row, shift) },
            _ => exp_shifted_generic::<8>(row, shift),
        }
    }

    fn row_max(self, row: &[f32]) -> f32 {
        match self {
            // SAFETY: as in `exp_shifted`.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { x86::row_max_avx512(row) },
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { x86::row_max_avx2(row) },
            _ => row_max_generic::<8>(row),
        }
    }

    fn score_grad(self, p: &[f32], dp: &mut [f32], d: f32, scale: f32) {
        match self {
            // SAFETY: as in `exp_shifted`.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { x86::score_grad_avx512(p, dp, d, scale) },
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { x86::score_grad_avx2(p, dp, d, scale) },
            _ => score_grad_generic(p, dp, d, scale),
        }
    }
}

/// The forward pass: `(o [batch, heads, n_q, d_v], lse [batch, heads, n_q])`, with the
/// element-wise loops at `simd` ([`Simd::detected`] in the op; any level this CPU runs in tests).
pub fn forward(
    simd: Simd,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: Dims,
    scale: f32,
    masks: Masks,
) -> (Vec<f32>, Vec<f32>) {
    assert!(simd.runs_here(), "flash: this CPU does not run {simd:?}");
    let Dims {
        batch,
        heads,
        n_q,
        n_k,
        d_k,
        d_v,
    } = dims;
    check_inputs(q, k, v, dims, masks);
    let (k_clean, v_clean) = masks.clean_padded_keys(k, v, dims);
    let (k, v) = (
        k_clean.as_deref().unwrap_or(k),
        v_clean.as_deref().unwrap_or(v),
    );
    let mut o = vec![0.0f32; batch * heads * n_q * d_v]; // [batch, heads, n_q, d_v]
    let mut lse = vec![f32::INFINITY; batch * heads * n_q]; // [batch, heads, n_q]
    if o.is_empty() && lse.is_empty() {
        return (o, lse);
    }
    // One unit per (batch·head, query block): disjoint rows of o and lse.
    let blocks_per_head = n_q.div_ceil(BLOCK_Q);
    let mut units: Vec<(usize, &mut [f32], &mut [f32])> = Vec::new();
    for (bh, (o_head, lse_head)) in o
        .chunks_mut((n_q * d_v).max(1))
        .zip(lse.chunks_mut(n_q.max(1)))
        .enumerate()
    {
        let o_blocks = o_head.chunks_mut((BLOCK_Q * d_v).max(1));
        let lse_blocks = lse_head.chunks_mut(BLOCK_Q);
        for (qb, (o_blk, lse_blk)) in o_blocks.zip(lse_blocks).enumerate() {
            units.push((bh * blocks_per_head + qb, o_blk, lse_blk));
        }
    }
    let unit_body = |(unit, o_blk, lse_blk): (usize, &mut [f32], &mut [f32])| {
        let (bh, qb) = (unit / blocks_per_head, unit % blocks_per_head);
        let b = bh / heads;
        let i0 = qb * BLOCK_Q;
        let rows = lse_blk.len();
        let q_blk = rows_of(q, bh * n_q + i0, rows, d_k);
        let k_head = rows_of(k, bh * n_k, n_k, d_k);
        let v_head = rows_of(v, bh * n_k, n_k, d_v);
        // Sized to the call, not the tile: at n = 9 a full tile would be zeroed for 81 entries.
        let mut scores = vec![0.0f32; rows * BLOCK_K.min(n_k)];
        let mut k_t = vec![0.0f32; d_k * BLOCK_K.min(n_k)];
        let mut max = vec![f32::NEG_INFINITY; rows];
        let mut sum = vec![0.0f32; rows];
        for j0 in (0..n_k).step_by(BLOCK_K) {
            let cols = BLOCK_K.min(n_k - j0);
            let cover = masks.cover(b, n_k, i0..i0 + rows, j0..j0 + cols);
            if cover == Cover::All {
                continue;
            }
            let scores = &mut scores[..rows * cols];
            let k_t = &mut k_t[..d_k * cols];
            transpose_into(k_t, rows_of(k_head, j0, cols, d_k), cols, d_k); // [d_k, cols]
            // S = c·Q_blk·K_tileᵀ   [rows, cols]
            matmul(
                simd,
                (rows, cols, d_k),
                scores,
                cols,
                false,
                View::rows(q_blk, d_k),
                View::rows(k_t, cols),
                scale,
            );
            for r in 0..rows {
                let row = rows_of_mut(scores, r, 1, cols);
                if cover == Cover::Some {
                    masks.hide(b, n_k, i0 + r, j0, row);
                }
                let tile_max = simd.row_max(row);
                let new_max = nan_max(max[r], tile_max);
                if new_max == f32::NEG_INFINITY {
                    // Nothing visible yet in this row: it adds nothing.
                    row.fill(0.0);
                    continue;
                }
                let rescale = exp(max[r] - new_max);
                sum[r] = sum[r] * rescale + simd.exp_shifted(row, new_max);
                if rescale != 1.0 {
                    for x in rows_of_mut(o_blk, r, 1, d_v) {
                        *x *= rescale;
                    }
                }
                max[r] = new_max;
            }
            // O_blk += P·V_tile   [rows, d_v]
            matmul(
                simd,
                (rows, d_v, cols),
                o_blk,
                d_v,
                true,
                View::rows(scores, cols),
                View::rows(rows_of(v_head, j0, cols, d_v), d_v),
                1.0,
            );
        }
        for r in 0..rows {
            if max[r] == f32::NEG_INFINITY {
                // Nothing visible: output 0 (a tile it shared with other rows may have added
                // 0·NaN from a hidden value), lse = +∞ so that the backward's P is 0.
                rows_of_mut(o_blk, r, 1, d_v).fill(0.0);
                continue;
            }
            let inv = 1.0 / sum[r];
            for x in rows_of_mut(o_blk, r, 1, d_v) {
                *x *= inv;
            }
            lse_blk[r] = max[r] + sum[r].ln();
        }
    };
    if dims.work() >= SERIAL_WORK {
        units.into_par_iter().for_each(unit_body);
    } else {
        units.into_iter().for_each(unit_body);
    }
    (o, lse)
}

/// The gradients `(dq, dk, dv)`, shaped like q, k and v, from the forward's inputs, its output
/// `o`, its `lse` and the output's gradient `d_o [batch, heads, n_q, d_v]`, with the
/// element-wise loops at `simd` as in [`forward`].
#[allow(clippy::too_many_arguments)] // the backward's saved state, as in the equations, and the level
pub fn backward(
    simd: Simd,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    lse: &[f32],
    d_o: &[f32],
    dims: Dims,
    scale: f32,
    masks: Masks,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert!(simd.runs_here(), "flash: this CPU does not run {simd:?}");
    let Dims {
        batch,
        heads,
        n_q,
        n_k,
        d_k,
        d_v,
    } = dims;
    check_inputs(q, k, v, dims, masks);
    let bh_count = batch * heads;
    assert_eq!(o.len(), bh_count * n_q * d_v, "flash: o has the wrong size");
    assert_eq!(d_o.len(), o.len(), "flash: d_o has the wrong size");
    assert_eq!(lse.len(), bh_count * n_q, "flash: lse has the wrong size");
    let (k_clean, v_clean) = masks.clean_padded_keys(k, v, dims);
    let (k, v) = (
        k_clean.as_deref().unwrap_or(k),
        v_clean.as_deref().unwrap_or(v),
    );
    let mut dq = vec![0.0f32; q.len()];
    let mut dk = vec![0.0f32; k.len()];
    let mut dv = vec![0.0f32; v.len()];
    let tiles = n_k.div_ceil(BLOCK_K);
    if bh_count == 0 || n_q == 0 || tiles == 0 {
        return (dq, dk, dv);
    }
    // dK and dV of a key tile gather over all query blocks, dQ of a query block over all key
    // tiles. A unit owns some key tiles of one head and keeps its own dQ; with fewer heads than
    // threads a head's tiles are split over several units (interleaved, to share a causal
    // triangle's work evenly) and their dQs summed after.
    let parallel = dims.work() >= SERIAL_WORK;
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let groups = (2 * threads).div_ceil(bh_count).clamp(1, tiles);
    struct Part {
        bh: usize,
        dq: Vec<f32>,
        /// (first key, dK rows, dV rows) per owned tile.
        tiles: Vec<(usize, Vec<f32>, Vec<f32>)>,
    }
    let unit = |u: usize| -> Part {
        let (bh, group) = (u / groups, u % groups);
        let b = bh / heads;
        let q_head = rows_of(q, bh * n_q, n_q, d_k);
        let k_head = rows_of(k, bh * n_k, n_k, d_k);
        let v_head = rows_of(v, bh * n_k, n_k, d_v);
        let o_head = rows_of(o, bh * n_q, n_q, d_v);
        let do_head = rows_of(d_o, bh * n_q, n_q, d_v);
        let lse_head = rows_of(lse, bh, 1, n_q);
        // D_i = dO_i · O_i
        let d_row: Vec<f32> = (0..n_q)
            .map(|i| {
                let (a, b) = (rows_of(do_head, i, 1, d_v), rows_of(o_head, i, 1, d_v));
                a.iter().zip(b).map(|(x, y)| x * y).sum()
            })
            .collect();
        let mut part = Part {
            bh,
            dq: vec![0.0f32; n_q * d_k],
            tiles: Vec::new(),
        };
        let scratch = BLOCK_Q.min(n_q) * BLOCK_K.min(n_k);
        let mut p = vec![0.0f32; scratch];
        let mut ds = vec![0.0f32; scratch];
        let mut k_t = vec![0.0f32; d_k * BLOCK_K.min(n_k)];
        let mut v_t = vec![0.0f32; d_v * BLOCK_K.min(n_k)];
        for tile in (group..tiles).step_by(groups) {
            let j0 = tile * BLOCK_K;
            let cols = BLOCK_K.min(n_k - j0);
            let k_tile = rows_of(k_head, j0, cols, d_k);
            let v_tile = rows_of(v_head, j0, cols, d_v);
            let k_t = &mut k_t[..d_k * cols];
            let v_t = &mut v_t[..d_v * cols];
            transpose_into(k_t, k_tile, cols, d_k); // [d_k, cols]
            transpose_into(v_t, v_tile, cols, d_v); // [d_v, cols]
            let mut dk_tile = vec![0.0f32; cols * d_k];
            let mut dv_tile = vec![0.0f32; cols * d_v];
            // Under a causal mask, query blocks that end before j0 see none of these keys.
            let first_block = if masks.causal { j0 / BLOCK_Q } else { 0 };
            for i0 in (first_block * BLOCK_Q..n_q).step_by(BLOCK_Q) {
                let rows = BLOCK_Q.min(n_q - i0);
                let cover = masks.cover(b, n_k, i0..i0 + rows, j0..j0 + cols);
                if cover == Cover::All {
                    continue;
                }
                let q_blk = rows_of(q_head, i0, rows, d_k);
                let do_blk = rows_of(do_head, i0, rows, d_v);
                let p = &mut p[..rows * cols];
                let ds = &mut ds[..rows * cols];
                // P = exp(c·Q_blk·K_tileᵀ − lse)   [rows, cols]
                matmul(
                    simd,
                    (rows, cols, d_k),
                    p,
                    cols,
                    false,
                    View::rows(q_blk, d_k),
                    View::rows(k_t, cols),
                    scale,
                );
                for r in 0..rows {
                    let row = rows_of_mut(p, r, 1, cols);
                    if cover == Cover::Some {
                        masks.hide(b, n_k, i0 + r, j0, row);
                    }
                    simd.exp_shifted(row, lse_head[i0 + r]);
                }
                // dV_tile += Pᵀ·dO_blk   [cols, d_v]
                matmul(
                    simd,
                    (cols, d_v, rows),
                    &mut dv_tile,
                    d_v,
                    true,
                    View::transposed(p, cols),
                    View::rows(do_blk, d_v),
                    1.0,
                );
                // dP = dO_blk·V_tileᵀ   [rows, cols]
                matmul(
                    simd,
                    (rows, cols, d_v),
                    ds,
                    cols,
                    false,
                    View::rows(do_blk, d_v),
                    View::rows(v_t, cols),
                    1.0,
                );
                // dS = P ⊙ (dP − D)·c   [rows, cols]
                for r in 0..rows {
                    let span = r * cols..(r + 1) * cols;
                    simd.score_grad(&p[span.clone()], &mut ds[span], d_row[i0 + r], scale);
                }
                // dQ_blk += dS·K_tile   [rows, d_k]
                matmul(
                    simd,
                    (rows, d_k, cols),
                    rows_of_mut(&mut part.dq, i0, rows, d_k),
                    d_k,
                    true,
                    View::rows(ds, cols),
                    View::rows(k_tile, d_k),
                    1.0,
                );
                // dK_tile += dSᵀ·Q_blk   [cols, d_k]
                matmul(
                    simd,
                    (cols, d_k, rows),
                    &mut dk_tile,
                    d_k,
                    true,
                    View::transposed(ds, cols),
                    View::rows(q_blk, d_k),
                    1.0,
                );
            }
            part.tiles.push((j0, dk_tile, dv_tile));
        }
        part
    };
    let parts: Vec<Part> = if parallel {
        (0..bh_count * groups).into_par_iter().map(unit).collect()
    } else {
        (0..bh_count * groups).map(unit).collect()
    };
    for part in parts {
        let bh = part.bh;
        for (acc, x) in rows_of_mut(&mut dq, bh * n_q, n_q, d_k)
            .iter_mut()
            .zip(&part.dq)
        {
            *acc += x;
        }
        for (j0, dk_tile, dv_tile) in part.tiles {
            let at = bh * n_k + j0;
            dk[at * d_k..at * d_k + dk_tile.len()].copy_from_slice(&dk_tile);
            dv[at * d_v..at * d_v + dv_tile.len()].copy_from_slice(&dv_tile);
        }
    }
    // A row that sees no key (lse = +∞) has dQ = 0, whatever the keys it cannot see hold: its dS
    // is 0, but 0·NaN from a hidden key in its tiles is not.
    for (row, _) in lse.iter().enumerate().filter(|(_, l)| **l == f32::INFINITY) {
        rows_of_mut(&mut dq, row, 1, d_k).fill(0.0);
    }
    (dq, dk, dv)
}

impl Masks<'_> {
    /// Copies of k and v with the rows of padding keys set to 0, each `None` where those rows
    /// are all finite already. A hidden key's weight is exactly 0, but 0·NaN is NaN: without
    /// this a NaN in a padding key would reach the tile products (P·V, dS·K) of the rows
    /// that share its tile.
    fn clean_padded_keys(
        &self,
        k: &[f32],
        v: &[f32],
        dims: Dims,
    ) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
        let Some(padding) = self.padding else {
            return (None, None);
        };
        let clean = |x: &[f32], width: usize| {
            let rows = |bh: usize| {
                let b = bh / dims.heads;
                (0..dims.n_k)
                    .filter(move |&j| padding[b * dims.n_k + j] != 0)
                    .map(move |j| (bh * dims.n_k + j) * width..(bh * dims.n_k + j + 1) * width)
            };
            let heads = 0..dims.batch * dims.heads;
            let dirty = heads
                .clone()
                .flat_map(rows)
                .any(|row| x[row].iter().any(|e| !e.is_finite()));
            dirty.then(|| {
                let mut clean = x.to_vec();
                for row in heads.flat_map(rows) {
                    clean[row].fill(0.0);
                }
                clean
            })
        };
        (clean(k, dims.d_k), clean(v, dims.d_v))
    }
}

fn check_inputs(q: &[f32], k: &[f32], v: &[f32], dims: Dims, masks: Masks) {
    let bh = dims.batch * dims.heads;
    assert_eq!(
        q.len(),
        bh * dims.n_q * dims.d_k,
        "flash: q has the wrong size"
    );
    assert_eq!(
        k.len(),
        bh * dims.n_k * dims.d_k,
        "flash: k has the wrong size"
    );
    assert_eq!(
        v.len(),
        bh * dims.n_k * dims.d_v,
        "flash: v has the wrong size"
    );
    if let Some(pad) = masks.padding {
        assert_eq!(
            pad.len(),
            dims.batch * dims.n_k,
            "flash: the padding mask has the wrong size"
        );
    }
}

/// Rows `start .. start + count` of a row-major buffer of `width`-wide rows: one head's q, k,
/// v, o or dO (`start` = bh·n, `count` = n), a tile of one (`j0`, `cols`), or a single row.
#[inline]
fn rows_of(buf: &[f32], start: usize, count: usize, width: usize) -> &[f32] {
    &buf[start * width..(start + count) * width]
}

/// [`rows_of`], writable.
#[inline]
fn rows_of_mut(buf: &mut [f32], start: usize, count: usize, width: usize) -> &mut [f32] {
    &mut buf[start * width..(start + count) * width]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook computation in f64, one head at a time: full score matrix, row softmax.
    fn naive(q: &[f32], k: &[f32], v: &[f32], dims: Dims, scale: f32, masks: Masks) -> Vec<f32> {
        let Dims {
            batch,
            heads,
            n_q,
            n_k,
            d_k,
            d_v,
        } = dims;
        let mut out = vec![0.0f32; batch * heads * n_q * d_v];
        for bh in 0..batch * heads {
            let b = bh / heads;
            for i in 0..n_q {
                let scores: Vec<f64> = (0..n_k)
                    .map(|j| {
                        let hidden = (masks.causal && j > i)
                            || masks.padding.is_some_and(|p| p[b * n_k + j] != 0);
                        if hidden {
                            return f64::NEG_INFINITY;
                        }
                        (0..d_k)
                            .map(|t| {
                                q[(bh * n_q + i) * d_k + t] as f64
                                    * k[(bh * n_k + j) * d_k + t] as f64
                            })
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if max == f64::NEG_INFINITY {
                    continue;
                }
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for t in 0..d_v {
                    let x: f64 = (0..n_k)
                        .map(|j| e[j] / total * v[(bh * n_k + j) * d_v + t] as f64)
                        .sum();
                    out[(bh * n_q + i) * d_v + t] = x as f32;
                }
            }
        }
        out
    }

    fn draw(len: usize, seed: u64) -> Vec<f32> {
        crate::util::rng::HostRng::new(seed).uniform_vec(len, 1.0)
    }

    #[test]
    fn exp_matches_std_to_two_ulp() {
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let x = x.min(87.9);
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-200.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    /// The textbook gradients in f64: full P, dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP − D) with
    /// D_i = Σ_j P_ij·dP_ij, dQ = c·dS·K, dK = c·dSᵀ·Q.
    #[allow(clippy::too_many_arguments)] // the inputs of the op, as in `backward`
    fn naive_backward(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        d_o: &[f32],
        dims: Dims,
        scale: f32,
        masks: Masks,
    ) -> [Vec<f64>; 3] {
        let Dims {
            batch,
            heads,
            n_q,
            n_k,
            d_k,
            d_v,
        } = dims;
        let (mut dq, mut dk, mut dv) = (
            vec![0.0f64; q.len()],
            vec![0.0f64; k.len()],
            vec![0.0f64; v.len()],
        );
        let c = scale as f64;
        for bh in 0..batch * heads {
            let b = bh / heads;
            for i in 0..n_q {
                let visible = |j: usize| {
                    !((masks.causal && j > i) || masks.padding.is_some_and(|p| p[b * n_k + j] != 0))
                };
                let dot = |a: &[f32], x: usize, bb: &[f32], y: usize, d: usize| -> f64 {
                    (0..d)
                        .map(|t| a[x * d + t] as f64 * bb[y * d + t] as f64)
                        .sum()
                };
                let (qi, dj) = (bh * n_q + i, |j: usize| bh * n_k + j);
                let scores: Vec<f64> = (0..n_k)
                    .map(|j| {
                        if visible(j) {
                            c * dot(q, qi, k, dj(j), d_k)
                        } else {
                            f64::NEG_INFINITY
                        }
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if max == f64::NEG_INFINITY {
                    continue;
                }
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = e.iter().sum();
                let p: Vec<f64> = e.iter().map(|x| x / total).collect();
                let dp: Vec<f64> = (0..n_k).map(|j| dot(d_o, qi, v, dj(j), d_v)).collect();
                let d: f64 = (0..n_k).map(|j| p[j] * dp[j]).sum();
                for j in 0..n_k {
                    let ds = p[j] * (dp[j] - d);
                    for t in 0..d_v {
                        dv[dj(j) * d_v + t] += p[j] * d_o[qi * d_v + t] as f64;
                    }
                    for t in 0..d_k {
                        dq[qi * d_k + t] += c * ds * k[dj(j) * d_k + t] as f64;
                        dk[dj(j) * d_k + t] += c * ds * q[qi * d_k + t] as f64;
                    }
                }
            }
        }
        [dq, dk, dv]
    }

    /// Sizes at the tiles' edges: n = 1, a tile minus one, exactly two tiles, past one tile of
    /// queries against past two of keys, and past two tiles of queries against a few keys.
    fn tile_edges() -> [(usize, usize); 5] {
        [
            (1, 1),
            (BLOCK_Q - 1, BLOCK_K - 1),
            (2 * BLOCK_Q, 2 * BLOCK_K),
            (BLOCK_Q + 6, 2 * BLOCK_K + 5),
            (2 * BLOCK_Q + 2, 5),
        ]
    }

    #[test]
    fn forward_and_backward_match_the_textbook_across_tile_edges_at_every_simd_level() {
        // n_q ≠ n_k and d_k ≠ d_v; padding that ends inside a tile; with and without the
        // causal mask; at every level this CPU runs (scalar, then AVX2 and AVX-512 where it has
        // them), so that a narrower path is tested on a CPU that would not pick it.
        let levels = Simd::available();
        assert!(levels.contains(&Simd::detected()));
        for simd in levels {
            for (n_q, n_k) in tile_edges() {
                for causal in [false, true] {
                    let dims = Dims {
                        batch: 2,
                        heads: 2,
                        n_q,
                        n_k,
                        d_k: 5,
                        d_v: 3,
                    };
                    let (q, k, v, d_o) = (
                        draw(4 * n_q * 5, 1),
                        draw(4 * n_k * 5, 2),
                        draw(4 * n_k * 3, 3),
                        draw(4 * n_q * 3, 4),
                    );
                    let pad: Vec<u8> = (0..2 * n_k).map(|j| (j >= n_k + n_k / 2) as u8).collect();
                    let masks = Masks {
                        causal,
                        padding: Some(&pad),
                    };
                    let case = format!("{simd:?} n_q {n_q} n_k {n_k} causal {causal}");
                    let (o, lse) = forward(simd, &q, &k, &v, dims, 0.7, masks);
                    let want = naive(&q, &k, &v, dims, 0.7, masks);
                    for (a, b) in o.iter().zip(&want) {
                        assert!((a - b).abs() < 1e-5, "{case}: o {a} vs {b}");
                    }
                    let got = backward(simd, &q, &k, &v, &o, &lse, &d_o, dims, 0.7, masks);
                    let want = naive_backward(&q, &k, &v, &d_o, dims, 0.7, masks);
                    for (name, g, w) in [
                        ("dq", &got.0, &want[0]),
                        ("dk", &got.1, &want[1]),
                        ("dv", &got.2, &want[2]),
                    ] {
                        for (a, b) in g.iter().zip(w) {
                            assert!(
                                (*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()),
                                "{case}: {name} {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_simd_cap_picks_the_widest_level_at_or_below_it() {
        let all = [Simd::Scalar, Simd::Avx2, Simd::Avx512];
        assert_eq!(Simd::capped(&all, None), Ok(Simd::Avx512));
        assert_eq!(Simd::capped(&all, Some("avx2")), Ok(Simd::Avx2));
        assert_eq!(Simd::capped(&all, Some(" scalar ")), Ok(Simd::Scalar));
        // A cap above what the CPU runs is the CPU's best.
        assert_eq!(
            Simd::capped(&[Simd::Scalar, Simd::Avx2], Some("avx512")),
            Ok(Simd::Avx2)
        );
        assert_eq!(Simd::capped(&all, Some("sse9")), Err("sse9".to_string()));
    }

    #[test]
    fn every_simd_level_computes_the_element_wise_loops_alike() {
        // Rows of every length up to past two 16-lane vectors, so the remainders are covered.
        for simd in Simd::available() {
            for len in 0..40 {
                let row: Vec<f32> = draw(len, len as u64).iter().map(|x| 30.0 * x).collect();
                let max = simd.row_max(&row);
                let want = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(max, want, "{simd:?} len {len}: row max");
                let (mut got, mut plain) = (row.clone(), row.clone());
                let sum = simd.exp_shifted(&mut got, 1.5);
                let plain_sum = exp_shifted_generic::<1>(&mut plain, 1.5);
                assert_eq!(got, plain, "{simd:?} len {len}: exponentials");
                assert!(
                    (sum - plain_sum).abs() <= 1e-6 * plain_sum.abs(),
                    "{simd:?} len {len}: sum {sum} vs {plain_sum}"
                );
                let p: Vec<f32> = draw(len, 7);
                let (mut ds, want): (Vec<f32>, Vec<f32>) = (
                    row.clone(),
                    row.iter()
                        .zip(&p)
                        .map(|(g, w)| w * (g - 0.3) * 0.5)
                        .collect(),
                );
                simd.score_grad(&p, &mut ds, 0.3, 0.5);
                assert_eq!(ds, want, "{simd:?} len {len}: dS");
            }
            // A NaN anywhere in a row is its maximum, in a lane or in the remainder.
            for at in [0, 17, 33] {
                let mut row = vec![1.0f32; 35];
                row[at] = f32::NAN;
                assert!(simd.row_max(&row).is_nan(), "{simd:?}: NaN at {at}");
            }
        }
    }

    #[test]
    fn a_fully_masked_row_gives_zeros_and_no_nan() {
        let dims = Dims {
            batch: 1,
            heads: 1,
            n_q: 3,
            n_k: 4,
            d_k: 2,
            d_v: 2,
        };
        let (q, k, v) = (draw(6, 1), draw(8, 2), draw(8, 3));
        let pad = [1u8; 4];
        let masks = Masks {
            causal: false,
            padding: Some(&pad),
        };
        let (o, lse) = forward(Simd::detected(), &q, &k, &v, dims, 1.0, masks);
        assert!(o.iter().all(|&x| x == 0.0), "{o:?}");
        assert!(lse.iter().all(|&x| x == f32::INFINITY), "{lse:?}");
        let (dq, dk, dv) = backward(
            Simd::detected(),
            &q,
            &k,
            &v,
            &o,
            &lse,
            &draw(6, 4),
            dims,
            1.0,
            masks,
        );
        for g in [dq, dk, dv] {
            assert!(g.iter().all(|&x| x == 0.0), "{g:?}");
        }
    }

    #[test]
    fn a_nan_score_reaches_the_output() {
        let dims = Dims {
            batch: 1,
            heads: 1,
            n_q: 2,
            n_k: 3,
            d_k: 2,
            d_v: 2,
        };
        let mut q = draw(4, 1);
        q[0] = f32::NAN;
        let (o, _) = forward(
            Simd::detected(),
            &q,
            &draw(6, 2),
            &draw(6, 3),
            dims,
            1.0,
            Masks {
                causal: false,
                padding: None,
            },
        );
        assert!(o[0].is_nan() && o[1].is_nan(), "{o:?}");
        assert!(o[2].is_finite() && o[3].is_finite(), "{o:?}");
    }
}
