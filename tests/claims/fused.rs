//! The fused attention op computes what the decomposed steps compute, forward and backward, on
//! every device: the same outputs and the same gradients for q, k and v to 1e-4 relative, masks,
//! cross-attention, odd tile sizes and saturated logits included; its gradients agree with finite
//! differences; and the block takes the fused path only where the math is the same.

use attention_lab::block::attention::{AttentionConfig, AttentionInput, AttentionPath};
use attention_lab::block::fused;
use attention_lab::block::mask::{attention_mask, padding_mask};
use attention_lab::block::positional::PositionalKind;
use attention_lab::block::softmax::{SoftmaxAxis, masked_softmax};
use attention_lab::util::rng::HostRng;
use burn::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::common::*;

/// One call of the op: shapes, masks and scale.
#[derive(Debug, Clone)]
struct Case {
    batch: usize,
    heads: usize,
    n_q: usize,
    n_k: usize,
    d_k: usize,
    d_v: usize,
    causal: bool,
    /// Valid keys per sequence; `None`: no padding mask.
    lengths: Option<Vec<usize>>,
    scale: f64,
    /// Multiplies q, to push the logits to ±1e4 (saturated rows).
    q_gain: f32,
    seed: u64,
}

impl Case {
    fn new(batch: usize, heads: usize, n_q: usize, n_k: usize, d_k: usize, d_v: usize) -> Self {
        Self {
            batch,
            heads,
            n_q,
            n_k,
            d_k,
            d_v,
            causal: false,
            lengths: None,
            scale: 1.0 / (d_k as f64).sqrt(),
            q_gain: 1.0,
            seed: 7,
        }
    }
}

/// The steps the block takes without the op: scores, mask, row softmax, weighted sum.
fn decomposed(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    padding: Option<Tensor<2, Bool>>,
    scale: f64,
    causal: bool,
) -> Tensor<4> {
    let [batch, _, n_q, _] = q.dims();
    let n_k = k.dims()[2];
    let device = q.device();
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale); // [batch, heads, n_q, n_k]
    let mask = attention_mask(batch, n_q, n_k, causal, padding, &device);
    masked_softmax(scores, mask, SoftmaxAxis::Row).matmul(v) // [batch, heads, n_q, d_v]
}

/// Outputs and the gradients of Σ out ⊙ g with respect to q, k and v, by one path.
fn run_path(
    case: &Case,
    device: &Device,
    op: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>, Option<Tensor<2, Bool>>) -> Tensor<4>,
) -> [Vec<f32>; 4] {
    let device = device.clone().autodiff();
    let mut rng = HostRng::new(case.seed);
    let (b, h) = (case.batch, case.heads);
    let q = rng
        .normal_tensor([b, h, case.n_q, case.d_k], 1.0, &device)
        .mul_scalar(case.q_gain)
        .detach()
        .require_grad();
    let k = rng
        .normal_tensor([b, h, case.n_k, case.d_k], 1.0, &device)
        .require_grad();
    let v = rng
        .normal_tensor([b, h, case.n_k, case.d_v], 1.0, &device)
        .require_grad();
    let g = rng.normal_tensor([b, h, case.n_q, case.d_v], 1.0, &device);
    let padding = case
        .lengths
        .as_ref()
        .map(|lengths| padding_mask(lengths, case.n_k, &device));
    let out = op(q.clone(), k.clone(), v.clone(), padding);
    let grads = (out.clone() * g).sum().backward();
    let grad = |t: &Tensor<4>| values(t.grad(&grads).expect("a gradient"));
    [values(out), grad(&q), grad(&k), grad(&v)]
}

/// max |a − b| ≤ 1e-4 · max(max |b|, 0.1): relative to the tensor's largest entry, and 1e-5
/// absolute for a tensor of entries near 0 (a saturated softmax's gradients), where f32 rounding
/// of two different orders of summation is all that is left.
fn close(what: &str, case: &Case, got: &[f32], want: &[f32]) -> Result<(), String> {
    if got.iter().any(|x| !x.is_finite()) {
        return Err(format!("{what}: not finite in {case:?}"));
    }
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(0.1);
    let diff = max_abs_diff(got, want);
    if diff > 1e-4 * scale {
        return Err(format!(
            "{what}: max |fused − decomposed| = {diff:e} > 1e-4 × {scale:e} in {case:?}"
        ));
    }
    Ok(())
}

fn compare(case: &Case, device: &Device) -> Result<(), String> {
    let (scale, causal) = (case.scale, case.causal);
    let ours = run_path(case, device, &|q, k, v, pad| {
        fused::attention(q, k, v, pad, scale, causal)
    });
    let steps = run_path(case, device, &|q, k, v, pad| {
        decomposed(q, k, v, pad, scale, causal)
    });
    if case.q_gain == 1.0 {
        for (i, what) in ["output", "dq", "dk", "dv"].into_iter().enumerate() {
            close(what, case, &ours[i], &steps[i])?;
        }
        return Ok(());
    }
    // Saturated rows: the outputs and dV still agree to 1e-4. dQ and dK go through
    // dS = P ⊙ (dP − D), a difference of two nearly equal numbers, then times logits' factors of
    // 1e3. FlashAttention takes D = dO·O (one dot product per row), the decomposed path
    // Σ_j P_ij·dP_ij; with P one-hot in f32 the latter cancels exactly and the former leaves
    // D's rounding, ε·|dO|·|O|, times c·|q| (or c·|k|). So against the same equations in f64,
    // the fused dQ and dK must be within 100 ε of that natural scale, not of the (near 0) result.
    close("output", case, &ours[0], &steps[0])?;
    close("dv", case, &ours[3], &steps[3])?;
    let (exact, inputs) = exact_f64(case, device);
    let max = |xs: &[f64]| xs.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let [q, k, v, g] = &inputs;
    let d_row = max(g) * max(v) * case.d_v as f64;
    let natural = [
        case.scale * max(k) * d_row * case.n_k as f64,
        case.scale * max(q) * d_row * case.n_q as f64,
    ];
    for (i, what) in ["dq", "dk"].into_iter().enumerate() {
        let error = ours[i + 1]
            .iter()
            .zip(&exact[i + 1])
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        let bound = 100.0 * f32::EPSILON as f64 * natural[i];
        if error > bound {
            return Err(format!(
                "{what}: fused is {error:e} from the f64 result, over 100 ε × {:e} = {bound:e}, in {case:?}",
                natural[i]
            ));
        }
    }
    Ok(())
}

/// The forward and the three gradients of Σ o ⊙ g in f64 on the host, by the textbook equations
/// (no masks: the saturated case has none), and the inputs q, k, v, g it used.
fn exact_f64(case: &Case, device: &Device) -> ([Vec<f64>; 4], [Vec<f64>; 4]) {
    assert!(!case.causal && case.lengths.is_none());
    let mut rng = HostRng::new(case.seed);
    let (b, h, n_q, n_k, d_k, d_v) = (
        case.batch, case.heads, case.n_q, case.n_k, case.d_k, case.d_v,
    );
    let f64s = |t: Tensor<4>| values(t).into_iter().map(f64::from).collect::<Vec<_>>();
    let q: Vec<f64> = f64s(
        rng.normal_tensor([b, h, n_q, d_k], 1.0, device)
            .mul_scalar(case.q_gain),
    );
    let k = f64s(rng.normal_tensor([b, h, n_k, d_k], 1.0, device));
    let v = f64s(rng.normal_tensor([b, h, n_k, d_v], 1.0, device));
    let g = f64s(rng.normal_tensor([b, h, n_q, d_v], 1.0, device));
    let (mut o, mut dq, mut dk, mut dv) = (
        vec![0.0; b * h * n_q * d_v],
        vec![0.0; q.len()],
        vec![0.0; k.len()],
        vec![0.0; v.len()],
    );
    let c = case.scale;
    for bh in 0..b * h {
        let (qo, ko, vo, oo) = (
            bh * n_q * d_k,
            bh * n_k * d_k,
            bh * n_k * d_v,
            bh * n_q * d_v,
        );
        for i in 0..n_q {
            let s: Vec<f64> = (0..n_k)
                .map(|j| {
                    c * (0..d_k)
                        .map(|t| q[qo + i * d_k + t] * k[ko + j * d_k + t])
                        .sum::<f64>()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let total: f64 = e.iter().sum();
            let p: Vec<f64> = e.iter().map(|x| x / total).collect();
            for t in 0..d_v {
                o[oo + i * d_v + t] = (0..n_k).map(|j| p[j] * v[vo + j * d_v + t]).sum();
            }
            let dp: Vec<f64> = (0..n_k)
                .map(|j| {
                    (0..d_v)
                        .map(|t| g[oo + i * d_v + t] * v[vo + j * d_v + t])
                        .sum()
                })
                .collect();
            let d: f64 = (0..n_k).map(|j| p[j] * dp[j]).sum();
            for j in 0..n_k {
                let ds = p[j] * (dp[j] - d) * c;
                for t in 0..d_v {
                    dv[vo + j * d_v + t] += p[j] * g[oo + i * d_v + t];
                }
                for t in 0..d_k {
                    dq[qo + i * d_k + t] += ds * k[ko + j * d_k + t];
                    dk[ko + j * d_k + t] += ds * q[qo + i * d_k + t];
                }
            }
        }
    }
    ([o, dq, dk, dv], [q, k, v, g])
}

fn listed_cases() -> Vec<Case> {
    let mut cases = vec![
        // Several heads, an odd temperature folded into the scale.
        Case {
            scale: 0.5 / 2.0,
            ..Case::new(2, 4, 5, 5, 4, 4)
        },
        // Not a multiple of the 64-row tile, causal: the diagonal crosses tiles.
        Case {
            causal: true,
            ..Case::new(2, 2, 70, 70, 8, 8)
        },
        // Two tiles and a bit, with padding that ends inside a tile.
        Case {
            lengths: Some(vec![130, 57]),
            ..Case::new(2, 2, 130, 130, 8, 8)
        },
        // A fully padded sequence: every row of batch 0 is fully masked.
        Case {
            causal: true,
            lengths: Some(vec![0, 3, 6]),
            ..Case::new(3, 1, 6, 6, 4, 4)
        },
        // Cross-attention: n_q ≠ n_k and d_k ≠ d_v, with padding.
        Case {
            lengths: Some(vec![9, 4]),
            ..Case::new(2, 2, 3, 9, 5, 7)
        },
        // Causal with more queries than keys: rows past n_k see every key.
        Case {
            causal: true,
            ..Case::new(1, 2, 9, 4, 4, 3)
        },
        // n = 1.
        Case {
            causal: true,
            ..Case::new(1, 1, 1, 1, 3, 2)
        },
        // Saturated rows: logits around ±1e4.
        Case {
            q_gain: 2.0e3,
            ..Case::new(1, 2, 8, 8, 4, 4)
        },
    ];
    // Past two key tiles with a long causal sequence and one head per batch row.
    cases.push(Case {
        causal: true,
        lengths: Some(vec![200, 150]),
        ..Case::new(2, 1, 200, 200, 16, 16)
    });
    cases
}

device_test!(fused_matches_decomposed_forward_and_backward, |device| {
    for case in listed_cases() {
        compare(&case, &device).unwrap();
    }
});

device_test!(fused_gradients_match_finite_differences, |device| {
    // Central differences of L = Σ o ⊙ g in f32: step 1e-2, so the rounding error of L (about
    // 1e-7 · |L| · terms) stays well below the differences, and the O(h²) error too.
    let case = Case {
        causal: true,
        lengths: Some(vec![3, 2]),
        ..Case::new(2, 1, 3, 3, 2, 2)
    };
    let [_, dq, dk, dv] = run_path(&case, &device, &|q, k, v, pad| {
        fused::attention(q, k, v, pad, case.scale, case.causal)
    });
    let mut rng = HostRng::new(case.seed);
    let (b, h) = (case.batch, case.heads);
    let q = values(rng.normal_tensor([b, h, case.n_q, case.d_k], 1.0, &device));
    let k = values(rng.normal_tensor([b, h, case.n_k, case.d_k], 1.0, &device));
    let v = values(rng.normal_tensor([b, h, case.n_k, case.d_v], 1.0, &device));
    let g = values(rng.normal_tensor([b, h, case.n_q, case.d_v], 1.0, &device));
    let padding = padding_mask(case.lengths.as_ref().unwrap(), case.n_k, &device);
    let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
        let t = |data: &[f32], dims: [usize; 4]| {
            Tensor::<4>::from_data(TensorData::new(data.to_vec(), dims), &device)
        };
        let out = fused::attention(
            t(q, [b, h, case.n_q, case.d_k]),
            t(k, [b, h, case.n_k, case.d_k]),
            t(v, [b, h, case.n_k, case.d_v]),
            Some(padding.clone()),
            case.scale,
            case.causal,
        );
        values(out)
            .iter()
            .zip(&g)
            .map(|(o, g)| (*o as f64) * (*g as f64))
            .sum()
    };
    let step = 1e-2f32;
    let mut worst = 0.0f64;
    for (which, analytic) in [(0, &dq), (1, &dk), (2, &dv)] {
        let base = [q.clone(), k.clone(), v.clone()];
        for i in 0..base[which].len() {
            let (mut up, mut down) = (base.clone(), base.clone());
            up[which][i] += step;
            down[which][i] -= step;
            let numeric = (loss(&up[0], &up[1], &up[2]) - loss(&down[0], &down[1], &down[2]))
                / (2.0 * step as f64);
            worst = worst.max((numeric - analytic[i] as f64).abs());
        }
    }
    assert!(worst < 2e-3, "worst |analytic − numeric| = {worst:e}");
});

device_test!(fused_block_matches_decomposed_block, |device| {
    let device = device.autodiff();
    let configs = [
        AttentionConfig::new(16, 4).with_causal(true),
        AttentionConfig::new(12, 3)
            .with_d_k(Some(5))
            .with_d_v(Some(7))
            .with_temperature(0.7),
        AttentionConfig::new(16, 2)
            .with_positional(PositionalKind::Rotary)
            .with_qk_norm(true)
            .with_bias(true),
        AttentionConfig::new(8, 2).with_projections(false),
    ];
    for config in configs {
        let fused = config.clone().with_seed(3).init(&device).unwrap();
        let steps = config
            .clone()
            .with_seed(3)
            .with_path(AttentionPath::Decomposed)
            .init(&device)
            .unwrap();
        let mut rng = HostRng::new(4);
        let x = rng
            .normal_tensor([2, 5, config.d_model], 1.0, &device)
            .require_grad();
        let context = rng.normal_tensor([2, 7, config.d_model], 1.0, &device);
        let padding = padding_mask(&[7, 2], 7, &device);
        let input = AttentionInput::cross(x, context).key_padding(padding);
        let a = fused.forward_input(input.clone());
        let b = steps.forward_input(input);
        assert!(a.fused() && !b.fused(), "{config:?}");
        let diff = max_abs_diff(&values(a.context.clone()), &values(b.context.clone()));
        assert!(diff < 1e-5, "context differs by {diff} for {config:?}");
        // The weights, recomputed after the fused op, are the decomposed path's.
        let dw = max_abs_diff(&values(a.weights()), &values(b.weights()));
        assert!(dw < 1e-5, "weights differ by {dw} for {config:?}");
        let ga = a.context.powf_scalar(2.0).sum().backward();
        let gb = b.context.powf_scalar(2.0).sum().backward();
        if let (Some(wa), Some(wb)) = (&fused.query, &steps.query) {
            let da = values(wa.weight.grad(&ga).unwrap());
            let db = values(wb.weight.grad(&gb).unwrap());
            let scale = db.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let diff = max_abs_diff(&da, &db);
            assert!(
                diff <= 1e-4 * scale,
                "dW_Q differs by {diff} (scale {scale}) for {config:?}"
            );
        }
    }
});

#[test]
fn the_block_falls_back_where_the_math_differs() {
    let device = Device::flex();
    let x = HostRng::new(1).normal_tensor([1, 4, 8], 1.0, &device);
    let path = |config: AttentionConfig| config.init(&device).unwrap().forward(x.clone()).fused();
    assert!(path(AttentionConfig::new(8, 2)));
    assert!(!path(
        AttentionConfig::new(8, 2).with_softmax_axis(SoftmaxAxis::Column)
    ));
    assert!(!path(
        AttentionConfig::new(8, 2).with_softmax_axis(SoftmaxAxis::Whole)
    ));
    assert!(!path(
        AttentionConfig::new(8, 2).with_positional(PositionalKind::Alibi)
    ));
    assert!(!path(AttentionConfig::new(8, 2).with_dropout(0.1)));
    assert!(!path(
        AttentionConfig::new(8, 2).with_path(AttentionPath::Decomposed)
    ));
}

fn random_cases() -> impl Strategy<Value = Case> {
    (
        (1usize..=2, 1usize..=3, 1usize..=80, 1usize..=80),
        (1usize..=9, 1usize..=9, any::<bool>(), any::<bool>()),
        (0.05f64..2.0, any::<u64>()),
    )
        .prop_flat_map(|(shape, opts, (scale, seed))| {
            let (batch, _, _, n_k) = shape;
            (
                Just((shape, opts, scale, seed)),
                proptest::collection::vec(0..=n_k, batch),
            )
        })
        .prop_map(
            |(((batch, heads, n_q, n_k), (d_k, d_v, causal, padded), scale, seed), lengths)| Case {
                causal,
                lengths: padded.then_some(lengths),
                scale,
                seed,
                ..Case::new(batch, heads, n_q, n_k, d_k, d_v)
            },
        )
}

#[test]
fn fused_matches_decomposed_on_random_shapes() {
    for (kind, device) in available_devices() {
        // wgpu on a software adapter compiles kernels per shape: fewer cases there.
        let cases = if kind == wgpu_kind() { 6 } else { 40 };
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&random_cases(), |case| {
                compare(&case, &device).map_err(|e| TestCaseError::fail(format!("{kind}: {e}")))
            })
            .unwrap();
    }
}
