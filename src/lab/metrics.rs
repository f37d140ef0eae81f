//! What the experiments measure: attention entropy, peak weight, logit spread, gradient norms,
//! the softmax Jacobian, and summaries over seeds.

use burn::prelude::*;

/// A tensor's values on the host, as f32.
pub fn to_host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("an f32 tensor")
}

/// `data` (row-major) as rows of `cols` numbers, for tables and JSON.
pub fn rows(data: &[f32], cols: usize) -> Vec<Vec<f32>> {
    data.chunks(cols.max(1)).map(<[f32]>::to_vec).collect()
}

/// The index of each row's largest value in `data` (row-major, `cols` per row), the first on a
/// tie: a classifier's predictions from its logits.
pub fn argmax_rows(data: &[f32], cols: usize) -> Vec<usize> {
    data.chunks(cols.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}

/// The heads of the first batch item of `t: [batch, heads, n, cols]`, each as n rows, read back
/// in one transfer.
pub fn head_rows(t: Tensor<4>) -> Vec<Vec<Vec<f32>>> {
    let [_, heads, n, cols] = t.dims();
    to_host(t)
        .chunks((n * cols).max(1))
        .take(heads)
        .map(|head| rows(head, cols))
        .collect()
}

/// ‖t‖_F = √(Σ t²), reduced on the device.
pub fn norm<const D: usize>(t: Tensor<D>) -> f64 {
    t.powf_scalar(2.0).sum().sqrt().into_scalar::<f32>() as f64
}

/// Population standard deviation of all entries.
pub fn std<const D: usize>(t: Tensor<D>) -> f64 {
    let n = t.shape().num_elements() as f64;
    let mean = t.clone().mean().into_scalar::<f32>() as f64;
    let sq = t.powf_scalar(2.0).mean().into_scalar::<f32>() as f64;
    // E[x²] − E[x]², guarded against rounding below 0; n only matters for n = 1.
    if n < 2.0 {
        0.0
    } else {
        (sq - mean * mean).max(0.0).sqrt()
    }
}

/// Mean row entropy per head, in nats: H_h = mean over (batch, query) of −Σ_j w_ij ln w_ij, for
/// `weights: [batch, heads, n_q, n_k]`. ln n_k is a uniform row, 0 a one-hot row. Zero weights
/// (masked keys) add nothing, as 0·ln 0 = 0.
pub fn entropy_per_head(weights: Tensor<4>) -> Vec<f64> {
    let [batch, heads, n_q, _] = weights.dims();
    let plogp = weights.clone() * weights.clamp_min(1e-30).log(); // [batch, heads, n_q, n_k]
    let per_head = plogp
        .sum_dim(3) // [batch, heads, n_q, 1]
        .swap_dims(0, 1) // [heads, batch, n_q, 1]
        .reshape([heads, batch * n_q]) // [heads, batch·n_q]
        .mean_dim(1) // [heads, 1]
        .neg();
    to_host(per_head).into_iter().map(f64::from).collect()
}

/// Mean over (batch, query) of each row's largest weight, per head: 1/n_k is uniform, 1 one-hot.
pub fn max_weight_per_head(weights: Tensor<4>) -> Vec<f64> {
    let [batch, heads, n_q, _] = weights.dims();
    let per_head = weights
        .max_dim(3) // [batch, heads, n_q, 1]
        .swap_dims(0, 1) // [heads, batch, n_q, 1]
        .reshape([heads, batch * n_q]) // [heads, batch·n_q]
        .mean_dim(1); // [heads, 1]
    to_host(per_head).into_iter().map(f64::from).collect()
}

/// Mean weight on key 0 per head, over the batch and the queries 1 … n_q − 1: the attention mass
/// on the first position (Gu et al. 2024's α₀, "When Attention Sink Emerges in Language Models",
/// §3, without query 0, which under a causal mask sees key 0 alone and has no choice). A row
/// spread evenly over its i + 1 keys gives key 0 only 1/(i + 1). 0 when there is one query.
pub fn first_key_weight_per_head(weights: Tensor<4>) -> Vec<f64> {
    let [batch, heads, n_q, _] = weights.dims();
    if n_q < 2 {
        return vec![0.0; heads];
    }
    let per_head = weights
        .slice([0..batch, 0..heads, 1..n_q, 0..1]) // [batch, heads, n_q − 1, 1]
        .swap_dims(0, 1) // [heads, batch, n_q − 1, 1]
        .reshape([heads, batch * (n_q - 1)]) // [heads, batch·(n_q − 1)]
        .mean_dim(1); // [heads, 1]
    to_host(per_head).into_iter().map(f64::from).collect()
}

/// softmax(z) on the host, in f64, with the max subtracted first.
pub fn softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// Frobenius norm of the softmax Jacobian at p = softmax(z): ∂p_i/∂z_j = p_i(δ_ij − p_j), so
/// ‖J‖_F² = Σ_i p_i²(1 − p_i)² + Σ_{i≠j} p_i² p_j². It goes to 0 as p becomes one-hot: the
/// gradient through a saturated softmax vanishes.
pub fn softmax_jacobian_norm(p: &[f64]) -> f64 {
    let mut sum = 0.0;
    for (i, &pi) in p.iter().enumerate() {
        for (j, &pj) in p.iter().enumerate() {
            let delta = if i == j { 1.0 } else { 0.0 };
            sum += (pi * (delta - pj)).powi(2);
        }
    }
    sum.sqrt()
}

/// Entropy of a distribution in nats.
pub fn entropy(p: &[f64]) -> f64 {
    -p.iter()
        .filter(|&&v| v > 0.0)
        .map(|v| v * v.ln())
        .sum::<f64>()
}

/// Mean and spread of one quantity over seeds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Sample standard deviation (0 for a single value).
    pub std: f64,
    pub n: usize,
}

impl Spread {
    /// Summary of `values`; NaN fields for an empty slice.
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Self {
            mean,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            std: var.sqrt(),
            n,
        }
    }
}

impl Spread {
    /// Twice the standard error of the difference of two means, √(s_a²/n_a + s_b²/n_b): a gap
    /// larger than this is unlikely to be seed noise.
    pub fn margin_against(&self, other: &Spread) -> f64 {
        2.0 * (self.std.powi(2) / self.n.max(1) as f64 + other.std.powi(2) / other.n.max(1) as f64)
            .sqrt()
    }

    /// Whether this mean lies below `other`'s by more than [`Spread::margin_against`].
    pub fn clearly_below(&self, other: &Spread) -> bool {
        self.mean + self.margin_against(other) < other.mean
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = f.precision().unwrap_or(3);
        if self.n > 1 {
            write!(f, "{:.p$} ± {:.p$}", self.mean, self.std)
        } else {
            write!(f, "{:.p$}", self.mean)
        }
    }
}

/// Where a batch of sequences repeats itself, for the induction scores (Olsson et al. 2022,
/// "In-context Learning and Induction Heads", §2 and appendix "Head activation evaluators").
///
/// Query i is a *repeat* when its token occurred earlier. Its induction targets are the keys j
/// that followed an earlier occurrence: j − 1 < i with x_{j−1} = x_i. A head's prefix-matching
/// score is its mean weight on those keys, summed over every earlier occurrence (a head may
/// spread its weight over all of them), over the repeat queries; its previous-token score is its
/// mean weight on key i − 1, over the queries i ≥ 1.
#[derive(Debug, Clone)]
pub struct InductionMask {
    /// `[batch, n, n]`: 1 at (i, j) when key j followed an earlier occurrence of x_i.
    targets: Vec<f32>,
    /// `[batch, n]`: whether x_i occurred earlier.
    repeat: Vec<bool>,
    batch: usize,
    n: usize,
}

impl InductionMask {
    /// The repeats and induction targets of `batch`'s token rows.
    pub fn of(batch: &crate::lab::tasks::Batch) -> Self {
        let (b, n) = (batch.batch, batch.seq_len);
        let mut targets = vec![0.0; b * n * n];
        let mut repeat = vec![false; b * n];
        for (seq, row) in batch.tokens.chunks(n).enumerate() {
            for i in 0..n {
                for j in 1..=i {
                    if row[j - 1] == row[i] {
                        targets[(seq * n + i) * n + j] = 1.0;
                        repeat[seq * n + i] = true;
                    }
                }
            }
        }
        Self {
            targets,
            repeat,
            batch: b,
            n,
        }
    }

    /// Whether x_i occurred earlier in sequence `seq`.
    pub fn is_repeat(&self, seq: usize, i: usize) -> bool {
        self.repeat[seq * self.n + i]
    }

    /// Per head, the previous-token and prefix-matching scores of `weights [batch, heads, n, n]`.
    pub fn head_scores(&self, weights: Tensor<4>) -> Vec<crate::lab::train::HeadInduction> {
        let [b, heads, n, _] = weights.dims();
        assert_eq!((b, n), (self.batch, self.n), "weights of another batch");
        let device = weights.device();
        let targets =
            Tensor::<3>::from_data(TensorData::new(self.targets.clone(), [b, n, n]), &device)
                .reshape([b, 1, n, n]); // [batch, 1, n, n]
        let previous = Tensor::<2>::ones([n, n], &device)
            .tril(-1)
            .sub(Tensor::<2>::ones([n, n], &device).tril(-2))
            .reshape([1, 1, n, n]); // [1, 1, n, n]
        let on_targets = to_host((weights.clone() * targets).sum_dim(3)); // [batch, heads, n, 1]
        let on_previous = to_host((weights * previous).sum_dim(3)); // [batch, heads, n, 1]
        (0..heads)
            .map(|h| {
                let (mut prefix, mut repeats, mut prev) = (0.0, 0usize, 0.0);
                for seq in 0..b {
                    for i in 0..n {
                        let at = (seq * heads + h) * n + i;
                        if self.is_repeat(seq, i) {
                            prefix += f64::from(on_targets[at]);
                            repeats += 1;
                        }
                        if i > 0 {
                            prev += f64::from(on_previous[at]);
                        }
                    }
                }
                crate::lab::train::HeadInduction {
                    previous_token: prev / (b * n.saturating_sub(1)).max(1) as f64,
                    prefix_match: prefix / repeats.max(1) as f64,
                }
            })
            .collect()
    }

    /// The loss at the repeats and at the first copies, early and late, from `logits
    /// [batch·n_out, classes]` read at the last n_out positions of `batch`.
    pub fn losses(
        &self,
        logits: Tensor<2>,
        batch: &crate::lab::tasks::Batch,
    ) -> crate::lab::train::InductionLoss {
        let (n, n_out) = (self.n, batch.n_out);
        let rows = batch.batch * n_out;
        let targets = batch.targets(&logits.device()).reshape([rows, 1]); // [batch·n_out, 1]
        let loss = to_host(
            burn::tensor::activation::log_softmax(logits, 1)
                .gather(1, targets)
                .neg(),
        ); // [batch·n_out, 1]
        let quarter = (n / 4).max(1);
        let mut sums = [(0.0, 0usize); 4]; // repeat, first, early, late
        for (row, &l) in loss.iter().enumerate() {
            let (seq, t) = (row / n_out, n - n_out + row % n_out);
            let l = f64::from(l);
            let which = if self.is_repeat(seq, t) { 0 } else { 1 };
            sums[which] = (sums[which].0 + l, sums[which].1 + 1);
            if t < quarter {
                sums[2] = (sums[2].0 + l, sums[2].1 + 1);
            }
            if t >= n - quarter {
                sums[3] = (sums[3].0 + l, sums[3].1 + 1);
            }
        }
        let mean = |(sum, count): (f64, usize)| sum / count.max(1) as f64;
        crate::lab::train::InductionLoss {
            repeat: mean(sums[0]),
            first: mean(sums[1]),
            early: mean(sums[2]),
            late: mean(sums[3]),
        }
    }
}

/// One head's `[n_q, n_k]` weight matrix of sequence `b`, on the host: a heatmap's values.
pub fn head_matrix(weights: Tensor<4>, b: usize, head: usize) -> Vec<Vec<f64>> {
    let [_, _, n_q, n_k] = weights.dims();
    let one = weights.slice([b..b + 1, head..head + 1, 0..n_q, 0..n_k]); // [1, 1, n_q, n_k]
    to_host(one)
        .chunks(n_k)
        .map(|row| row.iter().map(|&w| f64::from(w)).collect())
        .collect()
}

/// A linear probe fitted by ridge least squares on the host (f64): W minimises
/// ‖[X 1]·W − Y‖² + λ‖W‖² with Y the one-hot targets, solved by Cholesky on the normal equations.
/// Returns the class predicted (argmax of [x 1]·W) for each row of `test`.
pub fn linear_probe(
    train: &[Vec<f64>],
    labels: &[usize],
    classes: usize,
    test: &[Vec<f64>],
) -> Vec<usize> {
    const RIDGE: f64 = 1e-3;
    let p = train.first().map_or(0, Vec::len) + 1;
    let with_bias = |x: &[f64]| {
        x.iter()
            .copied()
            .chain(std::iter::once(1.0))
            .collect::<Vec<_>>()
    };
    // A = XᵀX + λI  [p, p];  B = XᵀY  [p, classes]
    let mut a = vec![vec![0.0; p]; p];
    let mut b = vec![vec![0.0; classes]; p];
    for (x, &y) in train.iter().zip(labels) {
        let x = with_bias(x);
        for i in 0..p {
            for j in 0..=i {
                a[i][j] += x[i] * x[j];
            }
            b[i][y] += x[i];
        }
    }
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += RIDGE * train.len() as f64;
    }
    // Cholesky A = L·Lᵀ (lower triangle of `a` only).
    let mut l = vec![vec![0.0; p]; p];
    for i in 0..p {
        for j in 0..=i {
            let s = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            l[i][j] = if i == j {
                s.max(1e-300).sqrt()
            } else {
                s / l[j][j]
            };
        }
    }
    // Solve L·Z = B, then Lᵀ·W = Z, column by column.
    let mut w = vec![vec![0.0; classes]; p];
    for c in 0..classes {
        let mut z = vec![0.0; p];
        for i in 0..p {
            z[i] = (b[i][c] - (0..i).map(|k| l[i][k] * z[k]).sum::<f64>()) / l[i][i];
        }
        for i in (0..p).rev() {
            w[i][c] = (z[i] - (i + 1..p).map(|k| l[k][i] * w[k][c]).sum::<f64>()) / l[i][i];
        }
    }
    test.iter()
        .map(|x| {
            let x = with_bias(x);
            (0..classes)
                .map(|c| (0..p).map(|i| x[i] * w[i][c]).sum::<f64>())
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(c, _)| c)
        })
        .collect()
}

/// Least-squares slope of ln y against ln x: the exponent k of y ∝ x^k.
pub fn log_log_slope(points: &[(f64, f64)]) -> f64 {
    let logs: Vec<(f64, f64)> = points.iter().map(|(x, y)| (x.ln(), y.ln())).collect();
    let n = logs.len() as f64;
    let (mx, my) = (
        logs.iter().map(|p| p.0).sum::<f64>() / n,
        logs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = logs.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = logs.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    cov / var
}

/// The first step at which `series` (step, value) reaches `threshold`, or `None`.
pub fn first_step_reaching(series: &[(usize, f64)], threshold: f64) -> Option<usize> {
    series
        .iter()
        .find(|(_, v)| *v >= threshold)
        .map(|(step, _)| *step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_per_row_takes_the_first_of_a_tie() {
        let logits = [0.1, 0.7, 0.2, 3.0, -1.0, 3.0];
        assert_eq!(argmax_rows(&logits, 3), vec![1, 0]);
    }

    #[test]
    fn entropy_of_uniform_and_one_hot_rows() {
        let device = Device::flex();
        // head 0: uniform over 4 keys, ln 4 = 1.3863; head 1: one-hot, 0.
        let w = Tensor::<1>::from_floats([0.25, 0.25, 0.25, 0.25, 1.0, 0.0, 0.0, 0.0], &device)
            .reshape([1, 2, 1, 4]);
        let h = entropy_per_head(w.clone());
        assert!(
            (h[0] - 4f64.ln()).abs() < 1e-6 && h[1].abs() < 1e-6,
            "{h:?}"
        );
        let m = max_weight_per_head(w);
        assert!(
            (m[0] - 0.25).abs() < 1e-6 && (m[1] - 1.0).abs() < 1e-6,
            "{m:?}"
        );
    }

    #[test]
    fn jacobian_vanishes_as_softmax_saturates() {
        // Two classes: p = (p, 1−p), J = p(1−p)·[[1, −1], [−1, 1]], ‖J‖_F = 2·p(1−p).
        let p = softmax(&[0.0, 0.0]);
        assert!((softmax_jacobian_norm(&p) - 0.5).abs() < 1e-12);
        let p = softmax(&[30.0, 0.0]);
        assert!(softmax_jacobian_norm(&p) < 1e-12);
    }

    #[test]
    fn probe_and_slope() {
        // Class = which of the two features is larger: linearly separable.
        let xs: Vec<Vec<f64>> = (0..40)
            .map(|i| vec![(i % 7) as f64, (i % 5) as f64 + 0.5])
            .collect();
        let ys: Vec<usize> = xs.iter().map(|x| usize::from(x[0] > x[1])).collect();
        let predicted = linear_probe(&xs, &ys, 2, &xs);
        let right = predicted.iter().zip(&ys).filter(|(a, b)| a == b).count();
        assert!(right >= 36, "{right}/40");
        let cubic: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0]
            .iter()
            .map(|&x| (x, 3.0 * x * x * x))
            .collect();
        assert!((log_log_slope(&cubic) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn spread_and_std() {
        let s = Spread::of(&[1.0, 2.0, 3.0]);
        assert_eq!((s.mean, s.min, s.max, s.std), (2.0, 1.0, 3.0, 1.0));
        // 2·√(1/3 + 1/3) = 1.633: 2 vs 4.5 is clear; 2 vs 3.5 with std 2 (margin 2.58) is not.
        assert!(s.clearly_below(&Spread::of(&[3.5, 4.5, 5.5])));
        assert!(!s.clearly_below(&Spread::of(&[1.5, 3.5, 5.5])));
        let device = Device::flex();
        let t = Tensor::<1>::from_floats([1.0, 3.0], &device);
        assert!((std(t) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn an_induction_head_scores_one_and_a_previous_token_head_scores_one() {
        // a b c a b c: queries 3, 4, 5 repeat, and their induction targets are keys 1, 2, 3.
        let tokens = vec![0i64, 1, 2, 0, 1, 2];
        let batch = crate::lab::tasks::Batch {
            tokens: tokens.clone(),
            targets: vec![1, 2, 0, 1, 2, 0],
            batch: 1,
            seq_len: 6,
            n_out: 6,
        };
        let mask = InductionMask::of(&batch);
        let n = 6;
        // Head 0 attends to the induction target where there is one (else to key 0); head 1 to
        // the previous key (key 0 for query 0).
        let mut w = vec![0.0f32; 2 * n * n];
        for i in 0..n {
            let target = if i >= 3 { i - 2 } else { 0 };
            w[i * n + target] = 1.0;
            w[n * n + i * n + i.saturating_sub(1)] = 1.0;
        }
        let device = Device::flex();
        let weights = Tensor::<4>::from_data(TensorData::new(w, [1, 2, n, n]), &device);
        let scores = mask.head_scores(weights);
        assert_eq!(scores[0].prefix_match, 1.0);
        assert_eq!(scores[1].previous_token, 1.0);
        assert_eq!(scores[1].prefix_match, 0.0);
        // Head 0 looks one back only from query 1 (to key 0), of the five queries i ≥ 1.
        assert!((scores[0].previous_token - 1.0 / 5.0).abs() < 1e-9);
        // Logits that put all the mass on the target at the repeats and spread it elsewhere.
        let mut logits = vec![0.0f32; n * 3];
        for i in 3..n {
            logits[i * 3 + batch.targets[i] as usize] = 50.0;
        }
        let loss = mask.losses(
            Tensor::<2>::from_data(TensorData::new(logits, [n, 3]), &device),
            &batch,
        );
        assert!(loss.repeat < 1e-6, "{loss:?}");
        assert!((loss.first - 3f64.ln()).abs() < 1e-5, "{loss:?}");
        assert!(loss.icl_score() < -1.0);
    }
}
