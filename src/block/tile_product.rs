//! The flash kernels' tile products on AVX-512F, without `gemm`'s packing:
//! C[m×n] = (C or 0) + α·A[m×k]·B[k×n], where A may be read through any strides (a transposed
//! tile costs nothing, its elements are broadcast one at a time) and B is row-major.
//!
//! A tile product in attention is small (at most 128 × 128 with k = d_k or d_v, often 17 × 17 × 8
//! in the lab's training runs), so `gemm`'s per-call packing and dispatch are a large share of
//! it. Here C is computed in register blocks of `ROWS` rows × up to 64 columns (four 16-lane
//! vectors, the last one masked), 24 accumulators: per step of k, four loads of B's row, six
//! broadcasts of A and 24 fused multiply-adds. The data of one tile sits in L1/L2, so nothing is
//! packed; the caller lays B out row-major (Kᵀ and Vᵀ once per call).
//!
//! Only x86-64 with AVX-512F runs this; [`crate::block::flash`] checks the level first and keeps
//! `gemm` for the others.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// Rows of C per register block.
const ROWS: usize = 6;
/// f32 lanes per vector.
const LANES: usize = 16;
/// Vectors of C per register block's row: 64 columns.
const VECTORS: usize = 4;

/// C[m×n] = (C if `accumulate`, else 0) + α·A·B, with A[i,p] at `a[i·a_rs + p·a_cs]`,
/// B[p,j] at `b[p·ldb + j]` and C[i,j] at `c[i·ldc + j]`.
///
/// # Safety
/// The CPU runs AVX-512F, and every element named above lies inside the allocations behind the
/// pointers (for i < m, p < k, j < n); `c` aliases neither `a` nor `b`.
#[allow(clippy::too_many_arguments)] // a tile product: three matrices, their strides and sizes
#[target_feature(enable = "avx512f")]
pub unsafe fn product(
    (m, n, k): (usize, usize, usize),
    a: *const f32,
    (a_rs, a_cs): (usize, usize),
    b: *const f32,
    (ldb, b_panel): (usize, usize),
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    alpha: f32,
) {
    let step = LANES * VECTORS;
    for j0 in (0..n).step_by(step) {
        let cols = step.min(n - j0);
        let vectors = cols.div_ceil(LANES);
        // Lanes of the last vector that lie inside C (all 16 when cols is a multiple of 16).
        let tail = cols - (vectors - 1) * LANES;
        let last: __mmask16 = if tail == LANES {
            0xFFFF
        } else {
            (1u16 << tail) - 1
        };
        for i0 in (0..m).step_by(ROWS) {
            let rows = ROWS.min(m - i0);
            let at = Block {
                k,
                a: a.wrapping_add(i0 * a_rs),
                a_rs,
                a_cs,
                b: b.wrapping_add((j0 / step) * b_panel),
                ldb,
                c: c.wrapping_add(i0 * ldc + j0),
                ldc,
                last,
                accumulate,
                alpha,
            };
            // One monomorphised block per (rows, vectors), so that the accumulators are registers.
            macro_rules! dispatch {
                ($($r:literal),*) => {
                    match (rows, vectors) {
                        $(
                            ($r, 1) => at.run::<$r, 1>(),
                            ($r, 2) => at.run::<$r, 2>(),
                            ($r, 3) => at.run::<$r, 3>(),
                            ($r, 4) => at.run::<$r, 4>(),
                        )*
                        _ => unreachable!("tile_product: {rows} rows × {vectors} vectors"),
                    }
                };
            }
            // SAFETY: this block's rows and columns lie inside C, A and B (the caller's contract
            // for all of them), and the CPU runs AVX-512F (the same contract).
            unsafe { dispatch!(1, 2, 3, 4, 5, 6) };
        }
    }
}

/// One register block of C: where it starts in A, B and C, and the mask of its last vector.
struct Block {
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    last: __mmask16,
    accumulate: bool,
    alpha: f32,
}

impl Block {
    /// C[R × 16·V] (the last vector masked) = (C or 0) + α·A[R × k]·B[k × 16·V].
    ///
    /// # Safety
    /// As [`product`], for this block's rows and columns.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const R: usize, const V: usize>(&self) {
        let mask = |v: usize| if v + 1 == V { self.last } else { 0xFFFF };
        // SAFETY (every pointer below): p < k, r < R and the unmasked lanes of v < V name
        // elements of this block, inside A, B and C by the caller's contract; masked lanes are
        // neither read nor written. AVX-512F: this function's target feature.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; R]; // [R rows, V vectors of 16 columns]
            for p in 0..self.k {
                let b_row = self.b.add(p * self.ldb);
                let mut b_vec = [_mm512_setzero_ps(); V];
                for (v, lane) in b_vec.iter_mut().enumerate() {
                    *lane = _mm512_maskz_loadu_ps(mask(v), b_row.add(v * LANES));
                }
                let a_col = self.a.add(p * self.a_cs);
                for (r, acc_row) in acc.iter_mut().enumerate() {
                    let a_elem = _mm512_set1_ps(*a_col.add(r * self.a_rs));
                    for (acc_vec, b_lane) in acc_row.iter_mut().zip(&b_vec) {
                        *acc_vec = _mm512_fmadd_ps(a_elem, *b_lane, *acc_vec);
                    }
                }
            }
            let alpha = _mm512_set1_ps(self.alpha);
            for (r, acc_row) in acc.iter().enumerate() {
                for (v, acc_vec) in acc_row.iter().enumerate() {
                    let at = self.c.add(r * self.ldc + v * LANES);
                    let old = if self.accumulate {
                        _mm512_maskz_loadu_ps(mask(v), at)
                    } else {
                        _mm512_setzero_ps()
                    };
                    _mm512_mask_storeu_ps(at, mask(v), _mm512_fmadd_ps(*acc_vec, alpha, old));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C = (C or 0) + α·A·B in f64, for the same strides.
    #[allow(clippy::too_many_arguments)] // mirrors `product`
    fn textbook(
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        (a_rs, a_cs): (usize, usize),
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
        alpha: f32,
    ) {
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|p| a[i * a_rs + p * a_cs] as f64 * b[p * ldb + j] as f64)
                    .sum();
                let old = if accumulate {
                    c[i * ldc + j] as f64
                } else {
                    0.0
                };
                c[i * ldc + j] = (old + alpha as f64 * dot) as f32;
            }
        }
    }

    fn draw(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Every remainder of rows (1…6 past a block) and columns (1…16 past a vector, 1…4 vectors
    /// past 64), both layouts of A, with and without accumulating, and C wider than the product:
    /// the columns and rows outside it keep their sentinel.
    #[test]
    fn matches_the_textbook_at_every_remainder_and_stays_inside_c() {
        if !std::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        let mut cases = 0;
        for m in [1, 5, 6, 7, 13, 17, 128] {
            for n in [1, 8, 15, 16, 17, 33, 64, 65, 100, 128] {
                for k in [0, 1, 8, 17, 64] {
                    for transposed in [false, true] {
                        for accumulate in [false, true] {
                            let (a_rs, a_cs) = if transposed { (1, m) } else { (k, 1) };
                            let a = draw(m * k, (m * 1000 + n * 10 + k) as u64);
                            let ldb = n + 3;
                            let b = draw(k * ldb, (n * 7 + k) as u64);
                            let ldc = n + 5;
                            // One sentinel row below C, and 5 sentinel columns right of each row.
                            let start = draw((m + 1) * ldc, (m + n + k) as u64);
                            let mut ours = start.clone();
                            let mut want = start.clone();
                            let dims = (m, n, k);
                            // SAFETY: the CPU has AVX-512F (checked above); every index lies in
                            // the vectors: A is m·k, B k rows of ldb ≥ n, C m rows of ldc ≥ n.
                            unsafe {
                                product(
                                    dims,
                                    a.as_ptr(),
                                    (a_rs, a_cs),
                                    b.as_ptr(),
                                    (ldb, 64),
                                    ours.as_mut_ptr(),
                                    ldc,
                                    accumulate,
                                    0.7,
                                );
                            }
                            let args = (a_rs, a_cs);
                            textbook(dims, &a, args, &b, ldb, &mut want, ldc, accumulate, 0.7);
                            for (at, (x, y)) in ours.iter().zip(&want).enumerate() {
                                let (i, j) = (at / ldc, at % ldc);
                                let inside = i < m && j < n;
                                let ok = if inside {
                                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()) * (k as f32 + 1.0)
                                } else {
                                    x.to_bits() == start[at].to_bits()
                                };
                                assert!(
                                    ok,
                                    "m {m} n {n} k {k} transposed {transposed} accumulate \
                                     {accumulate}: C[{i},{j}] = {x}, want {y} (inside: {inside})"
                                );
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 7 * 10 * 5 * 4);
    }
}
